"""Load a site's images from a dataset spec into one uint8 array.

A spec is one of:

- ``digits``: scikit-learn's embedded 8x8 handwritten digits (no files), split 80/20 stratified with seed 0.
  Kept at its native 8x8: upscaling to 16x16 costs 4x the compute in every factory and expert and adds no
  information (measured in ``scripts/bench_learning.py``).
- ``bloodmnist`` / ``retinamnist`` / ``cifar10``: named files in the data dir (``$FFNODE_DATA_DIR``, else
  ``../shared/data`` from the cwd or from the repository root).
- a path to a MedMNIST-format ``.npz`` (``train_images``, ``train_labels`` of shape (N, 1), ``val_*``, ``test_*``);
  an optional ``class_names`` array names the labels (MedMNIST files have none: their labels are named 0..K-1).
- a path to an image-folder tree: ``root/<class>/...`` or ``root/<split>/<class>/...``, each class folder read
  recursively in sorted path order (``root/<class>/patient01/*.jpg`` is one class), files ending in .png, .jpg,
  .jpeg, .tif, .tiff, .bmp or .webp. Every other file, and every hidden one, is skipped and counted in one note
  (``skipped 3 files: 2 .txt, 1 hidden``).

Files are read as they are meant: 8-bit grayscale stays one channel, colour modes (RGB, RGBA, P, CMYK, YCbCr)
become RGB (alpha dropped); 16-bit and 32-bit integer images are scaled by the bit range the folder uses (the
smallest of 8, 10, 12, 14 or 16 bits that holds its largest value: full-range 16-bit is divided by 257, 12-bit
data by 4095/255), float images in 0..1 are multiplied by 255, and any other mode or range is refused by name.
A folder mixing grayscale and colour files is read as grayscale when every colour file is gray (R = G = B), else
as RGB. Images of more than one size are refused unless ``size`` is given, which resizes every image to it.

Every bad input raises :class:`DataError` with one sentence naming the file or class and what to do: a node
operator reads it, so it must say more than a numpy traceback would. What was done to make the files usable
(skips, scaling, resizing) is said in ``ImageSet.notes``, one line each, for ``ffnode init`` to print.
"""

from __future__ import annotations

import os
import tarfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, features

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
# suffixes this PIL build cannot decode: skipped and counted, with the reason
UNREADABLE_SUFFIXES = () if features.check("webp") else (".webp",)
BIT_DEPTHS = (8, 10, 12, 14, 16)  # the depths a 16- or 32-bit integer image is read as (the folder's largest value)

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
    notes: tuple[str, ...] = ()  # what loading did to the files (skipped, scaled, resized), one line each
    resized: int = 0  # how many images were resized to the `size` load_dataset was given
    bit_depth: int = 8  # the depth 16-bit files were read as (8: none was); queries must be read at the same

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


def is_named(spec: str) -> bool:
    """Whether `spec` names a dataset (whose full class list is known) rather than a file or folder."""
    return spec == "digits" or spec in NAMED_FILES


def parse_size(text: str) -> tuple[int, int]:
    """'28x28' (or '28') -> (28, 28): height x width, as `--resize` takes it."""
    parts = text.lower().split("x")
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or not all(p.isdigit() and 0 < int(p) <= 4096 for p in parts):
        raise DataError(f"size {text!r} is not HxW (like 28x28, each side 1..4096): write it that way")
    return int(parts[0]), int(parts[1])


def default_classes(spec: str) -> tuple[str, ...]:
    """The class names a spec provides, in label order (without loading the images where possible)."""
    if spec == "digits":
        return DIGITS_CLASSES
    if spec in NAMED_FILES and NAMED_FILES[spec][1] is not None:
        return NAMED_FILES[spec][1]
    return load_dataset(spec).classes


