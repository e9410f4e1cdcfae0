"""What a build produced, printed as a short table."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lita_serve.config import LitaConfig


def path_size(path: Path) -> int:
    """Bytes of a file, or of every file under a directory."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


@dataclass
class BuiltItem:
    what: str
    path: Path
    bytes: int


@dataclass
class BuildSummary:
    """The result of :func:`lita_build.build`."""

    source: str
    engine: str
    output: Path
    config: LitaConfig
    tokens_added: int
    items: list[BuiltItem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, what: str, path: Path) -> None:
        self.items.append(BuiltItem(what, Path(path), path_size(Path(path))))

    @property
    def total_bytes(self) -> int:
        return sum(i.bytes for i in self.items)

    def table(self) -> str:
        t = self.config.text
        head = [("source", self.source), ("engine", self.engine), ("repository", str(self.output)),
                ("model", f"{t.num_hidden_layers} layers, hidden {t.hidden_size}, vocab {t.vocab_size}"),
                ("LITA", f"{self.config.lita.lita_version} {self.config.lita.video_arch} "
                         f"{self.config.lita.visual_token_format}, {self.config.lita.sample_frames} frames"),
                ("tokenizer", f"{self.tokens_added} tokens added")]
        rows = head + [(i.what, f"{human_size(i.bytes):>10}  {_rel(i.path, self.output)}") for i in self.items]
        rows.append(("total", f"{human_size(self.total_bytes):>10}"))
        width = max(len(k) for k, _ in rows)
        lines = [f"{k:<{width}}  {v}" for k, v in rows]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)
