"""The node's audit trail: `events.jsonl` in its home, one JSON object per line, appended and never rewritten.

It records what changed what this node holds or uses, when, and who caused it (the `actor`): every publication
("published": this node's own), acceptance ("accepted": a peer's artifact stored here; its actor is the owner),
revocation ("revoked": its actor the owner who signed it, wherever it came from), block and quarantine (and their
undoing; the actor is "operator"), leave ("left"), local fault ("fault", "fault_cleared"), and, in an invite-only
federation, each peer admitted or removed ("admitted", "removed": the actor is "charter"). `ffnode events` shows
it; `read_events` is what every reader calls.

Two processes may append at once (the running node, and the CLI recording the operator's trust edits, the node
running or not), so each event is one `write` of one whole line to a file opened with O_APPEND: lines never
interleave. Lines are not fsynced: a crashed process loses nothing the kernel took, and a power cut may lose the
last lines or tear the last one, which the reader skips and names. An event the disk refuses (a full disk: the
fault itself) waits in memory and is written, with its own time, before the next one that gets through.
Peers can cause events (each manifest they publish is accepted), so past ROTATE_BYTES the file becomes
`events.jsonl.1` (replacing the older one): the trail keeps the newest events, at most twice that in bytes.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ffnode.artifacts.charter import Membership
    from ffnode.artifacts.manifest import Manifest
    from ffnode.artifacts.revocation import Revocation
    from ffnode.artifacts.store import Store, StoreEvent

log = logging.getLogger("ffnode.events")

EVENTS_FILE = "events.jsonl"
ROTATE_BYTES = 16 * 2**20  # about 40,000 events a file; with the one rotated file, at most 32 MiB in all
UNWRITTEN_MAX = 1024  # events held in memory while the disk refuses them; older ones beyond are lost (and counted)
OPERATOR = "operator"  # the actor of what a person did through the CLI (block, quarantine)
EVENTS = (
    "published",
    "accepted",
    "revoked",
    "left",
    "blocked",
    "unblocked",
    "quarantined",
    "unquarantined",
    "fault",
    "fault_cleared",
    "admitted",
    "removed",
)
# a trust list of config.toml -> (event when an entry is added, when one is taken off, the field naming the entry)
TRUST_LISTS = {
    "denied_publishers": ("blocked", "unblocked", "peer"),
    "quarantined": ("quarantined", "unquarantined", "artifact"),
}


def iso_time(ts: float | None = None) -> str:
    """A Unix time (now if None) as ISO 8601 in UTC with milliseconds, e.g. 2026-12-06T10:00:00.123Z."""
    moment = datetime.now(UTC) if ts is None else datetime.fromtimestamp(ts, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def manifest_fields(m: Manifest) -> dict[str, Any]:
    """What an event says of one artifact: its ID, kind and owner, and a factory's class by name."""
    fields: dict[str, Any] = {"artifact": m.id, "kind": m.kind, "owner": m.owner}
    if m.kind == "factory" and m.classes and 0 <= m.classes[0] < len(m.class_list):
        fields["class"] = m.class_list[m.classes[0]]
    return fields


def membership_event(m: Membership) -> str:
    return "admitted" if m.action == "admit" else "removed"


def membership_fields(m: Membership) -> dict[str, Any]:
    """What an event says of a membership message: its ID, the peer, its seq and the founders who signed it."""
    return {"membership": m.id, "peer": m.peer, "seq": m.seq, "signers": sorted(m.signers)}


def revocation_fields(r: Revocation) -> dict[str, Any]:
    """What an event says of a revocation: its ID, the IDs it withdraws, their owner (its signer) and why."""
    return {"revocation": r.id, "ids": list(r.ids), "owner": r.owner, "reason": r.reason}


