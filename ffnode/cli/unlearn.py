"""Unlearning commands: `ffnode revoke`, `ffnode leave`, `ffnode verify-unlearning`.

`revoke` and `leave` work on a running node (through its control socket) and on a stopped one: then the
revocation is signed into its store with the key in its home, and its peers get it when it next starts."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from ffnode.cli.init import RESIZED_DATA
from ffnode.cli.output import HomeOption, JsonOption, abort, emit_json, err, table
from ffnode.config import Config
from ffnode.daemon import control


@contextlib.contextmanager
def _stopped(home: Path) -> Iterator[bool]:
    """True, holding the home's lock (no node starts meanwhile), when no node runs in `home`; False when one does
    (it holds the lock): then the command goes through its control socket."""
    Config.load(home)  # not a node's home: say so before making a lock file there
    lock = control.lock_home(home)
    if lock is None:
        yield False
        return
    with lock:
        yield True


def _call(home: Path, cmd: str, args: dict[str, Any] | None = None, timeout: float = 30.0) -> Any:
    try:
        return control.call(home, cmd, args, timeout=timeout)
    except control.NotRunning:  # it holds the lock but does not answer yet
        abort(f"the node at {home} is starting or stopping: run this again once it is up, or once it has stopped")


def _derived(home: Path) -> list[str]:
    """What the node holds under work/ (derived from the site's data or from factories), relative to the home:
    each entry, and each synthetic set's files."""
    work = home / "work"
    if not work.is_dir():
        return []
    found: list[str] = []
    for entry in sorted(work.iterdir()):
        inside = sorted(entry.iterdir()) if entry.name == "synth" and entry.is_dir() else [entry]
        found += [str(p.relative_to(home)) for p in inside]
    return found


def revoke(
    ids: list[str] = typer.Argument(..., help="Artifact IDs (or unique prefixes) this node published."),
    home: Path = HomeOption,
    reason: str = typer.Option("revoked by operator", "--reason"),
    as_json: bool = JsonOption,
) -> None:
    """Withdraw some of this node's artifacts everywhere; experts derived from them are retrained. On a stopped
    node the revocation is signed into its store now and reaches its peers when it next starts."""
    with _stopped(home) as stopped:
        if stopped:
            from ffnode.daemon.unlearn import offline

            unlearning = offline(home)
            try:
                r = asyncio.run(unlearning.revoke([unlearning.store.resolve(i) for i in ids], reason=reason))
            except ValueError as exc:  # already revoked
                abort(str(exc))
            result = {"revocation": r.id, "ids": r.ids}
        else:
            result = _call(home, "revoke", {"ids": ids, "reason": reason})
    result["node_running"] = not stopped
    if as_json:
        emit_json(result)
    elif stopped:
        err.print(
            f"revoked {len(result['ids'])} artifact(s) in the stopped node's store; revocation "
            f"{result['revocation'][:12]} reaches its peers when it next starts (ffnode start --home {home})"
        )
    else:
        err.print(f"revoked {len(result['ids'])} artifact(s); revocation {result['revocation'][:12]} gossiped")


def leave(home: Path = HomeOption, as_json: bool = JsonOption) -> None:
    """The right to be forgotten: revoke everything this node ever published, delete what it derived from the
    site's data (work/: factory checkpoints and snapshots, audit records, synthetic sets), and stop taking part."""
    before = _derived(home)
    with _stopped(home) as stopped:
        if stopped:
            from ffnode.daemon.unlearn import offline

            revocations = asyncio.run(offline(home).leave())
            result = {"revocations": [r.id for r in revocations], "ids": [i for r in revocations for i in r.ids]}
        else:
            result = _call(home, "leave", timeout=120.0)  # it waits for a training run to stop
    remaining = _derived(home)
    data = Config.load(home).data.spec
    result |= {
        "node_running": not stopped,
        "deleted": [p for p in before if p not in remaining],
        "remaining": remaining,
        "data": data,
    }
    if as_json:
        emit_json(result)
        return
    later = "" if not stopped else "; its peers get the revocations when it next starts"
    err.print(f"left the federation: {len(result['ids'])} artifact(s) revoked{later}")
    work = escape(str(home / "work"))
    err.print(f"deleted {len(result['deleted'])} file(s) and folder(s) derived from the site's data under {work}")
    if remaining:
        err.print(f"[yellow]still there, delete them by hand:[/] {escape(' '.join(str(home / p) for p in remaining))}")
    copy = " (a resized copy `ffnode init --resize` made of the site's images: delete it once no node needs it)"
    made = copy if Path(data).resolve() == (home / RESIZED_DATA).resolve() else ""
    err.print(
        f"not touched: the site's data ({escape(data)}){made}; the store keeps the revoked factories' signed "
        "manifests (no weights, no images): peers need them to refuse those factories"
    )


def verify_unlearning(home: Path = HomeOption, as_json: bool = JsonOption) -> None:
    """Retrain the current expert from its recorded lineage and compare bytes; check that nothing answering
    queries derives from a revoked artifact (peers' tainted experts held but left out are listed, not failed).
    Names the files `ffnode export` wrote that no longer answer as the node does (`stale_exports`: re-export
    them, or delete them); they are the operator's copies, so they are named, not failed."""
    r = control.call(home, "verify_unlearning", timeout=None)
    r["exports"] = _exports(home)
    r["stale_exports"] = [e["path"] for e in r["exports"] if e["stale"] and e["present"]]
    passed = r["bitwise_identical"] is not False and r["live_lineage_clean"] and "error" not in r
    if as_json:
        emit_json(r)
        raise typer.Exit(0 if passed else 1)
    table(
        "unlearning proof",
        ["check", "result"],
        [
            ["revoked artifacts known", len(r["revoked_ids"])],
            ["live experts", r["live_experts"]],
            ["nothing that answers queries derives from a revoked ID", r["live_lineage_clean"]],
            ["peers' tainted experts held but left out", len(r["excluded_tainted_experts"])],
            ["current expert", (r["expert"] or "-")[:12]],
            ["retrained bitwise identical", r["bitwise_identical"]],
            ["exports that answer otherwise than the node (stale: re-export)", len(r["stale_exports"])],
        ],
    )
    for e in r["exports"]:
        if e["stale"] and e["present"]:
            err.print(f"[yellow]stale: re-export[/] {escape(e['path'])}: {escape('; '.join(e['why']))}")
    if "error" in r:
        err.print(f"[red]error:[/] {r['error']}")
    raise typer.Exit(0 if passed else 1)


def _exports(home: Path) -> list[dict]:
    """The home's recorded exports (`ffnode export`), each judged against its store now."""
    from ffnode.cli.export import home_store
    from ffnode.cli.query import image_shape
    from ffnode.export import check_exports

    config = Config.load(home)
    store, _ = home_store(home, config)
    return check_exports(home, store, len(config.federation.classes), image_shape(config))
