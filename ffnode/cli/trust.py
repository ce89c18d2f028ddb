"""Operator control over whom this node trusts: `ffnode block PEER` a publisher, `ffnode quarantine ID` one
artifact, each undone with `--undo`. Each edits config.toml (so it survives restarts) and, when the node runs, makes it
apply the change at once to everything it holds: a blocked publisher's or quarantined artifact's modules stop
being used and served, and experts trained from them are retrained without them. Revocations from a blocked
publisher are still honoured (it may always withdraw what it published). Each change is recorded in the home's
events (`ffnode events`), with the operator as its actor."""

from __future__ import annotations

from pathlib import Path

import typer

from ffnode.cli.output import HomeOption, JsonOption, abort, emit_json, err
from ffnode.config import TRUST_LISTS, Config, edit_trust
from ffnode.daemon import control
from ffnode.events import EventLog
from ffnode.identity import check_blockable, load_identity


def _apply(home: Path, what: str, value: str, add: bool, done: str, as_json: bool) -> None:
    """Put `value` on (or take it off) the trust list `what` names (block, quarantine) in config.toml, and have the
    running node apply it. The running node records the change in its events; of a stopped one, this command does."""
    field = TRUST_LISTS[what]
    before = list(getattr(Config.load(home).federation, field))
    config = edit_trust(home, what, value, add)  # ConfigError if --undo names something not on the list
    try:
        control.call(home, "reload_trust")
        running = True
    except control.NotRunning:  # stopped (or killed): the node reads the config when it starts
        running = False
        EventLog(home).trust_changed(field, before, getattr(config.federation, field))
    fed = config.federation
    if as_json:
        emit_json({"denied_publishers": fed.denied_publishers, "quarantined": fed.quarantined, "applied": running})
    else:
        err.print(f"{done}; " + ("the running node applied it" if running else "applies when the node starts"))


def _peer(home: Path, peer: str) -> str:
    try:
        check_blockable(peer, load_identity(home).peer_id)
    except ValueError as exc:
        abort(str(exc))
    return peer


def block(
    peer: str = typer.Argument(..., help="Peer ID of a publisher (as `ffnode peers` shows it)."),
    undo: bool = typer.Option(False, "--undo", help="Trust the publisher again."),
    home: Path = HomeOption,
    as_json: bool = JsonOption,
) -> None:
    """Stop using and serving everything this publisher signed (its revocations still count); --undo reverts."""
    peer = peer if undo else _peer(home, peer)
    _apply(home, "block", peer, not undo, f"{'un' if undo else ''}blocked {peer}", as_json)


def quarantine(
    artifact: str = typer.Argument(..., help="Artifact ID or unique prefix (ffnode artifacts)."),
    home: Path = HomeOption,
    undo: bool = typer.Option(False, "--undo", help="Use the artifact again."),
    as_json: bool = JsonOption,
) -> None:
    """Keep one artifact but never use or serve it (e.g. a factory whose samples look wrong); --undo reverts."""
    from ffnode.artifacts.store import Store

    config = Config.load(home)
    try:
        aid = Store(home / "store", federation=config.federation.name, classes=config.federation.classes).resolve(
            artifact
        )
    except KeyError as exc:
        abort(f"{exc.args[0]}: pick an ID from `ffnode artifacts --home {home}`")
    done = "released from quarantine" if undo else "quarantined"
    _apply(home, "quarantine", aid, not undo, f"{done}: {aid[:12]}", as_json)
