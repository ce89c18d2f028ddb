"""Load a site's images from a dataset spec into one uint8 array.

A spec is one of:

- ``digits``: scikit-learn's embedded 8x8 handwritten digits (no files), split 80/20 stratified with seed 0.
  Kept at its native 8x8: upscaling to 16x16 costs 4x the compute in every factory and expert and adds no
  information (measured in ``scripts/bench_learning.py``).
- ``bloodmnist`` / ``retinamnist`` / ``cifar10``: named files in the data dir (``$FFNODE_DATA_DIR``, else
  ``../shared/data`` from the cwd or from the repository root).
- a path to a MedMNIST-format ``.npz`` (``train_images``, ``train_labels`` of shape (N, 1), ``val_*``, ``test_*``);
  an optional ``class_names`` array names the labels (MedMNIST files have none: their labels are named 0..K-1).
- a path to an image-folder tree: ``root/<class>/*.png|jpg|jpeg``, or ``root/<split>/<class>/...``.

Every bad input raises :class:`DataError` with one sentence naming the file or class and what to do: a node
operator reads it, so it must say more than a numpy traceback would.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

# named datasets -> (file in the data dir, class names in label order; None means "0".."K-1")
NAMED_FILES: dict[str, tuple[str, tuple[str, ...] | None]] = {
    "bloodmnist": (
        "bloodmnist_pbc_28.npz",
        (
            "basophil",
            "eosinophil",
            "erythroblast",
            "immature granulocyte",
            "lymphocyte",
            "monocyte",
            "neutrophil",
            "platelet",
        ),
    ),
    "retinamnist": ("retinamnist.npz", ("0", "1", "2", "3", "4")),
    "cifar10": ("cifar10_jpg.tar.xz", None),  # class names come from the folder names
}
DIGITS_CLASSES = tuple(str(d) for d in range(10))


class DataError(ValueError):
    """A dataset or image the node cannot use; the message names the input and what to do about it."""


@dataclass(frozen=True)
class ImageSet:
    images: np.ndarray  # (N, H, W, C) uint8
    labels: np.ndarray  # (N,) int64, indices into `classes`
    classes: tuple[str, ...]  # the federation's class names, in label order

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # (H, W, C)


# -----------------------------------------------------------------------------
# where files live


def data_dir() -> Path:
    """The folder holding the named dataset files: $FFNODE_DATA_DIR, else ../shared/data from cwd or repo."""
    env = os.environ.get("FFNODE_DATA_DIR")
    if env:
        return Path(env)
    candidates = [Path.cwd() / ".." / "shared" / "data", Path(__file__).resolve().parents[3] / "shared" / "data"]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    return candidates[0]


def cache_dir() -> Path:
    """Where unpacked archives go: $FFNODE_CACHE_DIR, else ~/.cache/ffnode."""
    env = os.environ.get("FFNODE_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "ffnode"


def _named_file(name: str) -> Path:
    path = data_dir() / NAMED_FILES[name][0]
    if not path.is_file():
        raise DataError(
            f"dataset '{name}' needs the file {path}, which does not exist: "
            f"put it there or set FFNODE_DATA_DIR to the folder that holds it"
        )
    return path


def _unpacked_archive(archive: Path) -> Path:
    """Unpack a .tar.xz image-folder tree once into the cache dir and return its root."""
    target = cache_dir() / archive.name.removesuffix(".tar.xz")
    done = target / ".unpacked"
    if done.exists():
        return target
    target.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(target, filter="data")  # "data" refuses absolute paths and links out of the tree
    except (OSError, tarfile.TarError) as e:
        raise DataError(f"cannot unpack {archive} into {target} ({e}): check the file and free disk space") from e
    # the archive may hold one top-level folder around train/ and test/
    entries = [p for p in target.iterdir() if p.is_dir()]
    if len(entries) == 1 and not any((target / s).is_dir() for s in SPLITS):
        (target / ".root").write_text(entries[0].name)
    done.touch()
    return target


def _archive_root(target: Path) -> Path:
    marker = target / ".root"
    return target / marker.read_text().strip() if marker.exists() else target


# -----------------------------------------------------------------------------
# public API


def default_classes(spec: str) -> tuple[str, ...]:
    """The class names a spec provides, in label order (without loading the images where possible)."""
    if spec == "digits":
        return DIGITS_CLASSES
    if spec in NAMED_FILES and NAMED_FILES[spec][1] is not None:
        return NAMED_FILES[spec][1]
    return load_dataset(spec).classes


def load_dataset(spec: str, *, split: str = "train", classes: Sequence[str] | None = None) -> ImageSet:
    """Load one split of a dataset spec; with `classes`, labels index that (federation) list instead."""
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}': use one of {', '.join(SPLITS)}")
    if spec == "digits":
        images, labels, names = _load_digits(split)
    elif spec in NAMED_FILES:
        path = _named_file(spec)
        if spec == "cifar10":
            images, labels, names = _load_folder(_archive_root(_unpacked_archive(path)), split)
        else:
            images, labels, _ = _load_npz(path, split)
            names = NAMED_FILES[spec][1]
    else:
        path = Path(spec).expanduser()
        if not path.exists():
            raise DataError(
                f"dataset '{spec}' is not a known name (digits, {', '.join(NAMED_FILES)}) "
                f"and no such file or folder exists: check the spelling or the path"
            )
        if path.is_dir():
            images, labels, names = _load_folder(path, split)
        elif path.suffix == ".npz":
            images, labels, names = _load_npz(path, split)
        else:
            raise DataError(f"{path} is neither an .npz file nor a folder of class folders: give one of those")
    if len(images) == 0:
        raise DataError(f"dataset '{spec}' has no images in split '{split}': add images or pick another split")
    if classes is not None:
        labels = _remap(labels, names, tuple(classes), spec)
        names = tuple(classes)
    return ImageSet(images=images, labels=labels.astype(np.int64), classes=tuple(names))


def save_npz(
    path: Path, splits: dict[str, tuple[np.ndarray, np.ndarray]], classes: Sequence[str] | None = None
) -> None:
    """Write splits as a MedMNIST-format .npz (`<split>_images` (N,H,W[,C]) uint8, `<split>_labels` (N, 1)).

    With `classes`, the names of labels 0..K-1 go in a `class_names` array, so a file holding only some
    classes of a named dataset (a silo site's share) still says which classes they are.
    """
    arrays: dict[str, np.ndarray] = {} if classes is None else {"class_names": np.array(list(classes), dtype=str)}
    for split, (images, labels) in splits.items():
        arrays[f"{split}_images"] = np.asarray(images, dtype=np.uint8)
        arrays[f"{split}_labels"] = np.asarray(labels, dtype=np.int64).reshape(-1, 1)
    np.savez_compressed(path, **arrays)


# -----------------------------------------------------------------------------
# loaders: each returns (images (N,H,W,C) uint8, labels (N,) int64, class names)


def _load_digits(split: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if split == "val":
        raise DataError("dataset 'digits' has only 'train' and 'test' splits: use one of those")
    digits = load_digits()
    # pixel values are 0..16: scale to 0..255 so every dataset shares one uint8 range
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]  # (N, 8, 8, 1)
    index = np.arange(len(images))
    train_idx, test_idx = train_test_split(index, test_size=0.2, stratify=digits.target, random_state=0)
    chosen = np.sort(train_idx if split == "train" else test_idx)
    return images[chosen], digits.target[chosen].astype(np.int64), DIGITS_CLASSES


def _load_npz(path: Path, split: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    try:
        with np.load(path) as npz:
            keys = set(npz.files)
            if f"{split}_images" not in keys or f"{split}_labels" not in keys:
                raise DataError(
                    f"{path} has no '{split}_images'/'{split}_labels' arrays (it has {', '.join(sorted(keys))}): "
                    f"use a MedMNIST-format file or another split"
                )
            images = npz[f"{split}_images"]
            labels = npz[f"{split}_labels"]
            if "class_names" in keys:
                names = tuple(str(c) for c in npz["class_names"])
            else:  # generic names 0..K-1, K taken over all splits so train and test agree
                k = max(int(npz[key].max()) + 1 for key in npz.files if key.endswith("_labels") and npz[key].size)
                names = tuple(str(i) for i in range(k))
    except DataError:
        raise
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {path} as an .npz file ({e}): check the path and the file") from e
    if images.ndim == 3:  # grayscale MedMNIST files store (N, H, W)
        images = images[..., None]
    if images.ndim != 4 or images.dtype != np.uint8:
        raise DataError(f"{path}: '{split}_images' must be uint8 (N, H, W[, C]), got {images.dtype} {images.shape}")
    labels = labels.reshape(-1).astype(np.int64)
    if len(labels) != len(images):
        raise DataError(f"{path}: {len(images)} '{split}' images but {len(labels)} labels: fix the file")
    if labels.size and (labels.min() < 0 or labels.max() >= len(names)):
        raise DataError(f"{path}: '{split}_labels' must be 0..{len(names) - 1}, one per class name: fix the file")
    return images, labels, names


def _load_folder(root: Path, split: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    split_dirs = [s for s in SPLITS if (root / s).is_dir()]
    if split_dirs:
        if split not in split_dirs:
            raise DataError(f"{root} has split folders {', '.join(split_dirs)} but no '{split}': use one of those")
        root = root / split
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(f"{root} has no class folders: lay images out as {root}/<class>/<image>.png")
    images: list[np.ndarray] = []
    labels: list[int] = []
    first_file: Path | None = None  # the file whose shape every other image must match
    for label, class_dir in enumerate(class_dirs):
        files = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"class folder {class_dir} has no .png/.jpg/.jpeg images: add images or remove it")
        for file in files:
            image = _read_image(file)
            if images and image.shape != images[0].shape:
                raise DataError(
                    f"{file} is {image.shape} (H, W, C) but {first_file} is {images[0].shape}: "
                    f"convert all images to one size and color mode"
                )
            first_file = first_file or file
            images.append(image)
            labels.append(label)
    return np.stack(images), np.asarray(labels, dtype=np.int64), tuple(p.name for p in class_dirs)


def _read_image(path: Path) -> np.ndarray:
    """One file as (H, W, C) uint8: grayscale stays 1 channel, every other mode becomes RGB."""
    try:
        with Image.open(path) as im:
            im = im.convert("L") if im.mode in ("L", "1", "I;16", "I", "F", "LA") else im.convert("RGB")
            array = np.asarray(im, dtype=np.uint8)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read image {path} ({e}): replace or remove the file") from e
    return array[..., None] if array.ndim == 2 else array


def _remap(labels: np.ndarray, names: tuple[str, ...], classes: tuple[str, ...], spec: str) -> np.ndarray:
    """Map labels indexing `names` (the data's own classes) to indices into `classes` (the federation's)."""
    position = {name: i for i, name in enumerate(classes)}
    present = np.unique(labels)
    unknown = [names[i] for i in present if names[i] not in position]
    if unknown:
        raise DataError(
            f"dataset '{spec}' has class '{unknown[0]}', which is not in the federation's classes "
            f"({', '.join(classes)}): rename or remove that class, or add it to the config"
        )
    lookup = np.array([position.get(name, -1) for name in names], dtype=np.int64)
    return lookup[labels]
