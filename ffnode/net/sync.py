"""The sync protocol's messages: ask a peer for its inventory, so convergence never depends on gossip.

Gossipsub drops bursts silently (32-message queues, 10 msg/s per topic per peer), and a node that was
offline missed everything. On every connection, and periodically, a node asks each peer for the signed
envelopes of all its manifests (revoked ones included, so a late joiner holds them with their
tombstones) and all revocations, and treats each one it does not hold exactly as if it had arrived by
gossip.
"""

from __future__ import annotations

from typing import Any

from ffnode.artifacts.codec import VERSION, WireError, canonical_bytes, decode, is_version

MAX_INVENTORY_BYTES = 16 * 2**20
MAX_INVENTORY_ITEMS = 65536


def inventory_request(federation: str) -> bytes:
    return canonical_bytes({"t": "inv_req", "v": VERSION, "federation": federation})


def parse_inventory_request(data: bytes) -> str:
    msg = _message(data, "inv_req", {"t", "v", "federation"})
    if not isinstance(msg["federation"], str):
        raise WireError("federation must be a string")
    return msg["federation"]


def inventory_response(manifests: list[bytes], revocations: list[bytes]) -> bytes:
    return canonical_bytes({"t": "inv", "v": VERSION, "manifests": manifests, "revocations": revocations})


def parse_inventory_response(data: bytes) -> tuple[list[bytes], list[bytes]]:
    msg = _message(data, "inv", {"t", "v", "manifests", "revocations"}, max_bytes=MAX_INVENTORY_BYTES)
    lists = msg["manifests"], msg["revocations"]
    for items in lists:
        if not isinstance(items, list) or len(items) > MAX_INVENTORY_ITEMS:
            raise WireError(f"inventory lists must hold at most {MAX_INVENTORY_ITEMS} envelopes")
        if not all(isinstance(x, bytes) for x in items):
            raise WireError("inventory items must be envelope bytes")
    return lists


def _message(data: bytes, kind: str, keys: set[str], max_bytes: int = 4096) -> dict[str, Any]:
    msg = decode(data, max_bytes=max_bytes)
    if not isinstance(msg, dict) or msg.get("t") != kind:
        raise WireError(f"expected a {kind!r} message")
    if not is_version(msg.get("v")):
        raise WireError(f"unsupported version {msg.get('v')!r} (this node speaks {VERSION})")
    if set(msg) != keys:
        raise WireError(f"{kind} must have exactly the keys {sorted(keys)}")
    return msg
