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
from lita_serve.loadtest.endpoint_compare import compare_endpoints, format_table
from lita_serve.loadtest.inputs import distinct_copies
from lita_serve.loadtest.perf import LIBB64, PerfOptions, cuda_runtime_libdir, openai_perf_command, perf_command
from lita_serve.loadtest.token_timing import latency_by_concurrency, shrink_export


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


def test_openai_command_asks_for_the_stream_in_the_body(tmp_path):
    cmd = openai_perf_command("127.0.0.1:9", tmp_path / "in.json", tmp_path / "o.csv", PerfOptions(concurrency=(8, 8)),
                              profile_path=tmp_path / "p.json", api_key="k")
    assert cmd[cmd.index("--service-kind") + 1] == "openai" and "--streaming" not in cmd  # 2.51 refuses it over HTTP
    assert cmd[cmd.index("--endpoint") + 1] == "v1/chat/completions" and "Authorization:Bearer k" in cmd
    assert cmd[cmd.index("--profile-export-file") + 1] == str(tmp_path / "p.json")


def test_ttft_and_itl_from_a_profile_export(tmp_path):
    """The export layout of perf_analyzer 2.51 (docs/cli.md --profile-export-file, docs/benchmarking.md;
    triton-inference-server/perf_analyzer), as the real tool wrote it here: Triton responses carry the
    ensemble's tensors, OpenAI responses the server-sent events read at once. Responses without text
    (the ensemble's first and final ones, the closing events) are not tokens; undecodable input bytes
    (a raw video) do not stop the reader."""
    ms = 1_000_000
    sse = 'data: {"choices": [{"delta": {"content": "%s"}}]}\n\n'
    triton = {"timestamp": 0, "request_inputs": {"video": "VIDEO"},
              "response_timestamps": [10 * ms, 30 * ms, 32 * ms, 40 * ms, 41 * ms],
              "response_outputs": [{"text_output": "", "is_final": False}, {"text_output": "6.1s"},
                                   {"text_output": " "}, {"text_output": "14.5s"},
                                   {"text_output": "", "is_final": True}]}
    openai_request = {"timestamp": 5 * ms, "request_inputs": {"payload": "{}"},
                      "response_timestamps": [25 * ms, 29 * ms, 30 * ms],
                      "response_outputs": [{"response": sse % "6.1s"}, {"response": sse % " " + sse % "14.5s"},
                                           {"response": 'data: {"choices": [{"delta": {}, "finish_reason": "stop"}]}'}]}
    export = {"version": "2.51.0", "experiments": [
        {"experiment": {"mode": "concurrency", "value": 1}, "window_boundaries": [0, 100 * ms],
         "requests": [triton, openai_request]}]}
    path = tmp_path / "profile.json"
    path.write_bytes(json.dumps(export).encode().replace(b'"VIDEO"', b'"\xff\x00mp4"'))  # raw bytes, as written
    level = latency_by_concurrency(path)[1]
    assert level.requests == 2 and level.tokens == 6
    assert level.ttft_ms[50] == pytest.approx(25.0)  # Triton 30 ms, OpenAI 25 - 5 = 20 ms
    assert level.ttft_ms[99] == pytest.approx(29.9, abs=0.01)
    assert level.itl_ms[50] == pytest.approx(3.0)  # gaps 2, 8 (Triton) and 4, 0 (OpenAI)
    timeline = json.loads(shrink_export(path, tmp_path / "tokens.json").read_text())
    assert not path.exists() and timeline["version"] == "2.51.0"
    assert [len(r["token_timestamps"]) for r in timeline["levels"][0]["requests"]] == [3, 3]


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
    # Streamed requests: TTFT and ITL per level from perf_analyzer's per-response timestamps.
    for r in cold + warm:
        assert r["tokens"] > 0 and 0 < r["ttft_p50_ms"] <= r["ttft_p90_ms"] <= r["ttft_p99_ms"]
        assert r["ttft_p50_ms"] <= r["p99_ms"]  # the first token comes before the request ends
        assert r["itl_p50_ms"] is None or 0 <= r["itl_p50_ms"] <= r["itl_p99_ms"] <= r["p99_ms"]
    rows = list(csv.DictReader(open(summary["csv"])))
    assert [(r["regime"], r["concurrency"]) for r in rows] == [("cold", "1"), ("cold", "2"), ("warm", "1"), ("warm", "2")]
    assert all(float(r["ttft_p50_ms"]) > 0 and "itl_p99_ms" in r for r in rows)
    # The export (megabytes: every request's video) is replaced by the token timeline it gave.
    timeline = json.loads((tmp_path / "load" / "runs" / "warm_c2_tokens.json").read_text())
    assert timeline["version"] == "2.51.0" and timeline["levels"][0]["concurrency"] == 2
    assert sum(len(r["token_timestamps"]) for r in timeline["levels"][0]["requests"]) >= warm[1]["tokens"]
    assert not list((tmp_path / "load" / "runs").glob("*_profile.json"))
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


@pytest.mark.server
def test_grpc_and_the_openai_endpoint_side_by_side(triton_server, tmp_path):
    """The same streamed requests through both endpoints, both measured by perf_analyzer: every
    level has throughput, TTFT and CPU per request for each, and the ratios are computed."""
    ensure_libb64()
    if cuda_runtime_libdir() is None and not os.environ.get("CI"):
        pytest.skip("perf_analyzer's tool environment is missing: `make perf-tools` (make test does it)")
    summary = compare_endpoints(None, tmp_path / "cmp", (1, 2), url=triton_server.grpc_url,
                                videos=make_videos(tmp_path / "v", count=1, seconds=2.0), max_tokens=4,
                                options=PerfOptions(request_count=3, stability_percentage=1000, max_trials=3),
                                timeout=180)
    levels = {(r["endpoint"], r["concurrency"]): r for r in summary["levels"]}
    assert sorted(levels) == [("grpc", 1), ("grpc", 2), ("openai", 1), ("openai", 2)]
    for r in levels.values():
        assert r["throughput"] > 0 and r["requests"] > 0 and r["ttft_p50_ms"] > 0 and r["client_cpu_ms"] > 0
    # The frontend runs in this process: it works for OpenAI requests and idles for gRPC ones.
    assert levels["openai", 1]["frontend_cpu_ms"] > levels["grpc", 1]["frontend_cpu_ms"]
    assert set(summary["ratios"]) == {"1", "2"} and summary["ratios"]["1"]["ttft_p50"] > 0
    assert json.loads((tmp_path / "cmp" / "endpoints.json").read_text()) == summary
    assert "openai/grpc at concurrency 2" in format_table(summary)
