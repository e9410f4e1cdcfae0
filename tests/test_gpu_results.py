"""The GPU figures committed in ``docs/gpu_results.json`` (one ``make gpu-check`` on an H200): they
pass the check's own acceptance, and the README shows them as the check tables them."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.gpu_check import passed, results_table

ROOT = Path(__file__).resolve().parents[1]
REPORT = json.loads((ROOT / "docs" / "gpu_results.json").read_text())


def test_committed_run_is_an_h200_serving_through_tritonserver() -> None:
    assert "H200" in REPORT["gpu"] and REPORT["driver"] and REPORT["torch"].endswith("cu130")
    served = REPORT["lita_13b_served"]
    assert served["served_through_tritonserver"] is True
    assert served["preset"] == "lita-13b" and served["dtype"] == "float16" and served["frames"] == 100
    assert served["tokens_c1"] == [served["max_tokens"]] * len(served["tokens_c1"])  # every timed request ran in full
    demo = REPORT["demo_served"]
    assert demo["cpu"]["raw_answer"] == demo["cuda"]["raw_answer"] == REPORT["parity"]["reference_answer"]
    assert REPORT["checks"] == passed(REPORT) and all(REPORT["checks"].values()) and REPORT["ok"] is True


def test_decode_rate_is_against_the_bound_it_reports() -> None:
    served = REPORT["lita_13b_served"]
    bound = REPORT["bandwidth_measured_tbs"] * 1e12 / ((served["weight_gb_per_token"] + served["kv_gb_per_token"]) * 1e9)
    assert abs(bound - served["bound_tok_s_measured_bandwidth"]) < 1e-6 * bound
    assert served["decode_tok_s_c1"] / bound >= 0.6
    assert 3.5 < REPORT["bandwidth_measured_tbs"] < REPORT["bandwidth_published_tbs"]


def test_readme_table_is_the_reports() -> None:
    assert results_table(REPORT) in (ROOT / "README.md").read_text()
