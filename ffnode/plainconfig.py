"""Configs travel inside signed manifests as plain msgpack values; these two functions convert both ways.

Tuples become lists on the wire and are restored from the field's default type; unknown fields are an
error, so a manifest made by another version is refused instead of silently half-read.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

C = TypeVar("C")


def to_plain(cfg: Any) -> dict[str, Any]:
    """Plain ints/floats/strs/bools/lists, for the msgpack-encoded signed manifest."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}


def from_plain(cls: type[C], d: dict[str, Any]) -> C:
    if not isinstance(d, dict):
        raise ValueError(f"a {cls.__name__} is a map of its fields, not a {type(d).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {unknown}: the manifest was made by another version")
    # an array becomes the field's tuple; anything else (bytes too, which tuple() would read as ints) keeps its type
    values = {k: tuple(v) if isinstance(fields[k].default, tuple) and isinstance(v, list) else v for k, v in d.items()}
    for k, v in values.items():  # a peer's config: each value of its field's type (8.0 is not an image size)
        default = fields[k].default
        if not _same_type(v, default):
            raise ValueError(f"{cls.__name__}.{k} = {v!r} is not a {type(default).__name__} like {default!r}")
    return cls(**values)


def _same_type(value: Any, default: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return type(value) is type(default)
    if isinstance(default, float):
        return type(value) in (int, float)
    if isinstance(default, tuple):
        return isinstance(value, tuple) and all(type(x) is int for x in value)
    return type(value) is type(default)