class EventLog:
    """Appends events to HOME/events.jsonl; safe from any thread, and beside other processes appending."""

    def __init__(self, home: Path) -> None:
        self.path = home / EVENTS_FILE
        self._lock = threading.Lock()
        self._unwritten: deque[bytes] = deque()  # encoded lines the disk has not taken yet, oldest first
        self._lost = 0  # events dropped from a full `_unwritten`

    def record(self, event: str, actor: str, **fields: Any) -> None:
        """Append one event. Never raises: the change it records has happened whether or not the disk takes it."""
        line = json.dumps({"time": iso_time(), "event": event, "actor": actor, **fields}, default=str) + "\n"
        with self._lock:
            if len(self._unwritten) >= UNWRITTEN_MAX:
                self._unwritten.popleft()
                self._lost += 1
            self._unwritten.append(line.encode())
            failing = len(self._unwritten) > 1
            try:
                self._append()
            except OSError as exc:
                if not failing:
                    log.warning("could not record a %s event in %s (%s): kept until the disk takes it", event,
                                self.path, exc)  # fmt: skip
                return
            if failing:
                lost = f"; {self._lost} older ones were lost" if self._lost else ""
                log.info("%s takes events again: wrote the ones kept meanwhile%s", self.path, lost)
                self._lost = 0

    def trust_changed(self, field: str, before: Iterable[str], after: Iterable[str]) -> None:
        """Record each entry added to or taken off the trust list `field` (TRUST_LISTS), as the operator's act."""
        added, removed, key = TRUST_LISTS[field]
        old, new = set(before), set(after)
        for value in sorted(new - old):
            self.record(added, OPERATOR, **{key: value})
        for value in sorted(old - new):
            self.record(removed, OPERATOR, **{key: value})

    def watch_trust(self, store: Store) -> None:
        """Record every trust change the running node applies (`ffnode block` and `quarantine`, or anything else that
        edits config.toml and asks the node to reload it): the trust lists before and after it. Of a stopped node,
        the CLI records its own edit, so each is recorded once."""
        applied = store.trust  # what the node applied before the change

        def on_change(event: StoreEvent) -> None:
            nonlocal applied
            if event.kind != "trust":
                return
            before, applied = applied, store.trust
            self.trust_changed("denied_publishers", before.denied, applied.denied)
            self.trust_changed("quarantined", before.quarantined, applied.quarantined)

        store.listen(on_change)

    def _append(self) -> None:
        """Write every unwritten line to the current file, rotating it first if it is full; after a torn last line
        (a crash, a full disk), on a line of its own. The file lock makes one process rotate while the others wait,
        and lets none write into the file it renames meanwhile."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)  # read: its last byte
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                size = os.fstat(fd).st_size
                if not _names(self.path, fd):
                    continue  # another process rotated it between our open and our lock: open the new one
                if size and size + sum(map(len, self._unwritten)) > ROTATE_BYTES:
                    os.replace(self.path, self.path.with_name(EVENTS_FILE + ".1"))
                    continue
                torn = size > 0 and os.pread(fd, 1, size - 1) != b"\n"
                while self._unwritten:
                    data = (b"\n" if torn else b"") + self._unwritten[0]
                    if os.write(fd, data) < len(data):
                        raise OSError(errno.ENOSPC, "the disk took only part of a line")
                    torn = False
                    self._unwritten.popleft()
                return
            finally:
                os.close(fd)


def _names(path: Path, fd: int) -> bool:
    """Whether `path` still names the file open as `fd`."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def parse_time(text: str) -> datetime:
    """An ISO 8601 time; one without a zone is UTC. ValueError if it is not one."""
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def read_events(
    home: Path,
    limit: int | None = None,
    since: datetime | None = None,
    event: str | None = None,
    on_damaged: Callable[[str], None] = log.warning,
) -> list[dict[str, Any]]:
    """The events recorded in `home`, oldest first (newest last), from the rotated file and the current one; only
    those after `since` (a naive time is UTC) and of kind `event` if given; of those, the newest `limit`. Readable
    whether the node runs or not. A line that is not a JSON object with a time (torn by a crash or a full disk) is
    skipped, and named through `on_damaged` ("events.jsonl line 7: ...")."""
    since = None if since is None else (since if since.tzinfo is not None else since.replace(tzinfo=UTC))
    if limit is not None and limit <= 0:
        return []
    found: list[dict[str, Any]] = []  # newest first: read from the end, so `limit` parses only what it returns
    for path, data in reversed(_read_both(home / EVENTS_FILE)):
        lines = data.split(b"\n")
        for n in range(len(lines), 0, -1):
            line = lines[n - 1]
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
                if not isinstance(doc, dict):
                    raise ValueError(f"a JSON {type(doc).__name__}, not an object")
                moment = parse_time(doc["time"])
            except (ValueError, KeyError, TypeError) as exc:
                on_damaged(f"{path.name} line {n}: skipped, it is not a whole event ({exc})")
                continue
            if (since is None or moment > since) and (event is None or doc.get("event") == event):
                found.append(doc)
                if limit is not None and len(found) == limit:
                    return found[::-1]
    return found[::-1]


def _read_both(current: Path) -> list[tuple[Path, bytes]]:
    """The rotated file's bytes, then the current one's. Each is open (or absent), and still named as it was, before
    either is read: a rotation meanwhile neither hides nor repeats events."""
    paths = (current.with_name(EVENTS_FILE + ".1"), current)
    while True:
        files: dict[Path, Any] = {}
        for path in paths:
            try:
                files[path] = open(path, "rb")  # noqa: SIM115 - closed below, once both are open
            except FileNotFoundError:
                continue
        try:
            if all(_names(p, files[p].fileno()) if p in files else not p.exists() for p in paths):
                return [(path, f.read()) for path, f in files.items()]
        finally:
            for f in files.values():
                f.close()
