"""PNG plot of a load test: throughput against p50 and p99 latency, one line per regime; beside it
time to first token and inter-token latency per concurrency level."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence


def plot_regimes(results: Mapping[str, Sequence[Any]], path: str | Path, title: str = "lita ensemble") -> Path:
    """Latency (ms, x, log scale) vs throughput (requests/s, y); per regime a p50 and a p99 line,
    each point labelled with its concurrency, the legend giving the regime's cache hit ratios."""
    import matplotlib  # noqa: PLC0415 - optional, only for the plot

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, (ax, tokens_ax) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [3, 2]})
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
    ax.set_title(f"{title}: cold = a new video every request; warm = cached features", fontsize=10)
    ax.grid(True, alpha=0.3, which="both")
    ax.legend(fontsize=8)
    _plot_token_latency(tokens_ax, results)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _plot_token_latency(ax: Any, results: Mapping[str, Sequence[Any]]) -> None:
    """TTFT (p50 solid, p99 dashed) and ITL p50 (dotted) in ms against concurrency, per regime."""
    for (regime, rows), color in zip(results.items(), ("tab:red", "tab:blue", "tab:green")):
        timed = [r for r in rows if getattr(r, "ttft_p50_ms", None) is not None]
        if not timed:
            continue
        levels = [r.concurrency for r in timed]
        ax.plot(levels, [r.ttft_p50_ms for r in timed], "-o", color=color, label=f"{regime} TTFT p50")
        ax.plot(levels, [r.ttft_p99_ms for r in timed], "--s", color=color, label=f"{regime} TTFT p99")
        itl = [(r.concurrency, r.itl_p50_ms) for r in timed if r.itl_p50_ms is not None]
        if itl:
            ax.plot(*zip(*itl), ":^", color=color, label=f"{regime} ITL p50")
    ax.set_yscale("log")
    ax.set_xlabel("concurrency")
    ax.set_ylabel("ms")
    ax.set_title("time to first token, inter-token latency", fontsize=10)
    ax.grid(True, alpha=0.3, which="both")
    ax.legend(fontsize=8)
