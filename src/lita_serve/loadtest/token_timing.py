"""Time to first token (TTFT) and inter-token latency (ITL) from perf_analyzer's profile export.

``perf_analyzer --profile-export-file PATH`` (documented in perf_analyzer's ``docs/cli.md``; the
layout is shown in its ``docs/benchmarking.md``; checked here on release 2.51.0) writes::

    {"version": "2.51.0", "service_kind": "triton" | "openai", "endpoint": "...",
     "experiments": [{"experiment": {"mode": "concurrency", "value": 8},
                      "window_boundaries": [ns, ns, ...],
                      "requests": [{"timestamp": ns, "request_inputs": {...},
                                    "response_timestamps": [ns, ...],
                                    "response_outputs": [{...}, ...]}]}]}

with one response timestamp and output per streamed response. Over Triton's streaming gRPC
each output holds the ensemble's tensors (``text_output``, ``is_final``, ...); over the OpenAI
endpoint each holds ``{"response": "data: {chunk}\\n\\n"}``, the server-sent events read at
that moment. A *token* here is a response that carries text: the ensemble's first response
(whose token decodes to no text) and its closing one, and the OpenAI stream's closing events,
are left out on both sides, so the two endpoints are measured by the same rule. TTFT is the
first token's time minus the request's; ITL the gaps between a request's consecutive tokens.

The export holds the inputs as sent, a video's raw bytes included, which are not UTF-8: the
file is read with undecodable bytes replaced (they only occur inside input strings).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

PERCENTILES = (50, 90, 99)


def read_profile_export(path: str | Path) -> dict[str, Any]:
    """The export as JSON (see the module docstring for why bytes are replaced)."""
    return json.loads(Path(path).read_bytes().decode("utf-8", errors="replace"), strict=False)


def _sse_texts(raw: str) -> list[str]:
    """The content pieces in a block of OpenAI server-sent events."""
    texts = []
    for line in raw.splitlines():
        line = line.strip()
        if not line.startswith("data:") or line == "data: [DONE]":
            continue
        try:
            chunk = json.loads(line[5:])
        except ValueError:
            continue
        for choice in chunk.get("choices") or []:
            content = (choice.get("delta") or {}).get("content")
            if content:
                texts.append(content)
    return texts


def token_times(request: dict[str, Any]) -> list[int]:
    """Nanosecond timestamps of the tokens of one exported request (one per text-carrying piece)."""
    times = []
    for stamp, output in zip(request.get("response_timestamps", []), request.get("response_outputs", [])):
        if "response" in output:  # the OpenAI endpoint: one or more SSE events
            times.extend([stamp] * len(_sse_texts(str(output["response"]))))
        elif output.get("text_output"):  # Triton: the ensemble's tensors
            times.append(stamp)
    return times


@dataclass(frozen=True)
class StreamLatency:
    """TTFT and ITL percentiles (ms) of one concurrency level, over its requests that produced tokens."""

    requests: int
    tokens: int
    ttft_ms: dict[int, float]  # percentile -> ms
    itl_ms: dict[int, float]

    def flat(self) -> dict[str, float | int]:
        """``ttft_p50_ms``, ..., ``itl_p99_ms`` (NaN-free: None where nothing was measured)."""
        out: dict[str, Any] = {"token_requests": self.requests, "tokens": self.tokens}
        for q in PERCENTILES:
            out[f"ttft_p{q}_ms"] = self.ttft_ms.get(q)
            out[f"itl_p{q}_ms"] = self.itl_ms.get(q)
        return out


def percentile(values: Sequence[float], q: int) -> float:
    """The ``q``-th percentile with linear interpolation between the closest ranks."""
    if len(values) == 1:
        return float(values[0])
    return float(statistics.quantiles(values, n=100, method="inclusive")[q - 1])


def _summary(values: Sequence[float]) -> dict[int, float]:
    return {q: round(percentile(values, q), 3) for q in PERCENTILES} if values else {}


def in_windows(experiment: dict[str, Any]) -> list[dict[str, Any]]:
    """The experiment's requests that ended inside its measurement windows (all of them if it has none)."""
    requests = experiment.get("requests", [])
    bounds = experiment.get("window_boundaries") or []
    if len(bounds) < 2:
        return requests
    lo, hi = bounds[0], bounds[-1]
    kept = [r for r in requests if r.get("response_timestamps") and lo <= r["response_timestamps"][-1] <= hi]
    return kept or requests


def stream_latency(requests: Iterable[dict[str, Any]]) -> StreamLatency:
    ttft, itl, count, tokens = [], [], 0, 0
    for request in requests:
        times = token_times(request)
        if not times:
            continue
        count += 1
        tokens += len(times)
        ttft.append((times[0] - request["timestamp"]) / 1e6)
        itl.extend((b - a) / 1e6 for a, b in zip(times, times[1:]))
    return StreamLatency(count, tokens, _summary(ttft), _summary(itl))


def latency_by_concurrency(path: str | Path) -> dict[int, StreamLatency]:
    """Per concurrency level of a profile export: TTFT and ITL percentiles."""
    export = read_profile_export(path)
    return {int(e["experiment"]["value"]): stream_latency(in_windows(e)) for e in export.get("experiments", [])}


def shrink_export(path: str | Path, timeline: str | Path) -> Path:
    """Replace the export at ``path`` (megabytes: every request's video is in it) by ``timeline``,
    a small JSON of what the figures are computed from: per level, each request's start and its
    token times (ns), and which requests ended inside the measurement windows."""
    export = read_profile_export(path)
    levels = []
    for e in export.get("experiments", []):
        kept = {id(r) for r in in_windows(e)}
        levels.append({"concurrency": int(e["experiment"]["value"]),
                       "window_boundaries": e.get("window_boundaries", []),
                       "requests": [{"timestamp": r["timestamp"], "token_timestamps": token_times(r),
                                     "responses": len(r.get("response_timestamps", [])), "in_windows": id(r) in kept}
                                    for r in e.get("requests", [])]})
    out = Path(timeline)
    out.write_text(json.dumps({"version": export.get("version"), "service_kind": export.get("service_kind"),
                               "levels": levels}))
    Path(path).unlink()
    return out
