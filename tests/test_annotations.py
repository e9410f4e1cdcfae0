"""Public annotation readers and the LITA train.json converter, on small hand-written files."""

import json
import random

import pytest

from lita_serve.data.annotations import (
    convert_annotations, load_durations, read_activitynet, read_charades_sta, read_didemo,
)
from lita_serve.data.train_format import Annotation, to_train_entries
from lita_serve.errors import InvalidInputError

CHARADES = """\
AO8RW 0.0 6.9##a person is putting a book on a shelf.
AO8RW 5.2 3.1##end before start.
AO8RW 1.0 40.0##beyond the end of the video.
AO8RW abc 3.0##bad number.
AO8RW 1.0 2.0 no separator here
ZZZZZ 1.0 2.0##video without a duration.

AO8RW 2.0 4.0##
Y6R7T 10.5 19.8##person opens a door.
"""


def test_charades_sta_good_lines_and_problems(tmp_path):
    path = tmp_path / "charades_sta_test.txt"
    path.write_text(CHARADES)
    records, problems = read_charades_sta(path, {"AO8RW": 33.67, "Y6R7T": 20.0})
    assert records == [
        Annotation("AO8RW.mp4", 33.67, 0.0, 6.9, "a person is putting a book on a shelf.", "AO8RW"),
        Annotation("Y6R7T.mp4", 20.0, 10.5, 19.8, "person opens a door.", "Y6R7T"),
    ]
    assert len(problems) == 6
    assert problems[0].startswith("line 2:") and "end 3.1 < start 5.2" in problems[0]
    assert problems[1].startswith("line 3:") and "outside" in problems[1]
    assert problems[2].startswith("line 4:") and "not a number" in problems[2]
    assert problems[3].startswith("line 5:") and "##" in problems[3]
    assert problems[4].startswith("line 6:") and "no duration" in problems[4]
    assert problems[5].startswith("line 8:") and "sentence" in problems[5]


