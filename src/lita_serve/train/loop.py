"""A deterministic AdamW training loop for the projector + decoder on cached visual features.

The vision tower stays frozen (its pooled features are cached by
:func:`lita_serve.train.dataset.visual_features`); each step projects the cached features with
the model's own ``mm_projector`` into a per-row prompt table and runs the decoder on the
server's prompt ids, so training sees exactly the embeddings served requests see. The loss is
the next-token cross entropy on the answer tokens only (labels -100 elsewhere), plus auxiliary
terms that a small decoder trained from scratch needs (a pretrained LLM has them already): the
time token of each frame, the colours on screen, where the answer should look, and which
question words it should read.

Determinism: one ``torch.Generator`` seeded from ``seed`` orders the data, parameters are
initialised by the caller from a seed, and ``torch.use_deterministic_algorithms`` is enabled for
the run, so the same seed, data and thread count give the same loss sequence.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from lita_serve.llm.llama import apply_rope
from lita_serve.errors import InvalidInputError
from lita_serve.engine.model import LitaModel
from lita_serve.train.dataset import IGNORE_INDEX, MAX_VISIBLE, Example

log = logging.getLogger(__name__)


@dataclass
class TrainSettings:
    """Optimiser and budget. Training stops at ``max_steps`` or after ``max_seconds``, whichever is first."""

    seed: int = 0
    lr: float = 2e-3
    min_lr_ratio: float = 0.05  # cosine decay floor, as a fraction of lr
    warmup_steps: int = 30
    weight_decay: float = 0.0
    batch_size: int = 32
    max_steps: int = 1000
    max_seconds: float = 600.0
    # True: the learning rate also decays with elapsed time, so a time-bounded run ends low. False:
    # by steps only, time just stops the run -- the same seed then gives the same weights on any
    # machine that finishes max_steps within max_seconds.
    schedule_by_time: bool = True
    grad_clip: float = 1.0
    log_every: int = 25
    frame_loss_weight: float = 0.5  # weight of the auxiliary frame-timestamp loss (0 disables it)
    color_loss_weight: float = 0.5  # weight of the auxiliary "which colours are on screen" loss
    attend_loss_weight: float = 0.0  # weight of the supervised-attention loss (0 disables it)
    attend_layer: int = 2  # decoder layer whose head ``attend_head`` is taught where to look
    attend_head: int = 0
    # share of the attention target spread evenly over every frame that shows the event (the rest
    # stays on its first frame / the frame after it): the whole event teaches which frames hold the asked name
    attend_spread: float = 0.0
    copy_loss_weight: float = 0.0  # weight of "what that head copies from frame k names <tk>" (0 disables it)
    route_loss_weight: float = 0.0  # weight of "the answer positions read the asked colour and shape words"
    route_layer: int = 1  # decoder layer whose ``route_heads`` are taught to read the question's name
    route_heads: tuple[int, int] = (1, 2)  # (colour head, shape head) of ``route_layer``


@dataclass
class TrainResult:
    losses: list[float] = field(default_factory=list)
    steps: int = 0
    wall_s: float = 0.0
    stopped_by: str = "max_steps"


@dataclass
class Batch:
    ids: Tensor  # [B,T] long, right-padded with 0
    labels: Tensor  # [B,T] long, IGNORE_INDEX on prompt and padding
    valid: Tensor  # [B,T] bool
    videos: Tensor  # [B] long, row of the feature cache
    frame_positions: Tensor  # [B,F] long, positions of the temporal visual tokens
    frame_labels: Tensor  # [B,F] long, time-token id of each temporal token
    frame_colors: Tensor  # [B,F,K] long, word ids of the colours on screen (IGNORE_INDEX padding)
    attend_from: Tensor  # [B,2] long, positions whose next token is the answer's start / end time token
    attend_to: Tensor  # [B,2] long, positions of the event's first / last visible temporal token
    name_positions: Tensor  # [B,2] long, positions of the question's colour word and shape word


def collate(examples: Sequence[Example]) -> Batch:
    """Right-pad a list of examples into one batch."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.zeros(len(examples), width, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    valid = torch.zeros(len(examples), width, dtype=torch.bool)
    for b, e in enumerate(examples):
        n = len(e.input_ids)
        ids[b, :n] = torch.tensor(e.input_ids)
        labels[b, :n] = torch.tensor(e.labels)
        valid[b, :n] = True
    return Batch(ids, labels, valid, torch.tensor([e.video_index for e in examples]),
                 torch.tensor([e.frame_positions for e in examples], dtype=torch.long).reshape(len(examples), -1),
                 torch.tensor([e.frame_labels for e in examples], dtype=torch.long).reshape(len(examples), -1),
                 torch.tensor([e.frame_colors for e in examples], dtype=torch.long).reshape(len(examples), -1,
                                                                                            MAX_VISIBLE),
                 torch.tensor([e.attend_from for e in examples], dtype=torch.long).reshape(len(examples), -1),
                 torch.tensor([e.attend_to for e in examples], dtype=torch.long).reshape(len(examples), -1),
                 torch.tensor([e.name_positions for e in examples], dtype=torch.long).reshape(len(examples), -1))


