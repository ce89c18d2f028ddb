"""Images in and out: read one query image (refusing anything not of the federation's shape), lay images out
in a grid for a picture."""

from __future__ import annotations

import math
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from ffnode.data.sources import DEEP_MODES, DataError, read_image


def load_image_file(
    path: Path | BinaryIO, shape: tuple[int, int, int], bit_depth: int = 0, formats: tuple[str, ...] | None = None
) -> np.ndarray:
    """Return the image at `path` (a file, or the bytes of one, e.g. an upload; messages name it by its str) as
    (H, W, C) uint8; `formats` (PIL's names, e.g. ("PNG", "JPEG")) are the only ones tried, if given.

    The color mode is converted to C channels (1: grayscale, 3: RGB), 16-bit grayscale scaled from `bit_depth`
    (the training data's: data.bit_depth), else from its own, as `ffnode.data.sources` reads a folder; but a wrong
    size is an error, never a silent resize: a resized query is a different input than the one the user meant to
    classify.
    """
    h, w, c = shape
    if c not in (1, 3):
        raise DataError(f"expected 1 or 3 channels, got shape {shape}")
    try:
        with Image.open(path, formats=formats) as im:
            size = im.size  # (W, H), from the header: a wrong size is refused before anything is decoded
            if size != (w, h):
                raise DataError(f"{path} is {size[0]}x{size[1]} pixels, expected {w}x{h}: resize it to {w}x{h} first")
            deep = im.mode in DEEP_MODES
            if not deep:
                array = np.asarray(im.convert("L" if c == 1 else "RGB"), dtype=np.uint8)
        if deep:  # 16-bit, 32-bit or float grayscale: scaled to 0..255 by its bit depth, never clipped
            array = read_image(path, bit_depth)
            array = np.repeat(array, 3, axis=2) if c == 3 else array
    except FileNotFoundError as e:
        raise DataError(f"image file {path} does not exist: check the path") from e
    except UnidentifiedImageError as e:
        raise DataError(f"{path} is not an image PIL can read: give a PNG or JPEG of {w}x{h} pixels") from e
    except DataError:  # a ValueError too, already worded for the user
        raise
    except (ValueError, SyntaxError, EOFError) as e:  # what PIL raises on a damaged file (or a text-chunk bomb)
        raise DataError(f"{path} is a damaged image ({e}): give a PNG or JPEG of {w}x{h} pixels") from e
    except (OSError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot read image file {path} ({e}): check the file and its permissions") from e
    return array.reshape(h, w, c)


def image_grid(images: np.ndarray, cell: int = 64, cols: int = 0) -> np.ndarray:
    """(N, H, W, C) uint8 -> one (rows*cell, cols*cell, C) image, `cols` wide (0: square); each image scaled up
    by whole pixels."""
    n, h, w, c = images.shape
    scale = max(1, cell // max(h, w))
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.full((rows * h * scale, cols * w * scale, c), 255, np.uint8)
    for i, img in enumerate(images):
        r, k = divmod(i, cols)
        big = img.repeat(scale, axis=0).repeat(scale, axis=1)
        grid[r * h * scale : (r + 1) * h * scale, k * w * scale : (k + 1) * w * scale] = big
    return grid
