"""Revocations: an owner's signed withdrawal of some of its artifacts (exact unlearning, docs/unlearning.md).

Only the key that signed an artifact can revoke it. A revocation is kept forever as a tombstone, so a
revoked ID is never fetched, served, used or accepted again, whoever re-gossips its manifest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ffnode.artifacts.codec import WireError, body_id, check_fields, is_hex_id, open_envelope, seal
from ffnode.identity import Identity

MAX_IDS = 800  # 800 IDs of 67 bytes still fit a 64 KiB envelope
MAX_REASON = 1024

_SCHEMA: dict[str, type | tuple[type, ...]] = {
    "owner": str,
    "owner_key": bytes,
    "federation": str,
    "ids": list,  # artifact IDs being revoked, all owned by `owner`
    "reason": str,
    "created": int,  # unix time, milliseconds
    "seq": int,  # must exceed the seq of every artifact it revokes: it was signed after them
}


@dataclass(frozen=True)
class Revocation:
    owner: str
    owner_key: bytes
    federation: str
    ids: list[str]
    reason: str
    created: int
    seq: int

    @property
    def id(self) -> str:
        return body_id(asdict(self))

    def seal(self, identity: Identity) -> bytes:
        if identity.public_key != self.owner_key:
            raise ValueError("a revocation can only be signed by the artifacts' owner")
        return seal("revocation", asdict(self), identity)

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Revocation:
        check_fields(body, _SCHEMA)
        ids = body["ids"]
        if not ids or len(ids) > MAX_IDS or not all(is_hex_id(x) for x in ids):
            raise WireError(f"ids must be 1..{MAX_IDS} artifact IDs (64-character hex)")
        if len(body["reason"]) > MAX_REASON:
            raise WireError(f"reason longer than {MAX_REASON} characters")
        if body["seq"] < 0:
            raise WireError("seq must be non-negative")
        return cls(**body)


def open_revocation(data: bytes) -> Revocation:
    _, body = open_envelope(data, ("revocation",))
    return Revocation.from_body(body)