def color_loss(frame_logits: Tensor, colors: Tensor) -> Tensor:
    """Mean -log p(colour word) over the colours on screen. frame_logits [B,F,V], colors [B,F,K]."""
    logp = frame_logits.log_softmax(-1)  # [B,F,V]
    valid = colors != IGNORE_INDEX
    picked = logp.gather(-1, colors.clamp(min=0))  # [B,F,K]
    return -(picked * valid).sum() / valid.sum().clamp(min=1)


def batch_loss(model: LitaModel, features: Tensor, batch: Batch, settings: TrainSettings
               ) -> tuple[Tensor, dict[str, float]]:
    """Answer-token cross entropy plus the weighted auxiliary terms; returns (loss, parts).

    features: [num_videos, N_vis, Dv] pooled tower features. Auxiliary terms (serving is
    unaffected: logits at visual positions are never sampled and no weight is added):

    * frame: the logits at temporal token k name frame k's time token, so each frame's hidden
      state carries "where am I", which the answer then copies;
    * colour: the same logits name the colours on screen in that frame;
    * attend: one head (``attend_layer``/``attend_head``) at the position that emits the answer's
      start (end) time token puts its attention on the event's first frame (the first frame after
      it) -- the lookup the answer has to learn, taught directly instead of through the answer
      alone (see :func:`attend_target_loss`). With ``attend_spread``, that share of the target is
      spread evenly over every frame showing the event. A single target frame taught where
      events begin but not which one was asked: the head put the same weights on every event's
      first frame whatever the question. Every frame of the event says which frames hold the
      asked name. What the head copies is a mix of time-token logits, so the answer still peaks
      at the heaviest frame;
    * copy: what that head writes into the residual stream when it looks at frame k, read out
      through the final norm and ``lm_head``, names ``<tk>``. Attention alone found the right
      frame but copied a blurred time (several neighbouring tokens likely); this makes the
      looked-up frame's time come out as its own token;
    * route: two heads of ``route_layer``, at the same answer positions, look at the question's
      colour word and shape word, so the lookup's query carries the asked name.
    """
    table = model.encoder.mm_projector(features[batch.videos])  # [B,N_vis,H]
    embeds = model.decoder.embed(batch.ids, table)  # [B,T,H]
    positions = torch.arange(batch.ids.shape[1])
    attend = ((settings.attend_loss_weight > 0 and batch.attend_from.numel() > 0)
              or (settings.copy_loss_weight > 0 and batch.frame_positions.numel() > 0))
    route = settings.route_loss_weight > 0 and batch.name_positions.numel() > 0
    layer = model.decoder.model.layers[settings.attend_layer]
    route_layer = model.decoder.model.layers[settings.route_layer]
    layer_inputs: list[tuple] = []
    route_inputs: list[tuple] = []
    hooks = ([layer.register_forward_pre_hook(lambda _module, args: layer_inputs.append(args))] if attend else []) + (
        [route_layer.register_forward_pre_hook(lambda _module, args: route_inputs.append(args))] if route else [])
    try:
        logits = model.decoder(embeds, positions, valid=batch.valid)  # [B,T,V]
    finally:
        for hook in hooks:
            hook.remove()
    answer = F.cross_entropy(logits[:, :-1].flatten(0, 1), batch.labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX)
    parts = {"answer_loss": float(answer.detach())}
    total = answer
    if settings.frame_loss_weight > 0 and batch.frame_positions.numel():
        rows = torch.arange(logits.shape[0])[:, None]
        frame_logits = logits[rows, batch.frame_positions]  # [B,F,V]
        frame = F.cross_entropy(frame_logits.flatten(0, 1), batch.frame_labels.flatten())
        parts["frame_loss"] = float(frame.detach())
        total = total + settings.frame_loss_weight * frame
        if settings.color_loss_weight > 0 and batch.frame_colors.numel():
            colors = color_loss(frame_logits, batch.frame_colors)
            parts["color_loss"] = float(colors.detach())
            total = total + settings.color_loss_weight * colors
    if layer_inputs and settings.attend_loss_weight > 0:
        x, step = layer_inputs[0][0], layer_inputs[0][1]
        logp = attention_log_probs(layer, x, step, settings.attend_head, batch.attend_from)  # [B,2,T]
        looked = attend_target_loss(logp, batch.attend_to, batch.frame_positions[:, -1], settings.attend_spread)
        parts["attend_loss"] = float(looked.detach())
        total = total + settings.attend_loss_weight * looked
    if layer_inputs and settings.copy_loss_weight > 0:
        rows = torch.arange(batch.ids.shape[0])[:, None]
        copied = head_output(layer, layer_inputs[0][0][rows, batch.frame_positions], settings.attend_head)  # [B,F,H]
        copy_logits = model.decoder.lm_head(model.decoder.model.norm(copied))  # [B,F,V]
        copy = F.cross_entropy(copy_logits.flatten(0, 1).float(), batch.frame_labels.flatten())
        parts["copy_loss"] = float(copy.detach())
        total = total + settings.copy_loss_weight * copy
    if route_inputs:
        x, step = route_inputs[0][0], route_inputs[0][1]
        read = []
        for word, head in enumerate(settings.route_heads):
            logp = attention_log_probs(route_layer, x, step, head, batch.attend_from)  # [B,2,T]
            read.append(-logp.gather(-1, batch.name_positions[:, word, None, None].expand(-1, logp.shape[1], 1)).mean())
        routed = sum(read) / len(read)
        parts["route_loss"] = float(routed.detach())
        total = total + settings.route_loss_weight * routed
    return total, parts


