"""perf_analyzer load testing: the input-data JSON, and a short real run against the real server."""

from __future__ import annotations

import base64
import ctypes
import json
import os
import shutil
import struct
import subprocess

import pytest

from lita_serve.loadtest import encode_bytes_b64, make_videos, read_csv, run_load_test, write_input_data
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
def test_perf_analyzer_measures_the_real_server(triton_server, tmp_path):
    ensure_libb64()
    if cuda_runtime_libdir() is None and not os.environ.get("CI"):
        pytest.skip("perf_analyzer's tool environment is missing: `make perf-tools` (make test does it)")
    opts = PerfOptions(request_count=3, stability_percentage=1000, max_trials=5)
    summary = run_load_test(None, tmp_path / "load", (1, 2), url=triton_server.grpc_url,
                            videos=make_videos(tmp_path / "v", count=1, seconds=3.0),
                            sampling={"max_tokens": 4, "greedy": True}, options=opts, timeout=180)
    rows = read_csv(summary["csv"])
    assert [int(r["Concurrency"]) for r in rows] == [1, 2]
    assert all(r["Inferences/Second"] > 0 and r["p99 latency"] >= r["p50 latency"] > 0 for r in rows)
    log = (tmp_path / "load" / "perf_analyzer.log").read_text()
    assert "Detected decoupled model" in log  # the streaming path was used
    png = (tmp_path / "load" / "perf.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
