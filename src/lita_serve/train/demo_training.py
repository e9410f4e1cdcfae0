"""``lita train-demo``: train a small LITA model on synthetic event videos, evaluate it, save it.

Steps: encode train and held-out videos (different seeds, so no held-out video or event is
seen in training), drawn in the training look families of :mod:`lita_serve.data.looks` (grey
and coloured backgrounds, gradients, textures, moving stripes/bars/test cards, brightness
swings, camera noise and blur), so that the model learns the shapes rather than one background; train a tiny SentencePiece model on the prompts and convert it for LITA 1.0
(``<t0>..<t99>``); pretrain the vision tower on what is on screen in frames of the training
videos and of 6000 further videos that are drawn but not encoded (thousands of looks, cheaply;
:mod:`lita_serve.train.tower`, standing in for CLIP's pretraining) and freeze it; cache
its pooled features of every training video (decoded once); install the position-aware
initialisation (:mod:`lita_serve.train.position_init`); train projector + decoder with AdamW on
"When does X appear?" -> "<ta> <tb>" plus the auxiliary losses of :mod:`lita_serve.train.loop`
(frame time tokens, colours on screen, two heads taught to read the question's colour and shape
words, and one head taught to look at the asked event -- most of all its first frame and the frame after it --
and to copy that frame's time token); then evaluate the served path on the held-out set
(frames -> ``encode_video`` -> server prompt ids -> greedy ``generate`` -> decode ->
:func:`lita_serve.evaluate.score`, LITA policy, plus the boundaries' precision in time-token
bins) and write the checkpoint in the released HF layout plus ``tokenizer.model`` and
``manifest.json``.
"""

from __future__ import annotations

import json
import logging
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from lita_build.checkpoint.random_init import build_random_model
from lita_build.checkpoint.hf import load_lita, save_hf_checkpoint
from lita_build.checkpoint.vocab import DEFAULT_VOCAB_MULTIPLE, padded_vocab_size
from lita_serve.config import LitaConfig
from lita_serve.llm.generate import generate
from lita_serve.llm.sampling_params import SamplingParams
from lita_serve.vision_encoder.visual_tokens import num_visual_tokens
from lita_serve.evaluate import Report, score
from lita_serve.engine.model import LitaModel
from lita_serve.text.prompt import build_input_ids
from lita_serve.text.time_tokens import seconds_to_index
from lita_serve.text.tokenizer import LitaTokenizer, convert_tokenizer, train_tiny_sentencepiece
from lita_serve.data.looks import TRAINING_FAMILIES
from lita_serve.data.synthetic import VideoSpec
from lita_serve.train.dataset import (
    SampledClip, cache_features, draw_specs, localization_examples, localization_items, make_split, sample_split,
    tokenizer_texts, with_vocab,
)
from lita_serve.train.loop import TrainSettings, train
from lita_serve.train.position_init import init_position_head
from lita_serve.train.tower import TowerSettings, collect_frames, pretrain_tower, probe_accuracy, rendered_frames

log = logging.getLogger(__name__)

DEMO_PRESET = "demo"
TOKENIZER_FILE = "tokenizer.model"
MANIFEST_FILE = "manifest.json"
BASE_VOCAB_SIZE = 600  # SentencePiece pieces (256 of them byte fallback) before LITA's 110 added tokens
EVAL_SEED_OFFSET = 1_000_003  # held-out videos come from a different seed stream than training
ANSWER_MAX_TOKENS = 16
BIN_TOLERANCES = (1, 2)  # boundary precision reported in the manifest, in time-token bins
DEFAULT_TRAIN_VIDEOS = 1500
DEFAULT_EVAL_VIDEOS = 60  # ~2 events each: >= 100 held-out questions
TOWER_VIDEOS = 600  # training videos whose frames pretrain the vision tower
TOWER_FRAMES_PER_VIDEO = 25
TOWER_RENDERED_VIDEOS = 6000  # further videos, drawn but not encoded, whose frames pretrain the tower
TOWER_RENDERED_FRAMES = 10
TOWER_SEED_OFFSET = 2_000_003  # their own seed stream: none of them is a training or held-out video
CLASSIC_SHARE = 0.2  # training videos kept in the generator's classic dark grey look (the demo video's)
# how the training split and the trainer's held-out split are drawn (draw_specs / make_split keywords)
TRAINING_DRAW: dict[str, Any] = {"looks": TRAINING_FAMILIES, "classic_share": CLASSIC_SHARE}
TOWER_STEPS = 6000  # a fixed count keeps the stage deterministic
DECODER_STEPS = 1800  # the time budget only caps slower machines
ATTEND_SPREAD = 0.6  # share of the lookup head's target spread over the asked event's frames (train.loop)
DEFAULT_MAX_MINUTES = 60.0  # cap on the two training stages together: the step counts end them here
DEFAULT_THREADS = 2  # the shipped model was trained on two threads; the count is part of what makes a run reproducible
REGENERATE_COMMAND = "python -m lita_serve.train.demo_training --out assets/demo --seed {seed}"


