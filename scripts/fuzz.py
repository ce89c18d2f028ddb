#!/usr/bin/env python3
"""The long fuzz run: every parser of peer bytes (scripts/harness/fuzz.py) on --examples inputs each.

Prints, per target, the inputs tried, the outcomes by exception type (declared rejections, and anything else:
a bug), the time taken, and the process's peak memory; exits 1 if any undeclared exception was seen.

    python scripts/fuzz.py --examples 100000 --json runs/fuzz.json

Each target runs in chunks of --chunk inputs (each chunk a fresh hypothesis run) and the JSON is rewritten
after every chunk, so a run cut short on a busy machine still leaves the figures of what it did.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from rich.console import Console
from rich.table import Table

from harness.fuzz import Target, targets


def run(target: Target, examples: int, outcomes: Counter[str], undeclared: list[str]) -> None:
    """`examples` inputs through `target`, counted into `outcomes`; the first undeclared exceptions kept."""

    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(target.strategy)
    def one(data: bytes) -> None:
        try:
            target.run(data)
            outcomes["accepted"] += 1
        except target.declared as exc:
            outcomes[type(exc).__name__] += 1
        except Exception as exc:  # a bug: recorded, and the run goes on
            outcomes[f"UNDECLARED {type(exc).__name__}"] += 1
            if len(undeclared) < 5:
                undeclared.append(f"{type(exc).__name__}: {exc} on {data[:60]!r}")

    one()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--examples", type=int, default=100_000, help="inputs per target")
    p.add_argument("--chunk", type=int, default=10_000, help="inputs per hypothesis run")
    p.add_argument("--only", default="", help="comma-separated target names (default: all)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    chosen = [t for t in targets() if not args.only or t.name in args.only.split(",")]
    console = Console(stderr=True)
    rows = []
    for target in chosen:
        console.print(f"fuzzing {target.name} with {args.examples} inputs ...")
        outcomes: Counter[str] = Counter()
        undeclared: list[str] = []
        t0, cpu0 = time.perf_counter(), time.process_time()
        rows.append({})
        for done in range(0, args.examples, args.chunk):
            run(target, min(args.chunk, args.examples - done), outcomes, undeclared)
            rows[-1] = {
                "target": target.name,
                "inputs": sum(outcomes.values()),
                "outcomes": dict(outcomes),
                "undeclared_examples": undeclared,
                "seconds": round(time.perf_counter() - t0, 1),
                "cpu_seconds": round(time.process_time() - cpu0, 1),  # the wall time is the machine's load too
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            }
            if args.json:
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(rows, indent=2))
        console.print(f"  {rows[-1]['inputs']} inputs in {rows[-1]['seconds']} s: {rows[-1]['outcomes']}")
    table = Table(title=f"fuzz run, {args.examples} inputs per target")
    for column in ("target", "inputs", "outcomes", "s", "CPU s", "peak RSS MB"):
        table.add_column(column)
    for r in rows:
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(r["outcomes"].items()))
        cells = (r["inputs"], outcomes, r["seconds"], r["cpu_seconds"], r["peak_rss_mb"])
        table.add_row(r["target"], *map(str, cells))
    Console().print(table)
    bad = [r for r in rows if any(k.startswith("UNDECLARED") for k in r["outcomes"])]
    for r in bad:
        console.print(f"[red]{r['target']}[/]: {r['undeclared_examples']}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
