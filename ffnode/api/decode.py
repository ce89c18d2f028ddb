"""A query's body -> (B, H, W, C) uint8 images, refusing what is not one before it costs much.

Forms: one PNG or JPEG as the raw body (Content-Type image/png or image/jpeg), or JSON: {"images": [base64
PNG/JPEG, ...]}, {"pixels": base64 of B*H*W*C uint8, "shape": [B, H, W, C]} or {"arrays": nested 0..255 ints}, each
with an optional "rule". A body is refused by its size before it is parsed (at most `max_images` images of
PER_IMAGE bytes each), only PNG and JPEG are decoded (PIL knows formats whose readers run other programs), and a
PNG's text chunks are bounded (TEXT_BYTES): a small file can hold megabytes of compressed text. Decoding is plain
CPU work: the route runs it off the event loop.
"""

from __future__ import annotations

import base64
import binascii
import io
from typing import Any

import numpy as np
from PIL import PngImagePlugin
from pydantic import BaseModel, Field, ValidationError

from ffnode.data.images import load_image_file
from ffnode.data.sources import DataError

IMAGE_TYPES = {"image/png": "PNG", "image/jpeg": "JPEG"}
TEXT_BYTES = 64 * 1024  # a PNG's decompressed text, per chunk and in all; process-wide: this process reads no others
PngImagePlugin.MAX_TEXT_CHUNK = PngImagePlugin.MAX_TEXT_MEMORY = TEXT_BYTES


def per_image(shape: tuple[int, int, int]) -> int:
    """The most bytes one image may take in a body: 10 a pixel value (JSON's "255, " and brackets, or base64 of a
    PNG/JPEG no larger than its pixels twice over) and 4 KiB for headers and metadata."""
    return 10 * int(np.prod(shape)) + 4096


class QueryError(Exception):
    """A body that is not a query: the HTTP status and why."""

    def __init__(self, code: int, why: str) -> None:
        super().__init__(why)
        self.code = code


class QueryRequest(BaseModel):
    """One of images, pixels (+ shape) or arrays."""

    images: list[str] | None = Field(None, description="base64 of PNG or JPEG files, each of the federation's size")
    pixels: str | None = Field(None, description="base64 of B*H*W*C uint8 pixels, row-major")
    shape: list[int] | None = Field(None, description="[B, H, W, C] of `pixels`")
    arrays: list[Any] | None = Field(None, description="(B, H, W, C) nested lists of 0..255 ints")
    rule: str = Field("", description="prior | product; empty: the node's learning.poe_rule")


def decode_query(
    body: bytes, content_type: str, shape: tuple[int, int, int], bit_depth: int, most: int
) -> tuple[np.ndarray, str]:
    """(images, the rule the body names or "") of a query body; QueryError if it is not one."""
    if content_type in IMAGE_TYPES:
        if len(body) > per_image(shape):
            raise QueryError(413, f"{len(body)} bytes for one {'x'.join(map(str, shape))} image: too large")
        return _files([body], shape, bit_depth, most, (IMAGE_TYPES[content_type],)), ""
    if content_type != "application/json":
        raise QueryError(415, f"Content-Type {content_type or 'none'}: send image/png, image/jpeg or application/json")
    if len(body) > most * per_image(shape) + 4096:
        raise QueryError(413, f"a body of {len(body)} bytes is more than api.max_images ({most}) images can take")
    try:
        req = QueryRequest.model_validate_json(body)
    except ValidationError as exc:
        e = exc.errors()[0]
        where = ".".join(map(str, e["loc"])) or "body"
        raise QueryError(400, f"the body is not a query: {where}: {e['msg']}") from None
    return _json(req, shape, bit_depth, most), req.rule


class _Upload(io.BytesIO):
    """An uploaded file's bytes, named in error messages as the request's n-th image."""

    def __init__(self, data: bytes, name: str) -> None:
        super().__init__(data)
        self.label = name

    def __str__(self) -> str:
        return self.label


def _count(n: int, most: int) -> None:
    if n == 0:
        raise QueryError(400, "no images: send at least one")
    if n > most:
        raise QueryError(413, f"{n} images: over api.max_images ({most}); split the batch")


def _files(
    files: list[bytes], shape: tuple[int, int, int], bit_depth: int, most: int, formats: tuple[str, ...]
) -> np.ndarray:
    _count(len(files), most)
    try:
        return np.stack([
            load_image_file(_Upload(data, f"image {i}"), shape, bit_depth, formats) for i, data in enumerate(files)
        ])  # fmt: skip
    except DataError as exc:
        raise QueryError(400, str(exc)) from None


def _json(req: QueryRequest, shape: tuple[int, int, int], bit_depth: int, most: int) -> np.ndarray:
    given = [k for k in ("images", "pixels", "arrays") if getattr(req, k) is not None]
    if len(given) != 1:
        raise QueryError(400, f"give exactly one of images, pixels or arrays (got {given or 'none'})")
    if req.images is not None:
        _count(len(req.images), most)
        try:
            files = [base64.b64decode(s, validate=True) for s in req.images]
        except (binascii.Error, ValueError):
            raise QueryError(400, "images: each must be the base64 of a PNG or JPEG file") from None
        return _files(files, shape, bit_depth, most, tuple(IMAGE_TYPES.values()))
    if req.pixels is not None:
        if req.shape is None or len(req.shape) != 4:
            raise QueryError(400, "pixels need shape [B, H, W, C]")
        _count(req.shape[0] if req.shape[0] > 0 else 0, most)
        if tuple(req.shape[1:]) != shape:
            raise QueryError(400, f"shape {req.shape}: the federation's images are {list(shape)} (H, W, C)")
        try:
            raw = base64.b64decode(req.pixels, validate=True)
        except (binascii.Error, ValueError):
            raise QueryError(400, "pixels: not base64") from None
        size = req.shape[0] * int(np.prod(shape))
        if len(raw) != size:
            raise QueryError(400, f"pixels hold {len(raw)} bytes, not the {size} of {req.shape}")
        return np.frombuffer(raw, np.uint8).reshape(req.shape[0], *shape).copy()
    assert req.arrays is not None
    _count(len(req.arrays), most)
    try:
        array = np.asarray(req.arrays)
    except ValueError:
        raise QueryError(400, "arrays: not a rectangular (B, H, W, C) array") from None
    if array.ndim != 4 or tuple(array.shape[1:]) != shape:
        raise QueryError(400, f"arrays are {list(array.shape)}: give (B, {', '.join(map(str, shape))})")
    if array.dtype.kind not in "iu" or array.min() < 0 or array.max() > 255:
        raise QueryError(400, "arrays: pixels must be integers from 0 to 255")
    return array.astype(np.uint8)
