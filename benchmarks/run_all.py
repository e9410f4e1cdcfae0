"""Run every CPU benchmark and print a summary of baseline / ours / ratio (``make bench``: --short).

``--short`` keeps to a few minutes: 30 s/120 s 720p videos only, fewer repeats, a small video
for the serving benchmarks. Results are also written to ``artifacts/bench/results.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from typing import Any

from benchmarks import decode_speed, encoder_engines, frame_sampling, serving
from benchmarks.common import ARTIFACTS, machine_note
from lita_serve.feature_cache import temporary_cache_root

BENCHMARKS = {"frame_sampling": frame_sampling.run, "decode": decode_speed.run, "encoder": encoder_engines.run,
              "serving": serving.run}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--short", action="store_true", help="the few-minute variant")
    p.add_argument("--only", choices=sorted(BENCHMARKS), action="append", help="run only these (repeatable)")
    args = p.parse_args(argv)
    results: dict[str, Any] = {"machine": machine_note(), "short": args.short}
    with temporary_cache_root("lita-bench-cache-"):  # the servers' feature caches, removed at the end
        for name in args.only or list(BENCHMARKS):
            print(f"\n== {name} ==", flush=True)
            start = time.perf_counter()
            results[name] = BENCHMARKS[name](short=args.short)
            print(f"({name}: {time.perf_counter() - start:.0f} s)", flush=True)
    print("\n== summary (ratio = how many times better ours is) ==")
    print(results["machine"])
    for name in args.only or list(BENCHMARKS):
        for r in results[name]:
            if "ratio" in r and not math.isnan(r["ratio"]):
                goal = "" if r.get("target") is None else f"  target {r['target']:g}x"
                print(f"  {r['name']} vs {r['baseline_label']}: {r['ratio']:.2f}x{goal}")
            elif "pct_of_limit" in r:
                print(f"  {r['name']}: {r['pct_of_limit']:.0f} % (target >= {r['target_pct']:g} %)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    return results


if __name__ == "__main__":
    main()
