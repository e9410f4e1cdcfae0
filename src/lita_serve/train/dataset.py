"""Synthetic temporal-localization training data for a small LITA model.

Pipeline (each step deterministic given its seed):

1. :func:`make_split` draws video specs with :func:`lita_serve.data.synthetic.random_video_spec`
   and encodes them as real mp4 files;
2. :func:`cache_features` decodes each video ONCE with :func:`sample_video_for` (the server's own
   sampling) and runs the frozen vision tower on it, keeping only LITA-pooled tower features
   (``[N_vis, vision_hidden]`` per video) and the measured duration. The projector is linear, so
   ``projector(pool(x)) == pool(projector(x))`` and training on cached pooled tower features is the
   same computation as the full encoder (``VisualEncoder``) with the tower frozen; caching the
   pooled rows instead of frames keeps 1000+ videos in a few tens of MB;
3. :func:`localization_examples` turns each event into a LITA conversation,
   ``"When does the red circle appear?" -> "<ta> <tb>"``, as prompt ids built exactly like the
   server (:func:`lita_serve.text.prompt.build_input_ids`) plus answer ids; labels are -100 on the
   prompt (visual positions included), as LITA masks its training targets. Auxiliary targets
   ride along (see :mod:`lita_serve.train.loop`): at the temporal visual tokens, the frame's own
   time token and the words of the colours on screen in that frame; for the answer, the
   positions of the event's first and last visible frame, from which its time tokens learn where to look.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lita_serve.config import LitaConfig
from lita_serve.text.conversation import build_prompt
from lita_serve.data.synthetic import Event, VideoSpec, encode_spec, questions_for, random_video_spec
from lita_serve.vision_encoder.clip import CLIPVisionTower
from lita_serve.vision_encoder.visual_tokens import pool_visual_tokens
from lita_serve.preprocess.frame_sampling import frame_indices
from lita_serve.preprocess.video import sample_video_for
from lita_serve.text.prompt import build_input_ids
from lita_serve.text.time_tokens import seconds_to_token
from lita_serve.text.tokenizer import LitaTokenizer

IGNORE_INDEX = -100  # label of positions that carry no loss (LLaVA/LITA's IGNORE_INDEX)
LOCALIZATION = "event_localization"

# Small videos encode and decode fast; aspect ratios stay <= 3:2 so CLIP's centre crop keeps
# every event slot of the synthetic generator on screen.
DEMO_RESOLUTIONS: tuple[tuple[int, int], ...] = ((64, 64), (80, 64), (96, 64), (96, 80), (96, 96))
DEMO_DURATION_RANGE = (5.0, 60.0)
DEMO_FPS_RANGE = (5, 15)


@dataclass
class SampledClip:
    """One decoded video: its spec (ground truth), measured duration and (optionally) its frames."""

    spec: VideoSpec
    duration: float  # seconds, as the server measures it (num_source_frames / fps)
    frames: np.ndarray | None = None  # float32 [F, 3, S, S], CLIP-normalised; None once cached


@dataclass(frozen=True)
class Example:
    """One supervised sequence: ids = prompt + answer + EOS, labels masked on the prompt.

    ``frame_positions``/``frame_labels`` are the auxiliary frame-timestamp targets: the logits at
    the position of temporal token ``k`` should predict the time token of frame ``k``.
    """

    video_index: int
    input_ids: tuple[int, ...]
    labels: tuple[int, ...]
    frame_positions: tuple[int, ...] = ()
    frame_labels: tuple[int, ...] = ()
    frame_colors: tuple[tuple[int, ...], ...] = ()  # per temporal token: ids of the visible colours' words
    attend_from: tuple[int, ...] = ()  # positions whose next token is the answer's start / end time token
    attend_to: tuple[int, ...] = ()  # positions of the event's first / last visible temporal token
    name_positions: tuple[int, ...] = ()  # positions of the question's colour word and shape word


def make_split(out_dir: Path, count: int, seed: int, *,
               resolutions: tuple[tuple[int, int], ...] = DEMO_RESOLUTIONS,
               duration_range: tuple[float, float] = DEMO_DURATION_RANGE,
               fps_range: tuple[int, int] = DEMO_FPS_RANGE,
               looks: tuple[str, ...] | None = None, classic_share: float = 0.0) -> list[VideoSpec]:
    """Encode ``count`` random event videos (1-3 events each) into ``out_dir``; returns their specs.

    ``looks`` names the look families (:mod:`lita_serve.data.looks`) the videos are drawn in;
    None keeps the classic dark grey plain/noise background. With ``looks``, a ``classic_share``
    of the videos (drawn per video) still gets the classic background.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    specs = draw_specs(count, seed, resolutions=resolutions, duration_range=duration_range, fps_range=fps_range,
                       looks=looks, classic_share=classic_share)
    return [encode_spec(spec, out_dir / f"video_{seed}_{i:05d}.mp4") for i, spec in enumerate(specs)]