def regenerate_command(seed: int, preset: str = DEMO_PRESET) -> str:
    """The command line that regenerates the demo assets (``--preset`` only when not the default)."""
    command = REGENERATE_COMMAND.format(seed=seed)
    return command if preset == DEMO_PRESET else f"{command} --preset {preset}"


def _say(message: dict[str, Any], printer: Callable[[str], None] | None) -> None:
    if printer is not None:
        printer(json.dumps(message))


def build_tokenizer(specs: list[VideoSpec], work_dir: Path, version: str, num_time_tokens: int) -> Path:
    """Train a tiny SentencePiece model on the videos' prompts and add LITA's tokens; returns its path."""
    base = train_tiny_sentencepiece(tokenizer_texts(specs), work_dir / "base.model", vocab_size=BASE_VOCAB_SIZE)
    out = work_dir / TOKENIZER_FILE
    convert_tokenizer(base, out, version=version, num_time_tokens=num_time_tokens)
    return out


def answer_question(model: LitaModel, tokenizer: LitaTokenizer, table: torch.Tensor, question: str) -> str:
    """The served path for one question: server prompt ids -> greedy generate -> decoded text."""
    cfg = model.config
    ids = build_input_ids(tokenizer, question, table.shape[0], cfg.text.vocab_size, cfg.lita.visual_token_format)
    out = generate(model.decoder, ids, table, SamplingParams(max_tokens=ANSWER_MAX_TOKENS, greedy=True),
                   eos_id=tokenizer.eos_id)
    return tokenizer.decode(out)


def evaluate_clips(model: LitaModel, tokenizer: LitaTokenizer, clips: list[SampledClip], seed: int = 0) -> Report:
    """Answer every localization question of ``clips`` from their frames and score (LITA policy)."""
    tables = [model.encode_video(torch.from_numpy(c.frames)) for c in clips]  # each [N_vis,H]
    records = []
    for n, item in enumerate(localization_items(clips)):
        text = answer_question(model, tokenizer, tables[item["video_index"]], item["question"])
        records.append({"question_id": str(n), "video": f"heldout_{item['video_index']}",
                        "duration": item["duration"], "gt": item["gt"], "prediction_text": text})
    return score(records, policy="lita", average="video", seed=seed)


def report_metrics(report: Report) -> dict[str, Any]:
    """The overall numbers of a report, rounded for the manifest."""
    o = report.overall
    keys = ("count", "videos", "missing_span", "mIoU", "R@0.3", "R@0.5", "R@0.7", "random_mIoU", "random_R@0.5")
    return {k: (round(o[k], 4) if isinstance(o[k], float) else o[k]) for k in keys}


