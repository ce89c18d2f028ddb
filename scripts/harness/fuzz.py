"""Fuzz targets over everything that parses peer bytes, with hypothesis strategies that reach past the first
check: raw bytes, msgpack values of any shape (deep, wide, every type), mutated valid envelopes and frames.

Each target feeds one input to one parser and says which exception types it declares (the parser's rejection
type). `check` runs a target on an input and returns None, or the type name of an undeclared exception: the
bug a hostile peer would trigger. tests/test_fuzz.py runs a few hundred inputs per target; scripts/fuzz.py runs
10^5 and more and prints what it found.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
from hypothesis import strategies as st

from ffnode.artifacts.blob import BlobFormatError, blob_owner
from ffnode.artifacts.codec import WireError, decode
from ffnode.artifacts.manifest import Manifest
from ffnode.artifacts.revocation import Revocation
from ffnode.artifacts.store import Store, open_announcement
from ffnode.identity import Identity
from ffnode.net import streams
from ffnode.net.sync import inventory_page, parse_inventory_request, parse_inventory_response

ALICE = Identity(b"\x21" * 32)

# msgpack values of any shape: nesting past every limit, every scalar type, ext types, int map keys
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=True),
    st.text(max_size=40),
    st.binary(max_size=80),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6),
        st.dictionaries(st.one_of(st.text(max_size=12), st.integers(0, 9)), inner, max_size=6),
    ),
    max_leaves=60,
)


def deep(depth: int) -> bytes:
    """An array nested `depth` deep, the bomb that once killed a node with 801 bytes."""
    return b"\x91" * depth + b"\xc0"


def _pack(value: Any) -> bytes:
    try:
        return msgpack.packb(value, use_bin_type=True, strict_types=False)
    except (TypeError, ValueError, OverflowError):
        return b"\xc1"  # never used by msgpack: malformed on purpose


def valid_envelopes() -> list[bytes]:
    factory = Manifest(
        "factory", ALICE.peer_id, ALICE.public_key, "fuzz", [1], ["0", "1"], {"sample_steps": 8}, "a" * 64, 10, 1, 1
    )
    revocation = Revocation(ALICE.peer_id, ALICE.public_key, "fuzz", [factory.id], "fuzz", 2, 2)
    return [factory.seal(ALICE), revocation.seal(ALICE)]


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A valid message with bytes flipped, cut, repeated or inserted: past the decoder, into the checks."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        op, at = draw(st.integers(0, 3)), draw(st.integers(0, max(0, len(data) - 1)))
        if op == 0 and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == 1:
            del data[at:]
        elif op == 2:
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            data += data[at:]
    return bytes(data)


def inputs(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=200),
        values.map(_pack),
        st.integers(1, 3000).map(deep),
        mutated(seeds),
    )


@dataclass(frozen=True)
class Target:
    name: str
    run: Callable[[bytes], Any]
    declared: tuple[type[BaseException], ...]
    strategy: st.SearchStrategy[bytes]


_STORE_DIR = tempfile.TemporaryDirectory(prefix="ffnode-fuzz-")  # removed at exit; check() writes nothing


@functools.cache
def _store() -> Store:
    return Store(Path(_STORE_DIR.name), federation="fuzz")


def _store_check(data: bytes) -> None:
    _store().check(data)


def _blob_owner(data: bytes) -> str:
    with tempfile.NamedTemporaryFile() as f:
        f.write(data)
        f.flush()
        return blob_owner(Path(f.name))


def _page(data: bytes) -> bytes:
    cursor = data.decode("utf-8", "replace")
    return inventory_page([("a" * 64, b"x")], [("b" * 64, b"y")], cursor)


def targets() -> list[Target]:
    envelopes = valid_envelopes()
    sync_seeds = [
        msgpack.packb({"t": "inv_req", "v": 1, "federation": "fuzz", "cursor": ""}),
        msgpack.packb({"t": "inv", "v": 1, "manifests": envelopes[:1], "revocations": [], "next": ""}),
    ]
    blob_seeds = [msgpack.packb({"t": "blob_get", "v": 1, "id": "a" * 64}), msgpack.packb({"t": "blob_hdr", "v": 1})]
    safetensors_seed = [b"\x20\x00\x00\x00\x00\x00\x00\x00" + b'{"__metadata__":{"owner":"12D3"}}']
    return [
        Target("decode", decode, (WireError,), inputs(envelopes)),
        Target("open_announcement", open_announcement, (WireError,), inputs(envelopes)),
        Target("store_check", _store_check, (WireError,), inputs(envelopes)),
        Target("inv_req", parse_inventory_request, (WireError,), inputs(sync_seeds)),
        Target("inv", parse_inventory_response, (WireError,), inputs(sync_seeds)),
        Target("inv_page_cursor", _page, (WireError,), st.binary(max_size=300)),
        Target("blob_get", lambda b: streams._unpack(b, "blob_get"), (streams.FrameError,), inputs(blob_seeds)),
        Target("blob_hdr", lambda b: streams._unpack(b, "blob_hdr"), (streams.FrameError,), inputs(blob_seeds)),
        Target("blob_owner", _blob_owner, (BlobFormatError,), inputs(safetensors_seed)),
    ]


def check(target: Target, data: bytes) -> str | None:
    """None if the target accepted `data` or rejected it with a declared error, else the undeclared type's name."""
    try:
        target.run(data)
    except target.declared:
        return None
    except Exception as exc:  # what a hostile peer would reach: a bug
        return type(exc).__name__
    return None