def draw_specs(count: int, seed: int, *,
               resolutions: tuple[tuple[int, int], ...] = DEMO_RESOLUTIONS,
               duration_range: tuple[float, float] = DEMO_DURATION_RANGE,
               fps_range: tuple[int, int] = DEMO_FPS_RANGE,
               looks: tuple[str, ...] | None = None, classic_share: float = 0.0) -> list[VideoSpec]:
    """The specs :func:`make_split` encodes for the same arguments, without encoding anything.

    ``classic_share`` 0 draws nothing extra, so the streams of earlier splits stay as they were.
    """
    rng = np.random.default_rng(seed)

    def looks_of_next() -> tuple[str, ...] | None:
        return None if looks is not None and classic_share > 0 and rng.random() < classic_share else looks

    return [random_video_spec(rng, duration_range=duration_range, fps_range=fps_range, resolutions=resolutions,
                              looks=looks_of_next()) for _ in range(count)]


def sample_split(specs: list[VideoSpec], cfg: LitaConfig) -> list[SampledClip]:
    """Decode every video once with the server's sampling (``sample_video_for``), keeping the frames."""
    clips = []
    for spec in specs:
        video = sample_video_for(spec.path, cfg, num_threads=1)
        clips.append(SampledClip(spec=spec, duration=float(video.duration), frames=video.frames))
    return clips


@torch.no_grad()
def pooled_tower_features(tower: CLIPVisionTower, frames: np.ndarray, cfg: LitaConfig) -> torch.Tensor:
    """frames [F,3,S,S] -> LITA-pooled frozen-tower features [N_vis, vision_hidden].

    Row order equals the encoder's visual tokens (``pool_visual_tokens``), so the (linear)
    projector applied to the rows gives exactly the encoder's prompt table for the video.
    """
    patches = tower(torch.from_numpy(frames))  # [F, P, Dv]
    return pool_visual_tokens(patches[None], cfg.lita, cfg.vision.grid)[0]  # [N_vis, Dv]


def cache_features(tower: CLIPVisionTower, specs: list[VideoSpec], cfg: LitaConfig
                   ) -> tuple[list[SampledClip], torch.Tensor]:
    """Decode each video once and keep only its pooled tower features (frames are dropped).

    Returns the clips (spec + duration, no frames) and features [num_videos, N_vis, Dv].
    """
    clips, rows = [], []
    for spec in specs:
        video = sample_video_for(spec.path, cfg, num_threads=1)
        rows.append(pooled_tower_features(tower, video.frames, cfg))
        clips.append(SampledClip(spec=spec, duration=float(video.duration)))
    return clips, torch.stack(rows)


def localization_answer(start_s: float, end_s: float, duration: float, num_time_tokens: int) -> str:
    """LITA's answer text for a span: ``"<ta> <tb>"``."""
    return f"{seconds_to_token(start_s, duration, num_time_tokens)} {seconds_to_token(end_s, duration, num_time_tokens)}"


def localization_items(clips: list[SampledClip]) -> list[dict]:
    """Every "When does the X appear?" question of every clip: {video_index, question, gt, duration, event}."""
    items = []
    for v, clip in enumerate(clips):
        for q in questions_for(clip.spec):
            if q["task"] == LOCALIZATION:
                start, end = q["answer"]
                items.append({"video_index": v, "question": q["question"], "duration": clip.duration,
                              "gt": (float(start), float(min(end, clip.duration))), "event": q["event"]})
    return items


def sampled_frame_times(duration_s: float, fps: float, num_frames: int) -> np.ndarray:
    """Seconds of the ``num_frames`` frames the server samples from a ``duration_s`` video at ``fps``
    (LITA's uniform rounding over its ``round(duration * fps)`` source frames)."""
    return frame_indices(max(1, int(round(duration_s * fps))), num_frames) / fps


def frame_time_labels(tokenizer: LitaTokenizer, cfg: LitaConfig) -> list[int]:
    """Time-token id of each of the ``sample_frames`` temporal tokens: frame k of F sits at relative
    time k / (F - 1) (LITA's uniform sampling), i.e. token ``<round(k * (N - 1) / (F - 1))>``."""
    frames, n = cfg.lita.sample_frames, cfg.lita.num_time_tokens
    denom = max(1, frames - 1)
    return [tokenizer.time_token_ids[int(round(k * (n - 1) / denom))] for k in range(frames)]