def boundary_bin_accuracy(report: Report, num_time_tokens: int,
                          tolerances: tuple[int, ...] = BIN_TOLERANCES) -> dict[str, float]:
    """Fraction of predicted boundaries (starts and ends alike) within ``k`` time-token bins of the truth.

    A bin is ``duration / (N - 1)``; both the prediction and the ground truth are mapped to their
    nearest bin index (``seconds_to_index``), so "within 0" means the same token. An answer without
    a span counts as two misses. Plain fraction over all ``2 * count`` boundaries.
    """
    errors = []  # |predicted bin - true bin| per boundary; None for a missing span
    for item in report.items:
        for b in (0, 1):
            if item.span is None:
                errors.append(None)
                continue
            pred = seconds_to_index(item.span[b], item.duration, num_time_tokens)
            errors.append(abs(pred - seconds_to_index(item.gt[b], item.duration, num_time_tokens)))
    total = max(1, len(errors))
    return {f"within_{k}_bin": round(sum(e is not None and e <= k for e in errors) / total, 4) for k in tolerances}


def _save(model: LitaModel, tokenizer_path: Path, tokenizer: LitaTokenizer, out_dir: Path) -> None:
    save_hf_checkpoint(model, out_dir, safetensors=True,
                       extra_config={"time_token_ids": list(tokenizer.time_token_ids)})
    shutil.copyfile(tokenizer_path, out_dir / TOKENIZER_FILE)


def _pretrain_tower(model: LitaModel, specs: list[VideoSpec], cfg: LitaConfig, seed: int, seconds: float,
                    printer: Callable[[str], None] | None) -> dict[str, Any]:
    """Pretrain the vision tower on frames of the first training videos; returns its manifest entry."""
    encoded = collect_frames(specs[:TOWER_VIDEOS], cfg, TOWER_FRAMES_PER_VIDEO)  # [N,3,S,S], [N,K]
    drawn = rendered_frames(draw_specs(TOWER_RENDERED_VIDEOS, seed + TOWER_SEED_OFFSET, looks=TRAINING_FAMILIES),
                            cfg, TOWER_RENDERED_FRAMES)
    frames, labels = torch.cat([encoded[0], drawn[0]]), torch.cat([encoded[1], drawn[1]])
    tower = model.encoder.vision_tower
    before = probe_accuracy(tower, frames, labels)
    result = pretrain_tower(tower, frames, labels, TowerSettings(seed=seed, max_steps=TOWER_STEPS, max_seconds=seconds),
                            on_log=lambda m: _say({"phase": "tower", **m}, printer))
    entry = {"frames": int(frames.shape[0]), "steps": result.steps, "wall_s": round(result.wall_s, 1),
             "probe_exact_before": round(before, 4),
             "probe_exact_after": round(probe_accuracy(tower, frames, labels), 4)}
    _say({"phase": "tower_done", **entry}, printer)
    return entry


def train_demo(out_dir: Path, *, seed: int = 0, max_minutes: float = DEFAULT_MAX_MINUTES, num_videos: int = DEFAULT_TRAIN_VIDEOS,
               eval_videos: int = DEFAULT_EVAL_VIDEOS, printer: Callable[[str], None] | None = print,
               settings: TrainSettings | None = None, preset: str = DEMO_PRESET,
               threads: int = DEFAULT_THREADS) -> dict[str, Any]:
    """Generate data, train, evaluate on held-out videos, save into ``out_dir``; returns the manifest.

    Deterministic given ``seed`` and ``threads`` as long as both stages finish their fixed step
    counts inside ``max_minutes`` (``stopped_by`` in the manifest says which limit ended training).

    The manifest holds the seed, sizes, training wall time, held-out metrics (mIoU,
    R@0.3/0.5/0.7, the random-segment baseline, the fraction of predicted boundaries within 1 and
    2 time-token bins of the truth) and the torch version; it is also written as
    ``out_dir/manifest.json``. Progress is printed as one JSON object per line.
    """
    torch.manual_seed(seed)
    # Matmul reductions split differently with another thread count, so the count is part of
    # what makes a run reproducible. On cores shared with other jobs, one thread can be faster.
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _train_demo(Path(out_dir), seed, max_minutes, num_videos, eval_videos, printer, settings, preset)
    finally:
        torch.set_num_threads(before)


