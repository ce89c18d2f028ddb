"""`ffnode events`: the node's audit trail (events.jsonl in its home), the node running or not."""

from __future__ import annotations

from pathlib import Path

import typer

from ffnode.cli.output import HomeOption, JsonOption, abort, err, listing, short
from ffnode.config import Config
from ffnode.events import EVENTS, parse_time, read_events


def events(
    home: Path = HomeOption,
    as_json: bool = JsonOption,
    limit: int | None = typer.Option(None, "--limit", min=0, help="Only the newest N events (after the filters)."),
    event: str | None = typer.Option(None, "--event", help=f"Only events of this kind: {', '.join(EVENTS)}."),
    since: str | None = typer.Option(None, "--since", help="Only events after this ISO 8601 time (UTC unless given)."),
) -> None:
    """What changed what this node holds or uses, when, and who did it: publications, acceptances, revocations,
    blocks, quarantines, leaving and local faults, oldest first. Damaged lines are skipped and named on stderr."""
    Config.load(home)  # not a node's home: say so, rather than show an empty trail
    if event is not None and event not in EVENTS:
        abort(f"--event {event!r}: use one of {', '.join(EVENTS)}")
    try:
        after = None if since is None else parse_time(since)
    except ValueError:
        abort(f"--since {since!r} is not an ISO 8601 time, like 2026-12-06T10:00:00Z")
    found = read_events(home, limit, after, event, on_damaged=lambda why: err.print(f"[yellow]damaged:[/] {why}"))
    listing(found, as_json, f"events of {home}", ["time", "event", "actor", "what", "details"], _row)


def _row(e: dict) -> list:
    """One event as a table row: what it concerns (an artifact, the IDs a revocation names, a peer), then the rest."""
    if "artifact" in e:
        what = f"{e.get('kind', '')} {short(e['artifact'])}".strip()
    elif "ids" in e:
        ids = e["ids"] if isinstance(e["ids"], list) else []
        what = ", ".join(short(str(i)) for i in ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
    else:
        what = str(e.get("peer", ""))
    shown = ("class", "owner", "via", "state")
    details = [f"{key} {e[key]}" for key in shown if e.get(key) and e[key] != e.get("actor")]
    if e.get("reason"):
        details.append(f"reason: {e['reason']}")
    return [e["time"], e.get("event", "?"), e.get("actor", "?"), what, "\n".join(details)]