def load_dataset(
    spec: str,
    *,
    split: str = "train",
    classes: Sequence[str] | None = None,
    size: tuple[int, int] | None = None,
    bit_depth: int = 0,
) -> ImageSet:
    """Load one split of a dataset spec; with `classes`, labels index that (federation) list instead; with `size`
    (H, W), every image of another size is resized to it (and `notes` says how many, from which sizes); with
    `bit_depth`, 16-bit files are read at that depth (the one `ffnode init` found), else at the folder's own."""
    notes: list[str] = []
    resized, depth = 0, 8
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}': use one of {', '.join(SPLITS)}")
    if spec == "digits":
        images, labels, names = _load_digits(split)
    elif spec in NAMED_FILES:
        path = _named_file(spec)
        if spec == "cifar10":
            root = _archive_root(_unpacked_archive(path))
            images, labels, names, resized, depth = _load_folder(root, split, size, notes, bit_depth)
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
            images, labels, names, resized, depth = _load_folder(path, split, size, notes, bit_depth)
        elif path.suffix == ".npz":
            images, labels, names = _load_npz(path, split)
        else:
            raise DataError(f"{path} is neither an .npz file nor a folder of class folders: give one of those")
    if len(images) == 0:
        raise DataError(f"dataset '{spec}' has no images in split '{split}': add images or pick another split")
    if size is not None and tuple(images.shape[1:3]) != tuple(size):
        notes.append(_resized_note(Counter({tuple(images.shape[1:3]): len(images)}), size))
        images, resized = np.stack([_resize(image, size) for image in images]), len(images)
    if classes is not None:
        labels = _remap(labels, names, tuple(classes), spec)
        names = tuple(classes)
    return ImageSet(
        images=images,
        labels=labels.astype(np.int64),
        classes=tuple(names),
        notes=tuple(notes),
        resized=resized,
        bit_depth=depth,
    )


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


def _load_folder(
    root: Path, split: str, size: tuple[int, int] | None, notes: list[str], bit_depth: int = 0
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], int, int]:
    """(images, labels, class names, how many images were resized to `size`, the bit depth 16-bit files were read
    as); `notes` gets what was done."""
    split_dirs = [s for s in SPLITS if (root / s).is_dir()]
    if split_dirs:
        if split not in split_dirs:
            raise DataError(f"{root} has split folders {', '.join(split_dirs)} but no '{split}': use one of those")
        root = root / split
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(f"{root} has no class folders: lay images out as {root}/<class>/<image>.png")
    skipped: Counter[str] = Counter()
    for entry in root.iterdir():  # files beside the class folders, and hidden folders there
        if entry not in class_dirs:
            hidden = entry.name.startswith(".")
            skipped.update(
                _skip_reason(f, hidden, outside=True) for f in (_files(entry) if entry.is_dir() else [entry])
            )
    images: list[np.ndarray] = []
    labels: list[int] = []
    files: list[Path] = []
    resized: Counter[tuple[int, int]] = Counter()  # source sizes of the images resized to `size`
    for label, class_dir in enumerate(class_dirs):
        found, before = 0, skipped.copy()
        for file in _files(class_dir):
            hidden = any(part.startswith(".") for part in file.relative_to(class_dir).parts)
            suffix = file.suffix.lower()
            if hidden or suffix not in IMAGE_SUFFIXES or suffix in UNREADABLE_SUFFIXES or file.is_dir():
                skipped[_skip_reason(file, hidden)] += 1
                continue
            image = _read_image(file)
            if size is not None and image.shape[:2] != tuple(size):
                resized[image.shape[:2]] += 1
                image = _resize(image, size)
            images.append(image)
            labels.append(label)
            files.append(file)
            found += 1
        if not found:
            here = ", ".join(f"{n} {reason}" for reason, n in (skipped - before).most_common())
            raise DataError(
                f"class folder {class_dir} has no images ({', '.join(IMAGE_SUFFIXES)}, in it or below it"
                f"{'; it holds ' + here if here else ''}): add images or remove it"
            )
    if skipped:
        counts = ", ".join(f"{n} {reason}" for reason, n in sorted(skipped.items(), key=lambda kv: (-kv[1], kv[0])))
        notes.append(f"skipped {sum(skipped.values())} files in {root}: {counts}")
    depth = _scale_deep(images, files, notes, bit_depth)
    _one_channel_count(images, files, notes)
    if resized:
        notes.append(_resized_note(resized, size))
    _one_size(images, files, root)
    names = tuple(p.name for p in class_dirs)
    return np.stack(images), np.asarray(labels, dtype=np.int64), names, sum(resized.values()), depth


