"""What each peer has cost this node: messages accepted and rejected, the last reason, and the envelopes already
found bad, so that a peer re-offering one costs no second check.

Every rejection is counted against the peer it came from, and logged with the reason, at most
LOG_REJECTIONS_PER_MINUTE lines per peer (the rest are counted): a peer may cost its own message, never the
node's log. The tables are bounded (`peers_tracked` rows, the least recently seen forgotten first; `bad_items`
envelopes) and safe from any thread: gossip is validated on the network thread, the rest runs on the loop.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass

log = logging.getLogger("ffnode.node")

LOG_REJECTIONS_PER_MINUTE = 20  # per peer; more are counted, not logged
REASON_KINDS = 64  # distinct kinds of rejection counted for the metrics; further kinds count as "other"
_VARYING = re.compile(r"[0-9a-fA-F]{8,}|12D3Koo\w+|\d+(\.\d+)?|'[^']*'")  # IDs, numbers, quoted values


def reason_kind(reason: str) -> str:
    """A rejection's reason without what varies from message to message (IDs, numbers, quoted values), so that
    the same kind of refusal counts under one label however many peers and artifacts it names."""
    return _VARYING.sub("#", reason)[:80]


@dataclass
class PeerState:
    connected: bool = False
    last_seen: float = 0.0
    accepted: int = 0  # messages from this peer that passed every check
    rejected: int = 0
    last_rejection: str = ""
    log_window: float = 0.0  # start of the current minute of rejection logging
    logged: int = 0
    unlogged: int = 0


class Ledger:
    def __init__(self, peers_tracked: int, bad_items: int) -> None:
        self.peers_tracked, self.bad_items = peers_tracked, bad_items
        self.peers: OrderedDict[str, PeerState] = OrderedDict()  # least recently seen first
        self._bad: OrderedDict[bytes, str] = OrderedDict()  # sha256 of rejected envelopes -> why (an LRU)
        self._lock = threading.Lock()
        self.accepted_total = 0  # over every peer, including those the table has forgotten
        self._reasons: Counter[str] = Counter()  # rejections by reason_kind, at most REASON_KINDS kinds

    def peer(self, peer: str) -> PeerState:
        """The peer's row, created if new; the table keeps the `peers_tracked` most recently seen."""
        with self._lock:
            state = self.peers.get(peer)
            if state is None:
                state = self.peers[peer] = PeerState()
                while len(self.peers) > self.peers_tracked:
                    self.peers.popitem(last=False)
            self.peers.move_to_end(peer)
            return state

    def snapshot(self) -> dict[str, PeerState]:
        with self._lock:
            return dict(self.peers)

    def seen(self, peer: str, *, connected: bool | None = None) -> PeerState:
        state = self.peer(peer)
        with self._lock:
            state.last_seen = time.time()
            if connected is not None:
                state.connected = connected
        return state

    def accepted(self, state: PeerState) -> None:
        with self._lock:
            state.accepted += 1
            self.accepted_total += 1

    def reasons(self) -> dict[str, int]:
        """Rejections so far by kind of reason (reason_kind), over every peer."""
        with self._lock:
            return dict(self._reasons)

    def known_bad(self, data: bytes) -> str | None:
        with self._lock:
            return self._bad.get(hashlib.sha256(data).digest())

    def reject(self, peer: str, reason: str, data: bytes | None = None, *, quiet: bool = False) -> None:
        """Count a rejection against the peer; remember the envelope so that a re-offer costs no re-check."""
        state = self.peer(peer)
        with self._lock:
            state.rejected += 1
            state.last_rejection = reason
            kind = reason_kind(reason)
            self._reasons[kind if kind in self._reasons or len(self._reasons) < REASON_KINDS else "other"] += 1
        if data is not None:
            self.remember_bad(data, reason)
        if not quiet and self._log_budget(peer, state):
            log.warning("rejected a message from %s: %s", peer, reason, extra={"peer": peer})

    def remember_bad(self, data: bytes, reason: str) -> None:
        with self._lock:
            self._bad[hashlib.sha256(data).digest()] = reason
            while len(self._bad) > self.bad_items:
                self._bad.popitem(last=False)

    def forget_bad(self) -> None:
        """Forget every envelope found bad: after the federation's members changed, what a non-member sent may be a
        member's now."""
        with self._lock:
            self._bad.clear()

    def _log_budget(self, peer: str, state: PeerState) -> bool:
        """Whether one more rejection of this peer is logged (LOG_REJECTIONS_PER_MINUTE; the rest are counted)."""
        now = time.monotonic()
        with self._lock:
            if now - state.log_window > 60.0:
                if state.unlogged:
                    log.warning("%d more rejections were counted, not logged", state.unlogged, extra={"peer": peer})
                state.log_window, state.logged, state.unlogged = now, 0, 0
            state.logged += 1
            if state.logged > LOG_REJECTIONS_PER_MINUTE:
                state.unlogged += 1
                return False
            return True
