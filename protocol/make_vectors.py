"""Regenerate the wire-protocol test vectors in protocol/vectors/*.json (protocol/README.md, "Test vectors").

    python protocol/make_vectors.py           # rewrite protocol/vectors/*.json
    python protocol/make_vectors.py --check   # exit 1 if a file differs from what the code produces now

Every byte comes from ffnode's own code (ffnode.identity, ffnode.artifacts, ffnode.net.sync,
ffnode.net.streams' framing) applied to fixed inputs: two test keys (seeds `bytes(range(32))` for
"alice" and `b"\\x01" * 32` for "bob"), fixed timestamps around 2026-11-23T00:00:00Z and fixed blob
contents. Ed25519 signatures are deterministic (RFC 8032), so a rerun rewrites every file byte for
byte; a diff after a code change means the wire format changed.

JSON conventions in the files (also in the README):
  * all bytes are lowercase hex without a `0x` prefix;
  * in a JSON view of a msgpack map, a key ending in `_hex` stands for the field without that suffix
    whose value is msgpack bin (or an array of bin), given as hex;
  * a JSON number written with a `.` or an exponent is a msgpack float64, one without is an integer;
  * the `*_hex` encodings are authoritative, the JSON views are there to be read.

The only encoder here that is not ffnode's is `loose_pack`, which writes deliberately
non-canonical msgpack (wide integers, float32, 32-bit lengths, reversed key order) for the vectors
that show a receiver must re-encode before verifying.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import re
import shutil
import struct
import sys
import tempfile
from pathlib import Path
from typing import Any

import msgpack
import multiaddr
import numpy as np
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.rsa import RSAPublicKey
from libp2p.peer.envelope import (
    ENVELOPE_DOMAIN,
    PEER_RECORD_CODEC,
    Envelope,
    make_unsigned,
    seal_record,
    unmarshal_envelope,
)
from libp2p.peer.id import ID
from libp2p.peer.peer_record import PeerRecord
from safetensors.numpy import save as save_safetensors

from ffnode.arch import expert_spec, factory_config, vet
from ffnode.artifacts import codec
from ffnode.artifacts.blob import MAX_HEADER_BYTES
from ffnode.artifacts.charter import Membership, cosign, open_charter, seal_cosigned
from ffnode.artifacts.codec import (
    MAX_CLASS_LIST_BYTES,
    MAX_CLASS_NAME_BYTES,
    WireError,
    canonical_bytes,
    signing_payload,
)
from ffnode.artifacts.manifest import MAX_BLOB_BYTES, MAX_CLASSES, MAX_LINEAGE, Manifest
from ffnode.artifacts.revocation import MAX_IDS, MAX_REASON, Revocation
from ffnode.artifacts.store import CHARTER_FILE, Limits, Store, Trust, open_announcement
from ffnode.config import LimitsConfig
from ffnode.expert.config import ExpertConfig, expert_size
from ffnode.factory.config import FactoryConfig, unet_size
from ffnode.identity import Identity, peer_id_from_public_key
from ffnode.net import discovery, streams, sync
from ffnode.privacy.policy import AuditPolicy, audit_of, judge
from ffnode.privacy.policy import verdict as verdict_of

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "protocol" / "vectors"
SPEC = "protocol/README.md"

ALICE = Identity(bytes(range(32)))
BOB = Identity(b"\x01" * 32)
# RFC 8032 section 7.1, TEST 1: lets an implementer check their Ed25519 library on a published vector.
RFC8032_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
FEDERATION = "digits"
CLASS_LIST = [str(d) for d in range(10)]  # the federation's class names, in label order
T0 = 1795392000000  # 2026-11-23T00:00:00Z in unix milliseconds

ALICE_BLOB = b"ffnode test vector blob: alice's factory for class 3\n"
BOB_BLOB = b"ffnode test vector blob: bob's expert\n"

# Architectures follow the README's arch schema, training summaries are free-form; these are fixed snapshots
# (not read from ffnode.factory / ffnode.expert, whose defaults may change) that exercise floats, bools, nested
# arrays, and fields left to their defaults. ffnode's own arch check (ffnode.arch.vet) accepts both.
FACTORY_ARCH: dict[str, Any] = {
    "image_size": 8,
    "channels": 1,
    "block_out_channels": [32, 64, 64],
    "layers_per_block": 1,
    "attention": False,
    "dropout": 0.0,
    "num_train_timesteps": 1000,
    "beta_schedule": "squaredcos_cap_v2",
    "prediction_type": "epsilon",
    "lr": 0.002,
    "ema_decay": 0.99,
    "sampler": "dpmsolver++",
    "sample_steps": 20,
}
EXPERT_ARCH: dict[str, Any] = {
    "expert": {
        "width": 32,
        "blocks": [1, 1, 1],
        "epochs": 15,
        "lr": 0.05,
        "momentum": 0.9,
        "weight_decay": 0.0005,
        "label_smoothing": 0.1,
        "hflip": False,
    },
    "num_classes": 10,
    "image_shape": [8, 8, 1],  # [H, W, C]
    "synth_per_class": 200,
    "profile": "default",
}


# --- helpers -------------------------------------------------------------------------------------


def to_json(value: Any) -> Any:
    """JSON view of a msgpack value: bin fields become `<key>_hex` strings (see the module docstring)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if isinstance(item, bytes):
                out[f"{key}_hex"] = item.hex()
            elif isinstance(item, list) and item and all(isinstance(x, bytes) for x in item):
                out[f"{key}_hex"] = [x.hex() for x in item]
            else:
                out[key] = to_json(item)
        return out
    if isinstance(value, list):
        return [to_json(v) for v in value]
    if isinstance(value, bytes):
        raise TypeError("bytes are only representable as map values (key_hex)")
    return value


def loose_pack(value: Any, *, float32: str = "exact") -> bytes:
    """Valid but non-canonical msgpack: keys in reverse order, 64-bit ints, 32-bit lengths.

    float32: "exact" writes a float as float32 when that loses nothing, "always" even when it does,
    "never" keeps float64.
    """
    if value is None:
        return b"\xc0"
    if value is True:
        return b"\xc3"
    if value is False:
        return b"\xc2"
    if isinstance(value, int):
        if value >= 0:
            return b"\xcf" + value.to_bytes(8, "big")
        return b"\xd3" + value.to_bytes(8, "big", signed=True)
    if isinstance(value, float):
        if float32 != "never":
            try:
                single = struct.pack(">f", value)
            except OverflowError:
                single = None
            if single is not None and (float32 == "always" or struct.unpack(">f", single)[0] == value):
                return b"\xca" + single
        return b"\xcb" + struct.pack(">d", value)
    if isinstance(value, str):
        raw = value.encode()
        return b"\xdb" + len(raw).to_bytes(4, "big") + raw
    if isinstance(value, bytes):
        return b"\xc6" + len(value).to_bytes(4, "big") + value
    if isinstance(value, list):
        return b"\xdd" + len(value).to_bytes(4, "big") + b"".join(loose_pack(v, float32=float32) for v in value)
    if isinstance(value, dict):
        keys = sorted(value, reverse=True)
        parts = [loose_pack(k, float32=float32) + loose_pack(value[k], float32=float32) for k in keys]
        return b"\xdf" + len(value).to_bytes(4, "big") + b"".join(parts)
    raise TypeError(type(value).__name__)


def envelope(kind: str, body: dict[str, Any], identity: Identity) -> bytes:
    """ffnode's own sealing: canonical envelope, body signed under the domain-separated payload."""
    return codec.seal(kind, body, identity)


def raw_envelope(**fields: Any) -> bytes:
    """Canonical bytes of an envelope map built field by field (for the broken ones)."""
    return canonical_bytes(fields)


