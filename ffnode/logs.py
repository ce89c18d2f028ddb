"""What the node's log costs an operator: py-libp2p's records in the node's format, one line for what the library
would say at length or per connection attempt, and a repeated warning once a minute with its count.

py-libp2p 0.8.1 stops its records reaching the application's handlers, so its warnings and errors came out as bare
text through logging's last resort: a "Failed to open TCP stream" line (logged at ERROR) for every dial of an
address that does not answer (201 of the 1,250 lines of a 10-site testnet run), an 8-line block for every stream it
could not open. `adopt_library_logs` lets them through to the node's handlers at WARNING, and demotes to DEBUG what
is one connection's fate (ffnode's discovery and sync say what it meant: a dial that failed, a peer that does not
serve sync); the multi-line block becomes its first two lines, joined.

`Repeats` is a handler filter: a WARNING (or worse) with the same logger and the same words (peer, artifact and
reason included) as one written in the last `REPEAT_S` is counted, not written; the next one written
after that says how many were held back. It remembers at most `REPEAT_KEYS` such keys (the least recent forgotten).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict

REPEAT_S = 60.0
REPEAT_KEYS = 1024

# (logger, start of the message) of py-libp2p records about one connection attempt: DEBUG, not WARNING or ERROR
PER_CONNECTION = (
    ("libp2p.transport.tcp.tcp", "Failed to open TCP stream"),
    ("libp2p.network.swarm", "failed to upgrade security"),
    ("libp2p.protocol_muxer.multiselect_client", "MultiselectClient handshake"),
    ("libp2p.host.basic_host", "Failed to open stream to peer"),
)


class _PerConnection(logging.Filter):
    """Demotes one logger's per-connection records to DEBUG (dropped unless the node logs at DEBUG) and folds a
    multi-line message into one line."""

    def __init__(self, starts: tuple[str, ...]) -> None:
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        msg = str(record.msg)
        if msg.startswith(self.starts) and record.levelno > logging.DEBUG:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            if "\n" in msg:
                record.msg, record.args = " ".join(line.strip() for line in record.getMessage().splitlines()[:2]), ()
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


def adopt_library_logs() -> None:
    """Let py-libp2p's records reach the node's handlers (WARNING and up), per-connection ones at DEBUG. Call it
    after the library is imported (its import sets its logger) and after the handlers are configured."""
    lib = logging.getLogger("libp2p")
    lib.propagate = True
    if logging.getLogger().isEnabledFor(logging.DEBUG):
        lib.setLevel(logging.DEBUG)
    else:
        lib.setLevel(logging.WARNING)
    by_logger: dict[str, list[str]] = {}
    for name, start in PER_CONNECTION:
        by_logger.setdefault(name, []).append(start)
    for name, starts in by_logger.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _PerConnection) for f in logger.filters):
            logger.addFilter(_PerConnection(tuple(starts)))


class Repeats(logging.Filter):
    """Writes a warning once per REPEAT_S per (logger, message); counts the rest (any thread)."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: OrderedDict[tuple[str, str, str], tuple[float, int]] = OrderedDict()  # key -> (written, held)
        self._lock = threading.Lock()  # filters run outside the handler's lock

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, str(record.msg), record.getMessage()[:300])  # the same words again, nothing less
        with self._lock:
            return self._admit(record, key, time.monotonic())

    def _admit(self, record: logging.LogRecord, key: tuple[str, str, str], now: float) -> bool:
        written, held = self._seen.get(key, (float("-inf"), 0))
        if now - written < REPEAT_S:
            self._seen[key] = (written, held + 1)
            return False
        if held:
            record.msg = f"{record.msg} ({held} more like this in the last {now - written:.0f} s)"
        self._seen[key] = (now, 0)
        self._seen.move_to_end(key)
        while len(self._seen) > REPEAT_KEYS:
            self._seen.popitem(last=False)
        return True
