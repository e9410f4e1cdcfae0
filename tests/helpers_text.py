"""Shared text fixtures: a generated English-like corpus and real SentencePiece models trained on it."""

from __future__ import annotations

import random
from pathlib import Path

from lita_serve.text.tokenizer import convert_tokenizer, train_tiny_sentencepiece

_SUBJECTS = ["the man", "a woman", "the dog", "a child", "the chef", "two players", "the camera", "a bird"]
_VERBS = ["opens", "jumps over", "picks up", "throws", "cuts", "walks toward", "looks at", "pours"]
_OBJECTS = ["the door", "a red ball", "the onion", "some water", "the table", "a blue box", "the fence"]
_TAILS = ["slowly", "quickly", "after a while", "at the start", "near the end", "twice", "in the kitchen"]
_QUESTIONS = ["When does", "Why does", "How often does", "What happens after", "Where does"]


def corpus(n_lines: int = 300, seed: int = 0) -> list[str]:
    """``n_lines`` deterministic English-like lines with digits and punctuation."""
    rng = random.Random(seed)
    lines = []
    for i in range(n_lines):
        subj, verb, obj, tail = (rng.choice(x) for x in (_SUBJECTS, _VERBS, _OBJECTS, _TAILS))
        if i % 3 == 0:
            lines.append(f"{rng.choice(_QUESTIONS)} {subj} {verb.split()[0]} {obj}? Answer in {rng.randint(1, 90)} words.")
        else:
            lines.append(f"{subj.capitalize()} {verb} {obj} {tail}, at {rng.randint(0, 600)} seconds.")
    return lines


def train_base(path: Path, vocab_size: int = 400) -> Path:
    """Train the base (LLaMA-like) model at ``path``."""
    return train_tiny_sentencepiece(corpus(), path, vocab_size=vocab_size)


def converted_model(directory: Path, version: str = "1.0") -> Path:
    """A base model converted to LITA ``version``, written under ``directory``."""
    base = train_base(directory / "base.model")
    out = directory / f"lita_{version}.model"
    convert_tokenizer(base, out, version)
    return out