def test_charades_tolerance_clamps_small_overshoot(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("V1 0.0 20.04##slight overshoot.\n")
    assert read_charades_sta(path, {"V1": 20.0})[0] == []
    records, problems = read_charades_sta(path, {"V1": 20.0}, tolerance=0.1)
    assert problems == [] and records[0].end == 20.0


def test_load_durations_json_and_charades_csv(tmp_path):
    j = tmp_path / "d.json"
    j.write_text(json.dumps({"AO8RW": 33.67}))
    c = tmp_path / "Charades_v1_test.csv"
    c.write_text("id,subject,scene,length\nAO8RW,HR43,Kitchen,33.67\nY6R7T,HR43,Hall,20.00\n")
    assert load_durations(j) == {"AO8RW": 33.67}
    assert load_durations(c) == {"AO8RW": 33.67, "Y6R7T": 20.0}
    bad = tmp_path / "bad.csv"
    bad.write_text("video,seconds\nA,1\n")
    with pytest.raises(InvalidInputError):
        load_durations(bad)


ACTIVITYNET = """\
{
  "v_good": {
    "duration": 82.73,
    "timestamps": [[0.83, 19.86], [17.37, 60.81]],
    "sentences": ["A woman is seen speaking.", " She then paints her nails. "]
  },
  "v_bad_event": {"duration": 50.0, "timestamps": [[10, 5], [1, 2], [3, 70], ["x", 4]],
                  "sentences": ["reversed", "fine", "too long", "not a number"]},
  "v_no_duration": {"timestamps": [[1, 2]], "sentences": ["a"]},
  "v_mismatch": {"duration": 10, "timestamps": [[1, 2], [3, 4]], "sentences": ["only one"]},
  "rtl_vid": {"duration": 120.0, "QA": [
      {"q": "When does the man start to run and why?", "a": "<12.5> <30> He hears the whistle."},
      {"q": "Missing span?", "a": "no timestamps here"}]}
}
"""


def test_activitynet_captions_and_rtl(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(ACTIVITYNET)
    records, problems = read_activitynet(path)
    by_vid = {}
    for r in records:
        by_vid.setdefault(r.video_id, []).append(r)
    assert [(r.start, r.end, r.text) for r in by_vid["v_good"]] == [
        (0.83, 19.86, "A woman is seen speaking."), (17.37, 60.81, "She then paints her nails.")]
    assert by_vid["v_good"][0].video == "v_good.mp4" and by_vid["v_good"][0].duration == 82.73
    assert [(r.start, r.end) for r in by_vid["v_bad_event"]] == [(1.0, 2.0)]
    assert [r.text for r in by_vid["v_mismatch"]] == ["only one"]
    rtl = by_vid["rtl_vid"]
    assert len(rtl) == 1
    assert (rtl[0].start, rtl[0].end) == (12.5, 30.0)
    assert rtl[0].question == "When does the man start to run and why?"
    assert rtl[0].explanation == "He hears the whistle."
    # line numbers point at each video's entry
    assert sum(p.startswith("line 7:") for p in problems) == 3  # three bad events of v_bad_event
    assert any(p.startswith("line 9:") and "duration" in p for p in problems)
    assert any(p.startswith("line 10:") and "1 sentences" in p for p in problems)
    assert any(p.startswith("line 11:") and "QA 1" in p for p in problems)
    assert len(problems) == 6


def test_invalid_json_reports_its_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{\n  "v_a": {"duration": 10, "timestamps": [[1, 2]], "sentences": ["ok"]},\n  "v_b": {oops}\n}\n')
    records, problems = read_activitynet(path)
    assert [r.video_id for r in records] == ["v_a"]
    assert len(problems) == 1 and problems[0].startswith("line 3:")


DIDEMO = """\
[
  {"video": "1234@N00_abc.mov", "description": "the dog jumps", "times": [[1, 1], [1, 2], [1, 2], [0, 1]],
   "num_segments": 6, "annotation_id": 1},
  {"video": "short.mp4", "description": "the car leaves", "times": [[5, 5], [4, 5]], "annotation_id": 2},
  {"video": "bad.mp4", "description": "reversed", "times": [[3, 1]]},
  {"video": "bad2.mp4", "description": "beyond five chunks", "times": [[5, 5]], "num_segments": 5},
  {"video": "bad3.mp4", "times": [[0, 0]]},
  {"video": "bad4.mp4", "description": "float chunk", "times": [[0.5, 1]]}
]
"""


def test_didemo_chunks_consensus_and_problems(tmp_path):
    path = tmp_path / "val_data.json"
    path.write_text(DIDEMO)
    records, problems = read_didemo(path, durations={"short": 28.2})
    assert records == [
        Annotation("1234@N00_abc.mov", 30.0, 5.0, 15.0, "the dog jumps", "1234@N00_abc"),  # (1,2) twice
        Annotation("short.mp4", 28.2, 25.0, 28.2, "the car leaves", "short"),  # tie -> first listed (5,5)
    ]
    assert [p.split(":")[0] for p in problems] == ["line 5", "line 6", "line 7", "line 8"]
    assert "0 <= a <= b" in problems[0] and "< 5" in problems[1]
    assert "description" in problems[2] and "chunk indices" in problems[3]


def _ann(start, end, text="The man opens the door.", vid="v1", duration=99.0):
    return Annotation(f"{vid}.mp4", duration, start, end, text, vid)


def test_event_localization_entry_structure():
    entries = to_train_entries([_ann(12.0, 40.0)], "event_localization", seed=3)
    assert len(entries) == 1
    e = entries[0]
    assert set(e) == {"id", "video", "conversations", "durations"}
    assert e["id"] == "v1_0" and e["video"] == "v1.mp4" and e["durations"] == 99.0
    human, gpt = e["conversations"]
    assert human["from"] == "human" and gpt["from"] == "gpt"
    assert human["value"].startswith("<video>\n")
    assert '"the man opens the door"' in human["value"]
    assert gpt["value"] == "<t12> <t40>"  # duration 99 with 100 tokens: one token per second


def test_time_tokens_for_known_seconds():
    # 200 s video, 100 tokens: round(99 * 10 / 200) = round(4.95) = 5; round(99 * 15 / 200) = 7
    e = to_train_entries([_ann(10.0, 15.0, duration=200.0)], "event_localization")[0]
    assert e["conversations"][1]["value"] == "<t5> <t7>"
    e = to_train_entries([_ann(0.0, 200.0, duration=200.0)], "event_localization", num_time_tokens=10)[0]
    assert e["conversations"][1]["value"] == "<t0> <t9>"


def test_dense_captioning_orders_events_per_video():
    records = [_ann(50.0, 60.0, "Then he leaves."), _ann(12.0, 40.0, "A man enters."),
               _ann(0.0, 9.0, "Other video.", vid="v2")]
    entries = to_train_entries(records, "dense_captioning", seed=0)
    assert [e["id"] for e in entries] == ["v1", "v2"]
    assert entries[0]["conversations"][1]["value"] == "<t12> <t40> A man enters. <t50> <t60> Then he leaves."
    assert entries[0]["conversations"][0]["value"].startswith("<video>\n")
    assert "timestamps" in entries[0]["conversations"][0]["value"]


def test_event_classification_and_reasoning():
    e = to_train_entries([_ann(12.0, 40.0)], "event_classification")[0]
    human, gpt = e["conversations"]
    assert "<t12>" in human["value"] and "<t40>" in human["value"]
    assert human["value"].index("<t12>") < human["value"].index("<t40>")
    assert gpt["value"] == "The man opens the door."
    rtl = Annotation("v.mp4", 99.0, 3.0, 9.0, "Why?", "v", question="Why does he run?", explanation="He is late.")
    e = to_train_entries([rtl], "reasoning")[0]
    assert e["conversations"][0]["value"] == "<video>\nWhy does he run?"
    assert e["conversations"][1]["value"] == "<t3> <t9> He is late."
    with pytest.raises(InvalidInputError):
        to_train_entries([_ann(1.0, 2.0)], "reasoning")
    with pytest.raises(InvalidInputError):
        to_train_entries([_ann(1.0, 2.0)], "captions")


def test_template_choice_is_seeded():
    records = [_ann(float(i), float(i + 1), vid=f"v{i}") for i in range(30)]
    a = to_train_entries(records, "event_localization", seed=7)
    b = to_train_entries(records, "event_localization", seed=7)
    c = to_train_entries(records, "event_localization", seed=8)
    assert a == b
    assert a != c
    questions = {e["conversations"][0]["value"].split('"')[0] for e in a}
    assert len(questions) > 1  # more than one template in use
    assert random.Random(7).random() == random.Random(7).random()


def test_convert_annotations_end_to_end(tmp_path):
    txt = tmp_path / "charades.txt"
    txt.write_text(CHARADES)
    durations = tmp_path / "durations.json"
    durations.write_text(json.dumps({"AO8RW": 33.67, "Y6R7T": 20.0}))
    out = tmp_path / "out" / "train.json"
    summary = convert_annotations("charades-sta", txt, out, "event_localization", durations, 100)
    assert summary["records"] == 2 and summary["videos"] == 2 and summary["entries"] == 2
    assert summary["problem_count"] == 6 and len(summary["problems"]) == 6
    written = json.loads(out.read_text())
    assert [e["id"] for e in written] == ["AO8RW_0", "Y6R7T_0"]
    # 20 s video: round(99 * 10.5 / 20) = 52, round(99 * 19.8 / 20) = 98
    assert written[1]["conversations"][1]["value"] == "<t52> <t98>"
    with pytest.raises(InvalidInputError):
        convert_annotations("charades-sta", txt, out, "event_localization", None, 100)
    with pytest.raises(InvalidInputError):
        convert_annotations("youcook", txt, out, "event_localization", durations, 100)
