"""`make demo` and `make eval` end to end: the committed demo model, built and served for real."""

from __future__ import annotations

import json

import pytest

from lita_serve.demo import run_demo
from lita_serve.evaluate.heldout import run_eval

pytestmark = pytest.mark.server


def test_demo_answers_about_the_generated_video(tmp_path):
    lines: list[str] = []
    result = run_demo(tmp_path / "repo", tmp_path / "work", printer=lines.append)
    assert result.segments, lines
    # both ends within one time-token bin (duration / (N - 1) seconds) of the truth
    assert result.within_one_bin and max(result.error_bins) <= 1.0, lines
    assert any(line.startswith("A: ") and "s" in line for line in lines)


def test_eval_on_the_heldout_set_beats_random(tmp_path):
    lines: list[str] = []
    result = run_eval(tmp_path / "repo", tmp_path / "work", printer=lines.append)
    overall = result.report.overall
    assert len(result.report.items) >= 100
    assert lines[-1].startswith("mIoU ") and " random " in lines[-1] and " R@0.5 " in lines[-1]
    report = json.loads((tmp_path / "work" / "report.json").read_text())
    assert report["lita"] == result.report.to_json()
    assert overall["mIoU"] >= 0.5, lines[-1]
    assert overall["mIoU"] > 1.5 * overall["random_mIoU"], lines[-1]
