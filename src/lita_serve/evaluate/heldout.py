"""``make eval``: held-out synthetic localization sets run through the real server, scored.

Two splits, each from a seed stream the demo model never trained on:

* ``training_look``: videos drawn in the look families used for training
  (:data:`lita_serve.data.looks.TRAINING_FAMILIES`);
* ``heldout_look``: videos drawn in a look family never used in training
  (:data:`lita_serve.data.looks.HELDOUT_FAMILIES`), to show whether the model localizes the
  shape or merely memorised the backgrounds it saw.

Every event of every video gives one "When does the <colour> <shape> appear?" question with
its exact span; the split is the question's ``category``. The prompt file uses the standard
prompt-file format (``video``, ``text``, ``duration``, ``question_id``, ``category`` plus
``start``/``end`` ground truth). Beside the model, answers that ignore the video are scored the
same way (:mod:`lita_serve.evaluate.baselines`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from lita_serve.data.looks import HELDOUT_FAMILIES, TRAINING_FAMILIES
from lita_serve.data.synthetic import questions_for
from lita_serve.evaluate.baselines import baseline_scores, baselines_line, mean_relative_span
from lita_serve.evaluate.scorer import ALL, Report, attach_predictions, read_prompt_file, score
from lita_serve.train.dataset import draw_specs, make_split

HELDOUT_SEED = 20_241_126  # distinct from the training streams (seed and seed + EVAL_SEED_OFFSET)
TRAINING_LOOK = "training_look"
HELDOUT_LOOK = "heldout_look"
# split name -> (look families, seed of its video stream)
SPLITS: dict[str, tuple[tuple[str, ...], int]] = {
    TRAINING_LOOK: (TRAINING_FAMILIES, HELDOUT_SEED),
    HELDOUT_LOOK: (HELDOUT_FAMILIES, HELDOUT_SEED + 1),
}


def write_heldout_set(out_dir: Path, num_videos: int = 60) -> Path:
    """Encode ``num_videos`` videos per split under ``out_dir/videos`` and write ``out_dir/prompts.jsonl``."""
    video_dir = out_dir / "videos"
    rows = []
    for split, (looks, seed) in SPLITS.items():
        for spec in make_split(video_dir, num_videos, seed, looks=looks):
            for q in questions_for(spec):
                if q["task"] != "event_localization":
                    continue
                start, end = q["answer"]
                rows.append({"question_id": f"q{len(rows):04d}", "video": Path(spec.path).name, "text": q["question"],
                             "duration": spec.duration_s, "category": split, "start": start, "end": end})
    prompts = out_dir / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return prompts


def training_relative_span() -> tuple[float, float]:
    """The demo model's training set's mean relative span (its spec stream, redrawn without encoding)."""
    from lita_serve.train.demo_training import DEFAULT_TRAIN_VIDEOS, TRAINING_DRAW  # noqa: PLC0415 - heavy, eval only

    specs = draw_specs(DEFAULT_TRAIN_VIDEOS, 0, **TRAINING_DRAW)
    return mean_relative_span((e.start_s, e.end_s, s.duration_s) for s in specs for e in s.events)


@dataclass
class EvalResult:
    report: Report
    strict: Report
    answers: Path
    wall_s: float
    baselines: dict[str, Any] = field(default_factory=dict)  # category -> baseline -> {"mIoU", "R@0.5"}


def evaluate_server(url: str, prompts: Path, media_base: Path, out_dir: Path, concurrency: int = 4,
                    max_tokens: int = 16) -> EvalResult:
    """Run ``prompts`` through the server at ``url`` and score the answers (LITA and strict policies)."""
    from lita_client.batch import run_batch

    answers = out_dir / "answers.jsonl"
    start = time.perf_counter()
    run_batch(prompts, media_base, answers, client_kwargs={"url": url}, concurrency=concurrency,
              sampling={"max_tokens": max_tokens})
    wall = time.perf_counter() - start
    predictions = {}
    for line in answers.read_text().splitlines():
        row = json.loads(line)
        predictions[str(row["question_id"])] = row.get("raw_answer") or ""
    records = attach_predictions(read_prompt_file(prompts), predictions)
    return EvalResult(score(records, "lita"), score(records, "strict"), answers, wall)


def run_eval(repository: Path, workdir: Path, num_videos: int = 60, printer: Callable[[str], None] = print,
             build: bool = True) -> EvalResult:
    """Build the demo repository (unless ``build`` is False), start the server, evaluate, stop."""
    from lita_serve.serving.demo import build_demo_repository
    from lita_serve.serving.launcher import Ports, TritonServer

    workdir.mkdir(parents=True, exist_ok=True)
    if build:
        build_demo_repository(repository)
    prompts = write_heldout_set(workdir, num_videos)
    printer(f"held-out sets: {sum(1 for _ in prompts.open())} questions on {num_videos} videos per split "
            f"({TRAINING_LOOK}: {', '.join(TRAINING_FAMILIES)}; {HELDOUT_LOOK}: {', '.join(HELDOUT_FAMILIES)}) -> {prompts}")
    with TritonServer(repository, ports=Ports.free(), log_path=workdir / "tritonserver.log") as server:
        result = evaluate_server(server.grpc_url, prompts, workdir / "videos", workdir)
    relative = training_relative_span()
    result.baselines = baseline_scores(result.report, relative)
    (workdir / "report.json").write_text(json.dumps(
        {"lita": result.report.to_json(), "strict": result.strict.to_json(), "wall_s": round(result.wall_s, 1),
         "baselines": result.baselines, "mean_relative_span": list(relative)},
        indent=2) + "\n")
    printer("LITA protocol (a missing span scores the whole video), averaged per video:")
    printer(result.report.table())
    printer("strict protocol (a missing span scores 0):")
    printer(result.strict.table())
    printer(f"answers: {result.answers}; report: {workdir / 'report.json'}; {result.wall_s:.1f} s through the server")
    for split in SPLITS:
        if split in result.report.categories:
            m = result.report.categories[split]
            printer(f"{split}: mIoU {m['mIoU']:.3f} R@0.5 {m['R@0.5']:.3f} ({m['count']} questions); "
                    + baselines_line(result.baselines[split]))
    printer(f"mean span = {relative[0]:.3f}-{relative[1]:.3f} of the duration; all questions: "
            + baselines_line(result.baselines[ALL]))
    printer(result.report.summary_line())
    return result
