"""What one request asks of the decoder, validated; plain Python so that light processes can read it."""

from __future__ import annotations

import math
from dataclasses import dataclass

from lita_serve.errors import InvalidInputError, LimitExceededError


@dataclass
class SamplingParams:
    """What one request asks of the decoder. ``greedy`` (or temperature 0) means argmax."""

    max_tokens: int = 128
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    greedy: bool = True

    @property
    def is_greedy(self) -> bool:
        return bool(self.greedy) or self.temperature == 0

    def validate(self, max_new_tokens_limit: int) -> "SamplingParams":
        """Raise InvalidInputError / LimitExceededError naming the first bad parameter; return self."""
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int):
            raise InvalidInputError(f"max_tokens must be an integer, got {self.max_tokens!r}")
        if self.max_tokens <= 0:
            raise InvalidInputError(f"max_tokens must be > 0, got {self.max_tokens}")
        if self.max_tokens > max_new_tokens_limit:
            raise LimitExceededError(f"max_tokens {self.max_tokens} exceeds the limit {max_new_tokens_limit}")
        _check_real("temperature", self.temperature)
        if self.temperature < 0:
            raise InvalidInputError(f"temperature must be >= 0, got {self.temperature}")
        _check_real("top_p", self.top_p)
        if not 0.0 < self.top_p <= 1.0:
            raise InvalidInputError(f"top_p must be in (0, 1], got {self.top_p}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise InvalidInputError(f"top_k must be an integer >= 0, got {self.top_k!r}")
        _check_real("repetition_penalty", self.repetition_penalty)
        if self.repetition_penalty <= 0:
            raise InvalidInputError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)
                                      or not 0 <= self.seed < 2**63):
            raise InvalidInputError(f"seed must be an integer in [0, 2**63), got {self.seed!r}")
        if not isinstance(self.greedy, bool):
            raise InvalidInputError(f"greedy must be a boolean, got {self.greedy!r}")
        return self


def _check_real(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidInputError(f"{name} must be a finite number, got {value!r}")
