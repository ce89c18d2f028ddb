"""The node's content-addressed artifact store, with the acceptance rules for everything peers send.

Layout under `root` (every write is temp file + fsync + rename + fsync of the folder, so a crash never
leaves a partial file that is later taken for whole, nor loses a rename it reported):

    blobs/<sha256>            weight files (safetensors naming their owner, artifacts/blob.py), named by their hash
    manifests/<id>.msgpack    signed manifest envelopes, as received
    revocations/<id>.msgpack  signed revocations: tombstones, kept forever
    charter.msgpack           the charter of an invite-only federation (ffnode join), pinned by its ID in the config
    members/<id>.msgpack      membership messages of that charter: the newest of each peer
    quarantine/               files found damaged at start (they do not parse, or their hash or ID is not their
                              name), moved aside for a person to look at; peers send the artifacts again

Acceptance (protocol/README.md, "Acceptance rules"), in short: a message must be validly signed for this
federation; an artifact of an owner this node does not trust (or, under a charter, of a peer that is no member,
artifacts/charter.py) is held but never live; a revocation is
honoured from the owner of what it names, whatever anyone else published first, and its IDs this node
does not know yet become tombstones bound to that owner; a blob is live only for manifests of the owner
its header names; a peer's factory whose signed privacy audit fails this node's policy is held but
"refused", never fetched nor used (ffnode/privacy/policy.py). What one publisher can make the store hold
is bounded (`Limits`), and a revoked expert's manifest is compacted away (its tombstone stays), so
superseded experts do not pile up.

The store is shared by the asyncio loop, worker threads and the network thread, so every method takes one
lock, and none holds it across file I/O that peers cannot cause (the gossip validator must never wait on a
disk). It is the single source of "something changed": every listener (`listen`) is told a typed
`StoreEvent`, from whichever thread made the change and after the lock is released: a manifest stored, IDs
revoked, a blob verified into place (its manifest live), the trust settings changed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ffnode.artifacts.blob import BlobFormatError, blob_owner
from ffnode.artifacts.charter import Charter, Membership, open_charter, open_membership
from ffnode.artifacts.codec import WireError, decode, describe_classes
from ffnode.artifacts.manifest import Manifest, open_manifest
from ffnode.artifacts.revocation import Revocation, open_revocation
from ffnode.config import Config, LimitsConfig
from ffnode.privacy.policy import AuditPolicy, judge

log = logging.getLogger("ffnode.store")


@dataclass(frozen=True)
class StoreEvent:
    """What changed: "stored" (a manifest, ids = its ID), "revoked" (ids = what a stored revocation names),
    "blob_live" (a blob verified into place, ids = its manifest's ID) or "trust" (new trust settings, or a
    membership message that admits or removes a peer, ids = ())."""

    kind: Literal["stored", "revoked", "blob_live", "trust"]
    ids: tuple[str, ...]


CHARTER_FILE = "charter.msgpack"  # the pinned charter's envelope, beside what its members signed
STATES = ("live", "pending", "revoked", "untrusted", "quarantined", "refused")  # refused: fails the audit policy


class Stale(WireError):
    """A message this node must refuse that an honest peer may still send: the manifest of an artifact revoked
    since (a peer that has not caught up yet offers it). Refused, but not held against the sender."""


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write `path` whole or not at all, durably."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def open_announcement(data: bytes, charter: Charter | None = None) -> Manifest | Revocation | Membership:
    """Gossip carries three envelope types (membership messages only in a federation with a charter); dispatch on
    `t` after a cheap decode."""
    env = decode(data)
    kind = env.get("t") if isinstance(env, dict) else None
    if kind == "manifest":
        return open_manifest(data)
    if kind == "revocation":
        return open_revocation(data)
    if kind == "membership" and charter is not None:
        return open_membership(data, charter)
    if kind == "membership":
        raise WireError("a membership message, but this node pins no charter (an open federation)")
    raise WireError(f"unknown message type {kind!r}")


@dataclass(frozen=True)
class Limits:
    """What the store holds for peers at most (config [limits], in bytes here; the defaults are the config's)."""

    manifests_per_publisher: int = LimitsConfig.manifests_per_publisher
    blob_bytes_per_publisher: int = LimitsConfig.blob_mb_per_publisher * 2**20
    store_bytes: int = LimitsConfig.store_mb * 2**20
    publishers: int = LimitsConfig.publishers
    tombstones_per_publisher: int = LimitsConfig.tombstones_per_publisher


@dataclass(frozen=True)
class Trust:
    """Whose artifacts this node uses: the operator's word, applied at load and on every change."""

    allowed: frozenset[str] = frozenset()  # empty: any signed owner
    denied: frozenset[str] = frozenset()
    quarantined: frozenset[str] = frozenset()  # artifact IDs
    audits: AuditPolicy | None = None  # peers' factories must carry a privacy audit that passes it; None: not asked
    me: str = ""  # this node: its own factories passed its own audit before it published them
    charter: str = ""  # the pinned charter's ID: only its members' artifacts are used; "": an open federation

    def trusts(self, owner: str) -> bool:
        return owner not in self.denied and (not self.allowed or owner in self.allowed)

    def refusal(self, m: Manifest) -> str | None:
        """Why this node does not use a peer's factory under its audit policy, or None."""
        if self.audits is None or m.kind != "factory" or m.owner == self.me:
            return None
        return judge(m.meta, self.audits)


def trust_of(config: Config, me: str = "") -> Trust:
    fed, p = config.federation, config.privacy
    policy = AuditPolicy.of(p) if p.require_audit else None
    return Trust(
        frozenset(fed.allowed_publishers),
        frozenset(fed.denied_publishers),
        frozenset(fed.quarantined),
        policy,
        me,
        fed.charter,
    )


def limits_of(config: Config) -> Limits:
    c = config.limits
    return Limits(
        manifests_per_publisher=c.manifests_per_publisher,
        blob_bytes_per_publisher=c.blob_mb_per_publisher * 2**20,
        store_bytes=c.store_mb * 2**20,
        publishers=c.publishers,
        tombstones_per_publisher=c.tombstones_per_publisher,
    )


@dataclass(frozen=True)
class Entry:
    """One manifest as this node sees it."""

    manifest: Manifest
    state: str  # one of STATES; live: blob verified here, bound to this owner, owner trusted
    revoked_by: str | None = None  # revocation ID
    reason: str | None = None


class Store:
    def __init__(
        self,
        root: Path,
        *,
        federation: str,
        classes: Sequence[str] | None = None,
        trust: Trust = Trust(),
        limits: Limits = Limits(),
        repair: bool = False,
        vet: Callable[[Manifest], None] | None = None,
    ) -> None:
        """`repair` (the running node only): delete leftovers of interrupted writes and any blob no manifest
        names, move damaged files to quarantine/. Readers such as the CLI never touch files; both skip a damaged
        file (listed in `damaged`) rather than fail on it, and only `repair` checks blob hashes at load
        (`hashes_checked`).
        `vet` (the running node only) checks a manifest's arch before it is accepted (raises WireError).
        `classes`: the federation's class list, which every accepted manifest must carry (None: a reader that
        accepts nothing, such as the CLI, need not say)."""
        self.root, self.federation, self.trust, self.limits = root, federation, trust, limits
        self.classes = None if classes is None else list(classes)
        self._audit_verdicts: dict[str, str | None] = {}  # artifact ID -> the audit policy's verdict, per trust
        self.vet = vet
        self._listeners: list[Callable[[StoreEvent], None]] = []  # the learner, the unlearning cascade
        for sub in ("blobs", "manifests", "revocations", "members", "tmp"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._manifests: dict[str, Manifest] = {}
        self._raw: dict[str, bytes] = {}
        self._revocations: dict[str, Revocation] = {}
        # artifact ID -> tombstones naming it; one binds only if its signer owns the artifact (IDs commit to
        # the owner, so a tombstone signed by anyone else can never bind)
        self._revoked: dict[str, list[Revocation]] = {}
        self._revoked_ids: dict[str, int] = {}  # owner -> IDs its revocations name (the tombstone quota)
        self._seqs: dict[tuple[str, int], str] = {}  # (owner, seq) -> message ID: catches replays
        self._envelopes: set[bytes] = set()  # sha256 of every stored envelope
        self._blobs: dict[str, str | None] = {}  # sha256 of a blob held here -> the owner its header names
        self._by_owner: dict[str, set[str]] = {}  # owner -> IDs of its manifests held
        self._refs: dict[str, set[str]] = {}  # blob -> IDs of the unrevoked manifests naming it
        self._held = 0  # bytes of the blob files held (verified): what store_mb bounds
        self._refused: set[str] = set()  # manifests dropped because their blob is not their owner's
        self.charter = self._load_charter(trust.charter)
        self._members: dict[str, tuple[Membership, bytes]] = {}  # peer -> its newest membership message
        self.damaged: list[str] = []  # "<folder>/<file>: why", for every damaged file found at load
        self.hashes_checked = repair
        self._load(repair)

    # -- loading -------------------------------------------------------------------------------------
    def _load_charter(self, pinned: str) -> Charter | None:
        """The charter the config pins, from charter.msgpack (None: an open federation); a missing or another one
        is a WireError naming the fix."""
        if not pinned:
            return None
        path = self.root / CHARTER_FILE
        try:
            charter = open_charter(path.read_bytes())
        except FileNotFoundError:
            raise WireError(f"federation.charter pins {pinned[:12]} but {path} is missing: run ffnode join") from None
        if charter.id != pinned or charter.federation != self.federation:
            raise WireError(f"{path} holds charter {charter.id[:12]} of {charter.federation!r}, not the pinned "
                            f"{pinned[:12]} of {self.federation!r}: run ffnode join with the right file")  # fmt: skip
        return charter

    def _load(self, repair: bool) -> None:
        # membership first, then revocations before manifests: no blob is referenced only to be deleted (a reader
        # must not touch files)
        charter = self.charter  # without one, members/ is left alone: the messages of a charter no longer pinned
        for folder, opener, insert in (
            *([("members", lambda data: open_membership(data, charter), self._insert_membership)] if charter else []),
            ("revocations", open_revocation, self._insert_revocation),
            ("manifests", open_manifest, self._insert_manifest),
        ):
            for path in sorted((self.root / folder).iterdir()):
                if path.name.startswith("."):  # an atomic_write temp file a crash or a full disk left behind
                    if repair:
                        path.unlink(missing_ok=True)
                    continue
                try:
                    data = path.read_bytes()
                    msg = opener(data)
                    if path.name != f"{msg.id}.msgpack":
                        raise WireError(f"it holds {msg.id[:12]}, not what its name says")
                    self._check_federation(msg)  # the config changed under it: kept aside, never used or served
                except (WireError, OSError) as exc:
                    self._damaged(path, str(exc), repair)
                    continue
                insert(msg, data)  # type: ignore[operator]
        if repair:
            for path in (self.root / "tmp").iterdir():  # leftovers of an interrupted transfer
                path.unlink()
            for path in (self.root / "blobs").iterdir():
                if path.name.startswith("."):
                    path.unlink()
                elif sha256_file(path) != path.name:
                    self._damaged(path, "its content does not match its name (it is fetched again)", repair)
        for path in (self.root / "blobs").iterdir():
            if not path.name.startswith("."):
                try:
                    size = path.stat().st_size
                except FileNotFoundError:  # a reader beside a starting node, which just moved it to quarantine
                    continue
                self._blobs[path.name] = _owner_or_none(path)
                self._held += size
        if repair:
            # a crash between an own blob and its manifest, or between a tombstone and the blob's deletion
            for blob in set(self._blobs) - set(self._refs):
                log.warning("discarding blob %s: no live manifest names it", blob[:12])
                self._unlink_blob(blob)
            for r in self._revocations.values():  # a crash between tombstone and compaction
                self._compact(r)

    def _damaged(self, path: Path, why: str, repair: bool) -> None:
        """Note a damaged file; the running node moves it to quarantine/, so that it never fails a start again."""
        where = f"{path.parent.name}/{path.name}"
        self.damaged.append(f"{where}: {why}")
        if not repair:
            log.warning("skipping damaged store file %s: %s", path, why)
            return
        target = self.root / "quarantine" / f"{path.parent.name}-{path.name}-{uuid.uuid4().hex[:8]}"
        target.parent.mkdir(exist_ok=True)
        os.replace(path, target)
        log.warning("store file %s is damaged (%s): moved to %s; peers send the artifact again", where, why, target)

    # -- acceptance rules ----------------------------------------------------------------------------
    def check(self, data: bytes, *, wait: bool = True) -> Manifest | Revocation | Membership:
        """Everything that can be decided without changing state: signature, schema, federation, trust (and
        membership), tombstones, ownership, quotas. Raises WireError with the reason. With `wait=False` (the gossip
        validator, on the network thread) the checks that need the lock are skipped while someone holds
        it: the message is checked in full when it is stored."""
        msg = open_announcement(data, self.charter)
        self._check_federation(msg)
        if isinstance(msg, Manifest) and self.vet is not None:
            self.vet(msg)
        if not self._lock.acquire(blocking=wait):
            return msg
        try:
            if isinstance(msg, Membership):
                self._check_membership(msg)
                return msg
            if isinstance(msg, Manifest):
                self._check_manifest(msg)
            else:
                self._check_revocation(msg)
            other = self._seqs.get((msg.owner, msg.seq))
            if other is not None and other != msg.id:
                raise WireError(f"replayed sequence number {msg.seq} of {msg.owner}")
        finally:
            self._lock.release()
        return msg

    def _check_membership(self, m: Membership) -> None:
        """Of each peer only the newest message counts: an older one is stale (an honest peer may still offer it)."""
        held = self._members.get(m.peer)
        if held is not None and held[0].id != m.id and held[0].seq >= m.seq:
            raise Stale(f"membership message seq {m.seq} of {m.peer} is not newer than the one held ({held[0].seq})")

    def _check_federation(self, msg: Manifest | Revocation | Membership) -> None:
        """WireError unless the message is of this federation: its name, and a manifest's class list (a membership
        message names the charter, which names the federation)."""
        if isinstance(msg, Membership):
            return
        if msg.federation != self.federation:
            raise WireError(f"federation {msg.federation[:64]!r} is not this node's ({self.federation!r})")
        if isinstance(msg, Manifest) and self.classes is not None and msg.class_list != self.classes:
            raise WireError(
                f"its class list {describe_classes(msg.class_list)} is not this federation's "
                f"{describe_classes(self.classes)}: the same label would mean another class"
            )

    def _tombstone(self, m: Manifest) -> Revocation | None:
        return next((r for r in self._revoked.get(m.id, ()) if r.owner == m.owner), None)

    def _tombstoned(self, m: Manifest) -> bool:
        return self._tombstone(m) is not None

    def _check_manifest(self, m: Manifest) -> None:
        if self._tombstoned(m):
            raise Stale(f"artifact {m.id[:12]} was revoked: refusing it")
        if m.id in self._raw:
            return  # a duplicate: nothing more to check
        if m.id in self._refused:
            raise WireError(f"manifest {m.id[:12]} was refused here: its blob is not its owner's")
        if not self.trusts(m.owner):
            raise WireError(f"owner {m.owner} is {self._distrust(m.owner)}")
        held = self._blobs.get(m.blob, "absent")
        if held != "absent" and held != m.owner:
            raise WireError(f"blob {m.blob[:12]} names owner {held}, not the manifest's {m.owner}")
        held = [self._manifests[aid] for aid in self._by_owner.get(m.owner, ())]
        mine = [x for x in held if not self._tombstoned(x)]  # revoked ones cost the owner nothing more
        if len(mine) >= self.limits.manifests_per_publisher:
            raise WireError(f"{m.owner} already has {len(mine)} manifests here (limit manifests_per_publisher)")
        if not held and len(self._by_owner) >= self.limits.publishers:
            raise WireError(f"this node already holds the artifacts of {self.limits.publishers} publishers")
        sizes = {x.blob: x.size for x in mine}
        if m.blob not in sizes:
            used = sum(sizes.values()) + m.size
            if used > self.limits.blob_bytes_per_publisher:
                raise WireError(f"{m.owner}'s blobs would exceed blob_mb_per_publisher ({used} bytes)")
            if m.blob not in self._blobs and self._held + m.size > self.limits.store_bytes:
                raise WireError(f"the store would exceed store_mb ({self._held + m.size} bytes)")

    def _check_revocation(self, r: Revocation) -> None:
        """An owner's revocation is honoured whatever anyone else published; IDs not held become tombstones
        bound to the owner. Every ID counts against the owner's tombstone quota, except that a revocation naming
        only artifacts of its owner that are held and live here is always honoured (it frees what it names)."""
        if len(set(r.ids)) != len(r.ids):
            raise WireError("revocation names an ID twice")
        frees_only = True
        for aid in r.ids:
            m = self._manifests.get(aid)
            if m is None:
                frees_only = False
                continue
            if m.owner != r.owner:
                raise WireError(f"revocation of {aid[:12]} is not signed by its owner")
            if r.seq <= m.seq:
                raise WireError(f"revocation seq {r.seq} is not newer than artifact {aid[:12]} (seq {m.seq})")
            frees_only = frees_only and not self._tombstoned(m)
        if r.id in self._raw or frees_only:
            return
        if not self.trusts(r.owner):
            raise WireError(f"owner {r.owner} is {self._distrust(r.owner)}, and its revocation names what is not held")
        orphans = self._revoked_ids.get(r.owner, 0)
        if orphans + len(r.ids) > self.limits.tombstones_per_publisher:
            raise WireError(f"{r.owner} has {orphans} tombstones of IDs unknown here (limit tombstones_per_publisher)")

    def add(self, data: bytes) -> Manifest | Revocation | Membership | None:
        """Accept a signed message; returns it, or None if it was already known (a duplicate)."""
        with self._lock:
            msg = self.check(data)
            if isinstance(msg, Membership):
                if not self._add_membership(msg, data):
                    return None
            elif msg.id in self._raw:
                return None
            elif isinstance(msg, Manifest):
                atomic_write(self.root / "manifests" / f"{msg.id}.msgpack", data)
                self._insert_manifest(msg, data)
            else:
                atomic_write(self.root / "revocations" / f"{msg.id}.msgpack", data)
                self._insert_revocation(msg, data)
                self._compact(msg)
        if isinstance(msg, Membership):  # applied to everything held, as a change of the trust lists is
            self._emit(StoreEvent("trust", ()))
        elif isinstance(msg, Manifest):
            self._emit(StoreEvent("stored", (msg.id,)))
        else:
            self._emit(StoreEvent("revoked", tuple(msg.ids)))
        return msg

    def listen(self, listener: Callable[[StoreEvent], None]) -> None:
        """Call `listener` with every change from now on (on the thread that made it: it must be quick)."""
        self._listeners.append(listener)

    def _emit(self, event: StoreEvent) -> None:
        """Tell every listener; one that fails is logged and does not undo the change or silence the others."""
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                log.exception("a store listener failed on %s", event)

    def _add_membership(self, m: Membership, data: bytes) -> bool:
        """Store a membership message in place of the peer's older one; False if it is held already."""
        held = self._members.get(m.peer)
        if held is not None and held[0].id == m.id:
            return False
        atomic_write(self.root / "members" / f"{m.id}.msgpack", data)
        if held is not None:
            (self.root / "members" / f"{held[0].id}.msgpack").unlink(missing_ok=True)
        self._insert_membership(m, data)
        return True

    def _insert_membership(self, m: Membership, data: bytes) -> None:
        held = self._members.get(m.peer)
        if held is None or held[0].seq < m.seq:  # at load, a crash may have left the older file beside it
            self._members[m.peer] = (m, data)
        self._envelopes.add(hashlib.sha256(data).digest())

    def _insert_manifest(self, m: Manifest, data: bytes) -> None:
        self._manifests[m.id] = m
        self._by_owner.setdefault(m.owner, set()).add(m.id)
        self._remember(m, data)
        if not self._tombstoned(m):
            self._ref(m)

    def _insert_revocation(self, r: Revocation, data: bytes) -> None:
        self._revocations[r.id] = r
        self._remember(r, data)
        self._revoked_ids[r.owner] = self._revoked_ids.get(r.owner, 0) + len(r.ids)
        for aid in r.ids:
            self._revoked.setdefault(aid, []).append(r)
            m = self._manifests.get(aid)
            if m is not None and m.owner == r.owner:
                self._unref(m)

    def _ref(self, m: Manifest) -> None:
        self._refs.setdefault(m.blob, set()).add(m.id)

    def _unref(self, m: Manifest) -> None:
        """A manifest no longer names its blob: delete the blob once no manifest of its owner does."""
        refs = self._refs.get(m.blob, set())
        if m.id not in refs:
            return  # not named (any more): a second tombstone of the same ID changes nothing
        refs.discard(m.id)
        if not refs:
            self._refs.pop(m.blob, None)
        if m.blob in self._blobs:
            owner = self._blobs[m.blob]
            if not any(self._manifests[aid].owner == owner for aid in refs):
                self._unlink_blob(m.blob)

    def _compact(self, r: Revocation) -> None:
        """Forget the manifests of revoked experts: only the tombstone is needed to refuse them again. Revoked
        factories stay (served, so a late joiner learns that their class was withdrawn)."""
        for aid in r.ids:
            m = self._manifests.get(aid)
            if m is not None and m.kind == "expert" and self._tombstoned(m):
                self._forget(m)

    def _drop(self, m: Manifest) -> None:
        """Forget an invalid manifest (its blob is not its owner's) and refuse it from now on."""
        with self._lock:
            if m.id not in self._manifests:
                return
            refs = self._refs.get(m.blob, set())
            refs.discard(m.id)
            if not refs:
                self._refs.pop(m.blob, None)
            self._refused.add(m.id)
            self._forget(m)

    def _forget(self, m: Manifest) -> None:
        """Remove a held manifest and its file. Its envelope hash stays in _envelopes, so `knows` keeps sync
        from offering it to `add` again. Its seq is released: the replay check looks at held messages only, as
        after a restart or on a node that joined later (protocol/README.md, check 12), so that all agree."""
        del self._manifests[m.id]
        if self._seqs.get((m.owner, m.seq)) == m.id:
            del self._seqs[(m.owner, m.seq)]
        self._audit_verdicts.pop(m.id, None)
        self._by_owner[m.owner].discard(m.id)
        if not self._by_owner[m.owner]:
            del self._by_owner[m.owner]
        del self._raw[m.id]
        (self.root / "manifests" / f"{m.id}.msgpack").unlink(missing_ok=True)

    def _remember(self, msg: Manifest | Revocation, data: bytes) -> None:
        self._raw[msg.id] = data
        self._seqs[(msg.owner, msg.seq)] = msg.id
        self._envelopes.add(hashlib.sha256(data).digest())

    def _unlink_blob(self, blob: str) -> None:
        path = self.root / "blobs" / blob
        if path.exists():
            self._held -= path.stat().st_size
        path.unlink(missing_ok=True)
        self._blobs.pop(blob, None)

    # -- trust ---------------------------------------------------------------------------------------
    def is_member(self, peer: str) -> bool:
        """Whether `peer` may publish here: any peer in an open federation; under a charter, a founder or a peer
        whose newest membership message admits it."""
        if self.charter is None or peer in self.charter.founder_ids:
            return True
        held = self._members.get(peer)
        return held is not None and held[0].action == "admit"

    def trusts(self, owner: str) -> bool:
        """Whether this node uses `owner`'s artifacts: the operator's trust lists and the charter's members."""
        return self.trust.trusts(owner) and self.is_member(owner)

    def _distrust(self, owner: str) -> str:
        """Why `owner` is not trusted, for the log line of a refusal."""
        if not self.trust.trusts(owner):
            return "not trusted here (allowed_publishers / denied_publishers)"
        return f"not a member of charter {self.charter.id[:12] if self.charter else ''} (not admitted, or removed)"

    def members(self) -> dict[str, Membership]:
        """The newest membership message of each peer that has one (admitted or removed)."""
        with self._lock:
            return {peer: m for peer, (m, _) in self._members.items()}

    def memberships(self) -> list[tuple[str, bytes]]:
        """(ID, envelope) of every membership message held, by ID: what sync serves before the inventory."""
        with self._lock:
            return sorted((m.id, data) for m, data in self._members.values())

    def set_trust(self, trust: Trust) -> None:
        """Apply new trust settings to everything held (not only to what arrives from now on)."""
        with self._lock:
            self.trust = trust
            self._audit_verdicts.clear()
        self._emit(StoreEvent("trust", ()))

    # -- blobs ---------------------------------------------------------------------------------------
    def tmp_path(self, name: str) -> Path:
        """A fresh temp path for one transfer: two fetches never share a file."""
        return self.root / "tmp" / f"{name}.{uuid.uuid4().hex}.part"

    def put_blob_file(self, tmp: Path, m: Manifest) -> None:
        """Move a fetched file into place after checking it against the signed manifest: size, sha256, and
        the owner its header names. A manifest whose (correct) blob names another owner, or none, is invalid:
        it is dropped from the store, and the WireError says so."""
        try:
            size, digest = tmp.stat().st_size, sha256_file(tmp)
            if size != m.size or digest != m.blob:
                raise WireError(f"blob {m.blob[:12]}: got {size} bytes sha256 {digest[:12]}, manifest says {m.size}")
            try:
                owner: str | None = blob_owner(tmp)
                wrong = None if owner == m.owner else f"names owner {owner}, not the manifest's {m.owner}"
            except BlobFormatError as exc:
                owner, wrong = None, f"is not a weight file naming its owner ({exc})"
            if wrong is not None:
                self._drop(m)
                raise WireError(f"blob {m.blob[:12]} {wrong}: manifest {m.id[:12]} dropped")
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            with self._lock:
                if self._tombstoned(m):
                    raise WireError(f"artifact {m.id[:12]} was revoked during the transfer")
                if m.blob not in self._blobs and self._held + size > self.limits.store_bytes:
                    raise WireError(f"storing blob {m.blob[:12]} would exceed store_mb ({self._held + size} bytes)")
                if m.blob not in self._blobs:
                    self._held += size
                os.replace(tmp, self.root / "blobs" / m.blob)
                self._blobs[m.blob] = owner
            fsync_dir(self.root / "blobs")
        finally:
            tmp.unlink(missing_ok=True)
        self._emit(StoreEvent("blob_live", (m.id,)))

    def put_blob_bytes(self, data: bytes) -> str:
        """Store one of this node's own blobs (before its manifest); returns its sha256."""
        digest = hashlib.sha256(data).hexdigest()
        path = self.root / "blobs" / digest
        atomic_write(path, data)
        with self._lock:
            if digest not in self._blobs:
                self._held += len(data)
            self._blobs[digest] = _owner_or_none(path)
        return digest

    def blob_path(self, blob: str) -> Path | None:
        """The file of a blob some live artifact names (served to peers, loaded for training), else None."""
        with self._lock:
            if not any(self._state(self._manifests[aid]) == "live" for aid in self._refs.get(blob, ())):
                return None
        path = self.root / "blobs" / blob
        return path if path.exists() else None

    def blob_file(self, m: Manifest) -> Path:
        """The file of a live artifact's blob; KeyError if it is not live here."""
        with self._lock:
            live = self._state(m) == "live"
        path = self.root / "blobs" / m.blob
        if not live or not path.exists():
            raise KeyError(f"blob of artifact {m.id[:12]} is not held live here")
        return path

    # -- queries -------------------------------------------------------------------------------------
    def _state(self, m: Manifest) -> str:
        if self._tombstoned(m):
            return "revoked"
        if not self.trusts(m.owner):
            return "untrusted"
        if m.id in self.trust.quarantined:
            return "quarantined"
        if self._refusal(m) is not None:
            return "refused"
        return "live" if self._blobs.get(m.blob, "absent") == m.owner else "pending"

    def _refusal(self, m: Manifest) -> str | None:
        """The audit policy's verdict on `m`, judged once per manifest (the store asks on every state lookup)."""
        if m.id not in self._audit_verdicts:
            self._audit_verdicts[m.id] = self.trust.refusal(m)
        return self._audit_verdicts[m.id]

    def _live_manifests(self) -> Iterable[Manifest]:
        return (m for m in self._manifests.values() if self._state(m) == "live")

    def entry(self, aid: str) -> Entry:
        with self._lock:
            m = self._manifests[aid]
            state = self._state(m)
            if state == "revoked" and (r := self._tombstone(m)) is not None:
                return Entry(m, state, r.id, r.reason)
            if state == "refused":
                return Entry(m, state, reason=self._refusal(m))
            return Entry(m, state)

    def entries(self) -> list[Entry]:
        with self._lock:
            return [self.entry(aid) for aid in sorted(self._manifests, key=lambda a: self._manifests[a].created)]

    def live(self, kind: str | None = None) -> list[Manifest]:
        """Verified, unrevoked, trusted artifacts (optionally of one kind), in a stable order."""
        with self._lock:
            out = [m for m in self._live_manifests() if kind is None or m.kind == kind]
        return sorted(out, key=lambda m: (m.classes, m.owner, m.id))

    def pending(self) -> list[Manifest]:
        with self._lock:
            return [m for m in self._manifests.values() if self._state(m) == "pending"]

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
        """Whether a tombstone of this artifact's owner names it. Of an ID whose manifest is not held nobody can
        tell (anyone may sign a tombstone for it), so it counts as not revoked; revoked factories are kept, and a
        lineage names factories, so an expert's lineage is judged on manifests held here."""
        with self._lock:
            m = self._manifests.get(aid)
            return m is not None and self._tombstoned(m)

    def revocations(self) -> list[Revocation]:
        with self._lock:
            return list(self._revocations.values())

    def next_seq(self, owner: str) -> int:
        with self._lock:
            return 1 + max((seq for (o, seq) in self._seqs if o == owner), default=0)

    def inventory(self) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
        """(ID, envelope) of every manifest and every revocation held, each sorted by ID: what sync serves,
        page by page (net/sync.py). Revoked factories are included, so that a node that joins later holds
        them with their tombstones and knows their class was withdrawn. Under a charter, what peers that are no
        members (removed ones) signed is left out: every other member refuses it."""
        with self._lock:
            manifests = sorted((aid, self._raw[aid]) for aid, m in self._manifests.items() if self.is_member(m.owner))
            revocations = sorted(
                (rid, self._raw[rid]) for rid, r in self._revocations.items() if self.is_member(r.owner)
            )
        return manifests, revocations

    def knows(self, data: bytes) -> bool:
        """Whether this exact envelope is stored already: sync skips it without any log line."""
        with self._lock:
            return hashlib.sha256(data).digest() in self._envelopes

    def _hash_ok(self, blob: str, verify: bool) -> bool | None:
        """Whether a held blob's content matches its name; None when not checked."""
        return sha256_file(self.root / "blobs" / blob) == blob if verify else None

    def rows(self, classes: list[str], *, verify: bool = False) -> list[dict]:
        """The artifact table (`ffnode artifacts`), from the store alone: also when the node is stopped. IDs
        known only by their tombstone (compacted experts, revocations that came first) are rows of kind "-".
        `verified` is True only for a blob whose hash was checked (at the running node's start or receipt, or
        here with `verify`), None for one held but not checked."""
        with self._lock:
            stubs = [(aid, rs[0]) for aid, rs in self._revoked.items() if aid not in self._manifests]
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
                # live means its blob is held; only the running node (or verify=True) hashed it
                "verified": e.state == "live" and (self.hashes_checked or self._hash_ok(e.manifest.blob, verify)),
                "lineage": e.manifest.lineage,
                "meta": e.manifest.meta,
                "reason": e.reason,
            }
            for e in self.entries()
        ] + [
            {
                "id": aid,
                "kind": "-",
                "owner": r.owner,
                "classes": [],
                "size": 0,
                "blob": "",
                "seq": None,
                "created": r.created,
                "state": "revoked",
                "verified": False,
                "lineage": [],
                "meta": {},
                "reason": r.reason,
            }
            for aid, r in sorted(stubs)
        ]


def _owner_or_none(path: Path) -> str | None:
    try:
        return blob_owner(path)
    except (BlobFormatError, OSError):
        return None
