"""The decoder step as a service: prompts in, token ids out, batched, streamed.

Requests are queued and a worker thread runs whatever is waiting (up to ``max_batch``) as one
batch through :func:`~lita_serve.llm.generate.generate_batch`, emitting an event per new
token (streaming) or one at the end. An exception while running a batch fails the requests of
that batch only; the worker keeps serving.

Admission: at most ``cfg.limits.max_concurrent_requests`` submitted requests are in flight
(queued or generating); :meth:`DecoderService.submit` rejects one more at once with
:class:`ServerBusyError`, which the server reports as UNAVAILABLE so clients back off and retry.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from lita_serve.config import LitaConfig
from lita_serve.text.conversation import check_prompt_options, check_question
from lita_serve.llm.cuda_graphs import DecodeGraphs
from lita_serve.llm.generate import GenerationRequest, generate_batch
from lita_serve.llm.llama import LlamaDecoder
from lita_serve.llm.sampling_params import SamplingParams
from lita_serve.text.logprobs import TokenLogprobs
from lita_serve.vision_encoder.visual_tokens import num_visual_tokens
from lita_serve.errors import InvalidInputError, ServerBusyError
from lita_serve.text.prompt import build_input_ids
from lita_serve.text.tokenizer import LitaTokenizer

logger = logging.getLogger(__name__)


@dataclass
class DecodeEvent:
    """One response of the decoder: every id generated so far, the last ``new_tokens`` are new."""

    ids: list[int]
    new_tokens: int
    final: bool
    num_input_tokens: int
    duration: float
    stats: dict[str, float]
    error: Exception | None = None
    logprobs: list[TokenLogprobs] | None = None  # one per id so far, when the request asked for them


@dataclass
class DecodeJob:
    input_ids: list[int]
    prompt_table: torch.Tensor  # [N_vis, H]
    params: SamplingParams
    duration: float
    stream: bool
    emit: Callable[[DecodeEvent], None]
    stats: dict[str, float] = field(default_factory=dict)
    queued_at: float = field(default_factory=time.perf_counter)
    admitted: bool = False  # counted against the concurrency limit until its final event


class DecodeBackend(Protocol):
    """What the service needs of an engine: its vocabulary size (fake visual ids start there), the
    prompt table in the engine's format, and batched generation with per-token callbacks."""

    vocab_size: int
    supports_logprobs: bool

    def table(self, prompt_table: np.ndarray) -> Any: ...

    def generate(self, requests: list[GenerationRequest], eos_id: int) -> list[list[int]]: ...


class TorchBackend:
    """The PyTorch decoder (CPU or CUDA).

    On CUDA its decode steps replay CUDA graphs over a static KV cache (:mod:`.cuda_graphs`) of
    ``max_batch`` rows by ``max_seq_len`` positions, unless ``cuda_graphs`` is False; on the CPU
    each batch gets a cache of its own and runs eagerly.
    """

    supports_logprobs = True

    def __init__(self, decoder: LlamaDecoder, *, max_batch: int = 8, max_seq_len: int | None = None,
                 cuda_graphs: bool = True) -> None:
        self.decoder = decoder
        self.vocab_size = decoder.vocab_size
        on_gpu = decoder.lm_head.weight.device.type == "cuda"
        length = min(max_seq_len or decoder.config.max_position_embeddings, decoder.config.max_position_embeddings)
        self.graphs = DecodeGraphs(decoder, max_batch, length) if on_gpu and cuda_graphs else None

    def table(self, prompt_table: np.ndarray) -> torch.Tensor:
        weight = self.decoder.lm_head.weight
        return torch.from_numpy(np.ascontiguousarray(prompt_table)).to(device=weight.device, dtype=weight.dtype)

    def generate(self, requests: list[GenerationRequest], eos_id: int) -> list[list[int]]:
        return generate_batch(self.decoder, requests, eos_id, graphs=self.graphs)