def _train_demo(out_dir: Path, seed: int, max_minutes: float, num_videos: int, eval_videos: int,
                printer: Callable[[str], None] | None, settings: TrainSettings | None,
                preset: str) -> dict[str, Any]:
    base_cfg = LitaConfig.from_name(preset)
    with tempfile.TemporaryDirectory(prefix="lita-train-demo-") as tmp:
        work = Path(tmp)
        start = time.perf_counter()
        train_specs = make_split(work / "train", num_videos, seed, **TRAINING_DRAW)
        eval_specs = make_split(work / "heldout", eval_videos, seed + EVAL_SEED_OFFSET, **TRAINING_DRAW)
        _say({"phase": "videos", "seconds": round(time.perf_counter() - start, 1)}, printer)
        tokenizer_path = build_tokenizer(train_specs, work, base_cfg.lita.lita_version, base_cfg.lita.num_time_tokens)
        tokenizer = LitaTokenizer.from_file(tokenizer_path, base_cfg.lita.num_time_tokens)
        cfg = with_vocab(base_cfg, padded_vocab_size(base_cfg.text.vocab_size, tokenizer.vocab_size,
                                                     DEFAULT_VOCAB_MULTIPLE))
        model = build_random_model(cfg, seed)
        init_position_head(model, tokenizer.bos_id)
        budget_s = max_minutes * 60
        tower = _pretrain_tower(model, train_specs, cfg, seed, 0.25 * budget_s, printer)
        train_clips, features = cache_features(model.encoder.vision_tower, train_specs, cfg)  # [N, N_vis, Dv]
        examples = localization_examples(tokenizer, train_clips, cfg, num_visual_tokens(cfg))
        _say({"phase": "data", "train_videos": num_videos, "heldout_videos": eval_videos, "examples": len(examples),
              "seconds": round(time.perf_counter() - start, 1)}, printer)
        settings = settings or TrainSettings(seed=seed, lr=3e-3, batch_size=16,
                                             max_seconds=max(1.0, budget_s - tower["wall_s"]),
                                             max_steps=DECODER_STEPS, schedule_by_time=False, log_every=100,
                                             attend_loss_weight=1.0, copy_loss_weight=1.0,
                                             attend_spread=ATTEND_SPREAD,
                                             route_loss_weight=1.0)
        result = train(model, features, examples, settings, on_log=lambda m: _say({"phase": "train", **m}, printer))
        _save(model, tokenizer_path, tokenizer, out_dir)
        served = load_lita(out_dir, tokenizer_size=tokenizer.vocab_size)  # evaluate what was saved
        report = evaluate_clips(served, tokenizer, sample_split(eval_specs, cfg), seed=seed)
    manifest = {
        "seed": seed, "command": regenerate_command(seed, preset), "preset": preset, "train_videos": num_videos, "heldout_videos": eval_videos,
        "train_looks": list(TRAINING_FAMILIES), "classic_share": CLASSIC_SHARE, "train_examples": len(examples), "tower": tower, "steps": result.steps, "stopped_by": result.stopped_by,
        "train_wall_s": round(tower["wall_s"] + result.wall_s, 1), "final_loss": round(sum(result.losses[-20:]) / max(1, len(result.losses[-20:])), 4),
        "heldout": {**report_metrics(report), **boundary_bin_accuracy(report, cfg.lita.num_time_tokens)},
        "summary": report.summary_line(),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "python": platform.python_version(),
    }
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    _say({"phase": "done", **manifest}, printer)
    return manifest


def main(argv: list[str] | None = None) -> None:
    """``python -m lita_serve.train.demo_training --out assets/demo --seed 0`` (what ``lita train-demo`` runs)."""
    import argparse  # noqa: PLC0415 - only for the module entry point

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-minutes", type=float, default=DEFAULT_MAX_MINUTES)
    parser.add_argument("--num-videos", type=int, default=DEFAULT_TRAIN_VIDEOS)
    parser.add_argument("--eval-videos", type=int, default=DEFAULT_EVAL_VIDEOS)
    parser.add_argument("--preset", default=DEMO_PRESET)
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    args = parser.parse_args(argv)
    train_demo(args.out, seed=args.seed, max_minutes=args.max_minutes, num_videos=args.num_videos,
               eval_videos=args.eval_videos, preset=args.preset, threads=args.threads)


if __name__ == "__main__":
    main()
