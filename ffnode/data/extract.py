"""Read a site's data in a process of its own: `python -m ffnode.data.extract [options] -- SPEC OUT.npz`.

The node needs its images once, as the array every job reads; the readers (PIL for image folders, scikit-learn for
the embedded digits) would stay in the always-on node's memory for nothing, and a damaged or hostile file is
better met here. Writes OUT.npz (images, labels); a DataError is printed on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from ffnode.data.sources import DataError, load_dataset


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("spec")
    p.add_argument("out", type=Path)
    p.add_argument("--split", default="train")
    p.add_argument("--classes", required=True, help="the federation's class names as a JSON list")
    p.add_argument("--bit-depth", type=int, default=0)
    args = p.parse_args(argv)
    try:
        data = load_dataset(args.spec, split=args.split, classes=json.loads(args.classes), bit_depth=args.bit_depth)
    except DataError as exc:
        print(exc, file=sys.stderr)
        return 2
    tmp = args.out.with_suffix(".tmp.npz")
    np.savez(tmp, images=data.images, labels=data.labels)
    tmp.replace(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