def _files(folder: Path) -> list[Path]:
    """Every file under `folder`, recursively, in sorted path order; a link to a folder is listed, not followed
    (so it is counted among the skipped files, never silently dropped)."""
    found = [
        Path(top) / name
        for top, dirs, names in os.walk(folder)
        for name in names + [d for d in dirs if (Path(top) / d).is_symlink()]
    ]
    return sorted(found, key=lambda p: p.relative_to(folder).parts)


def _skip_reason(file: Path, hidden: bool = False, outside: bool = False) -> str:
    """Why a file is skipped, as counted in the note: hidden, its suffix, or an image outside a class folder."""
    if hidden or file.name.startswith("."):
        return "hidden"
    if file.is_dir():
        return "links to folders (not followed: copy the images in)"
    suffix = file.suffix.lower()
    if suffix in UNREADABLE_SUFFIXES:
        return f"{suffix} (this PIL build cannot read it)"
    if outside and suffix in IMAGE_SUFFIXES:
        return f"{suffix} outside a class folder"
    return suffix or "without suffix"


def _read_image(path: Path | BinaryIO) -> np.ndarray:
    """One file as (H, W, C): uint8, or uint16 for 16- and 32-bit integer images (scaled by `_scale_deep` once
    the folder's bit depth is known). Grayscale stays 1 channel, colour becomes RGB; other modes are refused."""
    try:
        with Image.open(path) as im:
            if getattr(im, "n_frames", 1) > 1:
                raise DataError(
                    f"{path} holds {im.n_frames} frames (a stack or an animation): save each frame as its own file"
                )
            mode = im.mode
            if mode in ("1", "L", "LA", "La"):
                array = np.asarray(im.convert("L"), dtype=np.uint8)
            elif mode in ("I;16", "I;16L", "I;16B", "I;16N"):
                array = np.asarray(im).astype(np.uint16)
            elif mode == "I":  # 32-bit signed: usable when its values are those of a 16-bit (or 8-bit) image
                raw = np.asarray(im)
                if raw.size and (raw.min() < 0 or raw.max() > 65535):
                    raise DataError(
                        f"{path} is a 32-bit integer image (PIL mode 'I') with values {raw.min()}..{raw.max()}, "
                        f"outside 0..65535: convert it to 8- or 16-bit"
                    )
                array = raw.astype(np.uint16)
            elif mode == "F":  # 32-bit float: usable when its values are in 0..1
                raw = np.asarray(im, dtype=np.float64)
                if raw.size and (not np.isfinite(raw).all() or raw.min() < 0 or raw.max() > 1):
                    raise DataError(
                        f"{path} is a float image (PIL mode 'F') with values {np.nanmin(raw):g}..{np.nanmax(raw):g}, "
                        f"not 0..1: convert it to 8- or 16-bit"
                    )
                array = np.round(raw * 255).astype(np.uint8)
            elif mode in ("RGB", "RGBA", "RGBX", "RGBa", "P", "PA", "CMYK", "YCbCr"):
                array = np.asarray(im.convert("RGB"), dtype=np.uint8)
            else:
                raise DataError(
                    f"{path} has PIL mode {mode!r}, which ffnode does not read: "
                    f"convert it to 8- or 16-bit grayscale or to RGB"
                )
    except DataError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot read image {path} ({e}): replace or remove the file") from e
    return array[..., None] if array.ndim == 2 else array


DEEP_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")  # PIL modes of more than 8 bits a channel


def read_image(path: Path | BinaryIO, bit_depth: int = 0) -> np.ndarray:
    """One file on its own (a query image) as (H, W, C) uint8, read by the same rules as a folder's: 16-bit values
    scaled from `bit_depth` (the federation's training data's, so a pixel means what it meant there), else from
    the image's own."""
    image = _read_image(path)
    images = [image]
    _scale_deep(images, [path], [], bit_depth)
    return images[0]


def _bit_depth(largest: int) -> int:
    return next(bits for bits in BIT_DEPTHS if largest < 2**bits)


