"""The node's log: a repeated warning is written once a minute with its count; py-libp2p's records reach the node's
handlers, its per-connection ones only at DEBUG, folded onto one line."""

from __future__ import annotations

import logging

import pytest

from ffnode import logs


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.name}: {record.getMessage()}")


def test_a_repeated_warning_is_written_once_a_minute_with_its_count(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(logs.time, "monotonic", lambda: now[0])
    out = Lines()
    out.addFilter(logs.Repeats())
    log = logging.getLogger("ffnode.test_logs")
    log.addHandler(out)
    log.propagate = False
    log.setLevel(logging.INFO)
    try:
        for _ in range(5):
            log.warning("sync with %s failed: %s", "peerA", "timeout")
        log.warning("sync with %s failed: %s", "peerB", "timeout")  # another peer: its own line
        log.info("sync with %s failed: %s", "peerA", "timeout")  # below WARNING: never held back
        log.warning("sync with %s failed: %s", "peerA", "refused")  # other words: written
        now[0] += logs.REPEAT_S - 1
        log.warning("sync with %s failed: %s", "peerA", "timeout")  # the same words within the minute
        now[0] += 2
        log.warning("sync with %s failed: %s", "peerA", "timeout")
    finally:
        log.removeHandler(out)
    assert out.lines == [
        "WARNING ffnode.test_logs: sync with peerA failed: timeout",
        "WARNING ffnode.test_logs: sync with peerB failed: timeout",
        "INFO ffnode.test_logs: sync with peerA failed: timeout",
        "WARNING ffnode.test_logs: sync with peerA failed: refused",
        "WARNING ffnode.test_logs: sync with peerA failed: timeout (5 more like this in the last 61 s)",
    ]


def test_the_keys_remembered_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "REPEAT_KEYS", 8)
    f = logs.Repeats()
    for i in range(100):  # a peer ID each: a flood of fresh keys costs at most REPEAT_KEYS entries
        f.filter(logging.makeLogRecord({"levelno": logging.WARNING, "msg": "x %s", "args": (f"p{i}",)}))
    assert len(f._seen) == 8


def test_library_records_reach_the_nodes_handlers_and_per_connection_ones_only_at_debug() -> None:
    import libp2p  # noqa: F401 - its import sets its logger apart, as in the node

    root, out = logging.getLogger(), Lines()
    level = root.level
    root.addHandler(out)
    try:
        for debug in (False, True):
            root.setLevel(logging.DEBUG if debug else logging.INFO)
            logs.adopt_library_logs()
            out.lines.clear()
            logging.getLogger("libp2p.transport.tcp.tcp").error("Failed to open TCP stream: %s", "refused")
            logging.getLogger("libp2p.host.basic_host").error("Failed to open stream to peer X:\n  Error: reset\n  a")
            logging.getLogger("libp2p.pubsub.gossipsub").warning("something the operator should see")
            logging.getLogger("libp2p.pubsub.gossipsub").info("chatter")
            seen = [line for line in out.lines if "libp2p" in line]
            if debug:
                assert seen == [
                    "DEBUG libp2p.transport.tcp.tcp: Failed to open TCP stream: refused",
                    "DEBUG libp2p.host.basic_host: Failed to open stream to peer X: Error: reset",
                    "WARNING libp2p.pubsub.gossipsub: something the operator should see",
                    "INFO libp2p.pubsub.gossipsub: chatter",
                ], seen
            else:
                assert seen == ["WARNING libp2p.pubsub.gossipsub: something the operator should see"], seen
    finally:
        root.removeHandler(out)
        root.setLevel(level)
        logging.getLogger("libp2p").setLevel(logging.WARNING)
