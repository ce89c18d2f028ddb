"""Check every wire-protocol test vector against the rules of protocol/README.md alone (issue 34).

    python protocol/check_vectors.py            # a table of files x cases; exit 1 on any mismatch
    python protocol/check_vectors.py --json     # the same as one JSON document: case path -> mismatches

protocol/make_vectors.py writes the vectors with ffnode's own code; this file is their independent reader. It
imports nothing from ffnode (only the standard library, and pyca/cryptography for Ed25519) and rebuilds each
expected verdict from the document: its own msgpack decoder and canonical encoder,
peer IDs, signatures, IDs, the acceptance checks 1-15 of a node that starts empty, the arch schema with the
parameter and weight-byte formulas, blob ownership, sync paging, peer records and audit verdicts.

It fails (exit 1) on a mismatch, on a case it does not check and on a field of a vector it never read: a new
kind of vector must come with its check here. A *case* is each object that is the value of a top-level key of a
file, and each item of a list of objects anywhere in a file; tests/test_vectors_independent.py counts them the
same way from the files.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import ipaddress
import json
import math
import struct
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

VECTORS = Path(__file__).resolve().parent / "vectors"

# --- parameters (README: Parameters and limits) ----------------------------------------------------------------

VERSION = 1
MAX_ENVELOPE_BYTES = 65536
MAX_BLOB_BYTES = 1 << 32
MAX_CLASSES = 256
MAX_CLASS_LIST = 256
MAX_CLASS_NAME_BYTES = 64
MAX_CLASS_LIST_BYTES = 4096
MAX_LINEAGE = 800
MAX_IDS = 800
MAX_REASON = 1024  # code points
MAX_REQUEST_BYTES = 8192
MAX_PAGE_BYTES = 1 << 20
MAX_INVENTORY_ITEMS = 65536
MAX_CURSOR = 256  # code points
MAX_DEPTH = 8
MAX_HEADER_BYTES = 1 << 20
MAX_IMAGE_SIDE = 512
MAX_CHANNELS = 4
MAX_LEVELS = 6
MAX_WIDTH = 1024
MAX_TIMESTEPS = 10_000
MAX_BLOB_FRAME = 4096
MAX_PEERS_BYTES = 256 * 1024
MAX_PEER_RECORDS = 64
MAX_RECORD_BYTES = 2048
MAX_ADDRS = 8
MAX_ADDR_CHARS = 256
MAX_FOUNDERS = 16
MAX_FEDERATION_BYTES = 64
# ffnode's default cost bounds (Arch schema, "Cost (check 15)"); arch.json states the ones it assumes
DEFAULT_LIMITS = {"factory_params": 20_000_000, "expert_params": 20_000_000, "sample_steps": 50}
# ffnode's default quotas (README: Parameters and limits), in bytes where they are sizes
DEFAULT_QUOTAS = {
    "manifests_per_publisher": 256,
    "blob_bytes_per_publisher": 4096 << 20,
    "store_bytes": 32768 << 20,
    "publishers": 1024,
    "tombstones_per_publisher": 16384,
}
SYNC_PROTOCOL, BLOB_PROTOCOL = "/ffnode/sync/1.0.0", "/ffnode/blob/1.0.0"
PEER_RECORD_DOMAIN, PEER_RECORD_TYPE = "libp2p-peer-record", b"\x03\x01"
ED25519_PEER_PREFIX = bytes.fromhex("002408011220")  # identity multihash of a PublicKey protobuf, Ed25519
HEX = frozenset("0123456789abcdef")


class Reject(Exception):
    """A message the rules refuse; `reason` is the README's category (Test vectors, "Reason categories")."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


# --- msgpack: a strict decoder and the canonical encoder (README: Canonical msgpack, Order of checks 2) ---------


