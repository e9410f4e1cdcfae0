"""Decode steps replayed from CUDA graphs over one static KV cache (as gpt-fast does).

A decode step of a 13B decoder launches over a thousand small kernels; launched one by one from
Python, the launches, not the GPU, set the pace. :class:`DecodeGraphs` allocates one KV cache of
``max_batch`` rows by ``max_seq_len`` positions once, and captures the decode step (token
embedding, every layer, the LM head) as a CUDA graph per *bucket*: a batch size rounded up to a
power of two and a sequence length rounded up to a multiple of :data:`LENGTH_STEP`.
A batch then runs in a view of the cache of its bucket's size, so attention reads about the
sequence's own keys rather than the whole cache; padded rows are marked invalid and write to the
view's scratch slot, exactly as in a right-padded eager batch.

Prefill stays eager (its shape changes with every prompt and its launches are few next to its
arithmetic). Without ``capture`` (on the CPU) the same step runs eagerly over the same static
cache, which lets tests check the bucketing and the views without a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from lita_serve.llm.llama import KVCache, LlamaDecoder

LENGTH_STEP = 256  # length buckets are multiples of this many positions
WARMUP_STEPS = 2  # eager runs on a side stream before a capture (cuBLAS handles, workspaces)


def batch_bucket(n: int, ceiling: int) -> int:
    """``n`` rounded up to a power of two, at most ``ceiling``."""
    size = 1
    while size < n:
        size *= 2
    return min(size, ceiling)


def length_bucket(n: int, ceiling: int) -> int:
    """``n`` rounded up to a multiple of :data:`LENGTH_STEP`, at most ``ceiling``: attention reads
    at most ``LENGTH_STEP - 1`` positions more than the sequence holds."""
    return min(-(-max(n, 1) // LENGTH_STEP) * LENGTH_STEP, ceiling)


@dataclass
class _Graph:
    """One captured decode step and the static tensors it reads and writes."""

    view: KVCache
    tokens: Tensor  # [Bb,1] long
    positions: Tensor  # [Bb,1] long
    valid: Tensor  # [Bb,1] bool
    logits: Tensor | None = None  # [Bb,V] float32, written by each replay
    graph: "torch.cuda.CUDAGraph | None" = None


class DecodeGraphs:
    """Static KV cache and one decode-step graph per (batch, length) bucket for ``decoder``."""

    def __init__(self, decoder: LlamaDecoder, max_batch: int, max_seq_len: int, *, capture: bool | None = None) -> None:
        self.decoder = decoder
        self.device = decoder.lm_head.weight.device
        self.capture = self.device.type == "cuda" if capture is None else capture
        self.cache = decoder.new_cache(max_batch, max_seq_len)  # [L, B, H_kv, S+1, D]
        self.max_batch, self.max_seq_len = max_batch, max_seq_len
        self._graphs: dict[tuple[int, int], _Graph] = {}

    def fits(self, batch_size: int, max_len: int) -> bool:
        """Whether a batch of ``batch_size`` sequences of up to ``max_len`` positions fits the cache."""
        return batch_size <= self.max_batch and max_len <= self.max_seq_len

    def session(self, batch_size: int, max_len: int) -> tuple[KVCache, "DecodeStep"]:
        """A cleared cache view for prefilling ``batch_size`` rows, and the decode step of its bucket."""
        rows = batch_bucket(batch_size, self.max_batch)
        length = length_bucket(max_len, self.max_seq_len)
        entry = self._graphs.get((rows, length))
        if entry is None:
            entry = self._graphs[(rows, length)] = self._new_entry(rows, length)
        entry.view.clear()  # rows beyond batch_size too: their stale keys must stay finite
        return self.cache.view(batch_size, length), DecodeStep(self, entry)

    def _new_entry(self, rows: int, length: int) -> _Graph:
        dev = self.device
        return _Graph(self.cache.view(rows, length), torch.zeros(rows, 1, dtype=torch.long, device=dev),
                      torch.zeros(rows, 1, dtype=torch.long, device=dev),
                      torch.zeros(rows, 1, dtype=torch.bool, device=dev))

    def _forward(self, entry: _Graph) -> Tensor:
        """The decode step on the entry's static tensors: -> logits [Bb,V]."""
        embeds = self.decoder.model.embed_tokens(entry.tokens)  # [Bb,1,H]; sampled ids are < vocab
        return self.decoder(embeds, entry.positions, entry.view, entry.valid, check=False)[:, 0]

    def _capture(self, entry: _Graph) -> None:
        """Capture the entry's step. The warm-up runs have no valid row: they touch only the scratch slot."""
        entry.valid.zero_()
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(WARMUP_STEPS):
                self._forward(entry)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: the model's request threads may copy to the GPU meanwhile (prompt tables)
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            entry.logits = self._forward(entry)
        entry.graph = graph

    @staticmethod
    def _set_inputs(entry: _Graph, tokens: Tensor, positions: Tensor, valid: Tensor) -> None:
        """The first ``len(tokens)`` rows get the step's inputs; the bucket's other rows are padding."""
        b = tokens.shape[0]
        entry.tokens[:b, 0].copy_(tokens)
        entry.positions[:b, 0].copy_(positions)
        entry.valid[:b, 0].copy_(valid)
        entry.valid[b:] = False

    def run(self, entry: _Graph, tokens: Tensor, positions: Tensor, valid: Tensor) -> Tensor:
        """One decode step for the first ``len(tokens)`` rows: -> logits [B,V]."""
        b = tokens.shape[0]
        self._set_inputs(entry, tokens, positions, valid)
        if not self.capture:
            return self._forward(entry)[:b]
        if entry.graph is None:
            self._capture(entry)
            # the capture recorded the step without running it: restore the inputs, then replay
            self._set_inputs(entry, tokens, positions, valid)
        entry.graph.replay()
        return entry.logits[:b].clone()


@dataclass
class DecodeStep:
    """``step(tokens [B], positions [B], valid [B]) -> logits [B,V]`` for one session's batch."""

    graphs: DecodeGraphs
    entry: _Graph

    def __call__(self, tokens: Tensor, positions: Tensor, valid: Tensor) -> Tensor:
        return self.graphs.run(self.entry, tokens, positions, valid)
