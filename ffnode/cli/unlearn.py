"""Unlearning commands: `ffnode revoke`, `ffnode leave`, `ffnode verify-unlearning`."""

from __future__ import annotations

from pathlib import Path

import typer

from ffnode.cli.output import HomeOption, JsonOption, emit_json, err, table
from ffnode.daemon import control


def revoke(
    ids: list[str] = typer.Argument(..., help="Artifact IDs (or unique prefixes) this node published."),
    home: Path = HomeOption,
    reason: str = typer.Option("revoked by operator", "--reason"),
    as_json: bool = JsonOption,
) -> None:
    """Withdraw some of this node's artifacts everywhere; experts derived from them are retrained."""
    result = control.call(home, "revoke", {"ids": ids, "reason": reason})
    if as_json:
        emit_json(result)
    else:
        err.print(f"revoked {len(result['ids'])} artifact(s); revocation {result['revocation'][:12]} gossiped")


def leave(home: Path = HomeOption, as_json: bool = JsonOption) -> None:
    """The right to be forgotten: revoke everything this node ever published and stop taking part."""
    result = control.call(home, "leave")
    if as_json:
        emit_json(result)
    else:
        err.print(f"left the federation: {len(result['ids'])} artifact(s) revoked")


def verify_unlearning(home: Path = HomeOption, as_json: bool = JsonOption) -> None:
    """Retrain the current expert from its recorded lineage and compare bytes; check that nothing answering
    queries derives from a revoked artifact (peers' tainted experts held but left out are listed, not failed)."""
    r = control.call(home, "verify_unlearning", timeout=None)
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
        ],
    )
    if "error" in r:
        err.print(f"[red]error:[/] {r['error']}")
    raise typer.Exit(0 if passed else 1)
