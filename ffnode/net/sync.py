"""The sync protocol's messages: ask a peer for its inventory, page by page, so convergence never depends on
gossip.

Gossipsub drops bursts silently (32-message queues, 10 msg/s per topic per peer), and a node that was
offline missed everything. On every connection, and periodically, a node asks each peer for the signed
envelopes of its manifests (revoked factories included, so a late joiner holds them with their
tombstones) and of all revocations, and treats each one it does not hold exactly as if it had arrived by
gossip. An inventory can outgrow any one frame, so it is served in pages: the request names a cursor (""
for the start), the response carries at most MAX_PAGE_BYTES and the cursor of the next page ("" at the
end). The cursor is the server's business; ffnode's is "c/<ID>", "m/<ID>" or "r/<ID>" of the last item sent,
with the membership messages of an invite-only federation first (a client must know the members before it judges
their manifests), then manifests, then revocations, each in ID order. A page holds the key `members` only when it
carries membership messages, so an open federation's pages are what they were before charters.

The same protocol carries discovery: a `peers_req` is answered with signed peer records (the server's own
first, then the federation members it is connected to); ffnode.net.discovery verifies and uses them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ffnode.artifacts.codec import VERSION, WireError, canonical_bytes, check_class_list, decode, is_version

MAX_PAGE_BYTES = 1 << 20  # one response body; envelopes are at most 64 KiB, so a page holds at least 15
MAX_INVENTORY_ITEMS = 65536  # per page and list
MAX_CURSOR = 256  # characters
MAX_PAGES = 4096  # a client reads at most this many pages of one peer per sync round (4 GiB)
MAX_PEER_RECORDS = 64  # per peers response
MAX_PEERS_BYTES = 256 * 1024  # one peers response: 64 records of at most 2 KiB, with room to spare
MAX_REQUEST_BYTES = 8192  # one request: a class list of at most 4 KiB, with room to spare
_LIST_OVERHEAD = 5  # msgpack bin 32 header of one item


def inventory_request(federation: str, class_list: list[str], cursor: str = "") -> bytes:
    body = {"t": "inv_req", "v": VERSION, "federation": federation, "class_list": class_list, "cursor": cursor}
    return canonical_bytes(body)


def parse_inventory_request(data: bytes) -> tuple[str, list[str], str]:
    """(federation, class list, cursor) of a request."""
    msg = _message(data, "inv_req", {"t", "v", "federation", "class_list", "cursor"})
    if not isinstance(msg["federation"], str) or not isinstance(msg["cursor"], str):
        raise WireError("federation and cursor must be strings")
    if len(msg["cursor"]) > MAX_CURSOR:
        raise WireError(f"cursor longer than {MAX_CURSOR} characters")
    return msg["federation"], check_class_list(msg["class_list"]), msg["cursor"]


def inventory_response(
    manifests: list[bytes], revocations: list[bytes], next_cursor: str = "", members: list[bytes] | None = None
) -> bytes:
    body = {"t": "inv", "v": VERSION, "manifests": manifests, "revocations": revocations, "next": next_cursor}
    return canonical_bytes(body | ({"members": members} if members else {}))


def parse_inventory_response(data: bytes) -> tuple[list[bytes], list[bytes], str, list[bytes]]:
    """(manifests, revocations, next cursor, membership messages) of one page."""
    keys = {"t", "v", "manifests", "revocations", "next"}
    msg = _message(data, "inv", keys, max_bytes=MAX_PAGE_BYTES, optional={"members"})
    lists = msg["manifests"], msg["revocations"], msg.get("members", [])
    if "members" in msg and not msg["members"]:
        raise WireError("members, when present, must not be empty")
    for items in lists:
        if not isinstance(items, list) or len(items) > MAX_INVENTORY_ITEMS:
            raise WireError(f"inventory lists must hold at most {MAX_INVENTORY_ITEMS} envelopes")
        if not all(isinstance(x, bytes) for x in items):
            raise WireError("inventory items must be envelope bytes")
    if not isinstance(msg["next"], str) or len(msg["next"]) > MAX_CURSOR:
        raise WireError(f"next must be a cursor of at most {MAX_CURSOR} characters")
    return lists[0], lists[1], msg["next"], lists[2]


def peers_request(federation: str, class_list: list[str]) -> bytes:
    return canonical_bytes({"t": "peers_req", "v": VERSION, "federation": federation, "class_list": class_list})


def peers_response(records: list[bytes]) -> bytes:
    return canonical_bytes({"t": "peers", "v": VERSION, "records": records})


def parse_peers_response(data: bytes) -> list[bytes]:
    """The signed peer records of a peers response (each still to be verified: ffnode.net.discovery)."""
    msg = _message(data, "peers", {"t", "v", "records"}, max_bytes=MAX_PEERS_BYTES)
    records = msg["records"]
    if not isinstance(records, list) or len(records) > MAX_PEER_RECORDS:
        raise WireError(f"a peers response holds at most {MAX_PEER_RECORDS} records")
    if not all(isinstance(x, bytes) for x in records):
        raise WireError("peer records must be bytes")
    return records


def parse_request(data: bytes) -> tuple[str, str, list[str], str]:
    """(kind, federation, class list, cursor) of a sync request: kind "inv_req" (with its cursor) or "peers_req"
    (cursor "")."""
    kind = _peek_kind(data)
    if kind == "peers_req":
        msg = _message(data, "peers_req", {"t", "v", "federation", "class_list"})
        if not isinstance(msg["federation"], str):
            raise WireError("federation must be a string")
        return kind, msg["federation"], check_class_list(msg["class_list"]), ""
    return "inv_req", *parse_inventory_request(data)


def _peek_kind(data: bytes) -> Any:
    msg = decode(data, max_bytes=MAX_REQUEST_BYTES)
    return msg.get("t") if isinstance(msg, dict) else None


def inventory_page(
    manifests: list[tuple[str, bytes]],
    revocations: list[tuple[str, bytes]],
    cursor: str,
    max_bytes: int = MAX_PAGE_BYTES,
    members: Sequence[tuple[str, bytes]] = (),
) -> bytes:
    """The page after `cursor` of an inventory given as (ID, envelope) lists sorted by ID."""
    kind, _, after = cursor.partition("/")
    if cursor and (kind not in ("c", "m", "r") or not after):
        raise WireError(f"unknown cursor {cursor[:40]!r}")
    items = [(k, i, env) for k, part in (("c", members), ("m", manifests), ("r", revocations)) for i, env in part]
    start = 0
    if cursor:  # the first item past the cursor, in the order above
        start = next((i for i, (k, aid, _) in enumerate(items) if (k, aid) > (kind, after)), len(items))
    page: dict[str, list[bytes]] = {"c": [], "m": [], "r": []}
    size, end = 128, start  # 128: the map around the lists
    while end < len(items) and (end == start or size + len(items[end][2]) + _LIST_OVERHEAD <= max_bytes):
        k, _, env = items[end]
        page[k].append(env)
        size += len(env) + _LIST_OVERHEAD
        end += 1
    next_cursor = f"{items[end - 1][0]}/{items[end - 1][1]}" if end < len(items) else ""
    return inventory_response(page["m"], page["r"], next_cursor, page["c"])


def _message(
    data: bytes,
    kind: str,
    keys: set[str],
    max_bytes: int = MAX_REQUEST_BYTES,
    optional: frozenset[str] | set[str] = frozenset(),
) -> dict[str, Any]:
    msg = decode(data, max_bytes=max_bytes)
    if not isinstance(msg, dict) or msg.get("t") != kind:
        raise WireError(f"expected a {kind!r} message")
    if not is_version(msg.get("v")):
        raise WireError(f"unsupported version {msg.get('v')!r} (this node speaks {VERSION})")
    if not keys <= set(msg) <= keys | optional:
        raise WireError(
            f"{kind} must have exactly the keys {sorted(keys)}"
            + (f" (and may have {sorted(optional)})" if optional else "")
        )
    return msg