def attend_target_loss(logp: Tensor, attend_to: Tensor, last_frame: Tensor, spread: float = 0.0) -> Tensor:
    """Cross entropy of attention log-weights against where the answer should look; a scalar.

    logp: [B,2,T] log attention weights of the start and end queries; attend_to: [B,2] positions
    of the event's first and last frame; last_frame: [B] position of the video's last frame.

    The target puts ``1 - spread`` on the start query's first frame of the event and on the end
    query's first frame *after* it (its last frame when the event runs to the end), and
    ``spread`` evenly over every frame from first to last. Attention is causal: a frame's key
    sees the frames before it, never after, so the first frame of an event can tell that it just
    appeared, and only the frame after the last one can tell that it just vanished. Aimed at the
    last frame itself, the end lookup only found frames that show the event, and the end time
    came out spread over several bins. The end label rounds to the last frame's time token or the
    next one, so the frame after the event is as good a target as its last frame.
    """
    point = torch.stack([attend_to[:, 0], torch.minimum(attend_to[:, 1] + 1, last_frame)], -1)  # [B,2]
    looked = -logp.gather(-1, point[..., None]).mean()
    if spread <= 0:
        return looked
    seen = torch.arange(logp.shape[-1])  # [T]
    shown = (seen >= attend_to[:, :1, None]) & (seen <= attend_to[:, 1:, None])  # [B,1,T]
    over_event = -(logp.masked_fill(~shown, 0.0).sum(-1) / shown.sum(-1)).mean()  # shown broadcasts over [B,2,T]
    return (1 - spread) * looked + spread * over_event


def head_output(layer: torch.nn.Module, x: Tensor, head: int) -> Tensor:
    """What one attention head of ``layer`` writes into the residual stream when it attends
    fully to a token whose layer input is ``x`` [..., H]: ``O_h v_h(x)`` [..., H]."""
    attn = layer.self_attn
    d = attn.head_dim
    kv_head = head // (attn.n_heads // attn.n_kv)
    v = attn.v_proj(layer.input_layernorm(x))[..., kv_head * d:(kv_head + 1) * d]  # [..., D]
    return v @ attn.o_proj.weight[:, head * d:(head + 1) * d].T  # [..., H]


