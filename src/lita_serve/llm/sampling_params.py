"""What one request asks of the decoder, validated; plain Python so that light processes can read it."""

from __future__ import annotations

import math
from dataclasses import dataclass

from lita_client.contract import SAMPLING_RANGES
from lita_serve.errors import InvalidInputError, LimitExceededError


INTEGER_PARAMS = ("max_tokens", "top_k", "seed", "logprobs")
NUMBER_PARAMS = ("temperature", "top_p", "repetition_penalty")


def check_type(name: str, value: object) -> None:
    """InvalidInputError naming ``name`` unless ``value`` has its type (an integer, or a finite number)."""
    if name in INTEGER_PARAMS and (isinstance(value, bool) or not isinstance(value, int)):
        raise InvalidInputError(f"{name} must be an integer, got {value!r}")
    if name in NUMBER_PARAMS and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value)):
        raise InvalidInputError(f"{name} must be a finite number, got {value!r}")


def check_range(name: str, value: float) -> None:
    """InvalidInputError naming ``name`` when ``value`` is outside its range in the contract."""
    allowed = SAMPLING_RANGES[name]
    if not allowed.contains(value):
        raise InvalidInputError(f"{name} must be {allowed.describe()}, got {value!r}")


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
    logprobs: int | None = None  # None: off; N: each token's log-probability and its top N alternatives

    @property
    def is_greedy(self) -> bool:
        return bool(self.greedy) or self.temperature == 0

    def validate(self, max_new_tokens_limit: int) -> "SamplingParams":
        """Raise InvalidInputError / LimitExceededError naming the first bad parameter; return self.

        Value ranges come from the client-server contract (:data:`SAMPLING_RANGES`).
        """
        for name in (*INTEGER_PARAMS, *NUMBER_PARAMS):
            value = getattr(self, name)
            if value is not None or name in NUMBER_PARAMS:
                check_type(name, value)
        for name in SAMPLING_RANGES:
            value = getattr(self, name)
            if value is not None:
                check_range(name, value)
        if self.max_tokens > max_new_tokens_limit:
            raise LimitExceededError(f"max_tokens {self.max_tokens} exceeds the limit {max_new_tokens_limit}")
        if not isinstance(self.greedy, bool):
            raise InvalidInputError(f"greedy must be a boolean, got {self.greedy!r}")
        return self