class _Decoder:
    """Decodes exactly one msgpack value under check 2's rules; every failure is `malformed`."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise Reject("malformed", "truncated")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def value(self, depth: int) -> Any:
        b = self.take(1)[0]
        if b <= 0x7F:
            return b
        if b >= 0xE0:
            return b - 0x100
        if b <= 0x8F:
            return self.map(b & 0x0F, depth)
        if b <= 0x9F:
            return self.array(b & 0x0F, depth)
        if b <= 0xBF:
            return self.text(b & 0x1F)
        simple = {0xC0: None, 0xC2: False, 0xC3: True}
        if b in simple:
            return simple[b]
        if b in (0xC4, 0xC5, 0xC6):
            return self.take(self.uint(1 << (b - 0xC4)))
        if b == 0xCA:
            return struct.unpack(">f", self.take(4))[0]
        if b == 0xCB:
            return struct.unpack(">d", self.take(8))[0]
        if 0xCC <= b <= 0xCF:
            return self.uint(1 << (b - 0xCC))
        if 0xD0 <= b <= 0xD3:
            return int.from_bytes(self.take(1 << (b - 0xD0)), "big", signed=True)
        if b in (0xD9, 0xDA, 0xDB):
            return self.text(self.uint(1 << (b - 0xD9)))
        if b in (0xDC, 0xDD):
            return self.array(self.uint(2 << (b - 0xDC)), depth)
        if b in (0xDE, 0xDF):
            return self.map(self.uint(2 << (b - 0xDE)), depth)
        raise Reject("malformed", f"byte {b:#04x} (ext type or reserved)")

    def text(self, n: int) -> str:
        try:
            return self.take(n).decode("utf-8")
        except UnicodeDecodeError:
            raise Reject("malformed", "str that is not UTF-8") from None

    def container(self, n: int, depth: int) -> None:
        if depth > MAX_DEPTH:  # checked when the container starts, before any of its items is read
            raise Reject("malformed", f"a container at depth {depth} (MAX_DEPTH {MAX_DEPTH})")
        if n > len(self.data) - self.pos:  # every item takes a byte at least
            raise Reject("malformed", "truncated")

    def array(self, n: int, depth: int) -> list[Any]:
        self.container(n, depth)
        return [self.value(depth + 1) for _ in range(n)]

    def map(self, n: int, depth: int) -> dict[str, Any]:
        self.container(2 * n, depth)
        out: dict[str, Any] = {}
        for _ in range(n):
            key = self.value(depth + 1)
            if type(key) is not str:
                raise Reject("malformed", "a map key that is not a str")
            if key in out:
                raise Reject("malformed", f"duplicate map key {key!r}")
            out[key] = self.value(depth + 1)
        return out


def decode(data: bytes) -> Any:
    """The one msgpack value of `data` (check 2); Reject("malformed") otherwise."""
    decoder = _Decoder(data)
    value = decoder.value(0)
    if decoder.pos != len(data):
        raise Reject("malformed", "trailing bytes")
    return value


def _head(n: int, fix: tuple[int, int] | None, tags: tuple[int, ...], widths: tuple[int, ...]) -> bytes:
    """The shortest length prefix: a fix form (first byte, most) if any, else the first tag whose width fits."""
    if fix is not None and n <= fix[1]:
        return bytes([fix[0] + n])
    for tag, width in zip(tags, widths, strict=True):
        if n < 1 << (8 * width):
            return bytes([tag]) + n.to_bytes(width, "big")
    raise ValueError("too long for msgpack")


def pack(value: Any, *, sort: bool = True) -> bytes:
    """Canonical msgpack (README rules 1-6); sort=False keeps map keys in the order given (blob messages)."""
    if value is None:
        return b"\xc0"
    if type(value) is bool:
        return b"\xc3" if value else b"\xc2"
    if type(value) is int:
        if 0 <= value <= 0x7F or -32 <= value < 0:
            return bytes([value & 0xFF])
        tags = (0xCC, 0xCD, 0xCE, 0xCF) if value >= 0 else (0xD0, 0xD1, 0xD2, 0xD3)
        for tag, width in zip(tags, (1, 2, 4, 8), strict=True):
            lo, hi = (0, 1 << (8 * width)) if value >= 0 else (-(1 << (8 * width - 1)), 0)
            if lo <= value < hi:
                return bytes([tag]) + value.to_bytes(width, "big", signed=value < 0)
        raise ValueError("integer outside int64/uint64")
    if type(value) is float:
        return b"\xcb" + struct.pack(">d", value)
    if type(value) is str:
        raw = value.encode("utf-8")  # a lone surrogate raises: no such str can be signed
        return _head(len(raw), (0xA0, 31), (0xD9, 0xDA, 0xDB), (1, 2, 4)) + raw
    if type(value) is bytes:
        return _head(len(value), None, (0xC4, 0xC5, 0xC6), (1, 2, 4)) + value
    if type(value) is list:
        return _head(len(value), (0x90, 15), (0xDC, 0xDD), (2, 4)) + b"".join(pack(v, sort=sort) for v in value)
    if isinstance(value, dict):
        if not all(type(k) is str for k in value):
            raise ValueError("a map key that is not a str")
        keys = sorted(value, key=lambda k: k.encode("utf-8")) if sort else list(value)
        items = b"".join(pack(k) + pack(value[k], sort=sort) for k in keys)
        return _head(len(value), (0x80, 15), (0xDE, 0xDF), (2, 4)) + items
    raise ValueError(f"no msgpack form for {type(value).__name__}")


def frame(body: bytes) -> bytes:
    """Stream framing: 4-byte big-endian length, then the body."""
    return len(body).to_bytes(4, "big") + body


def unframe(data: bytes, limit: int) -> bytes:
    """The body of one frame; the receiver resets (Reject) past `limit` without reading the body."""
    if len(data) < 4:
        raise Reject("malformed", "no frame header")
    n = int.from_bytes(data[:4], "big")
    if n > limit:
        raise Reject("oversized", f"frame of {n} bytes (limit {limit})")
    if len(data) != 4 + n:
        raise Reject("malformed", "frame length differs from its body")
    return data[4:]


def from_json(view: Any) -> Any:
    """The msgpack value a JSON view stands for: `<key>_hex` is the bin (or array of bin) field `<key>`."""
    if isinstance(view, dict):
        out: dict[str, Any] = {}
        for key, item in view.items():
            if key.endswith("_hex") and isinstance(item, str | list):
                out[key[:-4]] = bytes.fromhex(item) if isinstance(item, str) else [bytes.fromhex(x) for x in item]
            else:
                out[key] = from_json(item)
        return out
    if isinstance(view, list):
        return [from_json(v) for v in view]
    return view


# --- identity and signatures (README: Identity, Signing payload) -------------------------------------------------

B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def b58encode(data: bytes) -> str:
    n, out = int.from_bytes(data, "big"), ""
    while n:
        n, r = divmod(n, 58)
        out = B58[r] + out
    return "1" * (len(data) - len(data.lstrip(b"\0"))) + out


def b58decode(text: str) -> bytes:
    n = 0
    for ch in text:
        n = n * 58 + B58.index(ch)  # ValueError for a character outside the alphabet
    zeros = len(text) - len(text.lstrip("1"))
    return b"\0" * zeros + (n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b"")


def public_key(seed: bytes) -> bytes:
    key = Ed25519PrivateKey.from_private_bytes(seed).public_key()
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def sign(seed: bytes, message: bytes) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(seed).sign(message)


def verifies(key: bytes, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def peer_id(key: bytes) -> str:
    """base58btc of the identity multihash of the Ed25519 PublicKey protobuf."""
    return b58encode(ED25519_PEER_PREFIX + key)


def signing_payload(t: str, body: dict[str, Any]) -> bytes:
    return b"ffnode/v1/" + t.encode("utf-8") + b"\x00" + pack(body)


def body_id(body: dict[str, Any]) -> str:
    return hashlib.sha256(pack(body)).hexdigest()


# --- stateless checks 1-8 (README: Order of checks) --------------------------------------------------------------


def is_int(v: Any) -> bool:
    return type(v) is int


def is_number(v: Any) -> bool:
    """The arch schema's and the audit's float: a float64 or an int, never a bool."""
    return type(v) in (int, float)


def is_hex_id(v: Any) -> bool:
    return type(v) is str and len(v) == 64 and set(v) <= HEX


def is_class_list(v: Any) -> bool:
    if type(v) is not list or not 1 <= len(v) <= MAX_CLASS_LIST:
        return False
    if not all(type(x) is str and 1 <= len(x.encode("utf-8")) <= MAX_CLASS_NAME_BYTES for x in v):
        return False
    if len(set(v)) != len(v):
        return False
    return len(pack(v)) <= MAX_CLASS_LIST_BYTES


MANIFEST_TYPES = {
    "kind": str,
    "owner": str,
    "owner_key": bytes,
    "federation": str,
    "classes": list,
    "class_list": list,
    "arch": dict,
    "blob": str,
    "size": int,
    "created": int,
    "seq": int,
    "lineage": list,
    "seed": int,
    "meta": dict,
}
REVOCATION_TYPES = {
    "owner": str,
    "owner_key": bytes,
    "federation": str,
    "ids": list,
    "reason": str,
    "created": int,
    "seq": int,
}


@dataclass
class Announcement:
    t: str
    body: dict[str, Any]
    id: str


def open_outer(data: bytes, kinds: tuple[str, ...], sig_key: str) -> tuple[str, dict[str, Any]]:
    """The checks every envelope starts with, in the document's order: size, decoding, a known `t` among
    `kinds`, exactly the keys v, t, body and `sig_key`, the version. Returns (t, the envelope)."""
    if len(data) > MAX_ENVELOPE_BYTES:
        raise Reject("oversized")
    env = decode(data)
    if type(env) is not dict or "t" not in env:
        raise Reject("not-envelope")
    t = env["t"]
    if t not in kinds:
        raise Reject("unknown-type")
    if set(env) != {"v", "t", "body", sig_key}:
        raise Reject("not-envelope", "keys")
    if not is_int(env["v"]) or env["v"] != VERSION:
        raise Reject("version")
    return t, env


def open_envelope(data: bytes) -> Announcement:
    """Checks 1-8 in the document's order; the first failing one names the Reject's reason."""
    t, env = open_outer(data, ("manifest", "revocation"), "sig")
    body, sig = env["body"], env["sig"]
    if type(body) is not dict or type(sig) is not bytes or len(sig) != 64:
        raise Reject("not-envelope", "body or sig")
    key = body.get("owner_key")
    if type(key) is not bytes or len(key) != 32:
        raise Reject("owner-key")
    if body.get("owner") != peer_id(key):
        raise Reject("owner-mismatch")
    try:
        payload = signing_payload(t, body)
    except ValueError:
        raise Reject("signature", "the body has no canonical encoding") from None
    if not verifies(key, sig, payload):
        raise Reject("signature")
    types = MANIFEST_TYPES if t == "manifest" else REVOCATION_TYPES
    if set(body) != set(types) or any(type(body[k]) is not kind for k, kind in types.items()):
        raise Reject("schema")  # the value's own type; what an array holds is a value (check 8)
    problem = manifest_problem(body) if t == "manifest" else revocation_problem(body)
    if problem:
        raise Reject("value", problem)
    return Announcement(t, body, body_id(body))


def manifest_problem(body: dict[str, Any]) -> str | None:
    classes, class_list, lineage = body["classes"], body["class_list"], body["lineage"]
    if body["kind"] not in ("factory", "expert"):
        return "kind"
    if not is_hex_id(body["blob"]):
        return "blob is no hex ID"
    if not 0 <= body["size"] <= MAX_BLOB_BYTES or body["seq"] < 0:
        return "size or seq out of range"
    if not is_class_list(class_list):
        return "class_list"
    if not 1 <= len(classes) <= MAX_CLASSES or not all(is_int(c) and 0 <= c < len(class_list) for c in classes):
        return "classes"
    if len(set(classes)) != len(classes):
        return "classes repeat"
    if len(lineage) > MAX_LINEAGE or not all(is_hex_id(x) for x in lineage):
        return "lineage"
    if body["kind"] == "factory" and lineage:
        return "a factory with lineage"
    return arch_problem(body["kind"], body["arch"])


def revocation_problem(body: dict[str, Any]) -> str | None:
    ids = body["ids"]
    if not 1 <= len(ids) <= MAX_IDS or not all(is_hex_id(x) for x in ids):
        return "ids"
    if len(body["reason"]) > MAX_REASON:  # Python's len of a str counts code points
        return "reason"
    return "seq" if body["seq"] < 0 else None


# --- co-signed envelopes: charters and membership messages (README: Invite-only federations) ----------------------

CHARTER_TYPES = {"federation": str, "founders": list, "threshold": int, "created": int}
MEMBERSHIP_TYPES = {"charter": str, "peer": str, "action": str, "seq": int, "created": int}


def open_cosigned(data: bytes) -> tuple[str, dict[str, Any], set[bytes]]:
    """Co-signed checks 1-7 in the document's order: (t, body, the signing keys)."""
    t, env = open_outer(data, ("charter", "membership"), "sigs")
    body, sigs = env["body"], env["sigs"]
    if type(body) is not dict or type(sigs) is not list or not 1 <= len(sigs) <= MAX_FOUNDERS:
        raise Reject("not-envelope", "body or sigs")
    for x in sigs:
        if type(x) is not dict or set(x) != {"key", "sig"} or type(x["key"]) is not bytes or len(x["key"]) != 32:
            raise Reject("not-envelope", "a signature entry")
        if type(x["sig"]) is not bytes or len(x["sig"]) != 64:
            raise Reject("not-envelope", "a signature entry")
    keys = [x["key"] for x in sigs]
    if len(set(keys)) != len(keys):
        raise Reject("signers", "a key twice")
    try:
        payload = signing_payload(t, body)
    except ValueError:
        raise Reject("signature", "the body has no canonical encoding") from None
    if not all(verifies(x["key"], x["sig"], payload) for x in sigs):
        raise Reject("signature")
    types = CHARTER_TYPES if t == "charter" else MEMBERSHIP_TYPES
    if set(body) != set(types) or any(type(body[k]) is not kind for k, kind in types.items()):
        raise Reject("schema")
    problem = charter_problem(body) if t == "charter" else membership_problem(body)
    if problem:
        raise Reject("value", problem)
    return t, body, set(keys)


def charter_problem(body: dict[str, Any]) -> str | None:
    founders, fed = body["founders"], body["federation"]
    if not 1 <= len(fed.encode("utf-8")) <= MAX_FEDERATION_BYTES or "/" in fed:
        return "federation"
    if not 1 <= len(founders) <= MAX_FOUNDERS or not all(type(k) is bytes and len(k) == 32 for k in founders):
        return "founders"
    if any(a >= b for a, b in zip(founders, founders[1:], strict=False)):  # bytewise ascending, so also distinct
        return "founders not ascending"
    return None if 1 <= body["threshold"] <= len(founders) else "threshold"


def membership_problem(body: dict[str, Any]) -> str | None:
    if not is_hex_id(body["charter"]):
        return "charter"
    raw = b58decode(body["peer"]) if set(body["peer"]) <= set(B58) else b""
    if len(raw) != 38 or not raw.startswith(ED25519_PEER_PREFIX):
        return "peer"
    if body["action"] not in ("admit", "remove"):
        return "action"
    return "seq" if body["seq"] < 0 else None


def open_charter(data: bytes) -> dict[str, Any]:
    """A charter body whose signers are exactly its founders (check 8 of a charter)."""
    t, body, keys = open_cosigned(data)
    if t != "charter":
        raise Reject("unknown-type")
    if keys != set(body["founders"]):
        raise Reject("founders")
    return body


# --- the arch schema and the model's size (README: Arch schema) ---------------------------------------------------

# key: (type, default); "number" is the schema's float, "ints" its array of int
FACTORY_SCHEMA: dict[str, tuple[str, Any]] = {
    "image_size": ("int", 8),
    "channels": ("int", 1),
    "block_out_channels": ("ints", [32, 64, 64]),
    "layers_per_block": ("int", 1),
    "norm_num_groups": ("int", 8),
    "attention": ("bool", False),
    "dropout": ("number", 0.0),
    "num_train_timesteps": ("int", 1000),
    "beta_schedule": ("str", "squaredcos_cap_v2"),
    "prediction_type": ("str", "v_prediction"),
    "p_mean": ("number", -0.8),
    "p_std": ("number", 1.6),
    "sigma_data": ("number", 0.5),
    "sigma_min": ("number", 0.002),
    "sigma_max": ("number", 80.0),
    "rho": ("number", 7.0),
    "train_steps": ("int", 400),
    "batch_size": ("int", 64),
    "lr": ("number", 0.002),
    "warmup_steps": ("int", 20),
    "weight_decay": ("number", 0.0),
    "ema_decay": ("number", 0.99),
    "hflip": ("bool", False),
    "checkpoint_every": ("int", 200),
    "bf16": ("bool", True),
    "sampler": ("str", "dpmsolver++"),
    "sample_steps": ("int", 20),
}
EXPERT_NET_SCHEMA: dict[str, tuple[str, Any]] = {
    "width": ("int", 16),
    "blocks": ("ints", [1, 1]),
    "epochs": ("int", 8),
    "max_images": ("int", 0),
    "batch_size": ("int", 32),
    "lr": ("number", 0.05),
    "momentum": ("number", 0.9),
    "weight_decay": ("number", 0.0005),
    "label_smoothing": ("number", 0.1),
    "shift": ("int", 1),
    "hflip": ("bool", False),
    "bf16": ("bool", False),
}
TYPE_CHECKS: dict[str, Callable[[Any], bool]] = {
    "int": is_int,
    "number": is_number,
    "bool": lambda v: type(v) is bool,
    "str": lambda v: type(v) is str,
    "ints": lambda v: type(v) is list and all(is_int(x) for x in v),
}


