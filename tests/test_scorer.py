"""Temporal metrics, span policies, averaging, the random baseline and the scorer's files."""

import json
import math
import re

import pytest

from lita_serve.errors import InvalidInputError
from lita_serve.evaluate.metrics import (
    SpanPolicy, answer_times, average, random_baseline_ious, recall_at_1, temporal_iou,
)
from lita_serve.evaluate.scorer import (
    attach_predictions, read_predictions, read_prompt_file, read_rtl_eval, score, write_prompt_file,
)


def test_temporal_iou_hand_computed():
    assert temporal_iou((0, 10), (5, 15)) == pytest.approx(5 / 15)
    assert temporal_iou((2, 8), (0, 10)) == pytest.approx(0.6)
    assert temporal_iou((0, 10), (0, 10)) == 1.0
    assert temporal_iou((0, 4), (6, 10)) == 0.0
    assert temporal_iou((3, 3), (3, 3)) == 0.0  # empty union
    with pytest.raises(InvalidInputError):
        temporal_iou((5, 1), (0, 10))


def test_recall_at_thresholds():
    ious = [0.2, 0.3, 0.5, 0.69, 0.7, 0.9]
    assert recall_at_1(ious, 0.3) == pytest.approx(5 / 6)
    assert recall_at_1(ious, 0.5) == pytest.approx(4 / 6)
    assert recall_at_1(ious, 0.7) == pytest.approx(2 / 6)
    assert recall_at_1([], 0.5) == 0.0


def test_answer_times_in_every_supported_form():
    # 99 s video, 100 tokens: <tK> is K seconds
    assert answer_times("<t12> <t40> the man runs", 99.0) == [12.0, 40.0]
    assert answer_times("It happens at 12.3s and ends at 20s.", 99.0) == [12.3, 20.0]
    assert answer_times("12.3 - 20.0 seconds", 99.0) == [12.3, 20.0]
    assert answer_times("from 5 to 10 sec", 99.0) == [5.0, 10.0]
    assert answer_times("<12.5> <30> He hears the whistle.", 99.0) == [12.5, 30.0]
    assert answer_times("two sheeps and 3 dogs", 99.0) == []


def test_span_policy_sorts_clamps_and_handles_missing():
    lita, strict = SpanPolicy("lita"), SpanPolicy("strict")
    assert lita.extract("<t40> <t12>", 99.0) == (12.0, 40.0)
    assert lita.extract("from 90s to 150s", 99.0) == (90.0, 99.0)
    assert lita.extract("only <t5>", 99.0) is None
    gt = (20.0, 40.0)
    # missing span: LITA scores the whole video, IoU = 20 / 100; strict scores 0
    assert lita.iou(None, gt, 100.0) == pytest.approx(0.2)
    assert strict.iou(None, gt, 100.0) == 0.0
    assert lita.iou((20.0, 40.0), gt, 100.0) == strict.iou((20.0, 40.0), gt, 100.0) == 1.0
    with pytest.raises(InvalidInputError):
        SpanPolicy("timechat")


def _rec(qid, video, gt, text, duration=100.0, category="rtl"):
    return {"question_id": qid, "video": video, "duration": duration, "category": category,
            "gt": gt, "prediction_text": text}


def test_video_vs_question_averaging_differs():
    # video A: three perfect answers; video B: one answer with IoU 0
    records = [_rec(1, "A", (0, 10), "0s - 10s"), _rec(2, "A", (10, 20), "10s - 20s"),
               _rec(3, "A", (20, 30), "20s - 30s"), _rec(4, "B", (0, 10), "50s - 60s")]
    per_video = score(records, "lita", average="video").overall
    per_question = score(records, "lita", average="question").overall
    assert per_video["mIoU"] == pytest.approx(0.5)      # mean(1, 0)
    assert per_question["mIoU"] == pytest.approx(0.75)  # mean(1, 1, 1, 0)
    assert per_video["R@0.5"] == pytest.approx(0.5) and per_question["R@0.5"] == pytest.approx(0.75)
    assert average([1.0, 0.0], ["x", "y"], "video") == 0.5
    with pytest.raises(InvalidInputError):
        average([1.0], ["x"], "median")


def test_lita_vs_strict_on_a_missing_span():
    records = [_rec(1, "A", (20, 40), "I could not tell."), _rec(2, "B", (0, 50), "<t0> <t49>", duration=99.0)]
    lita = score(records, "lita")
    strict = score(records, SpanPolicy("strict"))
    assert lita.items[0].span is None and lita.items[0].iou == pytest.approx(0.2)
    assert strict.items[0].iou == 0.0
    assert lita.items[1].iou == strict.items[1].iou == pytest.approx(49 / 50)
    assert lita.overall["missing_span"] == strict.overall["missing_span"] == 1
    assert lita.overall["mIoU"] == pytest.approx((0.2 + 0.98) / 2)
    assert strict.overall["mIoU"] == pytest.approx(0.98 / 2)


