"""The CUDA benchmark's CPU smoke path and its no-CUDA message; the ratio helper."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import gpu_13b, gpu_check
from benchmarks.common import compare


def test_gpu_benchmark_runs_tiny_on_cpu(tmp_path):
    out = tmp_path / "r.json"
    code = gpu_13b.main(["--device", "cpu", "--config", "tiny", "--frames", "8", "--new-tokens", "4",
                         "--repeat", "1", "--json", str(out)])
    assert code == 0
    r = json.loads(out.read_text())
    assert r["frames"] == 8 and r["new_tokens"] == 4
    assert r["visual_encoding_ms"] > 0 and r["ttft_ms"] > 0 and r["decode_tok_s"] > 0
    assert r["bandwidth_bound_tok_s"] == pytest.approx(
        r["bandwidth_tbs"] * 1e12 / ((r["weight_gb_per_token"] + r["kv_gb_per_token"]) * 1e9))


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_gpu_benchmark_without_cuda_exits_with_a_message(capsys):
    assert gpu_13b.main([]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_lita_13b_weight_bytes_match_vicuna_13b_size():
    from lita_serve.config import LitaConfig
    from lita_serve.llm.llama import LlamaDecoder

    with torch.device("meta"):
        decoder = LlamaDecoder(LitaConfig.from_name("lita-13b").text).half()
    assert 25.0e9 < gpu_13b.weight_bytes_per_token(decoder) < 26.5e9  # ~13.0B fp16 parameters minus embeddings


def test_compare_ratio_is_how_many_times_better():
    assert compare("t", "base", 2.0, 1.0, "s")["ratio"] == pytest.approx(2.0)
    assert compare("r", "base", 10.0, 15.0, "tok/s", higher_is_better=True)["ratio"] == pytest.approx(1.5)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_gpu_check_without_cuda_exits_2_with_one_line(capsys):
    assert gpu_check.main(["--out", "unused.json"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "CUDA is not available" in err


def test_gpu_check_parity_runs_on_cpu(tmp_path):
    """The parity step itself, with the CPU standing in for the GPU: fp32 is token-exact with itself,
    the reduced precisions stay within the logit tolerance."""
    from lita_serve.serving.demo import build_demo_repository

    repo = build_demo_repository(tmp_path / "repo", progress=False)
    report = gpu_check.parity(repo, device="cpu")
    assert report["float32"]["token_exact"] and report["float32"]["embeddings_max_abs_diff"] == 0
    assert report["float16"]["ok"] and report["bfloat16"]["ok"], report
    assert report["reference_ids"], "the demo model answers"


def test_process_tree_cpu_counts_a_busy_child():
    """The serving benchmark's CPU per request sums the server's process tree: a child that
    burns CPU shows up in its parent's tree and not in an unrelated pid's."""
    import os
    import subprocess
    import sys
    import time

    from lita_serve.serving.proc_stat import process_tree_cpu_seconds

    before = process_tree_cpu_seconds(os.getpid())
    child = subprocess.Popen([sys.executable, "-c",
                              "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.4: pass\n"
                              "time.sleep(30)"])
    try:
        deadline = time.monotonic() + 20
        while process_tree_cpu_seconds(child.pid) < 0.4 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert process_tree_cpu_seconds(child.pid) >= 0.4
        assert process_tree_cpu_seconds(os.getpid()) - before >= 0.4
    finally:
        child.kill()
        child.wait()


def test_throughput_limit_is_cores_over_cpu_per_request():
    from benchmarks.serving import throughput_limit

    r = throughput_limit(rate=3.0, concurrency=8, cpu_per_request=0.5, cores=2)
    assert r["limit_req_s"] == pytest.approx(4.0) and r["pct_of_limit"] == pytest.approx(75.0)
