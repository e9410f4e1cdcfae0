"""Limits (from ServeLimits in lita.json) enforced by the server, loopback binding, gRPC over TLS."""

from __future__ import annotations

import ipaddress
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest
from repo_factory import build_tiny_repository
from triton_calls import request_inputs, run

from lita_client import LitaClient
from lita_client.errors import LitaClientError
from lita_serve.config import LitaConfig
from lita_serve.errors import LimitExceededError
from lita_serve.preprocess.request import prepare_video
from lita_serve.serving.launcher import GrpcTls, Ports, TritonServer

pytestmark = pytest.mark.server
QUESTION = "When does the red square appear?"


def limits_of(repo: Path):
    return LitaConfig.load(repo / "lita.json").limits


def test_limits_come_from_lita_json_and_are_enforced(triton_server, tiny_repo, sample_videos):
    limits = limits_of(tiny_repo)
    video = sample_videos["red_3s"].read_bytes()
    url = triton_server.grpc_url
    cases = [
        (request_inputs(b"\0" * (limits.max_video_bytes + 1), QUESTION), str(limits.max_video_bytes)),
        (request_inputs(video, QUESTION, duration=limits.max_duration_s + 1), f"{limits.max_duration_s:g}"),
        (request_inputs(video, QUESTION, max_tokens=limits.max_new_tokens + 1), str(limits.max_new_tokens)),
        (request_inputs(video, "q" * (limits.max_question_chars + 1)), str(limits.max_question_chars)),
    ]
    for inputs, number in cases:
        got = run(url, inputs)
        assert got.error is not None and number in str(got.error), (number, got.error)
    ok = run(url, request_inputs(video, QUESTION, max_tokens=limits.max_new_tokens))
    assert ok.error is None, ok.error


def test_max_frames_is_enforced_for_a_config_that_exceeds_it(sample_videos):
    cfg = LitaConfig.from_name("tiny")
    cfg = replace(cfg, limits=replace(cfg.limits, max_frames=cfg.lita.sample_frames - 1))
    with pytest.raises(LimitExceededError, match=f"limit of {cfg.limits.max_frames} frames"):
        prepare_video(sample_videos["red_3s"].read_bytes(), cfg)


def _address(hex_addr: str) -> str:
    """An address of /proc/net/tcp{,6}: 32-bit words in host (little-endian) order."""
    raw = b"".join(bytes.fromhex(hex_addr[i:i + 8])[::-1] for i in range(0, len(hex_addr), 8))
    ip = ipaddress.ip_address(raw)
    mapped = getattr(ip, "ipv4_mapped", None)
    return str(mapped or ip)


def _listening(port: int) -> set[str]:
    """Local addresses listening on ``port`` (IPv4 and IPv6, from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            addr_hex, port_hex = fields[1].split(":")
            if fields[3] == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                found.add(_address(addr_hex))
    return found


def test_server_binds_loopback_only(triton_server):
    for port in (triton_server.ports.grpc, triton_server.ports.http, triton_server.ports.metrics):
        assert _listening(port) == {"127.0.0.1"}, port


def _self_signed(root: Path) -> tuple[Path, Path]:
    cert, key = root / "server.crt", root / "server.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    """A server on a repository limited to 2 concurrent requests, gRPC over TLS with a fresh self-signed cert."""
    root = tmp_path_factory.mktemp("tls")
    cfg = LitaConfig.from_name("tiny")
    cfg.limits.max_concurrent_requests = 2
    repo = build_tiny_repository(root, seed=0, cfg=cfg)
    cert, key = _self_signed(root)
    server = TritonServer(repo, ports=Ports.free(), tls=GrpcTls(cert, key))
    server.start(timeout=240)
    yield server, cert
    server.stop()


def test_tls_client_answers_and_plain_text_fails(tls_server, sample_videos):
    server, cert = tls_server
    video = sample_videos["red_3s"].read_bytes()
    with LitaClient(server.grpc_url, ssl=True, root_certificates=str(cert), timeout=60) as client:
        answer = client.ask(video, QUESTION, max_tokens=4)
    assert answer.num_output_tokens > 0
    with LitaClient(server.grpc_url, ssl=False, retries=0, timeout=10) as plain:
        with pytest.raises(LitaClientError) as info:
            plain.ask(video, QUESTION, max_tokens=4)
    assert server.grpc_url in str(info.value)
    assert _listening(server.ports.grpc) == {"127.0.0.1"}


def test_requests_beyond_max_concurrent_are_refused_as_busy(tls_server, sample_videos):
    """Limit 2 in flight: of 8 simultaneous long requests some are refused at once with UNAVAILABLE."""
    server, cert = tls_server
    video = sample_videos["red_3s"].read_bytes()

    def ask(_):
        with LitaClient(server.grpc_url, ssl=True, root_certificates=str(cert), retries=0, timeout=120) as c:
            try:
                return c.ask(video, QUESTION, max_tokens=64, greedy=False, temperature=1.0, seed=1)
            except LitaClientError as exc:
                return exc

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(ask, range(8)))
    busy = [r for r in results if isinstance(r, Exception)]
    assert busy, "expected some requests over the limit of 2 to be refused"
    assert all("server busy" in str(e) and "max_concurrent_requests" in str(e) for e in busy), busy
    assert all(type(e).__name__ == "ServerUnavailableError" for e in busy)
    assert len(busy) < 8