def test_random_baseline_is_seeded():
    gts, durations = [(10.0, 30.0)] * 50, [60.0] * 50
    a = random_baseline_ious(gts, durations, seed=1)
    assert a == random_baseline_ious(gts, durations, seed=1)
    assert a != random_baseline_ious(gts, durations, seed=2)
    assert all(0.0 <= x <= 1.0 for x in a) and 0.05 < sum(a) / len(a) < 0.6
    records = [_rec(i, f"v{i}", (10, 30), "<t0> <t99>") for i in range(20)]
    r1, r2 = score(records, seed=5), score(records, seed=5)
    assert [it.random_iou for it in r1.items] == [it.random_iou for it in r2.items]
    assert r1.overall["random_mIoU"] != score(records, seed=6).overall["random_mIoU"]


def test_summary_line_table_and_json():
    records = [_rec(1, "A", (0, 10), "0s - 10s", category="rtl"),
               _rec(2, "B", (0, 10), "5s - 15s", category="charades")]
    report = score(records, "lita", seed=0)
    line = report.summary_line()
    assert re.fullmatch(r"mIoU \d\.\d{3} random \d\.\d{3} R@0\.5 \d\.\d{3}", line)
    # IoUs 1 and 1/3 -> mIoU 0.667; R@0.5: 1 of 2
    assert line.startswith("mIoU 0.667 random ") and line.endswith(" R@0.5 0.500")
    assert f"random {report.overall['random_mIoU']:.3f}" in line
    table = report.table()
    assert table.splitlines()[0].split()[0] == "category"
    assert [ln.split()[0] for ln in table.splitlines()[1:4]] == ["charades", "rtl", "all"]
    data = report.to_json()
    json.dumps(data)  # serialisable
    assert data["summary"] == line and data["policy"] == "lita" and data["average"] == "video"
    assert set(data["categories"]) == {"rtl", "charades", "all"}
    assert data["categories"]["charades"]["mIoU"] == pytest.approx(1 / 3)
    assert data["items"][1]["span"] == [5.0, 15.0]


def test_score_rejects_malformed_records():
    with pytest.raises(InvalidInputError, match="question 7"):
        score([{"question_id": 7, "video": "A", "duration": 10.0, "gt": (5, 20), "prediction_text": ""}])
    with pytest.raises(InvalidInputError, match="missing"):
        score([{"question_id": 1, "video": "A", "gt": (0, 1)}])


def test_prompt_file_and_predictions_round_trip(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        json.dumps({"video": "a.mp4", "text": "When does the dog jump?", "duration": 99.0,
                    "question_id": 0, "category": "charades", "start": 12, "end": 40}) + "\n"
        + json.dumps({"video": "b.mp4", "text": "When does it rain?", "duration": 60.0,
                      "question_id": 1, "category": "anet", "timestamps": [[30, 60]]}) + "\n")
    gt = read_prompt_file(prompts)
    assert [r["gt"] for r in gt] == [(12, 40), [[30, 60]]]
    preds = tmp_path / "preds.jsonl"
    preds.write_text(json.dumps({"question_id": 0, "text": "<t12> <t40>"}) + "\n"
                     + json.dumps({"question_id": 1, "prediction_text": "30.0s - 45.0s"}) + "\n")
    report = score(attach_predictions(gt, read_predictions(preds)), "strict", average="question")
    assert [it.iou for it in report.items] == [pytest.approx(1.0), pytest.approx(0.5)]
    again = tmp_path / "again.jsonl"
    write_prompt_file(gt[:1], again)
    assert read_prompt_file(again)[0]["gt"] == (12.0, 40.0)
    # a question without a prediction scores as a missing span
    assert score(attach_predictions(gt, {}), "strict").overall["mIoU"] == 0.0
    no_gt = tmp_path / "no_gt.jsonl"
    no_gt.write_text(json.dumps({"video": "a.mp4", "text": "q", "duration": 9.0}) + "\n")
    with pytest.raises(InvalidInputError, match="ground truth"):
        read_prompt_file(no_gt)


def test_rtl_eval_file(tmp_path):
    path = tmp_path / "annot_val_1_q229.json"
    path.write_text(json.dumps([
        {"vid": "QOlSCBRmfWY", "question_id": "q0", "question": "When does she dance and why?",
         "answer": "<30.2> <12.1> She hears the music.", "duration": 82.73},
        {"vid": "abc", "question_id": "q1", "question": "When?", "answer": "<0> <100.5> all of it", "duration": 90.0},
    ]))
    gt = read_rtl_eval(path)
    assert gt[0]["video"] == "v_QOlSCBRmfWY.mp4" and gt[0]["category"] == "rtl"
    assert gt[0]["gt"] == (12.1, 30.2)
    assert gt[1]["gt"] == (0.0, 90.0)  # clamped to the duration, as LITA does
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"vid": "x", "question": "q", "answer": "no span", "duration": 5}]))
    with pytest.raises(InvalidInputError, match="two timestamps"):
        read_rtl_eval(bad)
    report = score(attach_predictions(gt, {"q0": "<t15> <t36>", "q1": ""}), "lita")
    assert report.items[1].iou == pytest.approx(1.0)  # missing span -> whole video == gt
    assert math.isfinite(report.overall["mIoU"])
