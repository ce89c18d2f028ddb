"""`ffnode start`: run the daemon in the foreground until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
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
from ffnode.identity import load_identity


def start(
    home: Path = HomeOption,
    log_level: str = typer.Option("INFO", "--log-level", help="DEBUG, INFO, WARNING or ERROR."),
) -> None:
    """Start the node: listen, gossip, learn and answer queries until stopped."""
    if log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        abort(f"--log-level {log_level!r}: use DEBUG, INFO, WARNING or ERROR")
    if err.is_terminal:
        handler: logging.Handler = RichHandler(
            console=err, show_path=False, rich_tracebacks=True, tracebacks_show_locals=False
        )
        logging.basicConfig(level=log_level.upper(), format="%(name)s: %(message)s", handlers=[handler])
    else:  # a log file: one unwrapped line per record, greppable
        logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = Config.load(home)  # a bad home or config fails here in a moment, before torch and libp2p load
    load_identity(home)
    if control.lock_held(home):
        abort(f"another node is already running in {home}: stop it first")
    from ffnode.net.host import check_listen

    check_listen(config.network.listen)  # a port another node listens on: refused now, not after the data loads
    from ffnode.daemon.node import Node

    node = Node(home)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await node.run(stop)

    asyncio.run(main())
    err.print("node stopped")
    # Worker threads may still be finishing work the node abandoned (a sampling batch, a hash): waiting for them
    # once held the exit 10-14 s under load. Every write of the node is crash-safe, so leave now.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