def _scale_deep(images: list[np.ndarray], files: list[Path], notes: list[str], bit_depth: int = 0) -> int:
    """Scale every uint16 image in place to uint8 by `bit_depth`, else by the depth of the folder's largest 16-bit
    value; returns the depth used (8: no 16-bit image). A value beyond a given depth is refused, never clipped."""
    deep = [i for i, image in enumerate(images) if image.dtype == np.uint16]
    if not deep:
        return 8
    largest = max(int(images[i].max()) for i in deep)
    depth = bit_depth or _bit_depth(largest)
    top = 2**depth - 1
    if largest > top:
        raise DataError(
            f"{files[deep[0]]} and others hold values up to {largest:,}, beyond the {depth}-bit range (0..{top:,}) "
            f"the federation's data was read at (data.bit_depth in config.toml): give images of that depth"
        )
    for i in deep:
        images[i] = ((images[i].astype(np.uint32) * 255 + top // 2) // top).astype(np.uint8)
    notes.append(
        f"read {len(deep)} 16-bit images (largest value {largest:,}, e.g. {files[deep[0]]}) as "
        f"{depth}-bit: 0..{top:,} scaled to 0..255"
    )
    return depth


def _one_channel_count(images: list[np.ndarray], files: list[Path], notes: list[str]) -> None:
    """Grayscale and colour files in one folder: all gray if every colour one is gray (R = G = B), else all RGB."""
    colour = [i for i, image in enumerate(images) if image.shape[2] == 3]
    if not colour or len(colour) == len(images):
        return
    if all((images[i] == images[i][..., :1]).all() for i in colour):
        for i in colour:
            images[i] = images[i][..., :1]
        notes.append(f"read {len(colour)} RGB images whose channels are equal (e.g. {files[colour[0]]}) as grayscale")
        return
    gray = [i for i, image in enumerate(images) if image.shape[2] == 1]
    for i in gray:
        images[i] = np.repeat(images[i], 3, axis=2)
    notes.append(f"read {len(gray)} grayscale images (e.g. {files[gray[0]]}) as RGB, like the other {len(colour)}")


def _one_size(images: list[np.ndarray], files: list[Path], root: Path) -> None:
    """Refuse a folder of more than one image size, naming the sizes, an example of each and the fix."""
    sizes = Counter(image.shape[:2] for image in images)
    if len(sizes) == 1:
        return
    example = {shape: files[next(i for i, im in enumerate(images) if im.shape[:2] == shape)] for shape in sizes}
    listed = "; ".join(f"{n} of {h}x{w} (e.g. {example[(h, w)]})" for (h, w), n in sizes.most_common())
    (h, w), _ = sizes.most_common(1)[0]
    raise DataError(
        f"{root} holds images of {len(sizes)} sizes: {listed}: resize them all to one size "
        f"(ffnode init --resize {h}x{w} does it), or convert the files"
    )


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, C) uint8 or uint16 -> (size[0], size[1], C) of the same dtype (Lanczos, values kept in range)."""
    h, w = size
    if image.dtype == np.uint16:  # 16-bit values resized as floats, so the folder's bit depth survives
        channels = [
            Image.fromarray(image[..., c].astype(np.float32)).resize((w, h), Image.Resampling.LANCZOS)
            for c in range(image.shape[2])
        ]
        out = np.stack([np.asarray(ch) for ch in channels], axis=-1)
        # Lanczos overshoots at edges: beyond the image's own largest value, the folder would read as deeper
        return np.clip(np.round(out), 0, int(image.max())).astype(np.uint16)
    pil = Image.fromarray(image[..., 0] if image.shape[2] == 1 else image)
    out = np.asarray(pil.resize((w, h), Image.Resampling.LANCZOS), dtype=np.uint8)
    return out[..., None] if out.ndim == 2 else out


def _resized_note(sources: Counter, size: tuple[int, int]) -> str:
    """'resized 40 images from 64x64 to 28x28' (several source sizes listed, the most common first)."""
    listed = ", ".join(f"{n} from {h}x{w}" for (h, w), n in sources.most_common())
    if len(sources) == 1:
        (h, w), n = sources.most_common(1)[0]
        listed = f"{n} images from {h}x{w}"
    return f"resized {listed} to {size[0]}x{size[1]}"


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
