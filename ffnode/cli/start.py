"""`ffnode start`: run the daemon in the foreground until SIGINT/SIGTERM, logging to stderr as text (for people
and grep) or as JSON lines (for log collectors: each record's peer and artifact IDs are fields of their own)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path

import typer
from rich.logging import RichHandler

from ffnode.cli.output import HomeOption, abort, err
from ffnode.config import Config
from ffnode.daemon import control
from ffnode.events import iso_time
from ffnode.identity import load_identity
from ffnode.logs import Repeats, adopt_library_logs

log = logging.getLogger("ffnode.node")

# what every LogRecord carries; anything else on a record came from the call's `extra` (peer, artifact, ids, ...)
_RECORD_FIELDS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonLines(logging.Formatter):
    """One JSON object a record, on one line: time (ISO 8601, UTC), level, logger, message (as the text log
    words it), then the fields the call passed as `extra` (the peer and artifact IDs it concerns), and the
    traceback as `exc`."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {"time": iso_time(record.created), "level": record.levelname, "logger": record.name,
               "message": record.getMessage()}  # fmt: skip
        for key, value in record.__dict__.items():
            if key not in _RECORD_FIELDS:
                doc.setdefault(key, value)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return json.dumps(doc, default=str)


def _configure_logging(level: str, as_json: bool) -> None:
    """Every record to stderr: JSON lines; or, on a terminal, rich's; or else one unwrapped greppable line each. A
    warning that repeats (same message, same peer) is written once a minute with its count (ffnode/logs.py)."""
    if as_json:
        handler: logging.Handler = logging.StreamHandler()
        handler.setFormatter(JsonLines())
        logging.captureWarnings(True)  # a library's warning is a record too, not a bare line
    elif err.is_terminal:
        handler = RichHandler(console=err, show_path=False, rich_tracebacks=True, tracebacks_show_locals=False)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(Repeats())
    logging.basicConfig(level=level, handlers=[handler])


def start(
    home: Path = HomeOption,
    log_level: str = typer.Option("INFO", "--log-level", help="DEBUG, INFO, WARNING or ERROR."),
    log_format: str = typer.Option(
        "text", "--log-format", help="text, or json: one JSON object a line, with the peer and artifact IDs as fields."
    ),
) -> None:
    """Start the node: listen, gossip, learn and answer queries until stopped."""
    if log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        abort(f"--log-level {log_level!r}: use DEBUG, INFO, WARNING or ERROR")
    if log_format not in ("text", "json"):
        abort(f"--log-format {log_format!r}: use text or json")
    as_json = log_format == "json"
    _configure_logging(log_level.upper(), as_json)
    config = Config.load(home)  # a bad home or config fails here in a moment, before torch and libp2p load
    load_identity(home)
    if control.lock_held(home):
        abort(f"another node is already running in {home}: stop it first")
    from ffnode.net.host import check_listen

    adopt_library_logs()  # py-libp2p, now imported, set its logger apart from ours

    check_listen(config.network.listen)  # a port another node listens on: refused now, not after the data loads
    from ffnode.daemon.node import Node

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await node.run(stop)

    try:
        node = Node(home)
        asyncio.run(main())
    except Exception:
        if as_json:  # a collector reading only JSON lines still learns why the node ended (stderr says it too)
            log.critical("the node stopped on an error", exc_info=True)
        raise
    if as_json:
        log.info("node stopped")
    else:
        err.print("node stopped")
    # Worker threads may still be finishing work the node abandoned (a sampling batch, a hash): waiting for them
    # once held the exit 10-14 s under load. Every write of the node is crash-safe, so leave now.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
