"""``lita-client`` run as a subprocess against the real tritonserver serving the tiny LITA model."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from lita_client import LitaClient
from lita_client.cli import EXIT_ERROR, EXIT_OK, EXIT_PARTIAL

MAX_TOKENS = "5"
QUESTION = "When does the colour change?"


def lita_client(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lita_client.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "LITA_URL": ""})


def assert_one_error_line(proc: subprocess.CompletedProcess, fragment: str) -> None:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("lita-client: error:") and fragment in lines[0]
    assert "Traceback" not in proc.stderr


def test_ask_plain_json_and_stream(triton_server, sample_videos):
    video, url = str(sample_videos["red_3s"]), triton_server.grpc_url
    common = ["-u", url, "--max-tokens", MAX_TOKENS, "--greedy"]
    plain = lita_client("ask", video, QUESTION, *common)
    assert plain.returncode == EXIT_OK, plain.stderr
    as_json = lita_client("ask", video, QUESTION, *common, "--json")
    streamed = lita_client("ask", video, QUESTION, *common, "--stream")
    assert as_json.returncode == streamed.returncode == EXIT_OK

    answer = json.loads(as_json.stdout)
    assert plain.stdout == answer["text"] + "\n"
    assert streamed.stdout == answer["text"] + "\n"  # the pieces, concatenated, then a newline
    assert 1 <= answer["num_output_tokens"] <= int(MAX_TOKENS)
    assert answer["duration"] == pytest.approx(3.0, abs=0.2)
    with LitaClient(url) as client:
        assert client.ask(video, QUESTION, max_tokens=int(MAX_TOKENS), greedy=True).text == answer["text"]


def test_ask_invalid_input_is_one_line(triton_server, sample_videos, tmp_path):
    bad = lita_client("ask", str(sample_videos["blue_2s"]), "q", "-u", triton_server.grpc_url, "--max-tokens", "0")
    assert bad.returncode == EXIT_ERROR
    assert_one_error_line(bad, "max_tokens must be > 0")
    missing = lita_client("ask", str(tmp_path / "nope.mp4"), "q", "-u", triton_server.grpc_url)
    assert missing.returncode == EXIT_ERROR
    assert_one_error_line(missing, "video file not found")


def test_batch_keeps_order_and_reports_bad_lines(triton_server, sample_videos, tmp_path):
    media = tmp_path / "media"
    (media / "clips").mkdir(parents=True)
    for name, path in sample_videos.items():
        (media / "clips" / path.name).write_bytes(path.read_bytes())
    (media / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(200))
    (tmp_path / "outside.mp4").write_bytes(sample_videos["red_3s"].read_bytes())
    lines = [
        {"video": "clips/red_3s.mp4", "text": QUESTION, "question_id": "q1", "category": "color"},
        {"video": "clips/moving_5s.mp4", "text": "What moves?", "question_id": "q2"},
        {"video": "clips/missing.mp4", "text": QUESTION, "question_id": "q3"},
        {"video": "corrupt.mp4", "text": QUESTION, "question_id": "q4"},
        {"video": "../outside.mp4", "text": QUESTION, "question_id": "q5"},
        {"video": "clips/blue_2s.mp4", "text": "What colour?", "question_id": "q6", "duration": 2.0},
    ]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    out = tmp_path / "answers.jsonl"

    proc = lita_client("batch", str(prompts), "--media-base-path", str(media), "--output", str(out),
                       "--concurrency", "3", "-u", triton_server.grpc_url, "--max-tokens", MAX_TOKENS, "--greedy")
    assert proc.returncode == EXIT_PARTIAL, proc.stderr
    assert "Traceback" not in proc.stderr and "3/6 answered, 3 failed" in proc.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["question_id"] for r in records] == [line["question_id"] for line in lines]
    failed = {r["question_id"]: r for r in records if "error" in r}
    assert set(failed) == {"q3", "q4", "q5"}
    assert "not found" in failed["q3"]["error"] and failed["q3"]["error_type"] == "VideoInputError"
    assert "not a readable video" in failed["q4"]["error"] and failed["q4"]["error_type"] == "InvalidRequestError"
    assert "'..'" in failed["q5"]["error"]
    for qid in ("q3", "q4", "q5"):
        assert f"question {qid}:" in proc.stderr
    with LitaClient(triton_server.grpc_url) as client:
        for record, line in zip(records, lines):
            if "error" in record:
                continue
            ref = client.ask(media / line["video"], line["text"], duration=line.get("duration"),
                             max_tokens=int(MAX_TOKENS), greedy=True)
            assert (record["answer"], record["raw_answer"]) == (ref.text, ref.raw_text)
            assert record["question"] == line["text"] and record.get("category") == line.get("category")


def test_health(triton_server):
    proc = lita_client("health", "-u", triton_server.grpc_url)
    assert proc.returncode == EXIT_OK and proc.stderr == ""
    assert "live=yes ready=yes" in proc.stdout and "model lita: ready=yes" in proc.stdout
    as_json = lita_client("health", "--url", triton_server.grpc_url, "--json")
    assert json.loads(as_json.stdout)["ok"] is True


def test_server_down_fails_fast_with_one_line():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"127.0.0.1:{s.getsockname()[1]}"
    start = time.monotonic()
    proc = lita_client("ask", "-u", url, "-t", "10", "--retries", "2", os.devnull, "q", timeout=30)
    assert time.monotonic() - start < 30
    assert proc.returncode == EXIT_ERROR and proc.stdout == ""
    assert_one_error_line(proc, f"cannot reach the LITA server at {url}")
    health = lita_client("health", "-u", url, "-t", "5", timeout=30)
    assert health.returncode == EXIT_ERROR and "live=no" in health.stdout
    assert_one_error_line(health, "cannot reach")


def test_bad_command_line_is_a_usage_error():
    proc = lita_client("ask", "only-a-video")
    assert proc.returncode == 2 and "usage:" in proc.stderr