def attention_log_probs(layer: torch.nn.Module, x: Tensor, step, head: int, rows: Tensor) -> Tensor:
    """Log attention weights of one head of a decoder ``layer`` at the query positions ``rows`` [B,Q].

    x: the layer's input [B,T,H]; ``step`` is the forward's rotary tables and mask (the layer's
    second argument). Recomputes what the layer's attention computes for that head: [B,Q,T].
    """
    attn = layer.self_attn
    b, t, _ = x.shape
    h = layer.input_layernorm(x)
    d = attn.head_dim
    kv_head = head // (attn.n_heads // attn.n_kv)
    q = attn.q_proj(h).view(b, t, attn.n_heads, d)[:, :, head][:, None]  # [B,1,T,D]
    k = attn.k_proj(h).view(b, t, attn.n_kv, d)[:, :, kv_head][:, None]  # [B,1,T,D]
    q, k = apply_rope(q, step.cos, step.sin)[:, 0], apply_rope(k, step.cos, step.sin)[:, 0]  # [B,T,D]
    batch_rows = torch.arange(b)[:, None]
    scores = q[batch_rows, rows] @ k.transpose(1, 2) / math.sqrt(d)  # [B,Q,T]
    mask = step.mask[:, 0][batch_rows, rows]  # [B,Q,T] True where attention is allowed
    return scores.masked_fill(~mask, float("-inf")).log_softmax(-1)


def trainable_parameters(model: LitaModel) -> list[torch.nn.Parameter]:
    """Freeze the vision tower; the projector and the whole decoder train."""
    for p in model.encoder.vision_tower.parameters():
        p.requires_grad_(False)
    return [p for n, p in model.named_parameters() if not n.startswith("encoder.vision_tower.")]


def lr_factor(step: int, settings: TrainSettings, elapsed_s: float) -> float:
    """Linear warmup, then cosine decay to ``min_lr_ratio`` at the end of the step or time budget.

    Progress is the step fraction, or with ``schedule_by_time`` the larger of the step fraction
    and the time fraction, so a time-bounded run still ends at a low learning rate.
    """
    if step < settings.warmup_steps:
        return (step + 1) / settings.warmup_steps
    by_steps = (step - settings.warmup_steps) / max(1, settings.max_steps - settings.warmup_steps)
    by_time = elapsed_s / settings.max_seconds if settings.schedule_by_time else 0.0
    progress = min(1.0, max(by_steps, by_time))
    return settings.min_lr_ratio + (1 - settings.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def batch_order(num_examples: int, batch_size: int, generator: torch.Generator):
    """Endless seeded epochs of example-index batches (the last partial batch of an epoch is dropped)."""
    if num_examples < batch_size:
        raise InvalidInputError(f"{num_examples} examples are fewer than one batch of {batch_size}")
    while True:
        perm = torch.randperm(num_examples, generator=generator).tolist()
        for i in range(0, num_examples - batch_size + 1, batch_size):
            yield perm[i:i + batch_size]


@contextmanager
def deterministic_algorithms() -> Iterator[None]:
    """Run the block with ``torch.use_deterministic_algorithms(True)``, restoring the setting after."""
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


@deterministic_algorithms()
def train(model: LitaModel, features: Tensor, examples: Sequence[Example], settings: TrainSettings,
          on_log: Callable[[dict], None] | None = None) -> TrainResult:
    """Train ``model`` in place; returns the per-step losses and why it stopped."""
    generator = torch.Generator().manual_seed(settings.seed)
    params = trainable_parameters(model)
    optimizer = torch.optim.AdamW(params, lr=settings.lr, betas=(0.9, 0.98), weight_decay=settings.weight_decay)
    result = TrainResult()
    model.train()
    start = time.perf_counter()
    try:
        for step, indices in enumerate(batch_order(len(examples), settings.batch_size, generator)):
            if step >= settings.max_steps:
                break
            elapsed = time.perf_counter() - start
            if elapsed > settings.max_seconds:
                result.stopped_by = "time_budget"
                break
            for group in optimizer.param_groups:
                group["lr"] = settings.lr * lr_factor(step, settings, elapsed)
            loss, parts = batch_loss(model, features, collate([examples[i] for i in indices]), settings)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
            optimizer.step()
            result.losses.append(float(loss.detach()))
            result.steps = step + 1
            if on_log is not None and (step % settings.log_every == 0 or step + 1 == settings.max_steps):
                on_log({"step": step, "loss": round(float(loss.detach()), 4),
                        **{k: round(v, 4) for k, v in parts.items()}, "lr": round(optimizer.param_groups[0]["lr"], 6),
                        "elapsed_s": round(time.perf_counter() - start, 1)})
    finally:
        model.eval()
    result.wall_s = time.perf_counter() - start
    return result