def with_defaults(arch: Any, schema: dict[str, tuple[str, Any]]) -> dict[str, Any] | str:
    """The arch with absent keys at their defaults, or what breaks the schema's types and keys."""
    if type(arch) is not dict:
        return "not a map"
    unknown = set(arch) - set(schema)
    if unknown:
        return f"unknown keys {sorted(unknown)}"
    for key, (kind, _) in schema.items():
        if key in arch and not TYPE_CHECKS[kind](arch[key]):
            return f"{key} is not of type {kind}"
    return {key: arch.get(key, default) for key, (_, default) in schema.items()}


def finite(v: int | float) -> bool:
    try:
        return math.isfinite(v)
    except OverflowError:  # an int too large for a float
        return False


def factory_problem(a: dict[str, Any]) -> str | None:
    w, groups = a["block_out_channels"], a["norm_num_groups"]
    if not 1 <= len(w) <= MAX_LEVELS:
        return "levels"
    if groups < 1 or not all(1 <= x <= MAX_WIDTH and x % groups == 0 for x in w):
        return "level widths or norm_num_groups"
    if not 1 <= a["image_size"] <= MAX_IMAGE_SIDE or a["image_size"] % (1 << (len(w) - 1)):
        return "image_size"
    if not 1 <= a["channels"] <= MAX_CHANNELS or not 1 <= a["layers_per_block"] <= 8:
        return "channels or layers_per_block"
    if not 0 <= a["dropout"] <= 1 or not 1 <= a["num_train_timesteps"] <= MAX_TIMESTEPS:
        return "dropout or num_train_timesteps"
    if a["beta_schedule"] not in ("squaredcos_cap_v2", "linear", "scaled_linear", "sigmoid"):
        return "beta_schedule"
    if a["prediction_type"] not in ("v_prediction", "epsilon", "sample", "edm"):
        return "prediction_type"
    edm = ("p_mean", "p_std", "sigma_data", "sigma_min", "sigma_max", "rho")
    if not all(finite(a[k]) for k in edm):
        return "an edm key is not finite"
    if min(a["p_std"], a["sigma_data"], a["sigma_min"], a["rho"]) <= 0:
        return "an edm key is not > 0"
    if not a["sigma_min"] < a["sigma_max"] <= 10_000:
        return "sigma range"
    if a["sampler"] not in ("unipc", "dpmsolver++", "ddim", "edm-dpmsolver++"):
        return "sampler"
    if (a["sampler"] == "edm-dpmsolver++") != (a["prediction_type"] == "edm"):
        return "edm-dpmsolver++ if and only if prediction_type edm"
    return "sample_steps" if a["sample_steps"] < 1 else None


def expert_problem(arch: dict[str, Any]) -> str | None:
    if not all(k in arch for k in ("expert", "num_classes", "image_shape")):
        return "a required key is missing"
    net = with_defaults(arch["expert"], EXPERT_NET_SCHEMA)
    if isinstance(net, str):
        return f"arch.expert: {net}"
    if not 1 <= net["width"] <= MAX_WIDTH:
        return "width"
    if not 1 <= len(net["blocks"]) <= 8 or not all(0 <= b <= 16 for b in net["blocks"]):
        return "blocks"
    if not is_int(arch["num_classes"]) or not 1 <= arch["num_classes"] <= 4096:
        return "num_classes"
    shape = arch["image_shape"]
    if not TYPE_CHECKS["ints"](shape) or len(shape) != 3 or min(shape) < 1:
        return "image_shape"
    h, w, c = shape
    return "image_shape bounds" if max(h, w) > MAX_IMAGE_SIDE or c > MAX_CHANNELS else None


def arch_problem(kind: str, arch: dict[str, Any]) -> str | None:
    """What breaks the arch schema of `kind` (check 8), or None."""
    if kind == "expert":
        return expert_problem(arch)
    full = with_defaults(arch, FACTORY_SCHEMA)
    return full if isinstance(full, str) else factory_problem(full)


