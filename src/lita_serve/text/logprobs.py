"""The log-probability record of one generated token, as the llm step hands it to postprocess.

Plain Python (no torch), so the postprocess step can read it; :mod:`lita_serve.llm.token_logprobs`
computes it from the logits.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TokenLogprobs:
    """One generated token: its log-probability and the ``top`` alternatives ``[(id, logprob)]``."""

    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)
    # For a time token: (probability of the chosen index among the time tokens, mean index, std of the index).
    time: tuple[float, float, float] | None = None

    def to_json(self) -> list:
        """Compact JSON form: ``[logprob, [[id, logprob], ...], [p, mean, std] | null]``."""
        return [round(self.logprob, 6), [[i, round(lp, 6)] for i, lp in self.top],
                None if self.time is None else [round(v, 6) for v in self.time]]

    @classmethod
    def from_json(cls, data: list) -> "TokenLogprobs":
        logprob, top, time = data
        return cls(float(logprob), [(int(i), float(lp)) for i, lp in top],
                   None if time is None else (float(time[0]), float(time[1]), float(time[2])))