MAX_VISIBLE = 3  # the synthetic generator draws at most three events


def frame_color_ids(tokenizer: LitaTokenizer, clip: SampledClip, cfg: LitaConfig) -> tuple[tuple[int, ...], ...]:
    """For each temporal token: the word ids of the colours on screen in that frame (EOS when none),
    padded with IGNORE_INDEX to ``MAX_VISIBLE``. Frame times follow the server's sampling."""
    rows = []
    for t in sampled_frame_times(clip.duration, clip.spec.fps, cfg.lita.sample_frames):
        colors = [e.state_at(t)[2] for e in clip.spec.events if e.visible_at(t)]
        ids = [tokenizer.encode(c, allow_special=False)[0] for c in colors] or [tokenizer.eos_id]
        rows.append(tuple(ids + [IGNORE_INDEX] * (MAX_VISIBLE - len(ids))))
    return tuple(rows)


def localization_examples(tokenizer: LitaTokenizer, clips: list[SampledClip], cfg: LitaConfig,
                          num_visual_tokens: int) -> list[Example]:
    """Prompt/answer id sequences for every event of every clip, prompts built as the server does."""
    examples = []
    frame_labels = tuple(frame_time_labels(tokenizer, cfg))
    colors = [frame_color_ids(tokenizer, clip, cfg) for clip in clips]
    for item in localization_items(clips):
        prompt = build_input_ids(tokenizer, item["question"], num_visual_tokens, cfg.text.vocab_size,
                                 cfg.lita.visual_token_format)
        answer = localization_answer(*item["gt"], item["duration"], cfg.lita.num_time_tokens)
        answer_ids = tokenizer.encode(answer, allow_special=True) + [tokenizer.eos_id]
        first_visual = next(i for i, t in enumerate(prompt) if t >= cfg.text.vocab_size)  # temporal tokens lead
        ids = prompt + answer_ids
        attend_from = tuple(i - 1 for i in range(len(prompt), len(ids)) if tokenizer.time_index(ids[i]) is not None)[:2]
        first, last = visible_frame_range(clips[item["video_index"]], item["event"], cfg)
        examples.append(Example(item["video_index"], tuple(ids),
                                tuple([IGNORE_INDEX] * len(prompt) + answer_ids),
                                tuple(range(first_visual, first_visual + len(frame_labels))), frame_labels,
                                colors[item["video_index"]], attend_from,
                                (first_visual + first, first_visual + last),
                                name_positions(tokenizer, prompt, item["event"])))
    return examples


def name_positions(tokenizer: LitaTokenizer, prompt: list[int], event: Event) -> tuple[int, int]:
    """Positions in ``prompt`` of the first piece of the question's colour word and of its shape word
    (the last occurrence of each: the question is the prompt's last text)."""
    found = []
    for word in (event.color, event.shape):
        piece = tokenizer.encode(word, allow_special=False)[0]
        at = [i for i, t in enumerate(prompt) if t == piece]
        if not at:
            raise ValueError(f"the prompt does not contain the word {word!r} as the piece {piece}")
        found.append(at[-1])
    return found[0], found[1]


def visible_frame_range(clip: SampledClip, event: Event, cfg: LitaConfig) -> tuple[int, int]:
    """First and last sampled frame (of ``sample_frames``) that show ``event``."""
    times = sampled_frame_times(clip.duration, clip.spec.fps, cfg.lita.sample_frames)
    seen = [k for k, t in enumerate(times) if event.visible_at(t)]
    if not seen:  # shorter than one frame interval: the nearest frame to its start
        nearest = int(np.argmin(np.abs(times - event.start_s)))
        return nearest, nearest
    return seen[0], seen[-1]


def tokenizer_texts(specs: list[VideoSpec]) -> list[str]:
    """The texts a tiny SentencePiece model is trained on: full prompts and captions of the videos."""
    texts = []
    for spec in specs:
        for q in questions_for(spec):
            texts.append(build_prompt(q["question"]))
            if q["task"] != LOCALIZATION:
                texts.extend(caption for _, _, caption in q["answer"])
    return texts


def with_vocab(cfg: LitaConfig, vocab_size: int) -> LitaConfig:
    """``cfg`` with the decoder's vocabulary set to ``vocab_size``."""
    return dataclasses.replace(cfg, text=dataclasses.replace(cfg.text, vocab_size=int(vocab_size)))
