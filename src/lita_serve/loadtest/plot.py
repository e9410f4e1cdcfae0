"""PNG plot of a perf_analyzer report: throughput against p50 and p99 latency per concurrency."""

from __future__ import annotations

from pathlib import Path


def plot_report(rows: list[dict[str, float]], path: str | Path, title: str = "lita ensemble") -> Path:
    """Latency (ms, x) vs throughput (requests/s, y), one point per concurrency level, for p50 and p99."""
    import matplotlib  # noqa: PLC0415 - optional, only for the plot

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(7, 4.5))
    throughput = [r["Inferences/Second"] for r in rows]
    for column, label, marker in (("p50 latency", "p50", "o"), ("p99 latency", "p99", "s")):
        latency_ms = [r[column] / 1e3 for r in rows]  # perf_analyzer reports microseconds
        ax.plot(latency_ms, throughput, marker=marker, label=f"{label} latency")
        for x, y, r in zip(latency_ms, throughput, rows):
            ax.annotate(f"c={int(r['Concurrency'])}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("throughput (requests/s)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
