"""Pretrain the demo's small vision tower on what is on screen, before it is frozen.

LITA starts from a pretrained CLIP tower and keeps it frozen; a randomly initialised tower
gives features in which a small coloured shape is barely visible once LITA mean-pools each
frame's patches into its temporal token (a linear probe on them names every visible
shape exactly in only about two thirds of the frames). This stage stands in for CLIP's
pretraining: the tower learns, from decoded frames of the training videos, features whose
per-frame patch mean names the visible (shape, colour) pairs linearly. The target matches how
the features are used: the temporal token of a frame is exactly that patch mean, passed
through the (linear) projector.

After this stage the tower is frozen again and the decoder trains on its cached features
(:mod:`lita_serve.train.loop`), as LITA trains projector + LLM with a frozen tower.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lita_serve.config import LitaConfig
from lita_serve.data.synthetic import COLORS, SHAPES, VideoSpec, render_frame
from lita_serve.vision_encoder.clip import CLIPVisionTower
from lita_serve.errors import InvalidInputError
from lita_serve.preprocess.frame_sampling import crop_and_normalize
from lita_serve.preprocess.video import sample_video_for
from lita_serve.train.dataset import sampled_frame_times
from lita_serve.train.loop import TrainResult, deterministic_algorithms

# Every (shape, colour) the synthetic generator draws: the classes of the per-frame target.
NAMES: tuple[tuple[str, str], ...] = tuple((s, c) for s in SHAPES for c in COLORS)


@dataclass
class TowerSettings:
    """Optimiser and budget of the tower stage (stops at ``max_steps`` or ``max_seconds``).

    The learning rate follows the steps alone, so the stage is deterministic whenever it
    finishes ``max_steps`` within ``max_seconds``.
    """

    seed: int = 0
    lr: float = 2e-3
    batch_size: int = 128
    max_steps: int = 3000
    max_seconds: float = 90.0
    warmup_steps: int = 20
    log_every: int = 100


def visible_names(spec: VideoSpec, times: Sequence[float]) -> np.ndarray:
    """Multi-hot [len(times), len(NAMES)] float32 of the (shape, current colour) pairs on screen."""
    index = {name: i for i, name in enumerate(NAMES)}
    out = np.zeros((len(times), len(NAMES)), dtype=np.float32)
    for k, t in enumerate(times):
        for event in spec.events:
            if event.visible_at(t):
                out[k, index[(event.shape, event.state_at(t)[2])]] = 1.0
    return out


def collect_frames(specs: Sequence[VideoSpec], cfg: LitaConfig, frames_per_video: int
                   ) -> tuple[Tensor, Tensor]:
    """Decode each video with the server's sampling and keep ``frames_per_video`` evenly spaced frames.

    Returns frames [N, 3, S, S] float32 (CLIP-normalised, as served) and labels [N, len(NAMES)].
    """
    frames, labels = [], []
    for spec in specs:
        video = sample_video_for(spec.path, cfg, num_threads=1)
        count = video.frames.shape[0]
        keep = np.unique(np.round(np.linspace(0, count - 1, min(count, frames_per_video))).astype(np.int64))
        times = sampled_frame_times(float(video.duration), spec.fps, count)
        frames.append(torch.from_numpy(video.frames[keep]))
        labels.append(torch.from_numpy(visible_names(spec, times[keep])))
    return torch.cat(frames), torch.cat(labels)


def rendered_frames(specs: Sequence[VideoSpec], cfg: LitaConfig, frames_per_video: int) -> tuple[Tensor, Tensor]:
    """Draw (not encode) ``frames_per_video`` evenly spaced frames of each spec, as the server would see them.

    Each frame goes through 4:2:0 chroma and the decoder's bicubic shrink (shortest side to the
    tower's size, then the centre crop), like a decoded frame without the codec's losses. Drawing
    is cheap, so the tower sees thousands of looks instead of the few hundred encoded videos.
    Returns frames [N, 3, S, S] float32 (CLIP-normalised) and labels [N, len(NAMES)].
    """
    size = cfg.vision.image_size
    frames, labels = [], []
    for spec in specs:
        picks = np.unique(np.round(np.linspace(0, spec.num_frames - 1, frames_per_video)).astype(np.int64))
        shown = np.stack([_as_decoded(render_frame(spec, int(i)), size) for i in picks])  # [F, H', W', 3]
        frames.append(torch.from_numpy(crop_and_normalize(shown, size, cfg.vision.image_mean, cfg.vision.image_std)))
        labels.append(torch.from_numpy(visible_names(spec, picks / spec.fps)))
    return torch.cat(frames), torch.cat(labels)


def _as_decoded(rgb: np.ndarray, size: int) -> np.ndarray:
    """uint8 [H, W, 3] -> 4:2:0 -> RGB with the shortest side ``size`` (bicubic, as the decoder shrinks)."""
    import av  # noqa: PLC0415

    height, width = rgb.shape[:2]
    scale = size / min(width, height)
    target_w, target_h = max(size, round(width * scale)), max(size, round(height * scale))
    yuv = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
    return yuv.reformat(width=target_w, height=target_h, format="rgb24", interpolation="BICUBIC").to_ndarray()


def pooled_logits(tower: CLIPVisionTower, head: torch.nn.Linear, frames: Tensor) -> Tensor:
    """frames [B,3,S,S] -> logits [B,len(NAMES)] of the linear head on the patch mean (the temporal token)."""
    return head(tower(frames).mean(dim=1))  # tower: [B,P,Dv] -> mean over patches [B,Dv]


@deterministic_algorithms()
def pretrain_tower(tower: CLIPVisionTower, frames: Tensor, labels: Tensor, settings: TowerSettings,
                   on_log: Callable[[dict], None] | None = None) -> TrainResult:
    """Train ``tower`` in place (multi-label BCE through a throw-away linear head); returns the losses."""
    if frames.shape[0] < settings.batch_size:
        raise InvalidInputError(f"{frames.shape[0]} frames are fewer than one batch of {settings.batch_size}")
    generator = torch.Generator().manual_seed(settings.seed)
    head = torch.nn.Linear(_hidden_size(tower, frames), labels.shape[1])
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=generator) * 0.02)
        head.bias.zero_()
    params = list(tower.parameters()) + list(head.parameters())
    for p in tower.parameters():
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=settings.lr, betas=(0.9, 0.98), weight_decay=0.0)
    result = TrainResult()
    tower.train()
    start = time.perf_counter()
    try:
        step = 0
        while step < settings.max_steps:
            elapsed = time.perf_counter() - start
            if elapsed > settings.max_seconds:
                result.stopped_by = "time_budget"
                break
            progress = step / settings.max_steps  # by steps only: time just stops the stage
            warm = min(1.0, (step + 1) / settings.warmup_steps)
            for group in optimizer.param_groups:
                group["lr"] = settings.lr * warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))
            batch = torch.randint(0, frames.shape[0], (settings.batch_size,), generator=generator)
            loss = F.binary_cross_entropy_with_logits(pooled_logits(tower, head, frames[batch]), labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            result.losses.append(float(loss.detach()))
            if on_log is not None and step % settings.log_every == 0:
                on_log({"step": step, "tower_loss": round(result.losses[-1], 4),
                        "elapsed_s": round(time.perf_counter() - start, 1)})
            step += 1
        result.steps = step
    finally:
        tower.eval()
        for p in tower.parameters():
            p.requires_grad_(False)
    result.wall_s = time.perf_counter() - start
    return result


def _hidden_size(tower: CLIPVisionTower, frames: Tensor) -> int:
    with torch.no_grad():
        return int(tower(frames[:1]).shape[-1])


@torch.no_grad()
def probe_accuracy(tower: CLIPVisionTower, frames: Tensor, labels: Tensor, steps: int = 300, seed: int = 0) -> float:
    """Fraction of frames whose visible names a fresh linear probe on the patch mean gets all right.

    The probe is fitted on the first 80 % of ``frames`` and scored on the rest: how linearly the
    temporal tokens name what is on screen.
    """
    feats = torch.cat([tower(frames[i:i + 256]).mean(dim=1) for i in range(0, frames.shape[0], 256)])
    feats = (feats - feats.mean(0)) / feats.std(0).clamp(min=1e-6)
    split = int(0.8 * feats.shape[0])
    generator = torch.Generator().manual_seed(seed)
    probe = torch.nn.Linear(feats.shape[1], labels.shape[1])
    with torch.enable_grad():
        optimizer = torch.optim.Adam(probe.parameters(), lr=1e-2)
        for _ in range(steps):
            batch = torch.randint(0, split, (min(1024, split),), generator=generator)
            loss = F.binary_cross_entropy_with_logits(probe(feats[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    predicted = probe(feats[split:]) > 0
    return float((predicted == labels[split:].bool()).all(dim=1).float().mean())