class DecoderService:
    """Owns the decoder, the tokenizer and the worker thread."""

    def __init__(self, decoder: "LlamaDecoder | DecodeBackend", tokenizer: LitaTokenizer, cfg: LitaConfig,
                 max_batch: int = 8) -> None:
        if isinstance(decoder, LlamaDecoder):  # the longest sequence a request may make
            decoder = TorchBackend(decoder, max_batch=max_batch,
                                   max_seq_len=cfg.limits.max_prompt_tokens + cfg.limits.max_new_tokens)
        self.backend: DecodeBackend = decoder
        self.tokenizer = tokenizer
        self.cfg = cfg
        check_prompt_options(cfg.prompt)  # a bad lita.json fails at load, not on every request
        self.max_batch = max_batch
        self.expected_visual_tokens = num_visual_tokens(cfg)
        self.max_concurrent = int(cfg.limits.max_concurrent_requests)
        self.time_ids = torch.tensor(tokenizer.time_token_ids, dtype=torch.long)  # [N]
        self._queue: queue.Queue[DecodeJob | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._in_flight = 0
        self._admission = threading.Lock()

    # --- request preparation (runs on the caller's thread; errors are the caller's) --------
    def prepare(self, question: str, prompt_table: np.ndarray, duration: float, params: SamplingParams,
                *, stream: bool, emit: Callable[[DecodeEvent], None], stats: dict | None = None) -> DecodeJob:
        """Validate a request and build its prompt; raises InvalidInputError naming the problem."""
        params.validate(self.cfg.limits.max_new_tokens)
        table = np.asarray(prompt_table)
        if table.ndim != 2 or table.shape != (self.expected_visual_tokens, self.cfg.text.hidden_size):
            raise InvalidInputError(
                f"prompt embedding table must be [{self.expected_visual_tokens}, {self.cfg.text.hidden_size}], "
                f"got {list(table.shape)}")
        if params.logprobs is not None and not getattr(self.backend, "supports_logprobs", False):
            raise InvalidInputError("logprobs are not available with this repository's engine "
                                    f"({type(self.backend).__name__}); the torch engine serves them")
        check_question(question, self.cfg.limits.max_question_chars)
        ids = build_input_ids(self.tokenizer, question, table.shape[0], self.backend.vocab_size,
                              self.cfg.lita.visual_token_format, duration,
                              max_prompt_tokens=self.cfg.limits.max_prompt_tokens, options=self.cfg.prompt)
        return DecodeJob(ids, self.backend.table(table), params, float(duration), bool(stream), emit,
                         dict(stats or {}))

    # --- running ---------------------------------------------------------------------------
    def run(self, jobs: list[DecodeJob]) -> None:
        """Generate for ``jobs`` as one batch, emitting their events."""
        start = time.perf_counter()
        outputs: list[list[int]] = [[] for _ in jobs]
        logprobs: list[list[TokenLogprobs] | None] = [[] if j.params.logprobs is not None else None for j in jobs]
        first: list[float | None] = [None] * len(jobs)

        def on_token(i: int) -> Callable[[int], None]:
            def cb(token: int) -> None:
                outputs[i].append(token)
                if first[i] is None:
                    first[i] = time.perf_counter()
                if jobs[i].stream:
                    self._emit(jobs[i], outputs[i], 1, final=False, logprobs=logprobs[i])
            return cb

        def on_logprobs(i: int) -> Callable[[TokenLogprobs], None] | None:
            return None if logprobs[i] is None else logprobs[i].append

        requests = [GenerationRequest(j.input_ids, j.prompt_table, j.params, on_token(i), on_logprobs(i),
                                      self.time_ids) for i, j in enumerate(jobs)]
        try:
            self.backend.generate(requests, self.tokenizer.eos_id)
        except Exception as exc:  # fail this batch's requests only
            logger.exception("decode batch failed")
            for job in jobs:
                self._finish(job, DecodeEvent([], 0, True, len(job.input_ids), job.duration, job.stats, error=exc))
            return
        end = time.perf_counter()
        for i, job in enumerate(jobs):
            ttft = (first[i] or end) - start
            job.stats.update({
                "queue_ms": round((start - job.queued_at) * 1e3, 3),
                "ttft_ms": round(ttft * 1e3, 3),
                "generate_ms": round((end - start) * 1e3, 3),
                "batch_size": len(jobs),
            })
            n = len(outputs[i])
            self._finish(job, DecodeEvent(list(outputs[i]), 0 if job.stream else n, True, len(job.input_ids),
                                          job.duration, job.stats,
                                          logprobs=None if logprobs[i] is None else list(logprobs[i])))

    @staticmethod
    def _emit(job: DecodeJob, ids: list[int], new: int, final: bool,
              logprobs: list[TokenLogprobs] | None = None) -> None:
        job.emit(DecodeEvent(list(ids), new, final, len(job.input_ids), job.duration, job.stats,
                             logprobs=None if logprobs is None else list(logprobs)))

    def _finish(self, job: DecodeJob, event: DecodeEvent) -> None:
        """Emit ``job``'s final event and release its admission slot, even if emitting fails."""
        try:
            job.emit(event)
        except Exception:  # noqa: BLE001 - a broken response sender must not stop the batch
            logger.exception("could not send a final response")
        finally:
            if job.admitted:
                job.admitted = False
                with self._admission:
                    self._in_flight -= 1

    # --- admission and the worker thread -----------------------------------------------------
    @property
    def in_flight(self) -> int:
        """Submitted requests not yet answered (queued or generating)."""
        return self._in_flight

    def submit(self, job: DecodeJob) -> None:
        """Queue ``job``; ServerBusyError at once when ``max_concurrent_requests`` are in flight."""
        with self._admission:
            if self._in_flight >= self.max_concurrent:
                raise ServerBusyError(f"server busy: {self._in_flight} requests in flight, the limit "
                                      f"(limits.max_concurrent_requests) is {self.max_concurrent}; retry later")
            self._in_flight += 1
            job.admitted = True
        self._queue.put(job)

    def start(self) -> "DecoderService":
        self._thread = threading.Thread(target=self._loop, name="lita-decoder", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            jobs = [job]
            while len(jobs) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self.run(jobs)
                    return
                jobs.append(nxt)
            self.run(jobs)
