"""An unseen dataset for the profile check: CIFAR-10 as 28x28 grayscale, 5,000 training images per class.

No profile was sized for it (`default` is 8x8x1, `cpu` 28x28x3), so it is what a new site with its own files
brings: `testnet.py --dataset runs/gray28.npz` without `--profile` must pick the one that fits, not cut the
expert to one epoch (PoE 0.241 before, when the `default` profile's budget was scaled to these images).

    .venv/bin/python scripts/make_gray28.py runs/gray28.npz
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from ffnode.data.sources import load_dataset, save_npz


def gray28(images: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) uint8 -> (N, 28, 28) uint8: luminance, bicubic resize."""
    return np.stack([np.asarray(Image.fromarray(im).convert("L").resize((28, 28), Image.BICUBIC)) for im in images])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="the .npz to write (MedMNIST format, with class_names)")
    args = p.parse_args()
    splits = {}
    for split in ("train", "test"):
        d = load_dataset("cifar10", split=split)
        splits[split] = (gray28(d.images), d.labels)
        classes = d.classes
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_npz(args.out, splits, classes)
    counts = np.bincount(splits["train"][1])
    print(
        f"wrote {args.out}: {len(splits['train'][1])} train ({counts.min()}-{counts.max()} per class), "
        f"{len(splits['test'][1])} test, 28x28x1, classes {', '.join(classes)}"
    )


if __name__ == "__main__":
    main()