def hid(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest(**changes: Any) -> Manifest:
    fields: dict[str, Any] = dict(
        kind="factory",
        owner=ALICE.peer_id,
        owner_key=ALICE.public_key,
        federation=FEDERATION,
        classes=[3],
        class_list=CLASS_LIST,
        arch=FACTORY_ARCH,
        blob=hid(ALICE_BLOB),
        size=len(ALICE_BLOB),
        created=T0,
        seq=1,
        lineage=[],
        seed=0,
        meta={"images": 178, "seconds": 12.5, "final_loss": 0.0421875, "early_stop": False},
    )
    fields.update(changes)
    return Manifest(**fields)


ALICE_FACTORY = manifest()
BOB_EXPERT = manifest(
    kind="expert",
    owner=BOB.peer_id,
    owner_key=BOB.public_key,
    classes=list(range(10)),
    arch=EXPERT_ARCH,
    blob=hid(BOB_BLOB),
    size=len(BOB_BLOB),
    created=T0 + 60_000,
    seq=7,
    lineage=[ALICE_FACTORY.id],
    seed=42,
    meta={"images": 1780, "synthetic_images": 160, "seconds": 31.25, "final_loss": 0.3125},
)


def revocation(**changes: Any) -> Revocation:
    fields: dict[str, Any] = dict(
        owner=BOB.peer_id,
        owner_key=BOB.public_key,
        federation=FEDERATION,
        ids=[BOB_EXPERT.id],
        reason="superseded by a newer expert",
        created=T0 + 120_000,
        seq=8,
    )
    fields.update(changes)
    return Revocation(**fields)


BOB_REVOCATION = revocation()
MALLORY = Identity(b"\x05" * 32)
# Bob revokes an ID no node has seen (seq 9): a tombstone bound to Bob.
BOB_ORPHAN_REVOCATION = revocation(ids=[hid(b"never announced")], seq=9)
LIFECYCLE_REVOCATIONS = [r.seal(BOB) for r in sorted([BOB_ORPHAN_REVOCATION, BOB_REVOCATION], key=lambda r: r.id)]


def fake_ids(n: int) -> list[str]:
    """n well-formed artifact IDs of manifests nobody published (for the count limits)."""
    return [hid(f"limit vector artifact {i}".encode()) for i in range(n)]


def nested(levels: int) -> Any:
    """`levels` containers one inside the other around the int 0, alternately an array and a map {'d': ...},
    the outermost an array: nested(3) is [{'d': [0]}]."""
    value: Any = 0
    for i in reversed(range(levels)):
        value = [value] if i % 2 == 0 else {"d": value}
    return value


def depth(value: Any) -> int:
    """The depth of the deepest container in `value`, the top-level value being depth 0 (-1: no container)."""
    if isinstance(value, dict | list):
        items = value.values() if isinstance(value, dict) else value
        return 1 + max((depth(v) for v in items), default=-1) if items else 0
    return -1


def deepest(extra: int = 0) -> Manifest:
    """Alice's factory (seq 5) whose meta.deep nests containers down to depth MAX_DEPTH + extra: in the
    envelope (depth 0) the body is at depth 1 and meta at 2, so meta.deep is at 3 and holds the rest."""
    return manifest(meta={"deep": nested(codec.MAX_DEPTH - 2 + extra)}, seq=5, created=T0 + 5000)


def longest_lineage(n: int) -> Manifest:
    """Bob's expert with n lineage entries: Alice's factory, then made-up factory IDs."""
    return dataclasses.replace(BOB_EXPERT, lineage=[ALICE_FACTORY.id, *fake_ids(n - 1)], seq=10)


def most_ids(n: int) -> Revocation:
    """Bob revoking n artifacts (his expert among made-up IDs) with the longest reason, all above U+FFFF."""
    return revocation(ids=sorted([BOB_EXPERT.id, *fake_ids(n - 1)]), reason="\U0001f600" * MAX_REASON, seq=11)


def signed_case(name: str, description: str, kind: str, body: dict[str, Any], identity: Identity) -> dict[str, Any]:
    payload = signing_payload(kind, body)
    sig = identity.sign(payload)
    env = envelope(kind, body, identity)
    assert canonical_bytes({"v": 1, "t": kind, "body": body, "sig": sig}) == env
    return {
        "name": name,
        "description": description,
        "signer_seed_hex": identity.seed.hex(),
        "type": kind,
        "body": to_json(body),
        "canonical_body_hex": canonical_bytes(body).hex(),
        "signing_payload_hex": payload.hex(),
        "signature_hex": sig.hex(),
        "envelope_hex": env.hex(),
        "envelope_bytes": len(env),
        "id": codec.body_id(body),
    }


def padded_manifest(total: int) -> tuple[Manifest, bytes]:
    """Alice's factory with a `meta.pad` string sized so that the sealed envelope is `total` bytes."""
    n = total - 1000
    for _ in range(8):
        m = manifest(meta={"pad": "x" * n}, seq=2, created=T0 + 1000)
        env = m.seal(ALICE)
        if len(env) == total:
            return m, env
        n += total - len(env)
    raise RuntimeError(f"cannot hit {total} bytes")


# --- files ---------------------------------------------------------------------------------------


def identity_file() -> dict[str, Any]:
    cases = []
    for name, seed in (("alice", ALICE.seed), ("bob", BOB.seed), ("rfc8032-test-1", RFC8032_SEED)):
        ident = Identity(seed)
        pk = ident.public_key
        protobuf = bytes.fromhex("08011220") + pk
        cases.append(
            {
                "name": name,
                "seed_hex": seed.hex(),
                "public_key_hex": pk.hex(),
                "public_key_protobuf_hex": protobuf.hex(),
                "peer_id_multihash_hex": (bytes([0x00, len(protobuf)]) + protobuf).hex(),
                "peer_id": ident.peer_id,
                "signature_of_empty_message_hex": ident.sign(b"").hex(),
            }
        )
        assert peer_id_from_public_key(pk) == ident.peer_id
    return {
        "description": "Ed25519 seed -> raw public key -> libp2p PublicKey protobuf -> identity multihash -> "
        "base58btc peer ID. The same key signs artifacts (README: Identity).",
        "spec": f"{SPEC}#identity",
        "cases": cases,
    }


CANONICAL_VALUES: list[tuple[str, str, Any]] = [
    (
        "key-order",
        "Map keys sorted by their UTF-8 bytes (= code point order), whatever order the input has. "
        "U+FF5E sorts before U+1D4B3 here; UTF-16 code unit order (JavaScript's default sort) gets it wrong.",
        {"z": 1, "b": 2, "ab": 3, "a": 4, "B": 5, "\u00e9": 6, "\U0001d4b3": 7, "\uff5e": 8, "aa": 9},
    ),
    (
        "integers",
        "Shortest form: positive fixint / uint8..uint64 for n >= 0, negative fixint / int8..int64 for n < 0.",
        [
            0,
            127,
            128,
            255,
            256,
            65535,
            65536,
            4294967295,
            4294967296,
            18446744073709551615,
            -1,
            -32,
            -33,
            -128,
            -129,
            -32768,
            -32769,
            -2147483648,
            -2147483649,
            -9223372036854775808,
        ],
    ),
    (
        "floats",
        "Every float is float64 (0xcb), also when integral or exactly representable as float32.",
        [0.0, -0.0, 1.0, 0.5, 0.1, 0.002, 1e-05, 1.5e300],
    ),
    (
        "str-vs-bin",
        "Text is msgpack str (UTF-8), bytes are msgpack bin; the same three octets encode differently.",
        {"text": "abc", "data": b"abc", "empty_text": "", "empty_data": b""},
    ),
    (
        "lengths",
        "Length boundaries: fixstr/str8/str16, bin8/bin16, fixarray/array16, fixmap/map16.",
        {
            "s31": "s" * 31,
            "s32": "s" * 32,
            "s255": "s" * 255,
            "s256": "s" * 256,
            "b255": b"\xbb" * 255,
            "b256": b"\xbb" * 256,
            "a15": [0] * 15,
            "a16": [0] * 16,
            "m15": {f"k{i:02d}": i for i in range(15)},
            "m16": {f"k{i:02d}": i for i in range(16)},
        },
    ),
    (
        "nested",
        "Sorting applies at every depth; nil, booleans and mixed arrays keep their order and types.",
        {"outer": {"y": None, "x": True, "list": [1, -1, "one", [False, {"d": 0.25, "c": []}]]}, "empty": {}},
    ),
]


def canonical_file() -> dict[str, Any]:
    cases = []
    for name, description, value in CANONICAL_VALUES:
        canonical = canonical_bytes(value)
        inputs = [loose_pack(value)]
        if isinstance(value, dict):
            # plain msgpack-python: keys in the order the value was written, not sorted
            inputs.append(msgpack.packb(value, use_bin_type=True))
        for data in inputs:
            assert canonical_bytes(codec.decode(data)) == canonical, name
        cases.append(
            {
                "name": name,
                "description": description,
                "value": to_json(value),
                "noncanonical_inputs_hex": [d.hex() for d in inputs],
                "canonical_hex": canonical.hex(),
            }
        )
    return {
        "description": "Canonical msgpack (README: Canonical encoding). Decoding any of noncanonical_inputs_hex "
        "and re-encoding canonically gives canonical_hex; so does encoding `value` (JSON view: `_hex` keys are "
        "bin, numbers with '.' or an exponent are float64). Key order in the input never matters.",
        "spec": f"{SPEC}#canonical-encoding-and-signing",
        "cases": cases,
    }


def manifest_file() -> dict[str, Any]:
    big, big_env = padded_manifest(codec.MAX_ENVELOPE_BYTES)
    cases = [
        signed_case(
            "factory",
            "Alice's factory for class 3: no lineage; arch holds floats (0.0 stays float64), bools, an array.",
            "manifest",
            ALICE_FACTORY.body(),
            ALICE,
        ),
        signed_case(
            "expert",
            "Bob's expert over classes 0..9, trained from Alice's factory (lineage = [factory ID]).",
            "manifest",
            BOB_EXPERT.body(),
            BOB,
        ),
    ]
    pad = len(big.meta["pad"])
    largest = limit_case(
        "largest",
        f"Alice's factory with seq 2, created {T0 + 1000} and meta = {{'pad': 'x' * {pad}}}: exactly "
        "MAX_ENVELOPE_BYTES (65536) bytes, so it MUST be accepted (one byte more is invalid.json 'oversized').",
        big_env,
    )
    assert len(big_env) == codec.MAX_ENVELOPE_BYTES
    huge = dataclasses.replace(ALICE_FACTORY, size=MAX_BLOB_BYTES, blob=hid(b"a blob of 4 GiB"), seq=3)
    largest_blob = limit_case(
        "largest-blob-size",
        f"Alice's factory with seq 3, blob = sha256('a blob of 4 GiB') and size = MAX_BLOB_BYTES = {MAX_BLOB_BYTES} "
        "(2^32, encoded as uint64 0xcf: it does not fit a uint32). One more is invalid.json 'size-too-large'.",
        huge.seal(ALICE),
    )
    lineage = longest_lineage(MAX_LINEAGE)
    longest = limit_case(
        "longest-lineage",
        f"Bob's expert with seq 10 and MAX_LINEAGE = {MAX_LINEAGE} lineage entries: Alice's factory, then "
        f"sha256('limit vector artifact <i>') for i = 0..{MAX_LINEAGE - 2}. One more is invalid.json "
        "'lineage-too-long'.",
        lineage.seal(BOB),
    )
    deep_env = deepest().seal(ALICE)
    assert depth(codec.decode(deep_env)) == codec.MAX_DEPTH
    deep = limit_case(
        "deepest",
        f"Alice's factory with seq 5, created {T0 + 5000} and meta = {json.dumps(deepest().meta)}: the envelope "
        "map is at depth 0, the body at 1, meta at 2, and "
        f"containers (arrays and maps alike) go down to depth MAX_DEPTH = {codec.MAX_DEPTH}; the int 0 inside the "
        "deepest one is at depth 9, which is allowed (only containers count). One more level is invalid.json "
        "'too-deep'.",
        deep_env,
    )
    loose = loose_pack(codec.decode(ALICE_FACTORY.seal(ALICE)))
    assert open_announcement(loose).id == ALICE_FACTORY.id
    noncanonical = {
        "name": "factory-noncanonical",
        "description": "The 'factory' envelope re-encoded non-canonically (keys reversed, 64-bit ints, float32 where "
        "exact, 32-bit lengths). Still valid: the signature covers the canonical re-encoding of the decoded body, "
        "and the ID is the same. Relays forward it as received.",
        "envelope_hex": loose.hex(),
        "canonical_envelope_hex": ALICE_FACTORY.seal(ALICE).hex(),
        "id": ALICE_FACTORY.id,
    }
    return {
        "description": "Signed manifest envelopes (README: Messages, Canonical encoding and signing). Check: "
        "canonical(body) == canonical_body_hex; 'ffnode/v1/manifest' 0x00 + that == signing_payload_hex; "
        "Ed25519(seed, payload) == signature_hex; canonical envelope == envelope_hex; sha256(body) == id.",
        "spec": f"{SPEC}#manifest-body",
        "cases": cases,
        "noncanonical": [noncanonical],
        "size_limit": [largest, largest_blob, longest, deep],
    }


def limit_case(name: str, description: str, data: bytes) -> dict[str, Any]:
    """A valid envelope at a limit; only the envelope is given, to keep the files small."""
    assert len(data) <= codec.MAX_ENVELOPE_BYTES
    return {
        "name": name,
        "description": description,
        "envelope_hex": data.hex(),
        "envelope_bytes": len(data),
        "id": open_announcement(data).id,
    }


def revocation_file() -> dict[str, Any]:
    loose = loose_pack(codec.decode(BOB_REVOCATION.seal(BOB)))
    assert open_announcement(loose).id == BOB_REVOCATION.id
    return {
        "description": "Signed revocation envelopes; same checks as manifest.json with type 'revocation'.",
        "spec": f"{SPEC}#revocation-body",
        "cases": [
            signed_case(
                "revoke-expert",
                "Bob withdraws his expert (seq 8 > the expert's seq 7).",
                "revocation",
                dataclasses.asdict(BOB_REVOCATION),
                BOB,
            )
        ],
        "noncanonical": [
            {
                "name": "revoke-expert-noncanonical",
                "description": "The same envelope encoded non-canonically: valid, same ID.",
                "envelope_hex": loose.hex(),
                "canonical_envelope_hex": BOB_REVOCATION.seal(BOB).hex(),
                "id": BOB_REVOCATION.id,
            }
        ],
        "size_limit": [
            limit_case(
                "most-ids",
                f"Bob revokes MAX_IDS = {MAX_IDS} artifacts with seq 11: his expert and "
                f"sha256('limit vector artifact <i>') for i = 0..{MAX_IDS - 2}, sorted; the reason is U+1F600 "
                f"{MAX_REASON} times: MAX_REASON code points, but {4 * MAX_REASON} UTF-8 bytes and "
                f"{2 * MAX_REASON} UTF-16 units. Valid on its own (checks 1-8); a node holding none of the "
                "artifacts rejects it at check 13.",
                most_ids(MAX_IDS).seal(BOB),
            )
        ],
    }


def acceptance_file() -> dict[str, Any]:
    other_factory = manifest(
        owner=BOB.peer_id, owner_key=BOB.public_key, classes=[5], created=T0 + 90_000, seq=7, blob=hid(b"bob 5")
    )

    def step(description: str, data: bytes, output: str | None, reason: str | None = None) -> dict[str, Any]:
        row: dict[str, Any] = {"description": description, "envelope_hex": data.hex(), "output": output}
        if output is not None:
            row["id"] = open_announcement(data).id
        if reason is not None:
            row["reason"] = reason
        return row

    lifecycle = [
        step("Alice's factory", ALICE_FACTORY.seal(ALICE), "accepted"),
        step("the same envelope again: nothing changes", ALICE_FACTORY.seal(ALICE), "duplicate"),
        step("Bob's expert (lineage: Alice's factory)", BOB_EXPERT.seal(BOB), "accepted"),
        step(
            "Alice revokes Bob's expert",
            revocation(owner=ALICE.peer_id, owner_key=ALICE.public_key, seq=2).seal(ALICE),
            None,
            "revocation-not-owner",
        ),
        step(
            "Bob revokes an artifact this node does not know: a tombstone bound to Bob, should it ever arrive",
            BOB_ORPHAN_REVOCATION.seal(BOB),
            "accepted",
        ),
        step(
            "Bob revokes his expert with seq 3, not above the expert's seq 7",
            revocation(seq=3).seal(BOB),
            None,
            "revocation-seq",
        ),
        step(
            "a different message of Bob's with seq 7, already used by his expert",
            other_factory.seal(BOB),
            None,
            "replayed-seq",
        ),
        step(
            "Alice's factory for federation 'cifar10'",
            manifest(federation="cifar10", seq=3).seal(ALICE),
            None,
            "wrong-federation",
        ),
        step(
            "Alice's factory for federation 'digits' with the class list in reverse order: label 3 would mean '6'",
            manifest(class_list=CLASS_LIST[::-1], seq=3).seal(ALICE),
            None,
            "wrong-classes",
        ),
        step(
            "Bob revokes his expert (seq 8): its blob is deleted and, an expert, its manifest compacted away",
            BOB_REVOCATION.seal(BOB),
            "accepted",
        ),
        step("Bob's expert again, after its revocation: tombstoned", BOB_EXPERT.seal(BOB), None, "revoked"),
        step("the revocation again", BOB_REVOCATION.seal(BOB), "duplicate"),
    ]
    allowed = [
        step("Alice's factory (Alice is allowed)", ALICE_FACTORY.seal(ALICE), "accepted"),
        step("Bob's expert (Bob is not allowed)", BOB_EXPERT.seal(BOB), None, "not-allowed"),
        step(
            "Bob's revocation, which names nothing this node holds (Bob is not allowed)",
            BOB_REVOCATION.seal(BOB),
            None,
            "not-allowed",
        ),
    ]
    # The inventory the lifecycle node serves: every manifest it holds (its revoked expert is compacted away)
    # and every revocation, manifests first, each list in ID order.
    inventory = {"manifests": [ALICE_FACTORY.seal(ALICE)], "revocations": LIFECYCLE_REVOCATIONS}
    late_joiner = [
        step(
            "Bob's revocation arrives by gossip before this node holds the expert: a tombstone bound to Bob",
            BOB_REVOCATION.seal(BOB),
            "accepted",
        ),
        step("sync with the lifecycle node, manifests first: Alice's factory", inventory["manifests"][0], "accepted"),
        *(
            step("sync: Bob's revocation of his expert, held already", data, "duplicate")
            if data == BOB_REVOCATION.seal(BOB)
            else step("sync: Bob's revocation of an ID nobody announced: a tombstone", data, "accepted")
            for data in inventory["revocations"]
        ),
        step(
            "a stale peer that missed the revocation offers Bob's expert: tombstoned, never fetched",
            BOB_EXPERT.seal(BOB),
            None,
            "revoked",
        ),
    ]
    mallory_tombstone = revocation(
        owner=MALLORY.peer_id, owner_key=MALLORY.public_key, ids=[ALICE_FACTORY.id], reason="forged", seq=1
    )
    forged_tombstone = [
        step(
            "Mallory revokes Alice's factory before this node knows it: accepted as Mallory's own tombstone",
            mallory_tombstone.seal(MALLORY),
            "accepted",
        ),
        step(
            "Alice's factory: a tombstone binds only artifacts of its signer (IDs commit to the owner)",
            ALICE_FACTORY.seal(ALICE),
            "accepted",
        ),
        step(
            "Alice's own revocation of her factory is honoured",
            revocation(owner=ALICE.peer_id, owner_key=ALICE.public_key, ids=[ALICE_FACTORY.id], seq=2).seal(ALICE),
            "accepted",
        ),
        step("Alice's factory again: now tombstoned", ALICE_FACTORY.seal(ALICE), None, "revoked"),
    ]
    alice_revocation = revocation(owner=ALICE.peer_id, owner_key=ALICE.public_key, ids=[ALICE_FACTORY.id], seq=2)
    compacted_seq = [
        step("Bob's expert (seq 7)", BOB_EXPERT.seal(BOB), "accepted"),
        step("Alice's factory (seq 1)", ALICE_FACTORY.seal(ALICE), "accepted"),
        step("Bob revokes his expert (seq 8): compacted to its tombstone", BOB_REVOCATION.seal(BOB), "accepted"),
        step("Alice revokes her factory (seq 2): a revoked factory is kept", alice_revocation.seal(ALICE), "accepted"),
        step(
            "a factory of Bob's with seq 7, the seq of his compacted expert: the replay check looks at held messages "
            "only (as on a node that restarted, or joined after the compaction)",
            other_factory.seal(BOB),
            "accepted",
        ),
        step(
            "a factory of Bob's with seq 8, the seq of his revocation (held)",
            dataclasses.replace(other_factory, classes=[6], seq=8, blob=hid(b"bob 6")).seal(BOB),
            None,
            "replayed-seq",
        ),
        step(
            "a factory of Bob's with seq 3, below every seq of his held: a seq need not grow, only differ",
            dataclasses.replace(other_factory, classes=[6], seq=3, blob=hid(b"bob 6")).seal(BOB),
            "accepted",
        ),
        step(
            "a factory of Alice's with seq 1, the seq of her revoked factory (kept, so held)",
            manifest(classes=[4], blob=hid(b"alice 4")).seal(ALICE),
            None,
            "replayed-seq",
        ),
    ]
    inventory_after = {key + "_hex": [d.hex() for d in items] for key, items in inventory.items()}
    return {
        "description": "Stateful acceptance rules (README: Acceptance rules). Apply the steps of a scenario in "
        "order to one node that starts empty, with the given federation and allowed_publishers "
        "(empty = any signer). output: 'accepted' (stored; id given), 'duplicate' (already held, no change, "
        "id given) or null (rejected, reason given). inventory_after: what the node then serves on sync, every "
        "manifest it holds (revoked factories included; revoked experts are compacted to their tombstone) and "
        "every revocation, each list in ID order.",
        "spec": f"{SPEC}#acceptance-rules",
        "scenarios": [
            {
                "name": "lifecycle",
                "federation": FEDERATION,
                "class_list": CLASS_LIST,
                "allowed_publishers": [],
                "steps": lifecycle,
                "inventory_after": inventory_after,
            },
            {
                "name": "late-joiner",
                "federation": FEDERATION,
                "class_list": CLASS_LIST,
                "allowed_publishers": [],
                "steps": late_joiner,
                "inventory_after": inventory_after,
            },
            {
                "name": "allowed-publishers",
                "federation": FEDERATION,
                "class_list": CLASS_LIST,
                "allowed_publishers": [ALICE.peer_id],
                "steps": allowed,
            },
            {
                "name": "forged-tombstone",
                "federation": FEDERATION,
                "class_list": CLASS_LIST,
                "allowed_publishers": [],
                "steps": forged_tombstone,
            },
            {
                "name": "compacted-seq",
                "federation": FEDERATION,
                "class_list": CLASS_LIST,
                "allowed_publishers": [],
                "steps": compacted_seq,
            },
        ],
    }


def frame(body: bytes) -> bytes:
    return streams.FRAME_HEADER.pack(len(body)) + body


def framed(body: bytes, value: Any, **before: Any) -> dict[str, Any]:
    """A stream message as the vectors show it: `before` keys, its decoded value, its body and its frame."""
    return {**before, "value": to_json(value), "body_hex": body.hex(), "frame_hex": frame(body).hex()}


def sync_file() -> dict[str, Any]:
    request = sync.inventory_request(FEDERATION, CLASS_LIST, "")
    assert sync.parse_inventory_request(request) == (FEDERATION, CLASS_LIST, "")
    manifests, revocations = [ALICE_FACTORY.seal(ALICE)], LIFECYCLE_REVOCATIONS
    response = sync.inventory_response(manifests, revocations, "")
    assert sync.parse_inventory_response(response) == (manifests, revocations, "", [])
    empty = sync.inventory_response([], [], "")
    pages = one_item_pages(manifests, revocations)
    assert len(pages) == 3
    # Bob's factory is revoked on the last page: a client that applies the round whole never fetches its blob.
    bob_factory = manifest(owner=BOB.peer_id, owner_key=BOB.public_key, classes=[5], seq=1, blob=hid(b"bob 5"))
    bob_revokes = revocation(ids=[bob_factory.id], seq=2).seal(BOB)
    served = sorted([ALICE_FACTORY.seal(ALICE), bob_factory.seal(BOB)], key=lambda d: open_announcement(d).id)
    later = one_item_pages(served, [bob_revokes])
    client = Store(Path(tempfile.mkdtemp()), federation=FEDERATION, classes=CLASS_LIST)
    for data in [*served, bob_revokes]:  # the round's items, page by page: manifests first, the revocation last
        client.add(data)
    fetch = sorted(m.blob for m in client.pending())
    assert fetch == [ALICE_FACTORY.blob]
    shutil.rmtree(client.root)

    def bad(name: str, message: str, value: Any | None = None, raw: bytes | None = None) -> dict[str, Any]:
        data = raw if raw is not None else canonical_bytes(value)
        parse = sync.parse_inventory_request if name.startswith("request") else sync.parse_inventory_response
        try:
            parse(data)
        except WireError:
            pass
        else:
            raise AssertionError(f"sync vector {name} is accepted by ffnode")
        return {"name": name, "description": message, "body_hex": data.hex(), "output": None}

    req = {"t": "inv_req", "v": 1, "federation": FEDERATION, "class_list": CLASS_LIST, "cursor": ""}
    oversized = req | {"federation": ""}
    while len(canonical_bytes(oversized)) < sync.MAX_REQUEST_BYTES + 1:
        oversized = req | {"federation": "f" * (len(oversized["federation"]) + 1)}
    inv = {"t": "inv", "v": 1, "manifests": [], "revocations": [], "next": ""}
    invalid = [
        bad("request-version", "v is 2", req | {"v": 2}),
        bad("request-version-true", "v is true, not the integer 1", req | {"v": True}),
        bad("request-version-float", "v is 1.0, not the integer 1", req | {"v": 1.0}),
        bad("request-extra-key", "an unknown key", req | {"since": 0}),
        bad("request-missing-key", "no cursor", {k: v for k, v in req.items() if k != "cursor"}),
        bad("request-federation-type", "federation is an integer", req | {"federation": 7}),
        bad("request-cursor-type", "cursor is an integer", req | {"cursor": 0}),
        bad("request-cursor-long", "a cursor of 257 characters (limit 256)", req | {"cursor": "m/" + "a" * 255}),
        bad("request-class-list-missing", "no class_list", {k: v for k, v in req.items() if k != "class_list"}),
        bad("request-class-list-empty", "class_list is []", req | {"class_list": []}),
        bad("request-class-list-type", "class_list holds an integer", req | {"class_list": ["0", 1]}),
        bad("request-class-twice", "class_list names '0' twice", req | {"class_list": ["0", "0"]}),
        bad("request-wrong-type", "t is 'inv' (a response)", req | {"t": "inv"}),
        bad(
            "request-oversized",
            f"a {sync.MAX_REQUEST_BYTES + 1}-byte request body (limit {sync.MAX_REQUEST_BYTES})",
            raw=canonical_bytes(oversized),
        ),
        bad("response-item-type", "an item is str, not bin", inv | {"manifests": ["x"]}),
        bad("response-list-type", "manifests is a map", inv | {"manifests": {}}),
        bad("response-missing-key", "no next", {k: v for k, v in inv.items() if k != "next"}),
        bad("response-next-type", "next is nil", inv | {"next": None}),
        bad("response-malformed", "truncated msgpack", raw=response[:-1]),
    ]
    assert (
        len(bytes.fromhex(next(c for c in invalid if c["name"] == "request-oversized")["body_hex"]))
        == sync.MAX_REQUEST_BYTES + 1
    )
    return {
        "description": "Sync protocol /ffnode/sync/1.0.0 (README: Inventory request/response). Frames are a "
        "4-byte big-endian length + body. The client writes request_frame_hex and closes its write side; the "
        "server answers with one response frame (a page of at most 1 MiB) and closes; the client asks again "
        "with the page's `next` until it is ''. Bodies are canonical msgpack.",
        "spec": f"{SPEC}#inventory-request-and-response",
        "protocol_id": "/ffnode/sync/1.0.0",
        "request": framed(request, codec.decode(request)),
        "response": framed(
            response,
            codec.decode(response),
            description="The 'lifecycle' inventory of acceptance.json in one page: Alice's factory and Bob's two "
            "revocations (his revoked expert is compacted away: the tombstone is what late joiners need). Items "
            "are the envelopes as the server received them; next is '' (no more pages).",
        ),
        "empty_response": framed(empty, codec.decode(empty)),
        "pages": {
            "description": "The same inventory served one envelope per page: each request carries the cursor the "
            "previous response gave in `next`; '' starts and ends. ffnode's cursor is 'm/<ID>' or 'r/<ID>' of the "
            "last item sent (manifests before revocations, each in ID order), but a client treats it as opaque.",
            "exchanges": pages,
        },
        "revoked_on_a_later_page": {
            "description": "Alice's and Bob's factories and Bob's revocation of his, one envelope per page (manifests "
            "first, so the revocation comes last). The client applies every page of the round before it fetches "
            "anything (README: Sync): `fetch` is what it then fetches, the blobs of the manifests it holds pending, "
            "never the blob of Bob's factory.",
            "exchanges": later,
            "fetch": fetch,
        },
        "invalid": invalid,
    }


def one_item_pages(manifests: list[bytes], revocations: list[bytes]) -> list[dict[str, Any]]:
    """An inventory served one envelope per page (a server whose page size holds one at a time): each exchange's
    request and response, cursor by cursor."""
    by_id = [(open_announcement(d).id, d) for d in manifests], [(open_announcement(d).id, d) for d in revocations]
    pages, cursor = [], ""
    while True:
        body = sync.inventory_request(FEDERATION, CLASS_LIST, cursor)
        reply = sync.inventory_page(*by_id, cursor, max_bytes=1)
        pages.append({"request": framed(body, codec.decode(body)), "response": framed(reply, codec.decode(reply))})
        cursor = sync.parse_inventory_response(reply)[2]
        if not cursor:
            return pages


# A fixed RSA-1024 public key (DER) for the one vector whose signer is not Ed25519; its signature is zeros.
RSA_PUBLIC_DER = bytes.fromhex(
    "30819f300d06092a864886f70d010101050003818d003081890281810088714696562113112321102ec2a2f58706f78464372580"
    "dc507207011b4e21d2db8c6bc8b015f6368f4bcaa3b53e7b97d378ba7a892150b2ad5b2c1b508d9b354c1957a41254bfab266902"
    "0c9bb70679d6c929d71b21465020fbb1a53c3a045b83610f078bf81b81983ce26898533fc32f21cf32fbe0825bd83751e1b1666f"
    "c10203010001"
)


def libp2p_key(identity: Identity) -> Any:
    return create_new_key_pair(identity.seed)


def record_case(name: str, identity: Identity, addrs: list[str], seq: int) -> dict[str, Any]:
    """A signed peer record with every intermediate a reimplementer needs, checked against ffnode's parser."""
    kp = libp2p_key(identity)
    data = discovery.seal(kp.private_key, addrs, seq)
    env = unmarshal_envelope(data)
    record = discovery.open_record(data)
    return {
        "name": name,
        "signer_seed_hex": identity.seed.hex(),
        "peer_id": record.peer_id,
        "seq": seq,
        "addrs": addrs,
        "payload_type_hex": env.payload_type.hex(),
        "payload_hex": env.raw_payload.hex(),
        "signing_input_hex": make_unsigned(ENVELOPE_DOMAIN, env.payload_type, env.raw_payload).hex(),
        "signature_hex": env.signature.hex(),
        "envelope_hex": data.hex(),
        "dial_addrs": list(record.addrs),
    }


def discovery_file() -> dict[str, Any]:
    request = sync.peers_request(FEDERATION, CLASS_LIST)
    assert sync.parse_request(request) == ("peers_req", FEDERATION, CLASS_LIST, "")
    alice_addr = "/ip4/192.0.2.1/tcp/4747"
    alice = record_case("alice-direct", ALICE, [alice_addr], 1795392000000000000)
    relay = f"{alice_addr}/p2p/{ALICE.peer_id}/p2p-circuit"
    bob = record_case("bob-behind-relay", BOB, [relay], 1795392000000000001)
    records = [bytes.fromhex(alice["envelope_hex"]), bytes.fromhex(bob["envelope_hex"])]
    response = sync.peers_response(records)
    assert sync.parse_peers_response(response) == records
    a, b = libp2p_key(ALICE), libp2p_key(BOB)

    def bad(name: str, description: str, data: bytes) -> dict[str, Any]:
        try:
            discovery.open_record(data)
        except WireError:
            return {"name": name, "description": description, "envelope_hex": data.hex(), "output": None}
        raise AssertionError(f"discovery vector {name} is accepted by ffnode")

    good = bytes.fromhex(alice["envelope_hex"])
    flipped = good[:-1] + bytes([good[-1] ^ 1])
    claim = PeerRecord(ID.from_pubkey(a.public_key), [multiaddr.Multiaddr("/ip4/192.0.2.66/tcp/1")], 5)
    invalid = [
        bad("signature", "the last signature byte flipped", flipped),
        bad(
            "signer-not-peer",
            "bob signs a record naming alice's peer ID",
            seal_record(claim, b.private_key).marshal_envelope(),
        ),
        bad(
            "too-many-addrs",
            "nine addresses (limit 8)",
            discovery.seal(a.private_key, [f"/ip4/192.0.2.{i}/tcp/1" for i in range(9)], 1),
        ),
        bad("no-addrs", "no address at all", discovery.seal(a.private_key, [], 1)),
        bad("udp", "a UDP address: not dialable by ffnode", discovery.seal(a.private_key, ["/ip4/192.0.2.1/udp/1"], 1)),
        bad(
            "circuit-without-relay-id",
            "a relay address that does not name the relay",
            discovery.seal(a.private_key, ["/ip4/192.0.2.1/tcp/1/p2p-circuit"], 1),
        ),
        bad(
            "payload-type",
            "payload type 0302 instead of 0301",
            Envelope(a.public_key, b"\x03\x02", b"", b"").marshal_envelope(),
        ),
        bad("oversized", "2049 bytes (limit 2048)", bytes(2049)),
        bad(
            "rsa-key",
            "an RSA key, not Ed25519 (its signature is zeros: the key type alone rejects it)",
            Envelope(
                RSAPublicKey.from_bytes(RSA_PUBLIC_DER),
                PEER_RECORD_CODEC,
                unmarshal_envelope(good).raw_payload,
                bytes(128),
            ).marshal_envelope(),
        ),  # fmt: skip
        bad("unspecified", "0.0.0.0: not a unicast host", discovery.seal(a.private_key, ["/ip4/0.0.0.0/tcp/1"], 1)),
        bad("multicast", "a multicast address", discovery.seal(a.private_key, ["/ip4/224.0.0.1/tcp/1"], 1)),
        bad(
            "order",
            "/tcp/1/ip4/…: the protocols out of order",
            discovery.seal(a.private_key, ["/tcp/1/ip4/192.0.2.1"], 1),
        ),
    ]

    def loopback(name: str, description: str, identity: Identity, addrs: list[str]) -> dict[str, Any]:
        """A record read by a node that listens on loopback and by one that does not: dial_addrs, or null."""
        seq = 1795392000000000002
        data = discovery.seal(libp2p_key(identity).private_key, addrs, seq)
        verdicts = []
        for on_loopback in (True, False):
            try:
                verdicts.append(list(discovery.open_record(data, loopback=on_loopback).addrs))
            except WireError:
                verdicts.append(None)
        return {
            "name": name,
            "description": description,
            "signer_seed_hex": identity.seed.hex(),
            "seq": seq,
            "addrs": addrs,
            "envelope_hex": data.hex(),
            "loopback_node": verdicts[0],
            "other_node": verdicts[1],
        }

    private = ["/ip4/10.1.2.3/tcp/4747", "/ip4/172.16.0.1/tcp/4747", "/ip4/192.168.1.2/tcp/4747",
               "/ip4/169.254.1.1/tcp/4747", "/ip4/100.64.0.1/tcp/4747", "/ip6/fd00::1/tcp/4747",
               "/ip6/fe80::1/tcp/4747", "/ip6/::ffff:10.0.0.1/tcp/4747"]  # fmt: skip
    loopback_records = [
        loopback("ip4", "127.0.0.1", ALICE, ["/ip4/127.0.0.1/tcp/4747"]),
        loopback("ip4-range", "any address of 127.0.0.0/8", ALICE, ["/ip4/127.8.9.10/tcp/4747"]),
        loopback("ip6", "::1", ALICE, ["/ip6/::1/tcp/4747"]),
        loopback(
            "ip4-mapped",
            "::ffff:127.0.0.1, which a dual-stack socket reaches as 127.0.0.1; its text form "
            "is RFC 5952's mixed notation",
            ALICE,
            ["/ip6/::ffff:127.0.0.1/tcp/4747"],
        ),  # fmt: skip
        loopback("localhost", "the name localhost", ALICE, ["/dns4/localhost/tcp/4747"]),
        loopback("localhost-case", "DNS names ignore letter case", ALICE, ["/dns/LocalHost/tcp/4747"]),
        loopback("under-localhost", "a name under .localhost (RFC 6761)", ALICE, ["/dns6/node.localhost/tcp/4747"]),
        loopback(
            "relay-on-loopback",
            "bob behind a relay that listens on loopback",
            BOB,
            [f"/ip4/127.0.0.1/tcp/4747/p2p/{ALICE.peer_id}/p2p-circuit"],
        ),  # fmt: skip
        loopback(
            "one-of-two",
            "one public and one loopback address: the whole record is refused",
            ALICE,
            ["/ip4/192.0.2.1/tcp/4747", "/ip4/127.0.0.1/tcp/4747"],
        ),  # fmt: skip
        loopback("private", "private, shared and link-local hosts are no loopback: valid everywhere", ALICE, private),
        loopback(
            "not-localhost",
            "names that only contain localhost are no loopback",
            ALICE,
            ["/dns4/localhost.example.org/tcp/4747", "/dns/mylocalhost/tcp/4747"],
        ),  # fmt: skip
    ]
    return {
        "description": "Discovery over /ffnode/sync/1.0.0 (README: Peers request and response). A peer record is "
        "libp2p's signed routing record (RFC 0002 envelope, RFC 0003 PeerRecord): protobuf Envelope {public_key: "
        "PublicKey protobuf, payload_type: 0301, payload: PeerRecord protobuf {peer_id, seq, addresses}, signature} "
        "where the signature is Ed25519 over signing_input = uvarint-prefixed 'libp2p-peer-record' || "
        "uvarint-prefixed payload_type || uvarint-prefixed payload. dial_addrs is what a node dials: each address "
        "with /p2p/<peer ID> appended (after /p2p-circuit for a relayed one).",
        "spec": f"{SPEC}#peers-request-and-response",
        "domain": ENVELOPE_DOMAIN,
        "request": framed(request, codec.decode(request)),
        "records": [alice, bob],
        "response": framed(
            response,
            codec.decode(response),
            description="alice's record, then bob's (behind alice "
            "as his relay): a server lists its own record first, then those of members it is connected to.",
        ),
        "invalid_records": invalid,
        "loopback_records": loopback_records,
    }


# A version-1 audit as ffnode signs it (figures of a BloodMNIST factory of the cpu profile, rounded).
AUDIT: dict[str, Any] = {
    "v": 1,
    "distance": "l2-pixel",
    "step": 400,
    "samples": 500,
    "n_train": 1479,
    "n_holdout": 164,
    "memorised": 0.0,
    "nn_ratio_min": 0.8686,
    "dcr_close": 0.0,
    "dcr_ratio": 1.0211,
    "mia_members": 328,
    "mia_auc": 0.5134,
    "mia_tpr_1pct": 0.0061,
    "mia_tpr_01pct": 0.003,
    "levels": [50, 100, 200, 400],
    "draws": 2,
    "seconds": 8.24,
    "verdict": "inconclusive",  # the owner's, under its thresholds: 164 held-out images give the attack 57 % power
    "power": 0.5684,
    # r7's optional groups: PIA and the copy check under the feature distance (illustrative passing figures)
    "pia_auc": 0.5212,
    "pia_tpr_1pct": 0.0122,
    "pia_tpr_01pct": 0.003,
    "pia_level": 400,
    "feature": "randconv-1",
    "feature_memorised": 0.0,
    "feature_nn_ratio_min": 0.7132,
    "feature_dcr_close": 0.012,
    "feature_dcr_ratio": 1.0437,
}
THRESHOLDS = dataclasses.asdict(AuditPolicy())  # ffnode's defaults


def audit_file() -> dict[str, Any]:
    audited = manifest(seq=3, meta={"images_seen": 25600, "seconds": 101.5, "audit": AUDIT})
    strict = THRESHOLDS | {"mia_z": 0.0}

    def case(name: str, description: str, meta: dict[str, Any], reason: str | None, **policy: Any) -> dict:
        thresholds = THRESHOLDS | policy
        verdict = judge(meta, AuditPolicy(**thresholds))
        if (verdict is None) != (reason is None):
            raise AssertionError(f"audit vector {name}: ffnode says {verdict!r}, the vector says {reason!r}")
        if reason is not None and reason not in ("no-audit", "malformed"):
            assert reason in verdict.split(";")[0], (name, verdict)  # the first failing rule names the category
        out = {"name": name, "description": description, "meta": to_json(meta), "thresholds": thresholds}
        out |= {"output": "use"} if reason is None else {"output": None, "reason": reason}
        if isinstance(audit := audit_of(meta), dict):  # valid figures: the three-way verdict and the attack's power
            word, power = verdict_of(audit, AuditPolicy(**thresholds))
            out |= {"verdict": word, "power": round(power, 4)}
        return out

    def figures(**changes: Any) -> dict[str, Any]:
        return {"audit": AUDIT | changes}

    small = {"n_holdout": 20, "mia_members": 40}
    cases = [
        case("passes", "the audit above, ffnode's default thresholds", figures(), None),
        case("no-audit", "a factory without meta.audit", {"images_seen": 25600}, "no-audit"),
        case("not-a-map", "meta.audit is an array", {"audit": [1]}, "malformed"),
        case("version", "v 2: a version this receiver does not read", figures(v=2), "malformed"),
        case("distance", "a distance other than l2-pixel", figures(distance="ssim"), "malformed"),
        case("missing-key", "no mia_auc", {"audit": {k: v for k, v in AUDIT.items() if k != "mia_auc"}}, "malformed"),
        case("bool-count", "samples is true: a bool is not an int", figures(samples=True), "malformed"),
        case("share-range", "memorised 1.5: a share outside 0..1", figures(memorised=1.5), "malformed"),
        case("zero-count", "n_holdout 0", figures(n_holdout=0), "malformed"),
        case("few-members", "1 member against 164 non-members", figures(mia_members=1), "malformed"),
        case("levels", "a level that is not an int", figures(levels=[50, "x"]), "malformed"),
        case("no-draws", "draws 0", figures(draws=0), "malformed"),
        case("extra-key", "an extra key, ignored", figures(note="x"), None),
        case("int-share", "memorised as the int 0: floats may arrive as ints", figures(memorised=0), None),
        case("min-holdout", "5 held-out images", figures(n_holdout=5), "min_holdout"),
        case("memorised", "2 % of samples copy a training image", figures(memorised=0.02), "max_memorised"),
        case("memorised-at-limit", "exactly 1 %: not over", figures(memorised=0.01), None),
        case("dcr-close", "30 % of samples closer than 95 % of held-out ones", figures(dcr_close=0.3), "max_dcr_close"),
        case(
            "mia-auc",
            "AUC 0.60 with 164 non-members: 0.60 - 1.645 * 0.0261 = 0.557 > 0.55",
            figures(mia_auc=0.6),
            "max_mia_auc",
        ),
        case(
            "mia-auc-small-class",
            "AUC 0.60 with 20 non-members and 40 members: 0.60 - 1.645 * 0.0797 = 0.469, within the attack's noise",
            figures(mia_auc=0.6, **small),
            None,
        ),
        case(
            "mia-auc-strict",
            "the same under mia_z 0 (the bare rule mia_auc > max_mia_auc)",
            figures(mia_auc=0.6, **small),
            "max_mia_auc",
            **strict,
        ),
        case(
            "conclusive",
            "500 non-members and 500 members: the attack has 87 % power to see AUC 0.60, so the pass is a pass",
            figures(n_holdout=500, mia_members=500),
            None,
        ),
        case(
            "inconclusive-refused",
            "the small class under inconclusive = refuse: 14 % power, under 80 %",
            figures(**small),
            "inconclusive",
            inconclusive="refuse",
        ),
        case(
            "conclusive-under-refuse",
            "500 and 500 under inconclusive = refuse: used",
            figures(n_holdout=500, mia_members=500),
            None,
            inconclusive="refuse",
        ),
        case(
            "owner-verdict-ignored",
            "the owner's verdict and power say passes and 1.0: a receiver judges the figures, not the owner's word",
            figures(verdict="passes", power=1.0, **small),
            "inconclusive",
            inconclusive="refuse",
        ),
        case(
            "mia-tpr",
            "20 % of members flagged at 1 % false positives, under max_mia_tpr_1pct 0.1",
            figures(mia_tpr_1pct=0.2),
            "max_mia_tpr_1pct",
            max_mia_tpr_1pct=0.1,
        ),
    ]
    return {
        "description": "Factory audits (README: Factory audit). 'factory' is Alice's factory with meta.audit, signed "
        "as in manifest.json. Each case is a factory's meta judged under thresholds (ffnode's [privacy] keys): "
        "output 'use', or null with the reason category of the first rule that fails; for valid figures also the "
        "verdict (passes, inconclusive or fails) and the attack's power to see AUC 0.60 under those thresholds.",
        "spec": f"{SPEC}#factory-audit",
        "factory": signed_case("audited-factory", "Alice's factory with its audit", "manifest", audited.body(), ALICE),
        "cases": cases,
    }


# meta.dp of a factory trained with DP-SGD: what ffnode/factory/dp.py's plan_dp(4.0, 1479, 64, 400) gives (epsilon
# 4 over 400 steps of 64 expected images out of 1,479, delta 1 / (10 n)); tests/test_dp.py recomputes it with Opacus
DP: dict[str, Any] = {
    "epsilon": 3.9946149389261385,
    "noise_multiplier": 1.20361328125,
    "max_grad_norm": 1.0,
    "sample_rate": 64 / 1479,
    "steps": 400,
    "delta": 1 / 14790,
    "accountant": "rdp",
}


def dp_file() -> dict[str, Any]:
    private = manifest(seq=4, meta={"n_train": 1479, "images_seen": 25600, "audit": AUDIT, "dp": DP})

    def case(name: str, description: str, meta: dict[str, Any], max_epsilon: float, reason: str | None) -> dict:
        thresholds = THRESHOLDS | {"max_epsilon": max_epsilon}
        verdict = judge(meta, AuditPolicy(**thresholds))
        if (verdict is None) != (reason is None):
            raise AssertionError(f"dp vector {name}: ffnode says {verdict!r}, the vector says {reason!r}")
        if reason in ("max_epsilon", "delta"):
            assert reason in verdict, (name, verdict)
        out = {"name": name, "description": description, "meta": to_json(meta), "thresholds": thresholds}
        return out | ({"output": "use"} if reason is None else {"output": None, "reason": reason})

    def meta(**changes: Any) -> dict[str, Any]:
        return {"n_train": 1479, "audit": AUDIT, "dp": DP | changes}

    no_dp = {"n_train": 1479, "audit": AUDIT}
    cases = [
        case("within", "epsilon 4.0 (just under) under max_epsilon 4", meta(), 4.0, None),
        case("over", "the same factory under max_epsilon 2", meta(), 2.0, "max_epsilon"),
        case("at-limit", "epsilon exactly max_epsilon: not over", meta(epsilon=8.0), 8.0, None),
        case("eight-over-four", "epsilon 8 under max_epsilon 4", meta(epsilon=8.0), 4.0, "max_epsilon"),
        case("eight-under-ten", "epsilon 8 under max_epsilon 10", meta(epsilon=8.0), 10.0, None),
        case("not-asked", "no meta.dp, max_epsilon 0: DP is not asked", no_dp, 0.0, None),
        case("no-dp", "no meta.dp under max_epsilon 4: refused", no_dp, 4.0, "no-dp"),
        case("ignored-when-not-asked", "a malformed meta.dp, max_epsilon 0: not read", meta(steps="x"), 0.0, None),
        case("not-a-map", "meta.dp is an array", {"n_train": 1479, "audit": AUDIT, "dp": [1]}, 4.0, "malformed"),
        case("missing-key", "no noise_multiplier", {**no_dp, "dp": {k: v for k, v in DP.items()
                                                                  if k != "noise_multiplier"}}, 4.0, "malformed"),
        case("bool-steps", "steps is true: a bool is not an int", meta(steps=True), 4.0, "malformed"),
        case("accountant", "an accountant Opacus does not have", meta(accountant="moments"), 4.0, "malformed"),
        case("delta-range", "delta 1: no bound at all", meta(delta=1.0), 4.0, "malformed"),
        case("sample-rate-range", "sample_rate 0", meta(sample_rate=0.0), 4.0, "malformed"),
        case("no-noise", "noise_multiplier 0", meta(noise_multiplier=0.0), 4.0, "malformed"),
        case("negative-epsilon", "epsilon -1", meta(epsilon=-1.0), 4.0, "malformed"),
        case("int-epsilon", "epsilon as the int 3: floats may arrive as ints", meta(epsilon=3), 4.0, None),
        case("extra-key", "an extra key, ignored", meta(note="x"), 4.0, None),
        case("delta-over-1/n", "delta 0.001 over 1 / n_train = 1 / 1479", meta(delta=0.001), 4.0, "delta"),
        case("no-n_train", "no n_train to judge delta against", {"audit": AUDIT, "dp": DP}, 4.0, "no-n_train"),
        case("audit-still-judged", "DP within max_epsilon, but the audit fails max_memorised",
             {**meta(), "audit": AUDIT | {"memorised": 0.02}}, 4.0, "max_memorised"),
    ]  # fmt: skip
    return {
        "description": "Differentially private factories (README: Differential privacy). 'factory' is Alice's factory "
        "with meta.audit and meta.dp, signed as in manifest.json. Each case is a factory's meta judged under "
        "thresholds (ffnode's [privacy] keys, max_epsilon among them): output 'use', or null with the reason "
        "category: no-dp, malformed, max_epsilon, delta, no-n_train, or an audit threshold (audit.json).",
        "spec": f"{SPEC}#differential-privacy",
        "factory": signed_case("dp-factory", "Alice's factory with its audit and meta.dp", "manifest",
                               private.body(), ALICE),
        "cases": cases,
    }  # fmt: skip


# The arch schema's vectors: ffnode's full factory config as it writes it (the 'default' profile at 8x8x1 images)
FULL_FACTORY_ARCH: dict[str, Any] = {
    "image_size": 8,
    "channels": 1,
    "block_out_channels": [32, 64, 64],
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "attention": False,
    "dropout": 0.0,
    "num_train_timesteps": 1000,
    "beta_schedule": "squaredcos_cap_v2",
    "prediction_type": "v_prediction",
    "p_mean": -0.8,
    "p_std": 1.6,
    "sigma_data": 0.5,
    "sigma_min": 0.002,
    "sigma_max": 80.0,
    "rho": 7.0,
    "train_steps": 150,
    "batch_size": 64,
    "lr": 0.002,
    "warmup_steps": 20,
    "weight_decay": 0.0,
    "ema_decay": 0.99,
    "hflip": False,
    "checkpoint_every": 50,
    "bf16": True,
    "sampler": "dpmsolver++",
    "sample_steps": 10,
}
# the gpu profile's factory at 32x32x3 images: attention, two layers per level
GPU_FACTORY_ARCH: dict[str, Any] = FACTORY_ARCH | {
    "image_size": 32,
    "channels": 3,
    "block_out_channels": [64, 128, 128],
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "attention": True,
    "dropout": 0.1,
    "sample_steps": 25,
}
# What ffnode's arch check says when a node's own bound (check 15), not the schema (check 8), refuses an arch.
LIMIT_TEXT = r"over this node's limit|sampler steps \(limit|declares \d+ bytes for"


def arch_file() -> dict[str, Any]:
    limits = LimitsConfig()
    shown = {"factory_params": limits.factory_params, "expert_params": limits.expert_params}
    shown["sample_steps"] = limits.sample_steps
    cases: list[dict[str, Any]] = []

    def case(name: str, description: str, kind: str, arch: dict[str, Any], reason: str | None = None, **more: Any):
        """One manifest of `kind` with `arch` (seq 100, 101, ... in file order), checked by ffnode's own arch check
        (the one the running node applies to gossip and sync items) at its default limits."""
        seq = 100 + len(cases)
        blob = hid(f"arch vector {name}".encode())
        if kind == "factory":
            m, signer = manifest(arch=arch, seq=seq, blob=blob, size=4096), ALICE
        else:
            m, signer = dataclasses.replace(BOB_EXPERT, arch=arch, seq=seq, blob=blob, size=4096), BOB
        if "size" in more:
            m = dataclasses.replace(m, size=more["size"])
        try:
            vet(m, limits)
            refusal = None
        except WireError as exc:
            refusal = str(exc)
        if (refusal is None) != (reason is None):
            raise AssertionError(f"arch vector {name}: ffnode says {refusal!r}, the vector says {reason!r}")
        if reason is not None and (re.search(LIMIT_TEXT, refusal or "") is not None) != (reason == "limit"):
            raise AssertionError(f"arch vector {name}: ffnode says {refusal!r}, the vector says {reason!r}")
        row: dict[str, Any] = {"name": name, "description": description, "kind": kind, "arch": to_json(arch)}
        if reason in (None, "limit"):  # the arch passed the schema: its parameters and weight bytes
            if kind == "factory":
                params, weight_bytes = unet_size(factory_config(m))
            else:
                params, weight_bytes = expert_size(*expert_spec(m))
            row |= {"params": params, "weight_bytes": weight_bytes}
        row |= {"size": m.size, "envelope_hex": m.seal(signer).hex(), "id": m.id}
        row |= {"output": "accepted"} if reason is None else {"output": None, "reason": reason}
        cases.append(row)

    f, fa = "factory", FACTORY_ARCH

    def without(arch: dict[str, Any], key: str) -> dict[str, Any]:
        return {k: v for k, v in arch.items() if k != key}

    # -- factories: accepted --
    case("factory", "manifest.json's factory: the fields it leaves out take their defaults", f, fa)
    case(
        "factory-full",
        "every field written out, as ffnode writes the 'default' profile's factory",
        f,
        FULL_FACTORY_ARCH,
    )
    case("factory-empty", "an empty map: every field takes its default (3 levels of 32, 64, 64 channels)", f, {})
    case(
        "factory-one-level",
        "one level of 8 channels over 4x4 images: the README's worked example, term by term",
        f,
        {"image_size": 4, "block_out_channels": [8]},
    )
    case("factory-attention", "the gpu profile at 32x32x3: attention and 2 layers per level", f, GPU_FACTORY_ARCH)
    case(
        "factory-edm",
        "prediction_type edm (Karras et al.'s preconditioning) with its sampler edm-dpmsolver++",
        f,
        fa | {"prediction_type": "edm", "sampler": "edm-dpmsolver++", "sigma_min": 0.002, "sigma_max": 80.0},
    )
    case("factory-int-for-float", "dropout is the int 0: a float field takes an int", f, fa | {"dropout": 0})
    case("factory-image-512", "image_size 512, the largest", f, fa | {"image_size": 512})
    case("factory-channels-4", "channels 4, the most", f, fa | {"channels": 4})
    case(
        "factory-six-levels",
        "6 levels of 8 channels over 64x64 images",
        f,
        fa | {"image_size": 64, "block_out_channels": [8] * 6},
    )
    case("factory-layers-8", "8 layers per level, the most", f, fa | {"layers_per_block": 8})
    case("factory-timesteps-10000", "num_train_timesteps 10000, the most", f, fa | {"num_train_timesteps": 10_000})
    case("factory-sigma-max-10000", "EDM's sigma_max 10000.0, the largest", f, fa | {"sigma_max": 10_000.0})
    case(
        "factory-sample-steps-50", "sample_steps 50: ffnode's default limits.sample_steps", f, fa | {"sample_steps": 50}
    )
    case(
        "factory-size-at-limit",
        f"size = its weight bytes (4 x params) + MAX_HEADER_BYTES ({MAX_HEADER_BYTES})",
        f,
        fa,
        size=unet_size(FactoryConfig.from_dict(fa))[1] + MAX_HEADER_BYTES,
    )
    # -- factories: refused by the schema --
    case(
        "factory-unknown-field", "an extra field 'unet' (unknown fields are refused)", f, fa | {"unet": "edm2"}, "value"
    )
    case("factory-float-for-int", "image_size is the float 8.0", f, fa | {"image_size": 8.0}, "value")
    case("factory-bool-for-int", "layers_per_block is true", f, fa | {"layers_per_block": True}, "value")
    case("factory-bool-for-float", "dropout is false", f, fa | {"dropout": False}, "value")
    case("factory-str-for-array", "block_out_channels is a str", f, fa | {"block_out_channels": "32,64,64"}, "value")
    case("factory-image-0", "image_size 0", f, fa | {"image_size": 0}, "value")
    case("factory-image-516", "image_size 516 (a multiple of 4, over 512)", f, fa | {"image_size": 516}, "value")
    case(
        "factory-image-not-halving",
        "image_size 10 does not halve twice (3 levels)",
        f,
        fa | {"image_size": 10},
        "value",
    )
    case("factory-channels-0", "channels 0", f, fa | {"channels": 0}, "value")
    case("factory-channels-5", "channels 5", f, fa | {"channels": 5}, "value")
    case("factory-no-levels", "block_out_channels is []", f, fa | {"block_out_channels": []}, "value")
    case(
        "factory-seven-levels",
        "7 levels of 8 channels over 64x64 images",
        f,
        fa | {"image_size": 64, "block_out_channels": [8] * 7},
        "value",
    )
    case("factory-width-0", "a level of 0 channels", f, fa | {"block_out_channels": [0, 64, 64]}, "value")
    case(
        "factory-width-1025",
        "one level of 1025 channels (norm_num_groups 1 divides it)",
        f,
        fa | {"block_out_channels": [1025], "norm_num_groups": 1},
        "value",
    )
    case("factory-layers-0", "layers_per_block 0", f, fa | {"layers_per_block": 0}, "value")
    case("factory-layers-9", "layers_per_block 9", f, fa | {"layers_per_block": 9}, "value")
    case("factory-groups", "norm_num_groups 3 does not divide 32", f, fa | {"norm_num_groups": 3}, "value")
    case("factory-groups-0", "norm_num_groups 0", f, fa | {"norm_num_groups": 0}, "value")
    case("factory-dropout", "dropout 1.5, outside 0..1", f, fa | {"dropout": 1.5}, "value")
    case(
        "factory-bin-for-array",
        "block_out_channels as the bin 20 40 40 (bytes are not an array of int)",
        f,
        fa | {"block_out_channels": bytes([32, 64, 64])},
        "value",
    )
    case("factory-timesteps-0", "num_train_timesteps 0", f, fa | {"num_train_timesteps": 0}, "value")
    case("factory-timesteps-10001", "num_train_timesteps 10001", f, fa | {"num_train_timesteps": 10_001}, "value")
    case("factory-sample-steps-0", "sample_steps 0", f, fa | {"sample_steps": 0}, "value")
    case(
        "factory-beta-schedule",
        "beta_schedule 'cosine' (not a listed name)",
        f,
        fa | {"beta_schedule": "cosine"},
        "value",
    )
    case("factory-prediction-type", "prediction_type 'x0'", f, fa | {"prediction_type": "x0"}, "value")
    case(
        "factory-sampler",
        "sampler 'euler': a sampler the node does not know refuses the manifest",
        f,
        fa | {"sampler": "euler"},
        "value",
    )
    case(
        "factory-edm-sampler-alone",
        "sampler edm-dpmsolver++ without prediction_type edm",
        f,
        fa | {"sampler": "edm-dpmsolver++"},
        "value",
    )
    case(
        "factory-edm-alone", "prediction_type edm with sampler dpmsolver++", f, fa | {"prediction_type": "edm"}, "value"
    )
    case(
        "factory-sigma-max",
        "sigma_max 10001.0 (checked whatever prediction_type is)",
        f,
        fa | {"sigma_max": 10_001.0},
        "value",
    )
    case("factory-sigma-order", "sigma_min 100.0 above sigma_max 80.0", f, fa | {"sigma_min": 100.0}, "value")
    case("factory-p-std", "p_std 0.0", f, fa | {"p_std": 0.0}, "value")
    # -- factories: refused by the node's limits --
    case(
        "factory-params",
        f"levels of 128, 256, 256 channels, 2 layers each, attention: over factory_params {limits.factory_params}",
        f,
        GPU_FACTORY_ARCH | {"block_out_channels": [128, 256, 256]},
        "limit",
    )
    case(
        "factory-sample-steps-51", "sample_steps 51, over limits.sample_steps 50", f, fa | {"sample_steps": 51}, "limit"
    )
    case(
        "factory-size",
        "size one byte over its weight bytes + MAX_HEADER_BYTES",
        f,
        fa,
        "limit",
        size=unet_size(FactoryConfig.from_dict(fa))[1] + MAX_HEADER_BYTES + 1,
    )

    e, ea = "expert", EXPERT_ARCH
    inner = EXPERT_ARCH["expert"]

    def net(**changes: Any) -> dict[str, Any]:
        return ea | {"expert": inner | changes}

    # -- experts: accepted --
    case("expert", "manifest.json's expert", e, ea)
    case(
        "expert-defaults",
        "arch.expert is {}: width 16, blocks [1, 1]; no synth_per_class or profile (not required)",
        e,
        {"expert": {}, "num_classes": 10, "image_shape": [8, 8, 1]},
    )
    case(
        "expert-zero-stage",
        "width 8, blocks [1, 0, 2] over 16x16x3 images: the empty stage still doubles the width (8, -, 32)",
        e,
        ea | {"expert": {"width": 8, "blocks": [1, 0, 2]}, "image_shape": [16, 16, 3]},
    )
    case(
        "expert-gpu",
        "the gpu profile's expert over 32x32x3 images",
        e,
        ea
        | {"expert": inner | {"width": 64, "blocks": [2, 2, 2], "epochs": 60, "lr": 0.1}, "image_shape": [32, 32, 3]},
    )
    case("expert-no-blocks", "blocks [0]: the stem and the head only", e, net(blocks=[0]))
    case("expert-width-1024", "width 1024, the largest, with one block", e, net(width=1024, blocks=[1]))
    case("expert-eight-stages", "8 stages, the most (width 1)", e, net(width=1, blocks=[1] * 8))
    case("expert-blocks-16", "16 blocks in a stage, the most (width 8)", e, net(width=8, blocks=[16]))
    case(
        "expert-classes-4096",
        "num_classes 4096, the most (not compared with the class list here)",
        e,
        ea | {"num_classes": 4096},
    )
    case("expert-image-largest", "image_shape [512, 512, 4], the largest", e, ea | {"image_shape": [512, 512, 4]})
    case(
        "expert-unknown-top-level",
        "an extra top-level key 'note': ignored (only arch.expert refuses unknown fields)",
        e,
        ea | {"note": "ignored"},
    )
    case("expert-int-for-float", "arch.expert.lr is the int 0", e, net(lr=0))
    # -- experts: refused by the schema --
    case("expert-unknown-field", "arch.expert has an extra field 'depth'", e, net(depth=3), "value")
    case("expert-float-for-int", "arch.expert.width is the float 32.0", e, net(width=32.0), "value")
    case("expert-missing-expert", "no arch.expert", e, without(ea, "expert"), "value")
    case("expert-expert-array", "arch.expert is an array, not a map", e, ea | {"expert": []}, "value")
    case("expert-image-bin", "image_shape as the bin 8 8 1", e, ea | {"image_shape": bytes([8, 8, 1])}, "value")
    case("expert-missing-classes", "no num_classes", e, without(ea, "num_classes"), "value")
    case("expert-missing-shape", "no image_shape", e, without(ea, "image_shape"), "value")
    case("expert-width-0", "width 0", e, net(width=0), "value")
    case("expert-width-1025", "width 1025", e, net(width=1025, blocks=[1]), "value")
    case("expert-blocks-empty", "blocks []", e, net(blocks=[]), "value")
    case("expert-nine-stages", "9 stages (width 1)", e, net(width=1, blocks=[1] * 9), "value")
    case("expert-blocks-17", "17 blocks in a stage", e, net(width=8, blocks=[17]), "value")
    case("expert-blocks-negative", "blocks [-1]", e, net(blocks=[-1]), "value")
    case("expert-classes-0", "num_classes 0", e, ea | {"num_classes": 0}, "value")
    case("expert-classes-4097", "num_classes 4097", e, ea | {"num_classes": 4097}, "value")
    case("expert-classes-bool", "num_classes true", e, ea | {"num_classes": True}, "value")
    case(
        "expert-image-chw",
        "image_shape [1, 8, 8]: read as H 1, W 8, C 8, and 8 channels are over 4 (the order is [H, W, C])",
        e,
        ea | {"image_shape": [1, 8, 8]},
        "value",
    )
    case("expert-image-513", "image_shape [513, 513, 1]", e, ea | {"image_shape": [513, 513, 1]}, "value")
    case("expert-image-channels-5", "image_shape [8, 8, 5]", e, ea | {"image_shape": [8, 8, 5]}, "value")
    case("expert-image-two", "image_shape [8, 8]: not 3 items", e, ea | {"image_shape": [8, 8]}, "value")
    case("expert-image-0", "image_shape [0, 8, 1]", e, ea | {"image_shape": [0, 8, 1]}, "value")
    case("expert-image-float", "image_shape [8.0, 8, 1]", e, ea | {"image_shape": [8.0, 8, 1]}, "value")
    # -- experts: refused by the node's limits --
    case(
        "expert-params",
        f"width 1024, one block, 4096 classes: over limits.expert_params {limits.expert_params}",
        e,
        net(width=1024, blocks=[1]) | {"num_classes": 4096},
        "limit",
    )
    expert_bytes = expert_size(ExpertConfig.from_dict(inner), ea["num_classes"], tuple(ea["image_shape"]))[1]
    case(
        "expert-size-at-limit",
        "size = its weight bytes (with BatchNorm statistics) + MAX_HEADER_BYTES",
        e,
        ea,
        size=expert_bytes + MAX_HEADER_BYTES,
    )
    case("expert-size", "size one byte over that", e, ea, "limit", size=expert_bytes + MAX_HEADER_BYTES + 1)

    return {
        "description": "The arch schema (README: Arch schema). Each case is a manifest (factories Alice's, experts "
        "Bob's, seq 100 and up, made-up blob and size) whose arch is the case's; apply it to an empty node of "
        "federation 'digits' whose limits are `limits` (ffnode's defaults). output 'accepted', or null with "
        "reason 'value' (the schema, check 8) or 'limit' (the node's bounds, check 15). params and weight_bytes: "
        "the model's parameter count and the bytes of its weights, for every arch that passes the schema.",
        "spec": f"{SPEC}#arch-schema",
        "federation": FEDERATION,
        "class_list": CLASS_LIST,
        "limits": shown,
        "max_header_bytes": MAX_HEADER_BYTES,
        "cases": cases,
    }


def blob_file() -> dict[str, Any]:
    blob_id = hid(ALICE_BLOB)
    # The blob protocol's messages are plain msgpack maps, written by ffnode.net.streams in the key order below
    # (not sorted: they are never signed). test_protocol.py checks these bytes against the real stream code.
    request = msgpack.packb({"t": "blob_get", "v": 1, "id": blob_id}, use_bin_type=True)
    header = msgpack.packb({"t": "blob_hdr", "v": 1, "ok": True, "size": len(ALICE_BLOB)}, use_bin_type=True)
    missing = msgpack.packb({"t": "blob_hdr", "v": 1, "ok": False, "error": "not found"}, use_bin_type=True)
    absent_id = hid(b"a blob nobody holds")
    absent_request = msgpack.packb({"t": "blob_get", "v": 1, "id": absent_id}, use_bin_type=True)

    def bad_request(name: str, description: str, raw: bytes) -> dict[str, Any]:
        return {"name": name, "description": description, "frame_hex": raw.hex(), "output": None}

    return {
        "description": "Blob protocol /ffnode/blob/1.0.0 (README: Blob request and header). The client writes "
        "request_frame_hex and closes its write side; the server answers response_hex = one header frame "
        "followed by exactly `size` raw bytes (no framing), then closes. The client accepts the bytes only if "
        "there are exactly `size` of them and their sha256 is the requested id.",
        "spec": f"{SPEC}#blob-request-and-header",
        "protocol_id": "/ffnode/blob/1.0.0",
        "blob_hex": ALICE_BLOB.hex(),
        "blob_id": blob_id,
        "blob_size": len(ALICE_BLOB),
        "request": framed(request, msgpack.unpackb(request)),
        "header": framed(header, msgpack.unpackb(header)),
        "response_hex": (frame(header) + ALICE_BLOB).hex(),
        "not_found": framed(missing, msgpack.unpackb(missing), request_frame_hex=frame(absent_request).hex()),
        "invalid_requests": [
            bad_request(
                "uppercase-id",
                "id in uppercase hex: the server resets the stream",
                frame(msgpack.packb({"t": "blob_get", "v": 1, "id": blob_id.upper()}, use_bin_type=True)),
            ),
            bad_request(
                "wrong-type",
                "t is 'blob_hdr': the server resets the stream",
                frame(msgpack.packb({"t": "blob_hdr", "v": 1, "id": blob_id}, use_bin_type=True)),
            ),
            bad_request(
                "version",
                "v is 2: the server resets the stream",
                frame(msgpack.packb({"t": "blob_get", "v": 2, "id": blob_id}, use_bin_type=True)),
            ),
            bad_request(
                "oversized-frame",
                "declared length 4097 (limit 4096): the server resets without reading the body",
                streams.FRAME_HEADER.pack(4097),
            ),
        ],
    }


def owned_blob(owner: str | None, values: int = 4) -> bytes:
    """A tiny safetensors weight file of `values` float32 weights whose header names `owner` (no owner metadata
    for None)."""
    metadata = {"owner": owner} if owner is not None else None
    return save_safetensors({"weight": np.arange(values, dtype=np.float32)}, metadata=metadata)


def ownership_file() -> dict[str, Any]:
    alice_weights = owned_blob(ALICE.peer_id)
    anonymous = owned_blob(None)

    def case(name: str, description: str, blob: bytes, owner: Identity, output: str | None) -> dict[str, Any]:
        m = manifest(owner=owner.peer_id, owner_key=owner.public_key, blob=hid(blob), size=len(blob), seq=4)
        row: dict[str, Any] = {
            "name": name,
            "description": description,
            "blob_hex": blob.hex(),
            "manifest_envelope_hex": m.seal(owner).hex(),
            "output": output,
        }
        if output is None:
            row["reason"] = "blob-owner"
        return row

    return {
        "description": "Blob ownership (README: Blob ownership). A blob is a safetensors file whose header's "
        "__metadata__ names its owner's peer ID under 'owner'. Store the manifest, then the blob (its size and "
        "sha256 match): 'live' means the blob is accepted for that manifest; null means the manifest is invalid "
        "and dropped (a byte-identical copy under another key, or a blob that names no owner).",
        "spec": f"{SPEC}#blob-ownership",
        "federation": FEDERATION,
        "cases": [
            case("owner", "Alice's manifest naming her own weights", alice_weights, ALICE, "live"),
            case("copy", "Mallory's manifest naming Alice's weights byte for byte", alice_weights, MALLORY, None),
            case("no-owner", "a weight file with no owner in its header", anonymous, ALICE, None),
        ],
    }


def invalid_file() -> dict[str, Any]:
    good = ALICE_FACTORY.seal(ALICE)
    good_env = codec.decode(good)
    body = ALICE_FACTORY.body()
    cases: list[dict[str, Any]] = []

    def add(name: str, reason: str, description: str, data: bytes) -> None:
        cases.append(
            {
                "name": name,
                "description": description,
                "input": {"envelope_hex": data.hex()},
                "output": None,
                "reason": reason,
            }
        )

    def signed(kind: str, changed: dict[str, Any], identity: Identity = ALICE) -> bytes:
        return envelope(kind, changed, identity)

    def without(d: dict[str, Any], key: str) -> dict[str, Any]:
        return {k: v for k, v in d.items() if k != key}

    # -- not decodable --
    add("truncated", "malformed", "the factory envelope without its last byte", good[:-1])
    add("trailing-bytes", "malformed", "the factory envelope followed by one more byte (0xc0)", good + b"\xc0")
    add("reserved-byte", "malformed", "0xc1 is never used in msgpack", b"\xc1")
    add(
        "invalid-utf8",
        "malformed",
        "a str whose bytes are not UTF-8: {'t': <str ff fe>}",
        bytes.fromhex("81a174a2fffe"),
    )
    add(
        "integer-map-key",
        "malformed",
        "map keys must be str: an envelope whose body has an extra entry with the integer key 1",
        raw_envelope_with_int_key(good_env),
    )
    add(
        "binary-map-key",
        "malformed",
        "map keys must be str: body.arch has a bin key (cannot be re-encoded canonically, so never verifies)",
        _bin_key_envelope(good_env),
    )
    add(
        "ext-type",
        "malformed",
        "msgpack ext types are not allowed: body.meta.x is ext type 5 with data 'x'. The signature covers "
        "body.meta.x = [5, <bin 'x'>], so a decoder that turns ext values into arrays wrongly accepts it",
        _ext_envelope(),
    )
    add(
        "duplicate-key",
        "malformed",
        "the envelope map has the key 'body' twice (first a junk map, then the real body); maps MUST NOT repeat keys",
        _duplicate_key_envelope(good_env),
    )

    too_deep = deepest(extra=1).seal(ALICE)
    assert depth(msgpack.unpackb(too_deep, raw=False)) == codec.MAX_DEPTH + 1
    add(
        "too-deep",
        "malformed",
        f"manifest.json 'deepest' with one more level: meta = {json.dumps(deepest(1).meta)} puts an array at "
        f"depth {codec.MAX_DEPTH + 1} (limit MAX_DEPTH = {codec.MAX_DEPTH}); correctly signed",
        too_deep,
    )

    # -- size --
    _, big = padded_manifest(codec.MAX_ENVELOPE_BYTES + 1)
    add("oversized", "oversized", "a correctly signed manifest of 65537 bytes (limit 65536)", big)

    # -- envelope structure --
    add(
        "not-a-map",
        "not-envelope",
        "an array [1, 'manifest', body, sig]",
        canonical_bytes([1, "manifest", body, good_env["sig"]]),
    )
    add("missing-sig", "not-envelope", "no 'sig' key", raw_envelope(v=1, t="manifest", body=body))
    add(
        "extra-envelope-key",
        "not-envelope",
        "an extra key 'x' next to v, t, body, sig",
        raw_envelope(v=1, t="manifest", body=body, sig=good_env["sig"], x=0),
    )
    add("body-not-map", "not-envelope", "body is an array", raw_envelope(v=1, t="manifest", body=[], sig=bytes(64)))
    add(
        "sig-63-bytes",
        "not-envelope",
        "sig is 63 bytes",
        raw_envelope(v=1, t="manifest", body=body, sig=good_env["sig"][:63]),
    )
    add(
        "sig-as-str",
        "not-envelope",
        "sig is a str (hex) instead of bin",
        raw_envelope(v=1, t="manifest", body=body, sig=good_env["sig"].hex()),
    )

    # -- version and type --
    add("version-2", "version", "v is 2", raw_envelope(v=2, t="manifest", body=body, sig=good_env["sig"]))
    add("version-str", "version", "v is the str '1'", raw_envelope(v="1", t="manifest", body=body, sig=good_env["sig"]))
    add(
        "version-true",
        "version",
        "v is the boolean true (not the integer 1)",
        raw_envelope(v=True, t="manifest", body=body, sig=good_env["sig"]),
    )
    add(
        "version-float",
        "version",
        "v is the float 1.0 (not the integer 1)",
        raw_envelope(v=1.0, t="manifest", body=body, sig=good_env["sig"]),
    )
    add(
        "unknown-type", "unknown-type", "t is 'hello' (correctly signed under 'ffnode/v1/hello')", signed("hello", body)
    )
    add("type-missing", "not-envelope", "no 't' key", raw_envelope(v=1, body=body, sig=good_env["sig"]))

    # -- who signed --
    add("owner-key-missing", "owner-key", "body has no owner_key", signed("manifest", without(body, "owner_key")))
    add(
        "owner-key-31-bytes",
        "owner-key",
        "owner_key is 31 bytes",
        signed("manifest", body | {"owner_key": ALICE.public_key[:31]}),
    )
    add(
        "owner-key-as-str",
        "owner-key",
        "owner_key is a hex str, not bin",
        signed("manifest", body | {"owner_key": ALICE.public_key.hex()}),
    )
    add(
        "owner-mismatch",
        "owner-mismatch",
        "owner is Bob's peer ID, owner_key and signature are Alice's",
        signed("manifest", body | {"owner": BOB.peer_id}),
    )
    add(
        "signed-by-other-key",
        "signature",
        "owner and owner_key are Alice's but Bob signed",
        signed("manifest", body, BOB),
    )
    flipped = bytearray(good_env["sig"])
    flipped[0] ^= 0x01
    add(
        "sig-bit-flipped",
        "signature",
        "the factory with bit 0 of the signature flipped",
        raw_envelope(v=1, t="manifest", body=body, sig=bytes(flipped)),
    )
    add(
        "body-changed",
        "signature",
        "the factory's signature on a body whose size was raised by 1",
        raw_envelope(v=1, t="manifest", body=body | {"size": body["size"] + 1}, sig=good_env["sig"]),
    )
    add(
        "wrong-domain",
        "signature",
        "t is 'manifest' but the body was signed as a 'revocation' "
        "('ffnode/v1/revocation' 0x00 + body): domain separation",
        raw_envelope(v=1, t="manifest", body=body, sig=ALICE.sign(signing_payload("revocation", body))),
    )
    add(
        "float-precision-lost",
        "signature",
        "the factory re-encoded with every float as float32: 0.002 and "
        "0.99 change value, so the re-encoded body is not what was signed",
        loose_pack(good_env, float32="always"),
    )

    # -- manifest schema (all correctly signed by Alice) --
    add("missing-field", "schema", "manifest without 'seed'", signed("manifest", without(body, "seed")))
    add("extra-field", "schema", "manifest with an extra field 'note'", signed("manifest", body | {"note": "hi"}))
    add("size-as-str", "schema", "size is the str '54'", signed("manifest", body | {"size": str(body["size"])}))
    add("seq-as-bool", "schema", "seq is true (booleans are not integers)", signed("manifest", body | {"seq": True}))
    add("created-as-float", "schema", "created is a float64", signed("manifest", body | {"created": float(T0)}))
    add("seed-nil", "schema", "seed is nil", signed("manifest", body | {"seed": None}))
    add("arch-as-array", "schema", "arch is an array", signed("manifest", body | {"arch": []}))
    add("unknown-kind", "value", "kind is 'dataset'", signed("manifest", body | {"kind": "dataset"}))
    add("blob-uppercase", "value", "blob is uppercase hex", signed("manifest", body | {"blob": body["blob"].upper()}))
    add("blob-not-hex", "value", "blob contains 'g'", signed("manifest", body | {"blob": "g" + body["blob"][1:]}))
    add("blob-63-chars", "value", "blob is 63 hex characters", signed("manifest", body | {"blob": body["blob"][:63]}))
    add("size-negative", "value", "size is -1", signed("manifest", body | {"size": -1}))
    add(
        "size-too-large",
        "value",
        f"size is MAX_BLOB_BYTES + 1 = {MAX_BLOB_BYTES + 1} (limit 4 GiB)",
        signed("manifest", body | {"size": MAX_BLOB_BYTES + 1}),
    )
    add("seq-negative", "value", "seq is -1", signed("manifest", body | {"seq": -1}))
    add("classes-empty", "value", "classes is []", signed("manifest", body | {"classes": []}))
    add("class-negative", "value", "classes is [-1]", signed("manifest", body | {"classes": [-1]}))
    add("class-bool", "value", "classes is [true]", signed("manifest", body | {"classes": [True]}))
    add("class-float", "value", "classes is [3.0]", signed("manifest", body | {"classes": [3.0]}))
    add(
        "class-out-of-range",
        "value",
        "classes is [10]: class_list names 10 classes",
        signed("manifest", body | {"classes": [10]}),
    )
    add("class-twice", "value", "classes is [3, 3]", signed("manifest", body | {"classes": [3, 3]}))
    add(
        "too-many-classes",
        "value",
        f"{MAX_CLASSES + 1} classes (limit {MAX_CLASSES}) over a class list of as many names",
        signed(
            "manifest",
            body | {"classes": list(range(MAX_CLASSES + 1)), "class_list": [f"c{i}" for i in range(MAX_CLASSES + 1)]},
        ),
    )
    add("class-list-type", "schema", "class_list is a map", signed("manifest", body | {"class_list": {}}))
    add("class-list-empty", "value", "class_list is []", signed("manifest", body | {"class_list": []}))
    add("class-name-type", "value", "class_list holds an integer", signed("manifest", body | {"class_list": [0] * 10}))
    add(
        "class-name-empty",
        "value",
        "a class name is ''",
        signed("manifest", body | {"class_list": [""] + CLASS_LIST[1:]}),
    )
    add(
        "class-name-long",
        "value",
        f"a class name of {MAX_CLASS_NAME_BYTES // 2 + 1} characters, {MAX_CLASS_NAME_BYTES + 2} UTF-8 bytes "
        f"(limit {MAX_CLASS_NAME_BYTES} bytes)",
        signed("manifest", body | {"class_list": ["\u00e9" * (MAX_CLASS_NAME_BYTES // 2 + 1)] + CLASS_LIST[1:]}),
    )
    add(
        "class-list-duplicate",
        "value",
        "class_list names '0' twice",
        signed("manifest", body | {"class_list": ["0", *CLASS_LIST[:-1]]}),
    )
    add(
        "class-list-bytes",
        "value",
        f"class_list of 100 names of 60 bytes: more than {MAX_CLASS_LIST_BYTES} bytes encoded",
        signed("manifest", body | {"class_list": [f"{i:03d}" + "x" * 57 for i in range(100)]}),
    )
    add(
        "factory-with-lineage",
        "value",
        "a factory whose lineage is not empty",
        signed("manifest", body | {"lineage": [hid(b"some factory")]}),
    )
    expert = BOB_EXPERT.body()
    add(
        "lineage-not-hex",
        "value",
        "an expert whose lineage holds a peer ID instead of an artifact ID",
        signed("manifest", expert | {"lineage": [ALICE.peer_id]}, BOB),
    )
    add(
        "lineage-too-long",
        "value",
        f"an expert with {MAX_LINEAGE + 1} lineage entries (limit {MAX_LINEAGE}); the envelope is below 64 KiB",
        longest_lineage(MAX_LINEAGE + 1).seal(BOB),
    )

    # -- revocation schema (all correctly signed by Bob) --
    rev = dataclasses.asdict(BOB_REVOCATION)
    add("revocation-ids-empty", "value", "a revocation with ids = []", signed("revocation", rev | {"ids": []}, BOB))
    add(
        "revocation-id-not-hex",
        "value",
        "ids holds a 12-character ID prefix",
        signed("revocation", rev | {"ids": [BOB_EXPERT.id[:12]]}, BOB),
    )
    add(
        "revocation-too-many-ids",
        "value",
        f"a revocation of {MAX_IDS + 1} IDs (limit {MAX_IDS}); the envelope is below 64 KiB",
        revocation(ids=sorted([BOB_EXPERT.id, *fake_ids(MAX_IDS)]), seq=11).seal(BOB),
    )
    add(
        "revocation-ids-as-str",
        "schema",
        "ids is a str, not an array",
        signed("revocation", rev | {"ids": BOB_EXPERT.id}, BOB),
    )
    add(
        "revocation-reason-too-long",
        "value",
        f"reason of {MAX_REASON + 1} characters (limit {MAX_REASON})",
        signed("revocation", rev | {"reason": "r" * (MAX_REASON + 1)}, BOB),
    )
    add("revocation-seq-negative", "value", "seq is -1", signed("revocation", rev | {"seq": -1}, BOB))
    add(
        "revocation-missing-field",
        "schema",
        "a revocation without 'reason'",
        signed("revocation", without(rev, "reason"), BOB),
    )
    add(
        "revocation-as-manifest",
        "schema",
        "a revocation body correctly signed as type 'manifest'",
        signed("manifest", rev, BOB),
    )

    for case in cases:
        data = bytes.fromhex(case["input"]["envelope_hex"])
        try:
            open_announcement(data)
        except WireError:
            continue
        raise AssertionError(f"invalid vector {case['name']} is accepted by ffnode")
    return {
        "description": "Envelopes that a node MUST reject, each with one fault (README: Acceptance rules). A "
        "receiver gets input.envelope_hex as a gossip message or a sync item; output null means: reject, do not "
        "store, do not forward. reason is a category (README: Test vectors); implementations may detect a fault "
        "under another category if they check in another order, but MUST reject.",
        "spec": f"{SPEC}#acceptance-rules",
        "cases": cases,
    }


def raw_envelope_with_int_key(env: dict[str, Any]) -> bytes:
    """Canonical envelope bytes whose body map gets one extra entry with the integer key 1."""
    body = canonical_bytes(env["body"])
    assert 0x80 <= body[0] <= 0x8E  # a fixmap with room for one more entry
    patched_body = bytes([body[0] + 1]) + body[1:] + b"\x01\x01"
    head = canonical_bytes({"body": {}})  # 0x81 0xa4 'body' 0x80
    rest = canonical_bytes({"sig": env["sig"], "t": env["t"], "v": env["v"]})[1:]
    return bytes([0x84]) + head[1:-1] + patched_body + rest


def _bin_key_envelope(env: dict[str, Any]) -> bytes:
    body = dict(env["body"])
    body["arch"] = dict(body["arch"]) | {b"k": 1}
    return msgpack.packb({"body": body, "sig": env["sig"], "t": env["t"], "v": env["v"]}, use_bin_type=True)


def _ext_envelope() -> bytes:
    signed_body = ALICE_FACTORY.body() | {"meta": {"x": [5, b"x"]}, "seq": 4}
    sig = ALICE.sign(signing_payload("manifest", signed_body))
    sent_body = signed_body | {"meta": {"x": msgpack.ExtType(5, b"x")}}
    return msgpack.packb({"body": sent_body, "sig": sig, "t": "manifest", "v": 1}, use_bin_type=True)


def _duplicate_key_envelope(env: dict[str, Any]) -> bytes:
    """{'body': {}, 'body': <real>, 'sig', 't', 'v'}: five entries, one key repeated."""
    canonical = canonical_bytes(env)
    assert canonical[0] == 0x84
    junk = canonical_bytes({"body": {}})[1:]  # 'body' 0x80
    return bytes([0x85]) + junk + canonical[1:]


# -- invite-only federations (README: Invite-only federations) --------------------------------------------------
CAROL, DAVE = Identity(b"\x02" * 32), Identity(b"\x04" * 32)
CHARTER_BODY = {
    "federation": FEDERATION,
    "founders": sorted(x.public_key for x in (ALICE, BOB, CAROL)),
    "threshold": 2,
    "created": T0,
}


def cosigned(kind: str, body: dict[str, Any], *signers: Identity) -> bytes:
    """ffnode's own co-signing: the first signer seals, each next one adds its signature."""
    data = seal_cosigned(kind, body, signers[0])
    for s in signers[1:]:
        data = cosign(data, s)
    return data


CHARTER = cosigned("charter", CHARTER_BODY, ALICE, BOB, CAROL)
CHARTER_ID = open_charter(CHARTER).id


def member_msg(peer: Identity, action: str, seq: int, *signers: Identity, charter: str = CHARTER_ID) -> bytes:
    return cosigned("membership", Membership(charter, peer.peer_id, action, seq, T0 + seq).body(), *signers)


def cosigned_case(name: str, description: str, kind: str, body: dict[str, Any], *signers: Identity) -> dict[str, Any]:
    payload = signing_payload(kind, body)
    sigs = sorted(({"key": x.public_key, "sig": x.sign(payload)} for x in signers), key=lambda s: s["key"])
    env = canonical_bytes({"v": 1, "t": kind, "body": body, "sigs": sigs})
    assert env == cosigned(kind, body, *signers)
    return {
        "name": name,
        "description": description,
        "type": kind,
        "signer_seeds_hex": [x.seed.hex() for x in sorted(signers, key=lambda x: x.public_key)],
        "body": to_json(body),
        "canonical_body_hex": canonical_bytes(body).hex(),
        "signing_payload_hex": payload.hex(),
        "signatures_hex": [s["sig"].hex() for s in sigs],
        "envelope_hex": env.hex(),
        "id": codec.body_id(body),
    }


def charter_file() -> dict[str, Any]:
    root = Path(tempfile.mkdtemp())  # the node: a store that pins the charter
    (root / CHARTER_FILE).write_bytes(CHARTER)
    store = Store(root, federation=FEDERATION, classes=CLASS_LIST, trust=Trust(charter=CHARTER_ID))
    dave_factory = manifest(owner=DAVE.peer_id, owner_key=DAVE.public_key, seq=1, blob=hid(b"dave 3"))
    admit = member_msg(DAVE, "admit", 1, ALICE, BOB)

    step = functools.partial(stored_step, store)
    steps = [
        step("Dave's factory before any admission: Dave is no member", dave_factory.seal(DAVE), None, "not-member"),
        step(
            "Dave's admission signed by Alice alone (the threshold is 2)",
            member_msg(DAVE, "admit", 1, ALICE),
            None,
            "threshold",
        ),
        step(
            "Dave's admission signed by Alice and Mallory, who is no founder",
            member_msg(DAVE, "admit", 1, ALICE, MALLORY),
            None,
            "not-founder",
        ),
        step(
            "Dave's admission under another charter",
            member_msg(DAVE, "admit", 1, ALICE, BOB, charter=hid(b"x")),
            None,
            "wrong-charter",
        ),
        step("Dave's admission signed by Alice and Bob", admit, "accepted"),
        step("the same admission again", admit, "duplicate"),
        step("Dave's factory: Dave is a member now", dave_factory.seal(DAVE), "accepted"),
        step("Alice's factory: a founder needs no admission", ALICE_FACTORY.seal(ALICE), "accepted"),
        step(
            "Mallory's revocation of an ID nobody holds: Mallory is no member",
            revocation(owner=MALLORY.peer_id, owner_key=MALLORY.public_key, ids=[hid(b"y")], seq=1).seal(MALLORY),
            None,
            "not-member",
        ),
        step("Bob and Carol remove Alice, a founder", member_msg(ALICE, "remove", 1, BOB, CAROL), None, "founder"),
        step(
            "Bob and Carol remove Dave (seq 2): his factory is held, no longer used",
            member_msg(DAVE, "remove", 2, BOB, CAROL),
            "accepted",
        ),
        step("Dave's admission (seq 1) again, from a peer that missed the removal", admit, None, "membership-seq"),
        step(
            "a new factory of Dave's",
            manifest(owner=DAVE.peer_id, owner_key=DAVE.public_key, seq=2, blob=hid(b"dave 4")).seal(DAVE),
            None,
            "not-member",
        ),
    ]
    members, manifests, revocations = store.memberships(), *store.inventory()
    bad_sig = codec.decode(admit)
    bad_sig["sigs"][1]["sig"] = bad_sig["sigs"][0]["sig"]
    twice = codec.decode(admit)
    twice["sigs"][1] = twice["sigs"][0]
    two_founders = seal_cosigned("charter", CHARTER_BODY, ALICE)

    def invalid(name: str, kind: str, data: bytes, reason: str) -> dict[str, Any]:
        try:
            open_charter(data) if kind == "charter" else open_announcement(data, store.charter)
        except WireError:
            return {"name": name, "type": kind, "envelope_hex": data.hex(), "output": None, "reason": reason}
        raise AssertionError(f"{name} was accepted")

    unsorted = CHARTER_BODY | {"founders": CHARTER_BODY["founders"][::-1]}
    doc = {
        "description": "Invite-only federations (README: Invite-only federations): a charter every founder signed, "
        "a membership message signed by threshold founders, and a node that pins the charter applying messages in "
        "order, starting empty. members_after: each peer's standing afterwards (founders are members without "
        "admission); inventory_after: what it then serves, membership messages first (a removed member's "
        "manifests are left out).",
        "spec": f"{SPEC}#invite-only-federations",
        "charter": cosigned_case(
            "charter",
            "Alice, Bob and Carol found 'digits'; 2 of them admit or remove",
            "charter",
            CHARTER_BODY,
            ALICE,
            BOB,
            CAROL,
        ),
        "membership": cosigned_case(
            "admit-dave", "Alice and Bob admit Dave", "membership", codec.decode(admit)["body"], ALICE, BOB
        ),
        "scenario": {
            "federation": FEDERATION,
            "class_list": CLASS_LIST,
            "charter_hex": CHARTER.hex(),
            "steps": steps,
            "members_after": {p: store.is_member(p) for p in sorted({ALICE.peer_id, DAVE.peer_id, MALLORY.peer_id})},
            "inventory_after": {
                "members_hex": [d.hex() for _, d in members],
                "manifests_hex": [d.hex() for _, d in manifests],
                "revocations_hex": [d.hex() for _, d in revocations],
            },
        },
        "invalid": [
            invalid("charter-two-of-three", "charter", cosign(two_founders, BOB), "founders"),
            invalid("charter-extra-signer", "charter", cosign(CHARTER, MALLORY), "founders"),
            invalid(
                "charter-threshold-0",
                "charter",
                cosigned("charter", CHARTER_BODY | {"threshold": 0}, ALICE, BOB, CAROL),
                "value",
            ),
            invalid(
                "charter-threshold-above",
                "charter",
                cosigned("charter", CHARTER_BODY | {"threshold": 4}, ALICE, BOB, CAROL),
                "value",
            ),
            invalid("charter-founders-unsorted", "charter", cosigned("charter", unsorted, ALICE, BOB, CAROL), "value"),
            invalid("membership-bad-signature", "membership", canonical_bytes(bad_sig), "signature"),
            invalid("membership-key-twice", "membership", canonical_bytes(twice), "signers"),
            invalid(
                "membership-one-sig-key",
                "membership",
                canonical_bytes({**codec.decode(admit), "sigs": [{"key": ALICE.public_key}]}),
                "not-envelope",
            ),
            invalid(
                "membership-no-sigs", "membership", canonical_bytes({**codec.decode(admit), "sigs": []}), "not-envelope"
            ),
            invalid(
                "membership-action",
                "membership",
                cosigned("membership", codec.decode(admit)["body"] | {"action": "ban"}, ALICE, BOB),
                "value",
            ),
            invalid(
                "membership-peer",
                "membership",
                cosigned("membership", codec.decode(admit)["body"] | {"peer": "QmNotAnEd25519Key"}, ALICE, BOB),
                "value",
            ),
        ],
    }
    shutil.rmtree(root)
    return doc


# What ffnode's refusal says for each quota (the vectors' `limit`), so that each step fails for the limit it names.
QUOTA_TEXT = {
    "manifests_per_publisher": r"\(limit manifests_per_publisher\)",
    "blob_bytes_per_publisher": r"would exceed blob_mb_per_publisher",
    "store_bytes": r"would exceed store_mb",
    "publishers": r"already holds the artifacts of \d+ publishers",
    "tombstones_per_publisher": r"\(limit tombstones_per_publisher\)",
}


def stored_step(
    store: Store, description: str, data: bytes, output: str | None, reason: str | None = None, limit: str = ""
) -> dict[str, Any]:
    """One scenario step run through ffnode's store: its verdict must be the vector's, and a quota refusal must
    name its limit."""
    try:
        got = store.add(data)
    except WireError as exc:
        assert output is None and re.search(QUOTA_TEXT.get(limit, ""), str(exc)), (description, exc)
    else:
        assert output == ("duplicate" if got is None else "accepted"), description
    row: dict[str, Any] = {"description": description, "envelope_hex": data.hex(), "output": output}
    if output is not None:
        row["id"] = open_announcement(data, store.charter).id
    if reason is not None:
        row["reason"] = reason
    if limit:
        row["limit"] = limit
    return row


def blob_step(store: Store, description: str, blob: bytes, m: Manifest, output: str | None, limit: str = "") -> dict:
    """A verified blob offered for held manifest `m` (after its size and sha256 matched), through ffnode's store:
    "live", or refused by a quota."""
    tmp = store.tmp_path(m.blob)
    tmp.write_bytes(blob)
    try:
        store.put_blob_file(tmp, m)
    except WireError as exc:
        assert output is None and re.search(QUOTA_TEXT[limit], str(exc)), (description, exc)
    else:
        assert output == "live" == store.entry(m.id).state, description
    row: dict[str, Any] = {"description": description, "blob_hex": blob.hex(), "for_id": m.id, "output": output}
    return row | ({"reason": "quota", "limit": limit} if limit else {})


def quota_file() -> dict[str, Any]:
    """Check 15's quotas at small limits, and the revocation rules that count against them."""
    bob_1, bob_2 = owned_blob(BOB.peer_id, 64), owned_blob(BOB.peer_id, 32)

    def of(who: Identity, seq: int, cls: int, blob: bytes | str, size: int | None = None) -> Manifest:
        """A factory of `who` for class `cls` naming `blob` (the real bytes, or the hash of made-up ones)."""
        named = blob if isinstance(blob, str) else hid(blob)
        return manifest(owner=who.peer_id, owner_key=who.public_key, classes=[cls], seq=seq, blob=named,
                        size=len(blob) if size is None else size, created=T0 + seq)  # fmt: skip

    def revoke(who: Identity, seq: int, *ids: str) -> bytes:
        return revocation(owner=who.peer_id, owner_key=who.public_key, ids=list(ids), seq=seq).seal(who)

    def scenario(name: str, limits: Limits, steps: Any) -> dict[str, Any]:
        """Run `steps` (callables of a store, in order) on a fresh ffnode store at `limits`."""
        root = Path(tempfile.mkdtemp())
        store = Store(root, federation=FEDERATION, classes=CLASS_LIST, limits=limits)
        rows = [make(store) for make in steps]
        shutil.rmtree(root)
        limits_view = dataclasses.asdict(limits)
        return {"name": name, "federation": FEDERATION, "class_list": CLASS_LIST, "limits": limits_view, "steps": rows}

    def add(description: str, data: bytes, output: str | None, reason: str | None = None, limit: str = "") -> Any:
        return lambda store: stored_step(store, description, data, output, reason, limit)

    def blob(description: str, data: bytes, m: Manifest, output: str | None, limit: str = "") -> Any:
        return lambda store: blob_step(store, description, data, m, output, limit)

    a0, a1, a2 = hid(b"quota a0"), hid(b"quota a1"), hid(b"quota a2")
    first, bob_first, bob_second = of(ALICE, 1, 0, a0, 600), of(BOB, 1, 5, bob_1), of(BOB, 2, 6, bob_2)
    store_bytes = len(bob_1) + len(bob_2) - 1  # Bob's two blobs do not fit together
    assert len(bob_1) + 2 * len(bob_2) <= 1000  # nor does his third manifest, within his blob bytes
    assert store_bytes >= 600  # while Alice's declared 600 bytes do
    publisher = [
        add("Alice's factory for class 0, declaring 600 bytes", first.seal(ALICE), "accepted"),
        add(
            "Alice's factory for class 1 with another blob of 500 bytes: 1100 > 1000",
            of(ALICE, 2, 1, a1, 500).seal(ALICE),
            None,
            "quota",
            "blob_bytes_per_publisher",
        ),  # fmt: skip
        add(
            "Alice's factory for class 1 naming the blob she already declared: no more bytes",
            of(ALICE, 3, 1, a0, 600).seal(ALICE),
            "accepted",
        ),  # fmt: skip
        add(
            "Alice's factory for class 2 with a blob of 400 bytes: 1000 bytes, at the limit",
            of(ALICE, 4, 2, a2, 400).seal(ALICE),
            "accepted",
        ),  # fmt: skip
        add(
            "Alice's factory for class 3 naming her first blob: she holds 3 unrevoked manifests",
            of(ALICE, 5, 3, a0, 600).seal(ALICE),
            None,
            "quota",
            "manifests_per_publisher",
        ),  # fmt: skip
        add(
            "Alice revokes her factory for class 0 (kept, revoked): it no longer counts",
            revoke(ALICE, 6, first.id),
            "accepted",
        ),  # fmt: skip
        add(
            "Alice's factory for class 3 again (seq 7): 2 unrevoked manifests, 1000 bytes",
            of(ALICE, 7, 3, a0, 600).seal(ALICE),
            "accepted",
        ),  # fmt: skip
        add("Bob's factory for class 5: a second publisher", bob_first.seal(BOB), "accepted"),
        add(
            "Carol's factory: a third publisher",
            of(CAROL, 1, 5, hid(b"quota c"), 1).seal(CAROL),
            None,
            "quota",
            "publishers",
        ),  # fmt: skip
        add("Bob's factory for class 6: pending manifests reserve no store bytes", bob_second.seal(BOB), "accepted"),
        blob("the blob of Bob's factory for class 5 arrives", bob_1, bob_first, "live"),
        blob(
            "the blob of Bob's factory for class 6: both would exceed store_bytes",
            bob_2,
            bob_second,
            None,
            "store_bytes",
        ),  # fmt: skip
        add(
            "Bob's factory for class 7 declaring as many bytes: held blob bytes + these > store_bytes",
            of(BOB, 3, 7, hid(b"quota b3"), len(bob_2)).seal(BOB),
            None,
            "quota",
            "store_bytes",
        ),  # fmt: skip
        add("Bob revokes his factory for class 5: its blob is deleted", revoke(BOB, 4, bob_first.id), "accepted"),
        blob("the blob of Bob's factory for class 6 again: it fits now", bob_2, bob_second, "live"),
    ]
    x, y, z = of(BOB, 1, 5, hid(b"tomb x"), 1), of(BOB, 2, 6, hid(b"tomb y"), 1), of(BOB, 9, 7, hid(b"tomb z"), 1)
    unknown = [hid(b"tomb unknown %d" % i) for i in range(3)]
    tombstones = [
        add("Bob's factory X", x.seal(BOB), "accepted"),
        add("Bob's factory Y", y.seal(BOB), "accepted"),
        add("Bob revokes X, naming it twice", revoke(BOB, 3, x.id, x.id), None, "value"),
        add("Bob revokes X: frees only what it names (1 ID named)", revoke(BOB, 3, x.id), "accepted"),
        add(
            "Bob revokes X again: names only a revoked ID, frees nothing, counts (2 IDs named)",
            revoke(BOB, 4, x.id),
            "accepted",
        ),  # fmt: skip
        add(
            "Bob revokes two IDs nobody announced: 2 + 2 > 3",
            revoke(BOB, 5, *unknown[:2]),
            None,
            "quota",
            "tombstones_per_publisher",
        ),  # fmt: skip
        add("Bob revokes one of them: 3 IDs named, at the limit", revoke(BOB, 6, unknown[0]), "accepted"),
        add(
            "Bob revokes Y: it frees only what it names, so it is honoured over the quota (4 IDs named)",
            revoke(BOB, 7, y.id),
            "accepted",
        ),  # fmt: skip
        add(
            "Bob revokes Y again: frees nothing, 4 + 1 > 3",
            revoke(BOB, 8, y.id),
            None,
            "quota",
            "tombstones_per_publisher",
        ),  # fmt: skip
        add("Bob's factory Z", z.seal(BOB), "accepted"),
        add(
            "Bob revokes Z and an unknown ID: not only what it frees, 4 + 2 > 3",
            revoke(BOB, 10, z.id, unknown[2]),
            None,
            "quota",
            "tombstones_per_publisher",
        ),  # fmt: skip
        add("Bob revokes Z alone: honoured", revoke(BOB, 11, z.id), "accepted"),
    ]
    small = Limits(manifests_per_publisher=3, blob_bytes_per_publisher=1000, store_bytes=store_bytes, publishers=2,
                   tombstones_per_publisher=LimitsConfig().tombstones_per_publisher)  # fmt: skip
    default = LimitsConfig()
    return {
        "description": "Node-local quotas (README: Order of checks, check 15, and Parameters and limits). Per "
        "scenario, start an empty node of the federation and class list with the given limits (bytes) and apply "
        "the steps in order: an envelope step as in acceptance.json (a refusal by a quota has reason 'quota' and "
        "`limit`, the quota it would exceed); a blob step (blob_hex) offers the verified bytes of the held "
        "manifest for_id: 'live', or null (not stored, the manifest stays pending) with its quota.",
        "spec": f"{SPEC}#order-of-checks",
        "default_limits": {
            "manifests_per_publisher": default.manifests_per_publisher,
            "blob_bytes_per_publisher": default.blob_mb_per_publisher * 2**20,
            "store_bytes": default.store_mb * 2**20,
            "publishers": default.publishers,
            "tombstones_per_publisher": default.tombstones_per_publisher,
        },
        "scenarios": [
            scenario("publisher-quotas", small, publisher),
            scenario("tombstone-quota", dataclasses.replace(Limits(), tombstones_per_publisher=3), tombstones),
        ],
    }


FILES = {
    "identity.json": identity_file,
    "canonical.json": canonical_file,
    "manifest.json": manifest_file,
    "revocation.json": revocation_file,
    "acceptance.json": acceptance_file,
    "sync.json": sync_file,
    "blob.json": blob_file,
    "discovery.json": discovery_file,
    "audit.json": audit_file,
    "dp.json": dp_file,
    "ownership.json": ownership_file,
    "arch.json": arch_file,
    "invalid.json": invalid_file,
    "charter.json": charter_file,
    "quota.json": quota_file,
}


def render() -> dict[str, str]:
    """File name -> exact file text."""
    return {name: json.dumps(make(), indent=2, ensure_ascii=True) + "\n" for name, make in FILES.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the files on disk, write nothing")
    args = parser.parse_args()
    stale = []
    for name, text in render().items():
        path = OUT / name
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        stale.append(name)
        if not args.check:
            OUT.mkdir(parents=True, exist_ok=True)
            path.write_text(text, newline="\n")
    for name in stale:
        print(f"{'differs' if args.check else 'wrote'}: protocol/vectors/{name}")
    if args.check and stale:
        return 1
    if not stale:
        print("protocol/vectors/*.json are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
