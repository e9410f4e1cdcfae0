"""perf_analyzer load testing: the input-data JSON, and a short real run against the real server."""

from __future__ import annotations

import base64
import csv
import ctypes
import json
import os
import shutil
import struct
import subprocess

import pytest

from lita_serve.loadtest import encode_bytes_b64, make_videos, run_load_test, write_input_data
from lita_serve.loadtest.inputs import distinct_copies
from lita_serve.loadtest.perf import LIBB64, PerfOptions, cuda_runtime_libdir, perf_command


def ensure_libb64() -> None:
    """Install Debian's libb64-0d when missing; skip only where apt-get cannot be used."""
    try:
        ctypes.CDLL(LIBB64)
        return
    except OSError:
        pass
    if shutil.which("apt-get") is None:
        pytest.skip(f"{LIBB64} is missing and apt-get is unavailable: install libb64-0d")
    proc = subprocess.run(["apt-get", "install", "-y", "libb64-0d"], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"{LIBB64} is missing and `apt-get install -y libb64-0d` failed: {proc.stderr[-300:]}")


def test_bytes_element_is_length_prefixed_base64():
    data = b"\x00\x01video\xff"
    raw = base64.b64decode(encode_bytes_b64(data))
    assert struct.unpack("<I", raw[:4])[0] == len(data) and raw[4:] == data


def test_input_data_holds_every_video_question_pair(tmp_path):
    videos = make_videos(tmp_path / "v", count=2, seconds=3.0)
    path = write_input_data(videos, tmp_path / "in.json", ["Q1?", "Q2?"], {"max_tokens": 5, "greedy": True})
    data = json.loads(path.read_text())["data"]
    assert len(data) == 4
    first = data[0]
    assert first["text_input"] == ["Q1?"] and first["max_tokens"] == [5] and first["greedy"] == [True]
    assert base64.b64decode(first["video"]["b64"])[4:] == videos[0].read_bytes()
    with pytest.raises(ValueError, match="unknown sampling"):
        write_input_data(videos, tmp_path / "bad.json", ["Q?"], {"max_len": 3})


def test_command_streams_over_grpc(tmp_path):
    cmd = perf_command("127.0.0.1:9", tmp_path / "in.json", tmp_path / "o.csv", PerfOptions(concurrency=(1, 4)))
    assert cmd[cmd.index("-i") + 1] == "grpc" and "--streaming" in cmd
    assert cmd[cmd.index("--concurrency-range") + 1] == "1:4:1"


@pytest.mark.server
def test_cold_and_warm_regimes_are_measured_apart_and_proven(triton_server, tmp_path):
    """Cold: a fresh video in every request (hit ratio <= 0.1); warm: the same video (nearly all
    hits); both through the real perf_analyzer over streaming gRPC, each level bracketed by the
    server's cache counters."""
    ensure_libb64()
    if cuda_runtime_libdir() is None and not os.environ.get("CI"):
        pytest.skip("perf_analyzer's tool environment is missing: `make perf-tools` (make test does it)")
    opts = PerfOptions(request_count=3, stability_percentage=1000, max_trials=3)
    metrics = f"http://{triton_server.host}:{triton_server.ports.metrics}/metrics"
    summary = run_load_test(None, tmp_path / "load", (1, 2), url=triton_server.grpc_url, metrics_url=metrics,
                            videos=make_videos(tmp_path / "v", count=2, seconds=3.0),
                            sampling={"max_tokens": 4, "greedy": True}, options=opts, timeout=180,
                            client_rounds=1)
    cold, warm = summary["regimes"]["cold"], summary["regimes"]["warm"]
    assert [r["concurrency"] for r in cold] == [1, 2] == [r["concurrency"] for r in warm]
    assert all(r["throughput"] > 0 and r["p99_ms"] >= r["p50_ms"] > 0 for r in cold + warm)
    assert summary["cold_valid"] is True and all(r["hit_ratio"] <= 0.1 and r["misses"] > 0 for r in cold)
    assert all(r["hit_ratio"] >= 0.9 for r in warm)
    assert summary["client_cold_mean_ms"] > 0 and summary["cold_c1_throughput_vs_client"] > 0
    rows = list(csv.DictReader(open(summary["csv"])))
    assert [(r["regime"], r["concurrency"]) for r in rows] == [("cold", "1"), ("cold", "2"), ("warm", "1"), ("warm", "2")]
    log = (tmp_path / "load" / "runs" / "cold_c1.log").read_text()
    assert "Detected decoupled model" in log  # the streaming path was used
    assert (tmp_path / "load" / "perf.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_distinct_copies_differ_in_bytes_and_decode_the_same(tmp_path):
    import io

    import av

    source = make_videos(tmp_path / "v", count=1, seconds=2.0)[0]
    copies = distinct_copies([source], tag="t")
    first, second = next(copies), next(copies)
    assert first != second and first.startswith(source.read_bytes())

    def frames(data: bytes) -> list:
        with av.open(io.BytesIO(data)) as container:
            return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]

    for a, b in zip(frames(first), frames(source.read_bytes()), strict=True):
        assert (a == b).all()
