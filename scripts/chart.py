#!/usr/bin/env python3
"""Draw a testnet report (scripts/testnet.py --json) as a PNG bar chart of accuracies.

python scripts/chart.py runs/digits.json runs/digits.png
python scripts/chart.py runs/cifar10.json runs/cifar10.png --num-classes 10
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ffnode.data.sources import DIGITS_CLASSES, NAMED_FILES
from harness.report_chart import write_chart


def known_num_classes(dataset: str) -> int | None:
    """The class count of a named dataset when it is known without loading images, else None."""
    if dataset == "digits":
        return len(DIGITS_CLASSES)
    names = NAMED_FILES.get(dataset, (None, None))[1]
    return len(names) if names is not None else None


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("report", type=Path, help="a JSON report written by scripts/testnet.py --json")
    p.add_argument("out", type=Path, help="the PNG to write")
    p.add_argument("--num-classes", type=int, default=None, help="for the chance line (default: from the dataset)")
    args = p.parse_args(argv)
    try:
        report = json.loads(args.report.read_text())
    except (OSError, json.JSONDecodeError) as e:
        sys.exit(f"error: cannot read {args.report} as a JSON report ({e})")
    num_classes = args.num_classes or known_num_classes(str(report.get("dataset", "")))
    if num_classes is None:
        print(
            f"note: class count of '{report.get('dataset')}' unknown: no chance line (pass --num-classes)",
            file=sys.stderr,
        )
    try:
        write_chart(report, args.out, num_classes)
    except ValueError as e:
        sys.exit(f"error: {args.report}: {e}")
    print(f"chart written to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
