"""Invite-only federations: a charter signed by its founders, and membership messages (admit or remove a peer)
signed by `threshold` of them (protocol/README.md, "Charters and membership").

Without a charter any valid key may publish (an open federation: anyone can make keys, so a Sybil costs only its
quotas). A site that pins a charter (config `federation.charter`, its ID) uses only the artifacts of members: the
founders, and every peer whose newest membership message admits it. Membership messages travel like revocations
(gossip and sync) and apply to what is held, retroactively, through the store's trust rules. Both message types
are co-signed envelopes: one body, a list of (key, signature) pairs, each over the domain-separated payload.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ffnode.artifacts.codec import (
    MAX_ENVELOPE_BYTES,
    VERSION,
    WireError,
    body_id,
    canonical_bytes,
    check_fields,
    decode,
    is_hex_id,
    is_version,
    signing_payload,
)
from ffnode.identity import Identity, peer_id_from_public_key, public_key_from_peer_id, verify

MAX_FOUNDERS = 16  # founders of a charter, and so signatures on one message
MAX_FEDERATION_BYTES = 64
ACTIONS = ("admit", "remove")

_CHARTER_SCHEMA: dict[str, type | tuple[type, ...]] = {
    "federation": str,
    "founders": list,  # raw Ed25519 public keys, ascending: every one signs the charter
    "threshold": int,  # founders' signatures a membership message needs
    "created": int,  # unix time, milliseconds
}
_MEMBERSHIP_SCHEMA: dict[str, type | tuple[type, ...]] = {
    "charter": str,  # the charter's ID: a message counts only in the federation it was signed for
    "peer": str,  # the peer ID admitted or removed
    "action": str,
    "seq": int,  # per peer: the highest decides
    "created": int,
}


@dataclass(frozen=True)
class Charter:
    federation: str
    founders: list[bytes]
    threshold: int
    created: int

    @property
    def id(self) -> str:
        return body_id(asdict(self))

    @property
    def founder_ids(self) -> frozenset[str]:
        return frozenset(peer_id_from_public_key(k) for k in self.founders)

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Charter:
        check_fields(body, _CHARTER_SCHEMA)
        founders, n = body["founders"], len(body["founders"])
        if not 1 <= len(body["federation"].encode()) <= MAX_FEDERATION_BYTES or "/" in body["federation"]:
            raise WireError(f"federation must be 1 to {MAX_FEDERATION_BYTES} bytes without '/'")
        if not 1 <= n <= MAX_FOUNDERS or not all(isinstance(k, bytes) and len(k) == 32 for k in founders):
            raise WireError(f"founders must be 1 to {MAX_FOUNDERS} Ed25519 public keys of 32 bytes")
        if any(a >= b for a, b in zip(founders, founders[1:], strict=False)):
            raise WireError("founders must be distinct and in ascending byte order")
        if not 1 <= body["threshold"] <= n:
            raise WireError(f"threshold must be 1 to the number of founders ({n})")
        return cls(**body)


@dataclass(frozen=True)
class Membership:
    charter: str
    peer: str
    action: str
    seq: int
    created: int
    signers: frozenset[str] = frozenset()  # peer IDs whose signatures verified: not part of the body

    def body(self) -> dict[str, Any]:
        return {"charter": self.charter, "peer": self.peer, "action": self.action, "seq": self.seq,
                "created": self.created}  # fmt: skip

    @property
    def id(self) -> str:
        return body_id(self.body())

    @classmethod
    def from_body(cls, body: dict[str, Any], signers: frozenset[str] = frozenset()) -> Membership:
        check_fields(body, _MEMBERSHIP_SCHEMA)
        if not is_hex_id(body["charter"]):
            raise WireError("charter must be a charter ID (64-character hex)")
        try:
            public_key_from_peer_id(body["peer"])
        except ValueError:
            raise WireError("peer must be an Ed25519 peer ID") from None
        if body["action"] not in ACTIONS or body["seq"] < 0:
            raise WireError(f"action must be one of {ACTIONS} and seq non-negative")
        return cls(**body, signers=signers)


def open_cosigned(data: bytes, kinds: tuple[str, ...]) -> tuple[str, dict[str, Any], frozenset[str]]:
    """Decode a co-signed envelope and verify every signature on it; (kind, body, the signers' peer IDs)."""
    env = decode(data, max_bytes=MAX_ENVELOPE_BYTES)
    if not isinstance(env, dict) or env.get("t") not in kinds:
        raise WireError(f"unknown message type {env.get('t') if isinstance(env, dict) else None!r}")
    if set(env) != {"v", "t", "body", "sigs"}:
        raise WireError("not a co-signed envelope: expected exactly the keys v, t, body, sigs")
    if not is_version(env["v"]):
        raise WireError(f"unsupported version {env['v']!r} (this node speaks {VERSION})")
    kind, body, sigs = env["t"], env["body"], env["sigs"]
    if not isinstance(body, dict) or not isinstance(sigs, list) or not 1 <= len(sigs) <= MAX_FOUNDERS:
        raise WireError(f"body must be a map and sigs 1 to {MAX_FOUNDERS} signatures")
    keys = []
    for s in sigs:
        if not isinstance(s, dict) or set(s) != {"key", "sig"}:
            raise WireError("each signature must be a map of exactly key and sig")
        key, sig = s["key"], s["sig"]
        if not isinstance(key, bytes) or len(key) != 32 or not isinstance(sig, bytes) or len(sig) != 64:
            raise WireError("a signature's key must be 32 bytes and its sig 64")
        keys.append(key)
    if len(set(keys)) != len(keys):
        raise WireError("a key signs twice")
    payload = signing_payload(kind, body)
    for s in sigs:
        if not verify(s["key"], s["sig"], payload):
            raise WireError(f"bad signature on {kind} by {peer_id_from_public_key(s['key'])}")
    return kind, body, frozenset(peer_id_from_public_key(k) for k in keys)


def open_charter(data: bytes) -> Charter:
    """A charter every founder signed, and nobody else; WireError says why not."""
    _, body, signers = open_cosigned(data, ("charter",))
    charter = Charter.from_body(body)
    if signers != charter.founder_ids:
        missing = len(charter.founder_ids - signers)
        raise WireError(f"a charter must be signed by exactly its founders ({missing} missing, or another key)")
    return charter


def open_membership(data: bytes, charter: Charter) -> Membership:
    """A membership message of this charter signed by at least `threshold` founders, and by no one else."""
    _, body, signers = open_cosigned(data, ("membership",))
    m = Membership.from_body(body, signers)
    if m.charter != charter.id:
        raise WireError(f"membership message of charter {m.charter[:12]}, not this federation's {charter.id[:12]}")
    if not signers <= charter.founder_ids:
        raise WireError("membership message signed by a key that is not a founder")
    if len(signers) < charter.threshold:
        raise WireError(f"only {len(signers)} founders signed it, the charter asks {charter.threshold}")
    if m.action == "remove" and m.peer in charter.founder_ids:
        raise WireError("a founder cannot be removed (a new charter can leave it out)")
    return m


def cosign(data: bytes, identity: Identity) -> bytes:
    """The co-signed envelope with `identity`'s signature added (signatures kept in key order); ValueError if it
    signed already. The envelope may still lack signatures: nothing but the signatures on it is checked here."""
    kind, body, signers = open_cosigned(data, ("charter", "membership"))
    if identity.peer_id in signers:
        raise ValueError(f"{identity.peer_id} signed this {kind} already")
    sigs = decode(data)["sigs"] + [{"key": identity.public_key, "sig": identity.sign(signing_payload(kind, body))}]
    return canonical_bytes({"v": VERSION, "t": kind, "body": body, "sigs": sorted(sigs, key=lambda s: s["key"])})


def seal_cosigned(kind: str, body: dict[str, Any], identity: Identity) -> bytes:
    """A new co-signed envelope, signed by `identity` alone so far."""
    sig = {"key": identity.public_key, "sig": identity.sign(signing_payload(kind, body))}
    return canonical_bytes({"v": VERSION, "t": kind, "body": body, "sigs": [sig]})
