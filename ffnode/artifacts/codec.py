"""Canonical msgpack and signed envelopes: the bytes every node must agree on (protocol/README.md).

A signature is only checkable by another implementation if both encode the same value to the same
bytes, so the signed body is re-encoded canonically: maps sorted by key, floats as float64, strings as
msgpack str and bytes as bin, shortest integer forms (msgpack's own rule).
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgpack

from ffnode.identity import Identity, peer_id_from_public_key, verify

VERSION = 1
MAX_ENVELOPE_BYTES = 64 * 1024  # announcements carry manifests only; weights travel over the blob protocol
# Nesting below the top-level value: an envelope needs 4 (envelope > body > arch > a list), an inventory 2.
# Checked before anything recurses over a decoded value (canonical re-encoding, schema checks).
MAX_DEPTH = 8
DOMAIN = b"ffnode/v1/"  # domain separation: a signature over one message type never verifies as another


class WireError(ValueError):
    """A message that must be rejected; the text is the reason logged with the peer that sent it."""


def _canonical(value: Any) -> Any:
    if isinstance(value, msgpack.ExtType):  # a namedtuple: it must not pass as a list
        raise WireError("msgpack ext types are not allowed")
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise WireError("map keys must be strings")
        return {k: _canonical(value[k]) for k in sorted(value)}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, bool | int | float | str | bytes) or value is None:
        return value
    raise WireError(f"type {type(value).__name__} cannot be encoded")


def canonical_bytes(value: Any) -> bytes:
    return msgpack.packb(_canonical(value), use_bin_type=True, use_single_float=False)


def decode(data: bytes, *, max_bytes: int = MAX_ENVELOPE_BYTES) -> Any:
    if len(data) > max_bytes:
        raise WireError(f"message of {len(data)} bytes exceeds the {max_bytes}-byte limit")
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=True, object_pairs_hook=_unique_map)
    except WireError:
        raise
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, TypeError) as exc:
        raise WireError(f"malformed msgpack: {exc}") from None
    _check_depth(value)
    return value


def _check_depth(value: Any) -> None:
    """WireError if containers nest deeper than MAX_DEPTH; iterative, so hostile nesting costs no recursion.
    (Container sizes need no separate bound: every element costs at least a byte of the bounded message.)"""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > MAX_DEPTH:
                    raise WireError(f"containers nest deeper than {MAX_DEPTH} levels")
                stack.append((child, depth + 1))


def _unique_map(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    """Duplicate keys are rejected: decoders differ on which one wins, so nodes would disagree."""
    result = dict(pairs)
    if len(result) != len(pairs):
        raise WireError("malformed msgpack: duplicate map key")
    return result


def is_version(value: Any) -> bool:
    """`v` must be the integer VERSION: true or 1.0 compare equal to 1 in Python but are other values."""
    return type(value) is int and value == VERSION


def signing_payload(kind: str, body: dict[str, Any]) -> bytes:
    return DOMAIN + kind.encode() + b"\0" + canonical_bytes(body)


def body_id(body: dict[str, Any]) -> str:
    """An artifact's or revocation's ID: sha256 of its canonical body, lowercase hex."""
    return hashlib.sha256(canonical_bytes(body)).hexdigest()


def seal(kind: str, body: dict[str, Any], identity: Identity) -> bytes:
    """Sign `body` and return the envelope bytes that travel on gossip and sync."""
    sig = identity.sign(signing_payload(kind, body))
    return canonical_bytes({"v": VERSION, "t": kind, "body": body, "sig": sig})


def open_envelope(data: bytes, kinds: tuple[str, ...]) -> tuple[str, dict[str, Any]]:
    """Decode and verify an envelope; returns (kind, body). The body's `owner_key` must have signed it
    and its `owner` must be that key's peer ID."""
    env = decode(data)
    if not isinstance(env, dict) or set(env) != {"v", "t", "body", "sig"}:
        raise WireError("not an envelope: expected exactly the keys v, t, body, sig")
    if not is_version(env["v"]):
        raise WireError(f"unsupported version {env['v']!r} (this node speaks {VERSION})")
    kind, body, sig = env["t"], env["body"], env["sig"]
    if kind not in kinds:
        raise WireError(f"unknown message type {kind!r}")
    if not isinstance(body, dict) or not isinstance(sig, bytes) or len(sig) != 64:
        raise WireError("envelope body must be a map and sig 64 bytes")
    key = body.get("owner_key")
    if not isinstance(key, bytes) or len(key) != 32:
        raise WireError("owner_key must be a 32-byte Ed25519 public key")
    if body.get("owner") != peer_id_from_public_key(key):
        raise WireError("owner does not match the peer ID of owner_key")
    if not verify(key, sig, signing_payload(kind, body)):
        raise WireError(f"bad signature on {kind}")
    return kind, body


def check_fields(body: dict[str, Any], schema: dict[str, type | tuple[type, ...]]) -> None:
    """Exact key set and types, so that no unsigned-by-intent or unknown field slips through."""
    if set(body) != set(schema):
        missing, extra = sorted(set(schema) - set(body)), sorted(set(body) - set(schema))
        raise WireError(f"fields differ from the schema (missing {missing}, unexpected {extra})")
    for name, typ in schema.items():
        value = body[name]
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            raise WireError(f"field {name!r} has type {type(value).__name__}")


def is_hex_id(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


MAX_CLASS_LIST = 256  # classes in a federation
MAX_CLASS_NAME_BYTES = 64  # UTF-8 bytes of one class name
# the list's canonical msgpack: an expert's manifest still fits its envelope with the longest lineage (53 KB) and
# its label counts (2 x 256 ints)
MAX_CLASS_LIST_BYTES = 4096


def check_class_list(value: Any) -> list[str]:
    """The federation's ordered class names, as every manifest and sync request carries them: 1 to
    MAX_CLASS_LIST distinct non-empty strings of at most MAX_CLASS_NAME_BYTES UTF-8 bytes, the whole at most
    MAX_CLASS_LIST_BYTES in canonical msgpack. WireError says which bound a list breaks."""
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_CLASS_LIST:
        raise WireError(f"class_list must be a list of 1 to {MAX_CLASS_LIST} class names")
    for name in value:
        try:
            size = len(name.encode("utf-8")) if isinstance(name, str) else 0
        except UnicodeEncodeError:  # a lone surrogate, e.g. from arguments that were not UTF-8
            raise WireError(f"class name {name!r} is not valid UTF-8") from None
        if not 1 <= size <= MAX_CLASS_NAME_BYTES:
            raise WireError(f"each class name must be a string of 1 to {MAX_CLASS_NAME_BYTES} UTF-8 bytes")
    if len(set(value)) != len(value):
        raise WireError("class_list names a class twice")
    if len(canonical_bytes(value)) > MAX_CLASS_LIST_BYTES:
        raise WireError(f"class_list encodes to more than {MAX_CLASS_LIST_BYTES} bytes")
    return value


def describe_classes(names: list[str], limit: int = 200) -> str:
    """A class list for a log line: its names in order, cut at `limit` characters (a peer's list is hostile)."""
    text = ", ".join(repr(n) for n in names)
    return f"[{text if len(text) <= limit else text[:limit] + ' ...'}] ({len(names)} classes)"
