"""`make demo` and `make eval` end to end: the committed demo model, built and served for real."""

from __future__ import annotations

import json

import pytest

from lita_serve.serving.demo import run_demo
from lita_serve.evaluate.baselines import best_baseline
from lita_serve.evaluate.heldout import HELDOUT_LOOK, TRAINING_LOOK, run_eval

pytestmark = pytest.mark.server


def test_demo_answers_about_the_generated_video(tmp_path):
    lines: list[str] = []
    result = run_demo(tmp_path / "repo", tmp_path / "work", printer=lines.append)
    assert result.segments, lines
    # both ends within one time-token bin (duration / (N - 1) seconds) of the truth
    assert result.within_one_bin and max(result.error_bins) <= 1.0, lines
    assert any(line.startswith("A: ") and "s" in line for line in lines)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """``make eval`` once for this module: (result, printed lines, work folder)."""
    tmp = tmp_path_factory.mktemp("eval")
    lines: list[str] = []
    return run_eval(tmp / "repo", tmp / "work", printer=lines.append), lines, tmp / "work"


def test_eval_reports_both_looks_and_every_baseline(evaluated):
    result, lines, work = evaluated
    assert len(result.report.items) >= 200
    assert lines[-1].startswith("mIoU ") and " random " in lines[-1] and " R@0.5 " in lines[-1]
    assert lines[-2].startswith("mean span = ") and "whole video" in lines[-2] and "random" in lines[-2]
    report = json.loads((work / "report.json").read_text())
    assert report["lita"] == result.report.to_json()
    assert set(report["baselines"]) == {TRAINING_LOOK, HELDOUT_LOOK, "all"}
    for split in (TRAINING_LOOK, HELDOUT_LOOK):
        assert result.report.categories[split]["count"] >= 100
        assert any(line.startswith(f"{split}: mIoU") and "whole video" in line for line in lines)


def test_demo_model_beats_every_baseline_on_both_looks(evaluated):
    result, lines, _ = evaluated
    for split in (TRAINING_LOOK, HELDOUT_LOOK):
        ours = result.report.categories[split]["mIoU"]
        best = best_baseline(result.baselines[split])
        assert ours > best["mIoU"], (split, ours, best)
