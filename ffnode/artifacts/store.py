"""The node's content-addressed artifact store, with the acceptance rules for everything peers send.

Layout under `root` (all writes are temp file + fsync + rename, so a crash never leaves a partial file
that is later taken for whole):

    blobs/<sha256>            weight files (safetensors), named by their hash
    manifests/<id>.msgpack    signed manifest envelopes, as received
    revocations/<id>.msgpack  signed revocations: tombstones, kept forever

The store is shared by the asyncio loop and the network thread, so every method takes one lock. It is the
single source of "something changed": `on_change` is called (from whichever thread made the change, after
the lock is released) whenever a manifest or revocation is stored or a blob is verified into place.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ffnode.artifacts.codec import WireError, decode
from ffnode.artifacts.manifest import Manifest, open_manifest
from ffnode.artifacts.revocation import Revocation, open_revocation

log = logging.getLogger("ffnode.store")


def atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def open_announcement(data: bytes) -> Manifest | Revocation:
    """Gossip carries two envelope types; dispatch on `t` after a cheap decode."""
    env = decode(data)
    kind = env.get("t") if isinstance(env, dict) else None
    if kind == "manifest":
        return open_manifest(data)
    if kind == "revocation":
        return open_revocation(data)
    raise WireError(f"unknown message type {kind!r}")


@dataclass(frozen=True)
class Entry:
    """One manifest as this node sees it."""

    manifest: Manifest
    state: str  # live (blob verified here) | pending (blob not fetched yet) | revoked
    revoked_by: str | None = None  # revocation ID
    reason: str | None = None


class Store:
    def __init__(
        self, root: Path, *, federation: str, allowed: frozenset[str] = frozenset(), repair: bool = False
    ) -> None:
        """`repair` (the running node only): delete leftovers of interrupted writes and any blob whose
        content does not match its name. Readers such as the CLI never touch files."""
        self.root, self.federation, self.allowed = root, federation, allowed
        self.on_change: Callable[[], None] = lambda: None  # the running node wakes its learner here
        for sub in ("blobs", "manifests", "revocations", "tmp"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._manifests: dict[str, Manifest] = {}
        self._raw: dict[str, bytes] = {}
        self._revocations: dict[str, Revocation] = {}
        self._revoked: dict[str, Revocation] = {}  # artifact ID -> its tombstone
        self._seqs: dict[tuple[str, int], str] = {}  # (owner, seq) -> message ID: catches replays
        self._envelopes: set[bytes] = set()  # sha256 of every stored envelope
        self._load(repair)

    # -- loading -------------------------------------------------------------------------------------
    def _load(self, repair: bool) -> None:
        for path in sorted((self.root / "manifests").glob("*.msgpack")):
            data = path.read_bytes()
            m = open_manifest(data)
            self._manifests[m.id] = m
            self._remember(m, data)
        for path in sorted((self.root / "revocations").glob("*.msgpack")):
            data = path.read_bytes()
            r = open_revocation(data)
            self._revocations[r.id] = r
            self._remember(r, data)
            for aid in r.ids:
                self._revoked[aid] = r
        if not repair:
            return
        for path in (self.root / "tmp").iterdir():  # leftovers of an interrupted transfer
            path.unlink()
        for path in (self.root / "blobs").iterdir():
            if path.name.startswith(".") or sha256_file(path) != path.name:
                log.warning("discarding blob %s: content does not match its name", path.name)
                path.unlink()
        for r in self._revocations.values():  # a crash between tombstone and delete must not keep the blob
            for aid in r.ids:
                if aid in self._manifests:
                    self._delete_blob_if_unused(self._manifests[aid].blob)

    # -- acceptance rules ----------------------------------------------------------------------------
    def check(self, data: bytes) -> Manifest | Revocation:
        """Everything that can be decided without changing state: signature, schema, federation, trust,
        tombstones. Raises WireError with the reason. Safe to call from the network thread."""
        msg = open_announcement(data)
        if msg.federation != self.federation:
            raise WireError(f"federation {msg.federation!r} is not this node's ({self.federation!r})")
        if self.allowed and msg.owner not in self.allowed:
            raise WireError(f"owner {msg.owner} is not in this node's allowed_publishers")
        with self._lock:
            if isinstance(msg, Manifest):
                if msg.id in self._revoked:
                    raise WireError(f"artifact {msg.id[:12]} was revoked: refusing it")
                # a blob belongs to one owner: else anyone could keep a revoked blob alive by naming it
                if any(m.blob == msg.blob and m.owner != msg.owner for m in self._manifests.values()):
                    raise WireError(f"blob {msg.blob[:12]} is already published by another owner")
            other = self._seqs.get((msg.owner, msg.seq))
            if other is not None and other != msg.id:
                raise WireError(f"replayed sequence number {msg.seq} of {msg.owner}")
            if isinstance(msg, Revocation):
                self._check_revocation(msg)
        return msg

    def _check_revocation(self, r: Revocation) -> None:
        for aid in r.ids:
            m = self._manifests.get(aid)
            if m is None:
                raise WireError(f"revocation names unknown artifact {aid[:12]}")
            if m.owner != r.owner:
                raise WireError(f"revocation of {aid[:12]} is not signed by its owner")
            if r.seq <= m.seq:
                raise WireError(f"revocation seq {r.seq} is not newer than artifact {aid[:12]} (seq {m.seq})")

    def add(self, data: bytes) -> Manifest | Revocation | None:
        """Accept a signed message; returns it, or None if it was already known (a duplicate)."""
        with self._lock:
            msg = self.check(data)
            if msg.id in self._raw:
                return None
            if isinstance(msg, Manifest):
                atomic_write(self.root / "manifests" / f"{msg.id}.msgpack", data)
                self._manifests[msg.id] = msg
            else:
                atomic_write(self.root / "revocations" / f"{msg.id}.msgpack", data)
                self._revocations[msg.id] = msg
                for aid in msg.ids:
                    self._revoked[aid] = msg
                    self._delete_blob_if_unused(self._manifests[aid].blob)
            self._remember(msg, data)
        self.on_change()
        return msg

    def _remember(self, msg: Manifest | Revocation, data: bytes) -> None:
        self._raw[msg.id] = data
        self._seqs[(msg.owner, msg.seq)] = msg.id
        self._envelopes.add(hashlib.sha256(data).digest())

    def _delete_blob_if_unused(self, blob: str) -> None:
        if not any(m.blob == blob and aid not in self._revoked for aid, m in self._manifests.items()):
            (self.root / "blobs" / blob).unlink(missing_ok=True)

    # -- blobs ---------------------------------------------------------------------------------------
    def tmp_path(self, name: str) -> Path:
        """A fresh temp path for one transfer: two fetches never share a file."""
        return self.root / "tmp" / f"{name}.{uuid.uuid4().hex}.part"

    def put_blob_file(self, tmp: Path, m: Manifest) -> None:
        """Move a fetched file into place after checking it against the signed manifest."""
        size, digest = tmp.stat().st_size, sha256_file(tmp)
        if size != m.size or digest != m.blob:
            tmp.unlink(missing_ok=True)
            raise WireError(f"blob {m.blob[:12]}: got {size} bytes sha256 {digest[:12]}, manifest says {m.size}")
        with self._lock:
            if m.id in self._revoked:
                tmp.unlink(missing_ok=True)
                raise WireError(f"artifact {m.id[:12]} was revoked during the transfer")
            os.replace(tmp, self.root / "blobs" / m.blob)
        self.on_change()

    def put_blob_bytes(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        atomic_write(self.root / "blobs" / digest, data)
        return digest

    def blob_path(self, blob: str) -> Path | None:
        """The file of a live blob (served to peers, loaded for training), None if absent or revoked."""
        with self._lock:
            if not any(m.blob == blob and aid not in self._revoked for aid, m in self._manifests.items()):
                return None
        path = self.root / "blobs" / blob
        return path if path.exists() else None

    def read_blob(self, m: Manifest) -> bytes:
        path = self.blob_path(m.blob)
        if path is None:
            raise KeyError(f"blob of artifact {m.id[:12]} is not held")
        return path.read_bytes()

    # -- queries -------------------------------------------------------------------------------------
    def entry(self, aid: str) -> Entry:
        with self._lock:
            m = self._manifests[aid]
            if (r := self._revoked.get(aid)) is not None:
                return Entry(m, "revoked", r.id, r.reason)
            return Entry(m, "live" if (self.root / "blobs" / m.blob).exists() else "pending")

    def entries(self) -> list[Entry]:
        with self._lock:
            return [self.entry(aid) for aid in sorted(self._manifests, key=lambda a: self._manifests[a].created)]

    def live(self, kind: str | None = None) -> list[Manifest]:
        """Verified, unrevoked artifacts (optionally of one kind), in a stable order."""
        out = [e.manifest for e in self.entries() if e.state == "live"]
        out = [m for m in out if kind is None or m.kind == kind]
        return sorted(out, key=lambda m: (m.classes, m.owner, m.id))

    def pending(self) -> list[Manifest]:
        return [e.manifest for e in self.entries() if e.state == "pending"]

    def get(self, aid: str) -> Manifest | None:
        with self._lock:
            return self._manifests.get(aid)

    def resolve(self, prefix: str) -> str:
        """A full artifact ID from a unique prefix (as the CLI shows them)."""
        with self._lock:
            hits = [aid for aid in self._manifests if aid.startswith(prefix.lower())]
        if len(hits) != 1:
            raise KeyError(f"{'no' if not hits else 'more than one'} artifact matches {prefix!r}")
        return hits[0]

    def is_revoked(self, aid: str) -> bool:
        with self._lock:
            return aid in self._revoked

    def revocations(self) -> list[Revocation]:
        with self._lock:
            return list(self._revocations.values())

    def next_seq(self, owner: str) -> int:
        with self._lock:
            return 1 + max((seq for (o, seq) in self._seqs if o == owner), default=0)

    def inventory(self) -> tuple[list[bytes], list[bytes]]:
        """Signed envelopes of every manifest and every revocation: what sync serves. Revoked manifests are
        included so that a node that joins later can hold them with their tombstones (a revocation is only
        accepted for an artifact the node knows) and refuse them when a stale peer offers them again."""
        with self._lock:
            return [self._raw[aid] for aid in self._manifests], [self._raw[rid] for rid in self._revocations]

    def knows(self, data: bytes) -> bool:
        """Whether this exact envelope is stored already: sync skips it without any log line."""
        with self._lock:
            return hashlib.sha256(data).digest() in self._envelopes

    def rows(self, classes: list[str]) -> list[dict]:
        """The artifact table (`ffnode artifacts`), from the store alone: also when the node is stopped."""
        return [
            {
                "id": e.manifest.id,
                "kind": e.manifest.kind,
                "owner": e.manifest.owner,
                "classes": [classes[c] if c < len(classes) else str(c) for c in e.manifest.classes],
                "size": e.manifest.size,
                "blob": e.manifest.blob,
                "seq": e.manifest.seq,
                "created": e.manifest.created,
                "state": e.state,
                "verified": e.state == "live",
                "lineage": e.manifest.lineage,
                "meta": e.manifest.meta,
                "reason": e.reason,
            }
            for e in self.entries()
        ]
