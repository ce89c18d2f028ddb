"""Inspection commands: `ffnode id`, `status`, `peers`, `artifacts` (each with --json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from ffnode.artifacts.store import Store, trust_of
from ffnode.cli.output import HomeOption, JsonOption, ago, emit_json, err, listing, out, short, size, styled, table
from ffnode.config import Config
from ffnode.daemon import control
from ffnode.identity import load_identity
from ffnode.privacy.policy import AuditPolicy, audit_verdict

NOT_RUNNING = 3  # the exit code of `ffnode status` when no node answers (LSB's "program is not running")


def node_id(home: Path = HomeOption, as_json: bool = JsonOption) -> None:
    """Print this node's peer ID and its full multiaddrs (what peers put in --bootstrap).

    Running or not is asked of the node itself (its control socket answers, or a process holds its lock), never
    read from `node.json`, which a killed node leaves behind."""
    identity, config = load_identity(home), Config.load(home)
    addrs, state = None, control.node_state(home)
    if state == "running":
        try:
            addrs = control.call(home, "runtime", timeout=10)["addrs"]
        except control.ControlError:  # it stopped meanwhile, or predates `runtime`: its node.json then
            addrs = _runtime_addrs(home)
    if addrs is None:  # configured addresses; a port 0 is only known once the node runs
        addrs = [f"{a}/p2p/{identity.peer_id}" for a in config.network.listen]
    if as_json:
        emit_json({"peer_id": identity.peer_id, "addrs": addrs, "running": state != "stopped", "state": state})
        return
    out.print(identity.peer_id)
    for a in addrs:
        out.print(a)
    if state != "running":
        err.print(f"(node {'starting' if state == 'starting' else 'not running'}: configured addresses shown)")


def _runtime_addrs(home: Path) -> list[str] | None:
    try:
        return json.loads((home / control.RUNTIME_FILE).read_text())["addrs"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def status(home: Path = HomeOption, as_json: bool = JsonOption) -> None:
    """What the running node is doing: phase, progress, artifacts, peers, traffic, and the classes its queries
    cannot answer. Of a stopped node (or one still starting), what its store holds and would answer, with exit
    code 3 (as `systemctl status` says "not running"), so that scripts can still wait on it."""
    try:
        s = control.call(home, "status")
    except control.NotRunning:
        s = stopped_status(home, control.node_state(home))
    if as_json:
        emit_json(s)
    elif not s["running"]:
        _print_stopped(home, s)
    else:
        _print_running(home, s)
    if not s["running"]:
        raise typer.Exit(NOT_RUNNING)


def _print_running(home: Path, s: dict) -> None:
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
        _uncovered_row(s),
        ["artifacts", ", ".join(f"{k}: {v}" for k, v in sorted(s["artifacts"].items())) or "-"],
        ["current expert", short(s["current_expert"])],
        ["connected peers", s["connected_peers"]],
        ["bytes sent", size(s["bytes_sent"])],
        ["uptime", f"{s['uptime_s']:.0f} s"],
        ["HTTP API", s.get("api") or "off ([api] listen in config.toml)"],
    ]
    if s.get("fault"):
        rows.insert(3, [styled("[red]fault[/]"), s["fault"] + " (accepting nothing until it clears)"])
    if s.get("store_damaged"):
        rows.append(
            [styled("[yellow]damaged at start[/]"), "\n".join(s["store_damaged"]) + "\n(quarantined; fetched again)"]
        )
    for name, why in s.get("withheld_factories", {}).items():
        rows.append([styled(f"[yellow]factory {escape(name)} withheld[/]"), f"{why} (ffnode audit)"])
    if s.get("own_missing"):
        rows.append([styled("[red]own artifacts missing[/]"), ", ".join(short(i) for i in s["own_missing"]) +
                     " (their blobs were damaged; waiting for a peer that holds them)"])  # fmt: skip
    table(f"ffnode {home}", ["", ""], rows)


def stopped_status(home: Path, state: str) -> dict[str, Any]:
    """The status document of a node that does not answer, from its home alone: state "stopped" (or
    "starting": a process holds its lock), what its store holds and what a query would be answered with
    (`ffnode query` answers from the store then)."""
    from ffnode.cli.query import image_shape
    from ffnode.voters import Voters

    config, me = Config.load(home), load_identity(home).peer_id
    classes = config.federation.classes
    store = Store(
        home / "store", federation=config.federation.name, classes=config.federation.classes, trust=trust_of(config, me)
    )
    counts: dict[str, int] = {}
    for e in store.entries():
        counts[f"{e.manifest.kind}_{e.state}"] = counts.get(f"{e.manifest.kind}_{e.state}", 0) + 1
    own = [m for m in store.live("expert") if m.owner == me]
    cover = Voters(store, len(classes), image_shape(config)).coverage(classes, config.learning.poe_rule)
    return {
        "running": False,
        "state": state,
        "phase": state,
        "peer_id": me,
        "federation": config.federation.name,
        "classes": classes,
        "artifacts": counts,
        "current_expert": max(own, key=lambda m: m.seq).id if own else None,
        "answering_experts": cover["experts"],
        "uncovered_classes": cover["uncovered_classes"],
        "uncovered_why": cover["uncovered_why"],
        "query_refusal": cover["refusal"],
        "store_damaged": store.damaged,
    }


def _uncovered_row(s: dict) -> list:
    """The row naming what queries cannot answer: every class no answering expert covers, and why."""
    if s["answering_experts"] == 0:
        return ["uncovered classes", "all: no live expert yet"]
    if not s["uncovered_classes"]:
        return ["uncovered classes", "-"]
    lines = [f"{name}: {s['uncovered_why'][name]}" for name in s["uncovered_classes"]]
    lines.append("(no query can answer an image of these right)")
    if s["query_refusal"]:
        lines.append(f"queries refused: {s['query_refusal']}")
    return [styled("[red]uncovered classes[/]"), "\n".join(lines)]


def _print_stopped(home: Path, s: dict) -> None:
    state = "starting (its control socket is not up yet)" if s["state"] == "starting" else "stopped"
    rows = [
        ["peer", s["peer_id"]],
        ["federation", f"{s['federation']} ({len(s['classes'])} classes)"],
        [styled("[yellow]state[/]"), state + "; `ffnode query` answers from its store"],
        _uncovered_row(s),
        ["artifacts", ", ".join(f"{k}: {v}" for k, v in sorted(s["artifacts"].items())) or "-"],
        ["current expert", short(s["current_expert"])],
    ]
    if s["store_damaged"]:
        rows.append([styled("[yellow]damaged store files[/]"), "\n".join(s["store_damaged"])])
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
    store = Store(home / "store", federation=config.federation.name, classes=config.federation.classes, trust=trust)
    for damaged in store.damaged:
        err.print(f"[yellow]damaged store file skipped[/]: {damaged}")
    columns = ["id", "kind", "owner", "classes", "size", "state", "verified", "privacy audit"]
    rows = store.rows(config.federation.classes, verify=not no_verify)
    policy = AuditPolicy.of(config.privacy)
    for r in rows:  # each factory's audit judged under this node's thresholds (ffnode audit: the figures)
        r["privacy"] = audit_verdict(r["meta"], policy) if r["kind"] == "factory" else None
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
        _privacy(r["privacy"]),
    ]


def _privacy(p: dict | None) -> str:
    if p is None:
        return "-"
    return p["verdict"] + (f" (power {p['power']:.0%})" if p["verdict"] == "inconclusive" else "")
