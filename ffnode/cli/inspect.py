"""Inspection commands: `ffnode id`, `status`, `peers`, `artifacts` (each with --json)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape

from ffnode.artifacts.store import Store, trust_of
from ffnode.cli.output import HomeOption, JsonOption, ago, emit_json, err, listing, out, short, size, styled, table
from ffnode.config import Config
from ffnode.daemon import control
from ffnode.identity import load_identity


def node_id(home: Path = HomeOption, as_json: bool = JsonOption) -> None:
    """Print this node's peer ID and its full multiaddrs (what peers put in --bootstrap)."""
    identity, config = load_identity(home), Config.load(home)
    runtime = home / control.RUNTIME_FILE
    running = runtime.exists()
    if running:
        addrs = json.loads(runtime.read_text())["addrs"]
    else:  # configured addresses; a port 0 is only known once the node runs
        addrs = [f"{a}/p2p/{identity.peer_id}" for a in config.network.listen]
    if as_json:
        emit_json({"peer_id": identity.peer_id, "addrs": addrs, "running": running})
        return
    out.print(identity.peer_id)
    for a in addrs:
        out.print(a)
    if not running:
        err.print("(node not running: configured addresses shown)")


def status(home: Path = HomeOption, as_json: bool = JsonOption) -> None:
    """What the running node is doing: phase, progress, artifacts, peers, traffic."""
    s = control.call(home, "status")
    if as_json:
        emit_json(s)
        return
    done, total = s["progress"]
    rows = [
        ["peer", s["peer_id"]],
        ["federation", f"{s['federation']} ({len(s['classes'])} classes)"],
        ["local classes", ", ".join(s["local_classes"])],
        [
            "phase",
            s["phase"]
            + (f" - {s['task']}" if s["task"] else "")
            + (f" {done}/{total}" if total else "")
            + (f", about {eta:.0f} s left" if (eta := s.get("eta_s")) is not None else ""),
        ],  # fmt: skip
        ["missing classes", ", ".join(s["missing_classes"]) or "-"],
        ["artifacts", ", ".join(f"{k}: {v}" for k, v in sorted(s["artifacts"].items())) or "-"],
        ["current expert", short(s["current_expert"])],
        ["connected peers", s["connected_peers"]],
        ["bytes sent", size(s["bytes_sent"])],
        ["uptime", f"{s['uptime_s']:.0f} s"],
    ]
    if s.get("fault"):
        rows.insert(3, [styled("[red]fault[/]"), s["fault"] + " (accepting nothing until it clears)"])
    if s.get("store_damaged"):
        rows.append(
            [styled("[yellow]damaged at start[/]"), "\n".join(s["store_damaged"]) + "\n(quarantined; fetched again)"]
        )
    for name, why in s.get("withheld_factories", {}).items():
        rows.append(
            [styled(f"[yellow]factory {escape(name)} withheld[/]"), f"its privacy audit fails: {why} (ffnode audit)"]
        )
    if s.get("own_missing"):
        rows.append([styled("[red]own artifacts missing[/]"), ", ".join(short(i) for i in s["own_missing"]) +
                     " (their blobs were damaged; waiting for a peer that holds them)"])  # fmt: skip
    table(f"ffnode {home}", ["", ""], rows)


def peers(home: Path = HomeOption, as_json: bool = JsonOption) -> None:
    """Peers this node knows: addresses, connection, how it learnt each, what each published, whether it is trusted."""
    columns = ["peer", "addresses", "connected", "learnt", "last seen", "published", "accepted/rejected", "trusted"]
    listing(control.call(home, "peers"), as_json, "peers", columns, _peer_row)


def _peer_row(p: dict) -> list:
    rejection = f"\n{p['last_rejection'][:60]}" if p["last_rejection"] else ""
    return [
        p["peer_id"],
        "\n".join(p["addrs"] or p["record_addrs"]),
        "yes" if p["connected"] else ("no" + (f" ({p['dial_failures']} failed dials)" if p["dial_failures"] else "")),
        p["learnt"] + (" (member)" if p["member"] else ""),
        ago(p["last_seen"]),
        ", ".join(f"{v} {k}" for k, v in sorted(p["published"].items())) or "-",
        f"{p['accepted']}/{p['rejected']}{rejection}",
        "yes" if p["trusted"] else styled("[red]blocked[/]"),
    ]


def artifacts(
    home: Path = HomeOption,
    as_json: bool = JsonOption,
    no_verify: bool = typer.Option(False, "--no-verify", help="Do not hash the blobs (verified: not checked)."),
) -> None:
    """Every artifact this node knows, with its state (live, pending, revoked, untrusted, quarantined); each held
    blob's hash is checked (skip with --no-verify). Damaged store files are skipped and named on stderr."""
    config = Config.load(home)
    trust = trust_of(config, load_identity(home).peer_id)
    store = Store(home / "store", federation=config.federation.name, trust=trust)
    for damaged in store.damaged:
        err.print(f"[yellow]damaged store file skipped[/]: {damaged}")
    columns = ["id", "kind", "owner", "classes", "size", "state", "verified"]
    rows = store.rows(config.federation.classes, verify=not no_verify)
    listing(rows, as_json, "artifacts", columns, _artifact_row)


def _artifact_row(r: dict) -> list:
    classes = ",".join(r["classes"]) if len(r["classes"]) <= 3 else f"{len(r['classes'])} classes"
    state = r["state"] + (f" ({r['reason']})" if r["reason"] else "")
    return [
        short(r["id"]),
        r["kind"],
        short(r["owner"], 16),
        classes,
        size(r["size"]),
        state,
        {True: "yes", False: "no", None: "not checked"}[r["verified"]],
    ]
