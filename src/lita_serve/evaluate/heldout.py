"""``make eval``: a held-out synthetic localization set run through the real server, scored.

Held-out videos come from a seed stream the demo model never trained on. Every event of every
video gives one "When does the <colour> <shape> appear?" question with its exact span; the
prompt file uses the standard prompt-file format (``video``, ``text``, ``duration``,
``question_id``, ``category`` plus ``start``/``end`` ground truth).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lita_serve.data.synthetic import questions_for
from lita_serve.evaluate.scorer import Report, attach_predictions, read_prompt_file, score
from lita_serve.train.dataset import make_split

HELDOUT_SEED = 20_241_126  # distinct from the training streams (seed and seed + EVAL_SEED_OFFSET)


def write_heldout_set(out_dir: Path, num_videos: int = 60, seed: int = HELDOUT_SEED) -> Path:
    """Encode ``num_videos`` videos under ``out_dir/videos`` and write ``out_dir/prompts.jsonl``."""
    video_dir = out_dir / "videos"
    specs = make_split(video_dir, num_videos, seed)
    rows = []
    for spec in specs:
        for q in questions_for(spec):
            if q["task"] != "event_localization":
                continue
            start, end = q["answer"]
            rows.append({"question_id": f"q{len(rows):04d}", "video": Path(spec.path).name, "text": q["question"],
                         "duration": spec.duration_s, "category": q["task"], "start": start, "end": end})
    prompts = out_dir / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return prompts


@dataclass
class EvalResult:
    report: Report
    strict: Report
    answers: Path
    wall_s: float


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
    from lita_serve.demo import build_demo_repository
    from lita_serve.launcher import Ports, TritonServer

    workdir.mkdir(parents=True, exist_ok=True)
    if build:
        build_demo_repository(repository)
    prompts = write_heldout_set(workdir, num_videos)
    printer(f"held-out set: {sum(1 for _ in prompts.open())} questions on {num_videos} videos -> {prompts}")
    with TritonServer(repository, ports=Ports.free(), log_path=workdir / "tritonserver.log") as server:
        result = evaluate_server(server.grpc_url, prompts, workdir / "videos", workdir)
    (workdir / "report.json").write_text(json.dumps(
        {"lita": result.report.to_json(), "strict": result.strict.to_json(), "wall_s": round(result.wall_s, 1)},
        indent=2) + "\n")
    printer("LITA protocol (a missing span scores the whole video), averaged per video:")
    printer(result.report.table())
    printer("strict protocol (a missing span scores 0):")
    printer(result.strict.table())
    printer(f"answers: {result.answers}; report: {workdir / 'report.json'}; {result.wall_s:.1f} s through the server")
    printer(result.report.summary_line())
    return result