def factory_size(a: dict[str, Any]) -> tuple[int, int]:
    """(P, W) of a factory arch with its defaults filled (README: Parameter count and weight bytes)."""
    w, n, C, attention = a["block_out_channels"], a["layers_per_block"], a["channels"], a["attention"]
    L, E, r = len(w), 4 * w[0], w[::-1]

    def conv(x: int, y: int) -> int:
        return 9 * x * y + y

    def res(x: int, y: int) -> int:
        return 2 * x + conv(x, y) + E * y + y + 2 * y + conv(y, y) + (x * y + y if x != y else 0)

    def attn(c: int) -> int:
        i = 8 * (c // 8)
        return 2 * c + 3 * (c * i + i) + i * c + c

    p = conv(C, w[0]) + (w[0] * E + E) + (E * E + E)
    for k in range(L):
        for j in range(n):
            p += res(w[max(k - 1, 0)] if j == 0 else w[k], w[k]) + (attn(w[k]) if attention and k == L - 1 else 0)
        p += conv(w[k], w[k]) if k < L - 1 else 0
    p += 2 * res(w[L - 1], w[L - 1]) + attn(w[L - 1])
    for k in range(L):
        o, prev, skip = r[k], r[max(k - 1, 0)], r[min(k + 1, L - 1)]
        for j in range(n + 1):
            p += res((prev if j == 0 else o) + (skip if j == n else o), o) + (attn(o) if attention and k == 0 else 0)
        p += conv(o, o) if k < L - 1 else 0
    p += 2 * w[0] + conv(w[0], C)
    return p, 4 * p


def expert_size(net: dict[str, Any], num_classes: int, image_shape: list[int]) -> tuple[int, int]:
    """(P, W) of an expert: a ResNet with BatchNorm statistics (README: Parameter count and weight bytes)."""
    terms: list[tuple[int, int, int]] = []  # every cb(a, b, k)
    width, a = net["width"], net["width"]
    terms.append((image_shape[2], width, 3))
    for s, blocks in enumerate(net["blocks"]):
        c = width << s
        for i in range(blocks):
            terms += [(a, c, 3), (c, c, 3)] + ([(a, c, 1)] if (s > 0 and i == 0) or a != c else [])
            a = c
    p = sum(k * k * x * y + 2 * y for x, y, k in terms) + a * num_classes + num_classes
    batchnorm = sum(y for _, y, _ in terms)
    return p, 4 * (p + 2 * batchnorm) + 8 * len(terms)


def model_size(kind: str, arch: dict[str, Any]) -> tuple[int, int]:
    """(P, W) of an arch that satisfies the schema."""
    if kind == "factory":
        full = with_defaults(arch, FACTORY_SCHEMA)
        assert isinstance(full, dict)
        return factory_size(full)
    net = with_defaults(arch["expert"], EXPERT_NET_SCHEMA)
    assert isinstance(net, dict)
    return expert_size(net, arch["num_classes"], arch["image_shape"])


def cost_problem(body: dict[str, Any], limits: dict[str, int], max_header: int) -> str | None:
    """Check 15's bounds on what a manifest's arch makes the node build, sample and fetch (reason `limit`)."""
    params, weight_bytes = model_size(body["kind"], body["arch"])
    if params > limits[f"{body['kind']}_params"]:
        return f"{params} parameters"
    if body["kind"] == "factory" and body["arch"].get("sample_steps", 20) > limits["sample_steps"]:
        return "sample_steps"
    return "declared size" if body["size"] > weight_bytes + max_header else None


# --- a node's state: checks 9-15 and what it stores (README: Acceptance rules) -----------------------------------


@dataclass
class Held:
    owner: str
    seq: int
    t: str
    body: dict[str, Any]
    data: bytes


@dataclass
class Node:
    """An empty node of `federation` and `class_list`, with check 15's cost bounds `limits` and its `quotas`."""

    federation: str
    class_list: list[str]
    allowed: list[str] = field(default_factory=list)
    limits: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    quotas: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_QUOTAS))
    blobs: dict[str, tuple[str, int]] = field(default_factory=dict)  # verified blob held -> (its owner, its bytes)
    max_header: int = MAX_HEADER_BYTES
    manifests: dict[str, Held] = field(default_factory=dict)  # artifact ID -> manifest (compacted ones gone)
    revocations: dict[str, Held] = field(default_factory=dict)
    tombstones: set[tuple[str, str]] = field(default_factory=set)  # (owner, artifact ID)
    charter: dict[str, Any] | None = None  # the pinned charter's body; None: an open federation
    members: dict[str, tuple[str, dict[str, Any], bytes]] = field(default_factory=dict)  # peer -> newest (ID, body)

    def founders(self) -> set[str]:
        return {peer_id(k) for k in self.charter["founders"]} if self.charter else set()

    def is_member(self, peer: str) -> bool:
        if self.charter is None or peer in self.founders():
            return True
        return peer in self.members and self.members[peer][1]["action"] == "admit"

    def trusted(self, owner: str) -> bool:
        return (not self.allowed or owner in self.allowed) and self.is_member(owner)

    def membership(self, data: bytes) -> tuple[str, str]:
        """Checks 9-11 of a membership message (README: Invite-only federations)."""
        t, body, keys = open_cosigned(data)
        if t != "membership":
            raise Reject("unknown-type")
        if self.charter is None:
            raise Reject("no-charter")
        if body["charter"] != body_id(self.charter):
            raise Reject("wrong-charter")
        if not keys <= set(self.charter["founders"]):
            raise Reject("not-founder")
        if len(keys) < self.charter["threshold"]:
            raise Reject("threshold")
        if body["action"] == "remove" and body["peer"] in self.founders():
            raise Reject("founder")
        mid, held = body_id(body), self.members.get(body["peer"])
        if held is not None and held[0] == mid:
            return "duplicate", mid
        if held is not None and held[1]["seq"] >= body["seq"]:
            raise Reject("membership-seq")
        self.members[body["peer"]] = (mid, body, data)
        return "accepted", mid

    def apply(self, data: bytes) -> tuple[str, str]:
        """("accepted" or "duplicate", the ID); Reject with the reason otherwise."""
        env = decode(data) if len(data) <= MAX_ENVELOPE_BYTES else None
        if type(env) is dict and env.get("t") == "membership":
            return self.membership(data)
        a = open_envelope(data)
        body, owner, manifest = a.body, a.body["owner"], a.t == "manifest"
        if body["federation"] != self.federation:
            raise Reject("wrong-federation")
        if manifest and body["class_list"] != self.class_list:
            raise Reject("wrong-classes")
        frees_only = not manifest and all(self.frees(owner, i) for i in body["ids"])
        if not frees_only and not self.trusted(owner):
            raise Reject("not-allowed" if self.is_member(owner) else "not-member")
        if manifest and (owner, a.id) in self.tombstones:
            raise Reject("revoked")
        for i, held in (self.manifests | self.revocations).items():
            if held.owner == owner and held.seq == body["seq"] and i != a.id:
                raise Reject("replayed-seq")
        for target in [] if manifest else [self.manifests[i] for i in body["ids"] if i in self.manifests]:
            if target.owner != owner:
                raise Reject("revocation-not-owner")
            if target.seq >= body["seq"]:
                raise Reject("revocation-seq")
        if a.id in self.manifests or a.id in self.revocations:
            return "duplicate", a.id
        if not manifest and len(set(body["ids"])) != len(body["ids"]):
            raise Reject("value", "an ID named twice")
        if manifest and (problem := cost_problem(body, self.limits, self.max_header)):
            raise Reject("limit", problem)
        if manifest:
            self.manifest_quotas(owner, body)
        elif not frees_only:
            named = sum(len(r.body["ids"]) for r in self.revocations.values() if r.owner == owner)
            if named + len(body["ids"]) > self.quotas["tombstones_per_publisher"]:
                raise Reject("quota", "tombstones_per_publisher")
        held = Held(owner, body["seq"], a.t, body, data)
        if manifest:
            self.manifests[a.id] = held
            return "accepted", a.id
        self.revocations[a.id] = held
        for i in body["ids"]:
            self.tombstones.add((owner, i))
            target = self.manifests.get(i)
            if target is not None and target.owner == owner and target.body["kind"] == "expert":
                del self.manifests[i]  # a revoked expert is compacted to its tombstone; a factory stays
        named = {(m.owner, m.body["blob"]) for i, m in self.manifests.items() if (m.owner, i) not in self.tombstones}
        self.blobs = {b: v for b, v in self.blobs.items() if (v[0], b) in named}  # no live manifest of its owner
        return "accepted", a.id

    def frees(self, owner: str, aid: str) -> bool:
        """Whether a revocation of `owner` naming `aid` frees it: a held manifest of `owner` not yet revoked."""
        held = self.manifests.get(aid)
        return held is not None and held.owner == owner and (owner, aid) not in self.tombstones

    def manifest_quotas(self, owner: str, body: dict[str, Any]) -> None:
        """Check 15's quotas on a new manifest, in the README's order; Reject("quota", the limit)."""
        held = [(i, m) for i, m in self.manifests.items() if m.owner == owner]
        live = [m for i, m in held if (owner, i) not in self.tombstones]
        if len(live) >= self.quotas["manifests_per_publisher"]:
            raise Reject("quota", "manifests_per_publisher")
        if not held and len({m.owner for m in self.manifests.values()}) >= self.quotas["publishers"]:
            raise Reject("quota", "publishers")
        sizes = {m.body["blob"]: m.body["size"] for m in live}
        if body["blob"] in sizes:
            return  # a blob the owner declared already costs nothing more
        if sum(sizes.values()) + body["size"] > self.quotas["blob_bytes_per_publisher"]:
            raise Reject("quota", "blob_bytes_per_publisher")
        if body["blob"] not in self.blobs and self.held_bytes() + body["size"] > self.quotas["store_bytes"]:
            raise Reject("quota", "store_bytes")

    def held_bytes(self) -> int:
        return sum(size for _, size in self.blobs.values())

    def blob(self, data: bytes, aid: str) -> tuple[str, str]:
        """The verified bytes of held manifest `aid` arrive: ("live", aid), or Reject (the blob is not stored)."""
        held = self.manifests[aid]
        if (len(data), hashlib.sha256(data).hexdigest()) != (held.body["size"], held.body["blob"]):
            raise Reject("malformed", "not the manifest's size and sha256")
        if blob_owner(data) != held.owner:
            raise Reject("blob-owner")
        if held.body["blob"] not in self.blobs and self.held_bytes() + len(data) > self.quotas["store_bytes"]:
            raise Reject("quota", "store_bytes")
        self.blobs[held.body["blob"]] = (held.owner, len(data))
        return "live", aid

    def inventory(self) -> tuple[list[bytes], list[bytes]]:
        """What the node serves on sync: every manifest and every revocation of a member it holds, each in ID
        order."""
        return [self.manifests[i].data for i in sorted(self.manifests) if self.is_member(self.manifests[i].owner)], [
            self.revocations[i].data for i in sorted(self.revocations) if self.is_member(self.revocations[i].owner)
        ]


def verdict(apply: Callable[[], tuple[str, str]]) -> tuple[str | None, str]:
    """(output, id) or (None, reason) of one message, as the vectors write outputs."""
    try:
        return apply()
    except Reject as exc:
        return None, exc.reason


def step_verdict(node: Node, step: Seen) -> tuple[tuple[str | None, str, str], tuple[str | None, str, str]]:
    """(rebuilt, expected) verdict of one scenario step: (output, id or reason, the quota a refusal names). A step
    is an envelope (envelope_hex) or, in quota.json, the verified bytes of a held manifest (blob_hex, for_id)."""
    try:
        if "blob_hex" in step:
            got: tuple[str | None, str, str] = (*node.blob(h(step["blob_hex"]), step["for_id"]), "")
        else:
            got = (*node.apply(h(step["envelope_hex"])), "")
    except Reject as exc:
        got = (None, exc.reason, exc.detail if exc.reason == "quota" else "")
    out = step["output"]
    want = (out, step["id"] if out in ("accepted", "duplicate") else step.get("for_id", ""), "")
    if out is None:
        want = (None, step["reason"], step.get("limit", ""))
    return got, want


# --- sync, blob and peers messages (README: Stream framing ... Blob request and header) --------------------------


def parse_message(body: bytes, t: str, keys: set[str], max_bytes: int) -> dict[str, Any]:
    """A stream message of type `t` with exactly `keys`; Reject (the stream is reset) otherwise."""
    if len(body) > max_bytes:
        raise Reject("oversized")
    msg = decode(body)
    if type(msg) is not dict or msg.get("t") != t or not is_int(msg.get("v")) or msg["v"] != VERSION:
        raise Reject("malformed", f"not a version-{VERSION} {t!r}")
    if set(msg) != keys:
        raise Reject("malformed", "keys")
    return msg


def parse_sync_request(body: bytes) -> tuple[str, str, list[str], str]:
    """(t, federation, class list, cursor) of an inv_req or peers_req."""
    msg = decode(body) if len(body) <= MAX_REQUEST_BYTES else None
    if type(msg) is dict and msg.get("t") == "peers_req":
        msg = parse_message(body, "peers_req", {"t", "v", "federation", "class_list"}, MAX_REQUEST_BYTES)
        msg["cursor"] = ""
    else:
        msg = parse_message(body, "inv_req", {"t", "v", "federation", "class_list", "cursor"}, MAX_REQUEST_BYTES)
    if type(msg["federation"]) is not str or type(msg["cursor"]) is not str or len(msg["cursor"]) > MAX_CURSOR:
        raise Reject("malformed", "federation or cursor")
    if not is_class_list(msg["class_list"]):
        raise Reject("malformed", "class_list")
    return msg["t"], msg["federation"], msg["class_list"], msg["cursor"]


def parse_inventory(body: bytes) -> tuple[list[bytes], list[bytes], str]:
    msg = parse_message(body, "inv", {"t", "v", "manifests", "revocations", "next"}, MAX_PAGE_BYTES)
    for items in (msg["manifests"], msg["revocations"]):
        if type(items) is not list or len(items) > MAX_INVENTORY_ITEMS or not all(type(x) is bytes for x in items):
            raise Reject("malformed", "inventory items")
    if type(msg["next"]) is not str or len(msg["next"]) > MAX_CURSOR:
        raise Reject("malformed", "next")
    return msg["manifests"], msg["revocations"], msg["next"]


def parse_peers(body: bytes) -> list[bytes]:
    msg = parse_message(body, "peers", {"t", "v", "records"}, MAX_PEERS_BYTES)
    records = msg["records"]
    if type(records) is not list or len(records) > MAX_PEER_RECORDS or not all(type(x) is bytes for x in records):
        raise Reject("malformed", "records")
    return records


def parse_blob_request(frame_bytes: bytes) -> str:
    """The ID a blob_get frame asks for; keys beyond t, v, id are ignored (README: Blob request and header)."""
    msg = decode(unframe(frame_bytes, MAX_BLOB_FRAME))
    if type(msg) is not dict or msg.get("t") != "blob_get" or not is_int(msg.get("v")) or msg["v"] != VERSION:
        raise Reject("malformed", "not a blob_get")
    if not is_hex_id(msg.get("id")):
        raise Reject("malformed", "id")
    return msg["id"]


# --- peer records: protobuf, multiaddrs (README: Peers request and response) -------------------------------------


def uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def read_uvarint(data: bytes, pos: int) -> tuple[int, int]:
    n = shift = 0
    while pos < len(data) and shift < 64:
        b = data[pos]
        n |= (b & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not b & 0x80:
            return n, pos
    raise Reject("malformed", "varint")


def pb_bytes(number: int, value: bytes) -> bytes:
    return uvarint(number << 3 | 2) + uvarint(len(value)) + value


def pb_fields(data: bytes) -> dict[int, list[int | bytes]]:
    """Field number -> values of a protobuf message (varint and length-delimited fields; others skipped)."""
    fields: dict[int, list[int | bytes]] = {}
    pos = 0
    while pos < len(data):
        tag, pos = read_uvarint(data, pos)
        wire = tag & 7
        if wire == 0:
            value, pos = read_uvarint(data, pos)
        elif wire == 2:
            n, pos = read_uvarint(data, pos)
            if pos + n > len(data):
                raise Reject("malformed", "truncated protobuf")
            value, pos = data[pos : pos + n], pos + n
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
            continue
        else:
            raise Reject("malformed", f"protobuf wire type {wire}")
        fields.setdefault(tag >> 3, []).append(value)
    if pos != len(data):
        raise Reject("malformed", "truncated protobuf")
    return fields


def pb_one(fields: dict[int, list[int | bytes]], number: int, kind: type, default: Any) -> Any:
    """The last value of a field (protobuf's rule), of `kind`."""
    values = fields.get(number, [default])
    if type(values[-1]) is not kind:
        raise Reject("malformed", f"protobuf field {number}")
    return values[-1]


MULTIADDR = {"ip4": 4, "tcp": 6, "udp": 273, "ip6": 41, "dns": 53, "dns4": 54, "dns6": 55, "p2p": 421}
MULTIADDR["p2p-circuit"] = 290
MULTIADDR_NAMES = {code: name for name, code in MULTIADDR.items()}


def multiaddr_bytes(text: str) -> bytes:
    parts, out, i = text.split("/")[1:], b"", 0
    while i < len(parts):
        name = parts[i]
        out += uvarint(MULTIADDR[name])
        if name == "p2p-circuit":
            i += 1
            continue
        value = parts[i + 1]
        if name == "ip4":
            out += ipaddress.IPv4Address(value).packed
        elif name == "ip6":
            out += ipaddress.IPv6Address(value).packed
        elif name in ("tcp", "udp"):
            out += int(value).to_bytes(2, "big")
        else:
            raw = b58decode(value) if name == "p2p" else value.encode("utf-8")
            out += uvarint(len(raw)) + raw
        i += 2
    return out


def multiaddr_text(data: bytes) -> list[tuple[str, str]]:
    """(protocol, value) pairs of a binary multiaddr; Reject for anything that does not decode."""
    out, pos = [], 0
    while pos < len(data):
        code, pos = read_uvarint(data, pos)
        name = MULTIADDR_NAMES.get(code)
        fixed = {"ip4": 4, "ip6": 16, "tcp": 2, "udp": 2, "p2p-circuit": 0}
        if name is None:
            raise Reject("malformed", f"multiaddr code {code}")
        if name in fixed:
            n = fixed[name]
        else:
            n, pos = read_uvarint(data, pos)
        raw, pos = data[pos : pos + n], pos + n
        if len(raw) != n:
            raise Reject("malformed", "truncated multiaddr")
        if name in ("ip4", "ip6"):
            ip = ipaddress.ip_address(raw)
            mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
            value = f"::ffff:{mapped}" if mapped is not None else str(ip)  # RFC 5952 section 5
        elif name in ("tcp", "udp"):
            value = str(int.from_bytes(raw, "big"))
        elif name == "p2p":
            value = b58encode(raw)
        else:
            try:
                value = raw.decode("utf-8") if name != "p2p-circuit" else ""
            except UnicodeDecodeError:
                raise Reject("malformed", "dns name") from None
        out.append((name, value))
    return out


def signing_input(payload_type: bytes, payload: bytes) -> bytes:
    domain = PEER_RECORD_DOMAIN.encode()
    return b"".join(uvarint(len(x)) + x for x in (domain, payload_type, payload))


def seal_record(seed: bytes, seq: int, addrs: list[str]) -> tuple[bytes, bytes, bytes, bytes]:
    """(payload, signing input, signature, envelope) of a signed peer record, as libp2p writes it."""
    key = public_key(seed)
    seq_field = uvarint(2 << 3) + uvarint(seq) if seq else b""  # proto3 leaves a zero out
    addresses = b"".join(pb_bytes(3, pb_bytes(1, multiaddr_bytes(a))) for a in addrs)
    record = pb_bytes(1, ED25519_PEER_PREFIX + key) + seq_field + addresses  # peer_id: the multihash bytes
    unsigned = signing_input(PEER_RECORD_TYPE, record)
    signature = sign(seed, unsigned)
    key_pb = ED25519_PEER_PREFIX[2:] + key  # PublicKey protobuf
    envelope = pb_bytes(1, key_pb) + pb_bytes(2, PEER_RECORD_TYPE) + pb_bytes(3, record) + pb_bytes(5, signature)
    return record, unsigned, signature, envelope


def is_loopback(kind: str, host: str) -> bool:
    """README, Peer record: 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104; the DNS name localhost or one under
    .localhost, in any letter case and with or without the final dot."""
    if kind in ("ip4", "ip6"):
        ip = ipaddress.ip_address(host)
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        return ip.is_loopback or (mapped is not None and mapped.is_loopback)
    name = host.lower().removesuffix(".")
    return name == "localhost" or name.endswith(".localhost")


def dial_address(pairs: list[tuple[str, str]], peer: str, loopback: bool) -> str:
    """The address a node dials for one record address, or Reject if it is not of a dialable form (`loopback`:
    whether the node listens on loopback itself, so that loopback hosts are acceptable)."""
    names = [n for n, _ in pairs]
    text = "".join(f"/{n}/{v}" if n != "p2p-circuit" else "/p2p-circuit" for n, v in pairs)
    if len(text) > MAX_ADDR_CHARS:
        raise Reject("malformed", "address text too long")
    circuit = "p2p-circuit" in names
    target = pairs[: names.index("p2p-circuit")] if circuit else pairs
    tail = pairs[names.index("p2p-circuit") + 1 :] if circuit else []
    wanted = ["host", "tcp", "p2p"] if circuit else ["host", "tcp"]
    shape = [("host" if n in ("ip4", "ip6", "dns", "dns4", "dns6") else n) for n, _ in target]
    if shape != wanted or tail not in ([], [("p2p", peer)]):
        raise Reject("malformed", f"{text} is not a dialable form")
    host_kind, host = target[0]
    if host_kind in ("ip4", "ip6"):
        ip = ipaddress.ip_address(host)
        if ip.is_unspecified or ip.is_multicast or str(ip) == "255.255.255.255":
            raise Reject("malformed", f"{text}: not a unicast host")
    if not loopback and is_loopback(host_kind, host):
        raise Reject("malformed", f"{text}: loopback")
    direct = "".join(f"/{n}/{v}" for n, v in target)
    return f"{direct}/p2p-circuit/p2p/{peer}" if circuit else f"{direct}/p2p/{peer}"


@dataclass
class PeerRecord:
    peer_id: str
    seq: int
    dial_addrs: list[str]


def open_record(data: bytes, loopback: bool = False) -> PeerRecord:
    """A signed peer record that passes every rule of "Peer record" on a node that listens on loopback or not
    (by default not); Reject otherwise."""
    if len(data) > MAX_RECORD_BYTES:
        raise Reject("oversized")
    env = pb_fields(data)
    key_pb = pb_fields(pb_one(env, 1, bytes, b""))
    if pb_one(env, 2, bytes, b"") != PEER_RECORD_TYPE:
        raise Reject("malformed", "payload type")
    if pb_one(key_pb, 1, int, 0) != 1 or len(key := pb_one(key_pb, 2, bytes, b"")) != 32:
        raise Reject("malformed", "not an Ed25519 key")
    payload = pb_one(env, 3, bytes, b"")
    if not verifies(key, pb_one(env, 5, bytes, b""), signing_input(PEER_RECORD_TYPE, payload)):
        raise Reject("signature")
    record = pb_fields(payload)
    peer = peer_id(key)
    if pb_one(record, 1, bytes, b"") != b58decode(peer):
        raise Reject("malformed", "the record names another peer than its signer")
    addrs = [pb_one(pb_fields(a), 1, bytes, b"") for a in record.get(3, [])]
    if not 1 <= len(addrs) <= MAX_ADDRS or not all(type(a) is bytes for a in addrs):
        raise Reject("malformed", "address count")
    dial = [dial_address(multiaddr_text(a), peer, loopback) for a in addrs]
    return PeerRecord(peer, pb_one(record, 2, int, 0), dial)


# --- blob ownership (README: Blob ownership) and factory audits (README: Factory audit) -------------------------


def blob_owner(blob: bytes) -> str:
    """The owner a safetensors blob's header names; Reject("blob-owner") if it is no such file or names none."""
    if len(blob) < 8:
        raise Reject("blob-owner", "shorter than a safetensors header")
    n = int.from_bytes(blob[:8], "little")
    if n > MAX_HEADER_BYTES or 8 + n > len(blob):
        raise Reject("blob-owner", "header length")
    try:
        header = json.loads(blob[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise Reject("blob-owner", "header is not JSON") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    owner = meta.get("owner") if isinstance(meta, dict) else None
    if not isinstance(owner, str) or not owner:
        raise Reject("blob-owner", "no owner in __metadata__")
    return owner


AUDIT_INTS = ("v", "step", "samples", "n_train", "n_holdout", "mia_members", "draws")
AUDIT_NUMBERS = ("memorised", "nn_ratio_min", "dcr_close", "dcr_ratio", "mia_auc", "mia_tpr_1pct", "mia_tpr_01pct")
AUDIT_SHARES = ("memorised", "dcr_close", "mia_auc", "mia_tpr_1pct", "mia_tpr_01pct")
DETECT_AUC, MIN_POWER = 0.60, 0.80
# a receiver's thresholds: ffnode's [privacy] keys (README: Factory audit, rule 2 and 3)
AUDIT_THRESHOLDS = ("min_holdout", "max_memorised", "max_dcr_close", "max_mia_auc", "mia_z", "max_mia_tpr_1pct")
AUDIT_THRESHOLDS += ("inconclusive", "max_epsilon")
# meta.dp (README: Differential privacy)
DP_NUMBERS = ("epsilon", "delta", "noise_multiplier", "max_grad_norm", "sample_rate")
DP_ACCOUNTANTS = ("rdp", "prv", "gdp")


def audit_figures(meta: dict[str, Any]) -> dict[str, Any]:
    """Rule 1 of the audit: the figures, or Reject("no-audit" | "malformed")."""
    if "audit" not in meta:
        raise Reject("no-audit")
    a = meta["audit"]
    if type(a) is not dict or not is_int(a.get("v")) or a["v"] != 1 or a.get("distance") != "l2-pixel":
        raise Reject("malformed", "map, v or distance")
    if not all(is_int(a.get(k)) for k in AUDIT_INTS):
        raise Reject("malformed", "an int figure")
    if not all(is_number(a.get(k)) and finite(a[k]) for k in (*AUDIT_NUMBERS, "seconds")):
        raise Reject("malformed", "a float figure")
    if not all(0 <= a[k] <= 1 for k in AUDIT_SHARES):
        raise Reject("malformed", "a share outside 0..1")
    if min(a["samples"], a["n_train"], a["n_holdout"], a["draws"]) < 1 or a["step"] < 0:
        raise Reject("malformed", "a count")
    if a["mia_members"] < a["n_holdout"]:
        raise Reject("malformed", "fewer members than non-members")
    levels = a.get("levels")
    if type(levels) is not list or not 1 <= len(levels) <= 64 or not all(is_int(x) and 0 <= x <= 1000 for x in levels):
        raise Reject("malformed", "levels")
    return a


def audit_power(m: int, n: int, thresholds: dict[str, Any]) -> float:
    se = math.sqrt((m + n + 1) / (12 * m * n))
    a = DETECT_AUC
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    se1 = math.sqrt((a * (1 - a) + (m - 1) * (q1 - a * a) + (n - 1) * (q2 - a * a)) / (m * n))
    x = (thresholds["max_mia_auc"] + thresholds["mia_z"] * se - a) / se1
    return 1 - 0.5 * (1 + math.erf(x / math.sqrt(2)))  # 1 - Phi(x)


def audit_failure(a: dict[str, Any], th: dict[str, Any]) -> str | None:
    """Rule 2: the first threshold the figures break, by its name."""
    m, n = a["mia_members"], a["n_holdout"]
    se = math.sqrt((m + n + 1) / (12 * m * n))
    if n < th["min_holdout"]:
        return "min_holdout"
    if a["memorised"] > th["max_memorised"]:
        return "max_memorised"
    if a["dcr_close"] > th["max_dcr_close"]:
        return "max_dcr_close"
    if a["mia_auc"] - th["mia_z"] * se > th["max_mia_auc"]:
        return "max_mia_auc"
    return "max_mia_tpr_1pct" if a["mia_tpr_1pct"] > th["max_mia_tpr_1pct"] else None


def dp_failure(meta: dict[str, Any], max_epsilon: float) -> str | None:
    """The DP rule of a receiver whose max_epsilon is above 0: the reason category, or None."""
    if "dp" not in meta:
        return "no-dp"
    d = meta["dp"]
    if type(d) is not dict or not all(is_number(d.get(k)) and finite(d[k]) for k in DP_NUMBERS):
        return "malformed"
    if not is_int(d.get("steps")) or type(d.get("accountant")) is not str or d["accountant"] not in DP_ACCOUNTANTS:
        return "malformed"
    if not (d["epsilon"] >= 0 and 0 < d["delta"] < 1 and 0 < d["sample_rate"] <= 1 and d["steps"] >= 1):
        return "malformed"
    if d["noise_multiplier"] <= 0 or d["max_grad_norm"] <= 0:
        return "malformed"
    if d["epsilon"] > max_epsilon:
        return "max_epsilon"
    n = meta.get("n_train")
    if not is_int(n) or n < 1:
        return "no-n_train"
    return "delta" if d["delta"] > 1 / n else None


# --- the files ---------------------------------------------------------------------------------------------------


class Seen(dict):  # type: ignore[type-arg]
    """A JSON object that remembers which of its keys were read, so that no field of a vector goes unchecked."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def items(self) -> Any:
        self.read.update(self.keys())
        return super().items()


PROSE = {"description", "spec"}


def unread(value: Any, path: str) -> list[str]:
    """Paths of fields no check read (prose aside)."""
    if isinstance(value, Seen):
        out = []
        for key in value.keys():
            sub = f"{path}.{key}" if path else key
            if key in value.read:
                out += unread(dict.__getitem__(value, key), sub)
            elif key not in PROSE:
                out.append(sub)
        return out
    if isinstance(value, list):
        return [p for i, item in enumerate(value) for p in unread(item, f"{path}[{i}]")]
    return []


def case_paths(doc: dict[str, Any]) -> list[str]:
    """The cases of a file: each object under a top-level key, each item of a list of objects at any depth."""
    paths: list[str] = []

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            for key, item in dict.items(value):
                sub = f"{path}.{key}" if path else key
                if not path and isinstance(item, dict):
                    paths.append(sub)
                walk(item, sub)
        elif isinstance(value, list):
            cases = bool(value) and all(isinstance(x, dict) for x in value)
            for i, item in enumerate(value):
                if cases:
                    paths.append(f"{path}[{i}]")
                walk(item, f"{path}[{i}]")

    walk(doc, "")
    return paths


@dataclass
class Report:
    """One file's outcome: case path -> mismatches (empty: the case checks out)."""

    cases: dict[str, list[str]] = field(default_factory=dict)

    @contextlib.contextmanager
    def case(self, path: str, name: str | None = None) -> Iterator[list[str]]:
        errors = self.cases.setdefault(path, [])
        try:
            yield errors
        except Exception as exc:  # a vector this checker cannot read is a failure, never a skip
            errors.append(f"cannot check{f' {name}' if name else ''}: {type(exc).__name__}: {exc}")
        if name:
            errors[:] = [e if e.startswith(name) else f"{name}: {e}" for e in errors]


def same(errors: list[str], what: str, got: Any, want: Any) -> None:
    if got != want:
        errors.append(f"{what}: rebuilt {str(got)[:100]!r}, the vector says {str(want)[:100]!r}")


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def check_identity(doc: Seen, r: Report) -> None:
    for i, c in enumerate(doc["cases"]):
        with r.case(f"cases[{i}]", c["name"]) as e:
            seed = h(c["seed_hex"])
            key = public_key(seed)
            protobuf = b"\x08\x01\x12\x20" + key
            same(e, "public key", key.hex(), c["public_key_hex"])
            same(e, "PublicKey protobuf", protobuf.hex(), c["public_key_protobuf_hex"])
            same(e, "multihash", (bytes([0, len(protobuf)]) + protobuf).hex(), c["peer_id_multihash_hex"])
            same(e, "peer ID", peer_id(key), c["peer_id"])
            same(e, "starts 12D3KooW", c["peer_id"][:8], "12D3KooW")
            same(e, "signature of b''", sign(seed, b"").hex(), c["signature_of_empty_message_hex"])


def check_canonical(doc: Seen, r: Report) -> None:
    for i, c in enumerate(doc["cases"]):
        with r.case(f"cases[{i}]", c["name"]) as e:
            same(e, "canonical(value)", pack(from_json(c["value"])).hex(), c["canonical_hex"])
            for j, raw in enumerate(c["noncanonical_inputs_hex"]):
                same(e, f"re-encoded input {j}", pack(decode(h(raw))).hex(), c["canonical_hex"])


def check_signed(c: Seen, e: list[str], kind: str) -> Announcement:
    """A signed case: rebuild every intermediate from body and seed, then open the envelope (checks 1-8)."""
    seed, body = h(c["signer_seed_hex"]), from_json(c["body"])
    same(e, "type", c["type"], kind)
    same(e, "canonical body", pack(body).hex(), c["canonical_body_hex"])
    payload = signing_payload(kind, body)
    same(e, "signing payload", payload.hex(), c["signing_payload_hex"])
    sig = sign(seed, payload)
    same(e, "signature", sig.hex(), c["signature_hex"])
    env = pack({"v": VERSION, "t": kind, "body": body, "sig": sig})
    same(e, "envelope", env.hex(), c["envelope_hex"])
    same(e, "envelope bytes", len(env), c["envelope_bytes"])
    same(e, "id", body_id(body), c["id"])
    a = open_envelope(h(c["envelope_hex"]))
    same(e, "id of the opened envelope", a.id, c["id"])
    return a


def deepest(value: Any) -> int:
    """Depth of the deepest container, the top-level value at 0 (-1: none)."""
    if isinstance(value, dict | list):
        items = list(value.values()) if isinstance(value, dict) else value
        return 1 + max((deepest(v) for v in items), default=-1)
    return -1


# what each size_limit vector claims to sit on (README: Test vectors, manifest.json and revocation.json)
AT_LIMIT: dict[str, Callable[[bytes, dict[str, Any]], bool]] = {
    "largest": lambda data, env: len(data) == MAX_ENVELOPE_BYTES,
    "largest-blob-size": lambda data, env: env["body"]["size"] == MAX_BLOB_BYTES,
    "longest-lineage": lambda data, env: len(env["body"]["lineage"]) == MAX_LINEAGE,
    "deepest": lambda data, env: deepest(env) == MAX_DEPTH,
    "most-ids": lambda data, env: len(env["body"]["ids"]) == MAX_IDS and len(env["body"]["reason"]) == MAX_REASON,
}
DIGITS = [str(d) for d in range(10)]  # manifest.json's and revocation.json's federation has classes "0" to "9"


def on_empty_node(data: bytes) -> tuple[str | None, str]:
    return verdict(lambda: Node("digits", DIGITS).apply(data))


def check_envelopes(doc: Seen, r: Report, kind: str) -> None:
    """manifest.json and revocation.json: signed cases, non-canonical encodings, envelopes at a limit; each is
    accepted by an empty node but largest-blob-size, over ffnode's default cost bounds (check 15)."""
    for i, c in enumerate(doc["cases"]):
        with r.case(f"cases[{i}]", c["name"]) as e:
            check_signed(c, e, kind)
            same(e, "on an empty node", on_empty_node(h(c["envelope_hex"])), ("accepted", c["id"]))
    for i, c in enumerate(doc["noncanonical"]):
        with r.case(f"noncanonical[{i}]", c["name"]) as e:
            data = h(c["envelope_hex"])
            a = open_envelope(data)
            same(e, "id", a.id, c["id"])
            same(e, "canonical re-encoding", pack(decode(data)).hex(), c["canonical_envelope_hex"])
            same(e, "the input is not canonical", data.hex() != c["canonical_envelope_hex"], True)
            same(e, "on an empty node", on_empty_node(data), ("accepted", c["id"]))
    for i, c in enumerate(doc["size_limit"]):
        with r.case(f"size_limit[{i}]", c["name"]) as e:
            data = h(c["envelope_hex"])
            same(e, "envelope bytes", len(data), c["envelope_bytes"])
            same(e, "id", open_envelope(data).id, c["id"])
            same(e, "sits on its limit", AT_LIMIT[c["name"]](data, decode(data)), True)
            want = (None, "limit") if c["name"] == "largest-blob-size" else ("accepted", c["id"])
            same(e, "on an empty node", on_empty_node(data), want)


def check_acceptance(doc: Seen, r: Report) -> None:
    for i, s in enumerate(doc["scenarios"]):
        node = Node(s["federation"], s["class_list"], list(s["allowed_publishers"]))
        for j, step in enumerate(s["steps"]):
            with r.case(f"scenarios[{i}].steps[{j}]", f"{s['name']} step {j + 1}") as e:
                same(e, "verdict", *step_verdict(node, step))
        with r.case(f"scenarios[{i}]", s["name"]) as e:
            if "inventory_after" in s:
                after, (manifests, revocations) = s["inventory_after"], node.inventory()
                same(e, "inventory manifests", [x.hex() for x in manifests], after["manifests_hex"])
                same(e, "inventory revocations", [x.hex() for x in revocations], after["revocations_hex"])


def check_quota(doc: Seen, r: Report) -> None:
    """quota.json: check 15's quotas, scenario by scenario at its limits, blob steps included."""
    with r.case("default_limits") as e:
        same(e, "the README's default quotas", dict(doc["default_limits"].items()), DEFAULT_QUOTAS)
    for i, s in enumerate(doc["scenarios"]):
        with r.case(f"scenarios[{i}]", s["name"]) as e:
            quotas = dict(s["limits"].items())
            same(e, "the quotas the README names", sorted(quotas), sorted(DEFAULT_QUOTAS))
            node = Node(s["federation"], list(s["class_list"]), quotas=quotas)
        for j, step in enumerate(s["steps"]):
            with r.case(f"scenarios[{i}].steps[{j}]", f"{s['name']} step {j + 1}") as e:
                same(e, "verdict", *step_verdict(node, step))


def check_framed(c: Seen, e: list[str], value: Any, *, sort: bool = True) -> bytes:
    """A stream message's body and frame, rebuilt from its value."""
    body = pack(value, sort=sort)
    same(e, "body", body.hex(), c["body_hex"])
    same(e, "frame", frame(body).hex(), c["frame_hex"])
    return body


def read_pages(
    r: Report, path: str, exchanges: list[Seen], federation: str, class_list: list[str]
) -> tuple[list[bytes], list[bytes]]:
    """A round of one-page exchanges, cursor by cursor, each checked; the items of all its pages, in order."""
    got: tuple[list[bytes], list[bytes]] = ([], [])
    cursor = ""
    for j, x in enumerate(exchanges):
        with r.case(f"{path}.exchanges[{j}]", f"{path} page {j + 1}") as pe:
            req = parse_sync_request(check_framed(x["request"], pe, from_json(x["request"]["value"])))
            same(pe, "request", req, ("inv_req", federation, class_list, cursor))
            m, rv, cursor = parse_inventory(check_framed(x["response"], pe, from_json(x["response"]["value"])))
            same(pe, "a page but the last holds an item", bool(m or rv or not cursor), True)
            last = (m and ("m", m[-1])) or (rv and ("r", rv[-1]))
            if cursor and last:  # ffnode's cursor: m/<ID> or r/<ID> of the last item sent
                same(pe, "cursor", cursor, f"{last[0]}/{open_envelope(last[1]).id}")
            same(pe, "the last page ends the round", bool(cursor), j < len(exchanges) - 1)
            got[0].extend(m)
            got[1].extend(rv)
    return got


def check_sync(doc: Seen, r: Report) -> None:
    with r.case("request") as e:
        same(e, "protocol ID", doc["protocol_id"], SYNC_PROTOCOL)
        body = check_framed(doc["request"], e, from_json(doc["request"]["value"]))
        federation, class_list = parse_sync_request(body)[1:3]
    items: list[tuple[list[bytes], list[bytes]]] = []
    for key in ("response", "empty_response"):
        with r.case(key) as e:
            manifests, revocations, nxt = parse_inventory(check_framed(doc[key], e, from_json(doc[key]["value"])))
            same(e, "next", nxt, "")
            items.append((manifests, revocations))
    whole = items[0]
    with r.case("response") as e:  # what the client makes of each item: the lifecycle node's inventory
        node = Node(federation, class_list)
        outputs = [node.apply(x)[0] for x in whole[0] + whole[1]]
        same(e, "every item accepted on an empty node, manifests first", outputs, ["accepted"] * len(outputs))
        same(e, "served in ID order", node.inventory(), whole)
    with r.case("empty_response") as e:
        same(e, "empty", items[1], ([], []))
    with r.case("pages") as e:
        got = read_pages(r, "pages", doc["pages"]["exchanges"], federation, class_list)
        same(e, "the pages together are the one-page inventory", got, whole)
    with r.case("revoked_on_a_later_page") as e:
        later = doc["revoked_on_a_later_page"]
        manifests, revocations = read_pages(r, "revoked_on_a_later_page", later["exchanges"], federation, class_list)
        node = Node(federation, class_list)
        for data in manifests + revocations:  # the whole round, page by page, before any fetch
            node.apply(data)
        held = [(i, m) for i, m in node.manifests.items() if m.body["blob"] not in node.blobs]
        pending = [m.body["blob"] for i, m in held if (m.owner, i) not in node.tombstones]
        same(e, "fetched after the round", sorted(pending), later["fetch"])
    for i, c in enumerate(doc["invalid"]):
        with r.case(f"invalid[{i}]", c["name"]) as e:
            parse = parse_sync_request if c["name"].startswith("request") else parse_inventory
            got = verdict(lambda c=c, parse=parse: ("parsed", str(parse(h(c["body_hex"])))))[0]
            same(e, "output", got, c["output"])


def check_blob(doc: Seen, r: Report) -> None:
    blob = h(doc["blob_hex"])
    with r.case("request") as e:
        same(e, "protocol ID", doc["protocol_id"], BLOB_PROTOCOL)
        same(e, "blob ID", hashlib.sha256(blob).hexdigest(), doc["blob_id"])
        check_framed(doc["request"], e, from_json(doc["request"]["value"]), sort=False)
        same(e, "the server reads the ID", parse_blob_request(h(doc["request"]["frame_hex"])), doc["blob_id"])
    with r.case("header") as e:
        header = from_json(doc["header"]["value"])
        same(e, "size", header["size"], len(blob))
        same(e, "blob size", doc["blob_size"], len(blob))
        header_frame = frame(check_framed(doc["header"], e, header, sort=False))
        same(e, "the server's answer", (header_frame + blob).hex(), doc["response_hex"])
        answer = h(doc["response_hex"])  # the client: header, exactly `size` bytes, their sha256
        size = decode(unframe(answer[: 4 + int.from_bytes(answer[:4], "big")], MAX_BLOB_FRAME))["size"]
        rest = answer[len(header_frame) :]
        same(e, "the client's check", (len(rest), hashlib.sha256(rest).hexdigest()), (size, doc["blob_id"]))
    with r.case("not_found") as e:
        nf = doc["not_found"]
        asked = parse_blob_request(h(nf["request_frame_hex"]))
        same(e, "asks for another blob", asked != doc["blob_id"], True)
        check_framed(nf, e, from_json(nf["value"]), sort=False)
        same(e, "not found", from_json(nf["value"]), {"t": "blob_hdr", "v": 1, "ok": False, "error": "not found"})
    for i, c in enumerate(doc["invalid_requests"]):
        with r.case(f"invalid_requests[{i}]", c["name"]) as e:
            got = verdict(lambda c=c: ("served", parse_blob_request(h(c["frame_hex"]))))[0]
            same(e, "output", got, c["output"])


def check_discovery(doc: Seen, r: Report) -> None:
    with r.case("request") as e:
        same(e, "domain", doc["domain"], PEER_RECORD_DOMAIN)
        body = check_framed(doc["request"], e, from_json(doc["request"]["value"]))
        same(e, "parsed", parse_sync_request(body)[0], "peers_req")
    envelopes = []
    for i, c in enumerate(doc["records"]):
        with r.case(f"records[{i}]", c["name"]) as e:
            payload, unsigned, signature, env = seal_record(h(c["signer_seed_hex"]), c["seq"], c["addrs"])
            same(e, "payload type", PEER_RECORD_TYPE.hex(), c["payload_type_hex"])
            same(e, "payload", payload.hex(), c["payload_hex"])
            same(e, "signing input", unsigned.hex(), c["signing_input_hex"])
            same(e, "signature", signature.hex(), c["signature_hex"])
            same(e, "envelope", env.hex(), c["envelope_hex"])
            record = open_record(h(c["envelope_hex"]))
            same(e, "peer ID", record.peer_id, c["peer_id"])
            same(e, "peer ID of the seed", peer_id(public_key(h(c["signer_seed_hex"]))), c["peer_id"])
            same(e, "seq", record.seq, c["seq"])
            same(e, "dial addresses", record.dial_addrs, c["dial_addrs"])
            envelopes.append(env)
    with r.case("response") as e:
        records = parse_peers(check_framed(doc["response"], e, from_json(doc["response"]["value"])))
        same(e, "records", records, envelopes)
    for i, c in enumerate(doc["invalid_records"]):
        with r.case(f"invalid_records[{i}]", c["name"]) as e:
            got = verdict(lambda c=c: ("valid", open_record(h(c["envelope_hex"])).peer_id))[0]
            same(e, "output", got, c["output"])
    for i, c in enumerate(doc["loopback_records"]):
        with r.case(f"loopback_records[{i}]", c["name"]) as e:
            envelope = seal_record(h(c["signer_seed_hex"]), c["seq"], c["addrs"])[3]
            same(e, "envelope", envelope.hex(), c["envelope_hex"])
            for on_loopback, key in ((True, "loopback_node"), (False, "other_node")):
                try:
                    got: list[str] | None = open_record(h(c["envelope_hex"]), on_loopback).dial_addrs
                except Reject:
                    got = None
                same(e, key, got, c[key])


def check_audit(doc: Seen, r: Report) -> None:
    with r.case("factory", doc["factory"]["name"]) as e:
        check_signed(doc["factory"], e, "manifest")
    for i, c in enumerate(doc["cases"]):
        with r.case(f"cases[{i}]", c["name"]) as e:
            th, meta = dict(c["thresholds"].items()), from_json(c["meta"])
            same(e, "threshold keys", sorted(th), sorted(AUDIT_THRESHOLDS))
            same(e, "inconclusive", th["inconclusive"] in ("use", "refuse"), True)
            try:
                a = audit_figures(meta)
            except Reject as exc:
                same(e, "verdict", (None, exc.reason), (c["output"], c.get("reason")))
                same(e, "no verdict for invalid figures", ("verdict" in c, "power" in c), (False, False))
                continue
            power = audit_power(a["mia_members"], a["n_holdout"], th)
            failure = audit_failure(a, th)
            word = "fails" if failure else "inconclusive" if power < MIN_POWER else "passes"
            if failure is None and word == "inconclusive" and th["inconclusive"] == "refuse":
                failure = "inconclusive"
            same(e, "output", ("use", None) if failure is None else (None, failure), (c["output"], c.get("reason")))
            same(e, "verdict", word, c["verdict"])
            same(e, "power", round(power, 4), c["power"])


def check_dp(doc: Seen, r: Report) -> None:
    with r.case("factory", doc["factory"]["name"]) as e:
        check_signed(doc["factory"], e, "manifest")
    for i, c in enumerate(doc["cases"]):
        with r.case(f"cases[{i}]", c["name"]) as e:
            th, meta = dict(c["thresholds"].items()), from_json(c["meta"])
            same(e, "threshold keys", sorted(th), sorted(AUDIT_THRESHOLDS))
            try:  # the audit's rules first, then the DP rule
                a = audit_figures(meta)
                failure = audit_failure(a, th)
                weak = audit_power(a["mia_members"], a["n_holdout"], th) < MIN_POWER
                if failure is None and weak and th["inconclusive"] == "refuse":
                    failure = "inconclusive"
            except Reject as exc:
                failure = exc.reason
            if failure is None and th["max_epsilon"] > 0:
                failure = dp_failure(meta, th["max_epsilon"])
            same(e, "output", ("use", None) if failure is None else (None, failure), (c["output"], c.get("reason")))


def check_ownership(doc: Seen, r: Report) -> None:
    for i, c in enumerate(doc["cases"]):
        with r.case(f"cases[{i}]", c["name"]) as e:
            a = open_envelope(h(c["manifest_envelope_hex"]))
            blob = h(c["blob_hex"])
            same(e, "federation", a.body["federation"], doc["federation"])
            same(e, "size and sha256", (len(blob), hashlib.sha256(blob).hexdigest()), (a.body["size"], a.body["blob"]))
            owner = a.body["owner"]
            got = verdict(
                lambda blob=blob, owner=owner: ("live", "") if blob_owner(blob) == owner else (None, "blob-owner")
            )
            same(e, "verdict", got, (c["output"], c.get("reason", "")))


def check_arch(doc: Seen, r: Report) -> None:
    limits, max_header = dict(doc["limits"].items()), doc["max_header_bytes"]
    with r.case("limits") as e:
        same(e, "the README's default cost bounds", (limits, max_header), (DEFAULT_LIMITS, MAX_HEADER_BYTES))
    for i, c in enumerate(doc["cases"]):
        with r.case(f"cases[{i}]", c["name"]) as e:
            data = h(c["envelope_hex"])
            node = Node(doc["federation"], doc["class_list"], limits=limits, max_header=max_header)
            out = verdict(lambda data=data, node=node: node.apply(data))
            same(e, "verdict", out, ("accepted", c["id"]) if c["output"] else (None, c.get("reason")))
            body = decode(data)["body"]
            same(e, "kind", body["kind"], c["kind"])
            same(e, "arch", pack(body["arch"]), pack(from_json(c["arch"])))
            same(e, "size", body["size"], c["size"])
            same(e, "id", body_id(body), c["id"])
            if arch_problem(body["kind"], body["arch"]) is None:
                size = model_size(body["kind"], body["arch"])
                same(e, "params, weight bytes", size, (c["params"], c["weight_bytes"]))
            else:
                same(e, "no params for an arch the schema refuses", "params" in c or "weight_bytes" in c, False)


def check_invalid(doc: Seen, r: Report) -> None:
    for i, c in enumerate(doc["cases"]):
        with r.case(f"cases[{i}]", c["name"]) as e:
            got = verdict(lambda c=c: ("accepted", open_envelope(h(c["input"]["envelope_hex"])).id))
            same(e, "verdict", got, (c["output"], c["reason"]))


def check_cosigned(c: Seen, e: list[str]) -> None:
    """A co-signed case: rebuild the body, payload, every signature and the envelope from the seeds."""
    body, kind = from_json(c["body"]), c["type"]
    same(e, "canonical body", pack(body).hex(), c["canonical_body_hex"])
    payload = signing_payload(kind, body)
    same(e, "signing payload", payload.hex(), c["signing_payload_hex"])
    seeds = [h(x) for x in c["signer_seeds_hex"]]
    sigs = sorted(({"key": public_key(x), "sig": sign(x, payload)} for x in seeds), key=lambda s: s["key"])
    same(e, "signatures", [s["sig"].hex() for s in sigs], c["signatures_hex"])
    env = pack({"v": VERSION, "t": kind, "body": body, "sigs": sigs})
    same(e, "envelope", env.hex(), c["envelope_hex"])
    same(e, "id", body_id(body), c["id"])
    same(e, "opens", open_cosigned(h(c["envelope_hex"]))[0], kind)


def check_charter(doc: Seen, r: Report) -> None:
    with r.case("charter", doc["charter"]["name"]) as e:
        check_cosigned(doc["charter"], e)
        same(e, "signed by exactly its founders", body_id(open_charter(h(doc["charter"]["envelope_hex"]))),
             doc["charter"]["id"])  # fmt: skip
    s = doc["scenario"]
    node = Node(s["federation"], s["class_list"], charter=open_charter(h(s["charter_hex"])))
    with r.case("membership", doc["membership"]["name"]) as e:
        check_cosigned(doc["membership"], e)
        same(e, "on the node", verdict(lambda: Node(node.federation, node.class_list, charter=node.charter).apply(
            h(doc["membership"]["envelope_hex"]))), ("accepted", doc["membership"]["id"]))  # fmt: skip
    for j, step in enumerate(s["steps"]):
        with r.case(f"scenario.steps[{j}]", f"step {j + 1}") as e:
            out = step["output"]
            want = (out, step["id"]) if out is not None else (None, step["reason"])
            same(e, "verdict", verdict(lambda step=step: node.apply(h(step["envelope_hex"]))), want)
    with r.case("scenario", "scenario") as e:
        same(e, "members", {p: node.is_member(p) for p in s["members_after"]}, dict(s["members_after"].items()))
        after, (manifests, revocations) = s["inventory_after"], node.inventory()
        same(e, "members served", [d.hex() for _, (_, _, d) in sorted((m[0], m) for m in node.members.values())],
             after["members_hex"])  # fmt: skip
        same(e, "manifests served", [x.hex() for x in manifests], after["manifests_hex"])
        same(e, "revocations served", [x.hex() for x in revocations], after["revocations_hex"])
    for i, c in enumerate(doc["invalid"]):
        with r.case(f"invalid[{i}]", c["name"]) as e:
            data, charter = h(c["envelope_hex"]), c["type"] == "charter"
            got = verdict(lambda: ("accepted", body_id(open_charter(data))) if charter else node.membership(data))  # noqa: B023
            same(e, "verdict", got, (c["output"], c["reason"]))


CHECKS: dict[str, Callable[[Seen, Report], None]] = {
    "identity.json": check_identity,
    "canonical.json": check_canonical,
    "manifest.json": lambda doc, r: check_envelopes(doc, r, "manifest"),
    "revocation.json": lambda doc, r: check_envelopes(doc, r, "revocation"),
    "acceptance.json": check_acceptance,
    "sync.json": check_sync,
    "blob.json": check_blob,
    "discovery.json": check_discovery,
    "audit.json": check_audit,
    "dp.json": check_dp,
    "ownership.json": check_ownership,
    "arch.json": check_arch,
    "invalid.json": check_invalid,
    "charter.json": check_charter,
    "quota.json": check_quota,
}


def check_file(path: Path) -> dict[str, list[str]]:
    """Case path -> mismatches for one vector file; a case no check reached, or a field no check read, is one."""
    doc = json.loads(path.read_text(), object_hook=Seen)
    report = Report()
    check = CHECKS.get(path.name)
    if check is None:
        return {"(file)": [f"no check for {path.name}: every vector file needs one"]}
    with report.case("(file)"):
        check(doc, report)
    if not report.cases["(file)"]:
        del report.cases["(file)"]
    for p in case_paths(doc):
        report.cases.setdefault(p, ["not checked: no check reached this case"])
    for p in unread(doc, ""):
        report.cases.setdefault("(fields)", []).append(f"{p}: never read by a check")
    return report.cases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=Path, default=VECTORS, help="folder of the *.json vector files")
    parser.add_argument("--json", action="store_true", help="print {file: {case: [mismatches]}} as one JSON document")
    args = parser.parse_args()
    results = {p.name: check_file(p) for p in sorted(args.vectors.glob("*.json"))}
    failed = not results or any(errors for cases in results.values() for errors in cases.values())
    if args.json:
        print(json.dumps(results, indent=1))
        return 1 if failed else 0
    print(f"{'file':<18} {'cases':>6} {'checked':>8} {'mismatched':>11}")
    for name, cases in results.items():
        bad = sum(1 for errors in cases.values() if errors)
        print(f"{name:<18} {len(cases):>6} {len(cases) - bad:>8} {bad:>11}")
    total = sum(len(c) for c in results.values())
    bad_total = sum(1 for c in results.values() for errors in c.values() if errors)
    print(f"{'all':<18} {total:>6} {total - bad_total:>8} {bad_total:>11}")
    for name, cases in results.items():
        for path, errors in cases.items():
            for error in errors:
                print(f"{name} {path}: {error}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
