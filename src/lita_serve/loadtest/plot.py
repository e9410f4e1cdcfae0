"""PNG plot of a load test: throughput against p50 and p99 latency, one line per regime."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence


def plot_regimes(results: Mapping[str, Sequence[Any]], path: str | Path, title: str = "lita ensemble") -> Path:
    """Latency (ms, x, log scale) vs throughput (requests/s, y); per regime a p50 and a p99 line,
    each point labelled with its concurrency, the legend giving the regime's cache hit ratios."""
    import matplotlib  # noqa: PLC0415 - optional, only for the plot

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(8, 5))
    for (regime, rows), color in zip(results.items(), ("tab:red", "tab:blue", "tab:green")):
        if not rows:
            continue
        ratios = [r.hit_ratio for r in rows if r.hit_ratio is not None]
        hits = f"cache hit ratio {min(ratios):.2f}-{max(ratios):.2f}" if ratios else "cache hits unknown"
        throughput = [r.throughput for r in rows]
        for attr, style in (("p50_ms", "-o"), ("p99_ms", "--s")):
            latency = [getattr(r, attr) for r in rows]
            ax.plot(latency, throughput, style, color=color, label=f"{regime} {attr[:3]} ({hits})")
            if attr == "p50_ms":
                for x, y, r in zip(latency, throughput, rows):
                    ax.annotate(f"c={r.concurrency}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("throughput (requests/s)")
    ax.set_title(f"{title}: cold = a new video every request; warm = cached features")
    ax.grid(True, alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
