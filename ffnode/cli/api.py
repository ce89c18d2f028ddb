"""`ffnode api-token`: the bearer token the HTTP API ([api] in config.toml) asks of clients beyond loopback and
of every action (revoke, block, quarantine, leave). Made on first use, replaced with `--rotate`; the running node
reads the new one at once."""

from __future__ import annotations

from pathlib import Path

import typer

from ffnode.api.auth import ensure_token, token_path
from ffnode.cli.output import HomeOption, JsonOption, abort, emit_json, err


def api_token(
    home: Path = HomeOption,
    rotate: bool = typer.Option(False, "--rotate", help="Replace the token: clients holding the old one are refused."),
    as_json: bool = JsonOption,
) -> None:
    """Print the node's HTTP API token (made if the home has none)."""
    if not home.is_dir():
        abort(f"no node home at {home}: run `ffnode init --home {home}` first")
    token = ensure_token(home, rotate=rotate)
    if as_json:
        emit_json({"token": token, "file": str(token_path(home)), "rotated": rotate})
        return
    print(token)
    err.print(f"(kept in {token_path(home)}; send it as `Authorization: Bearer <token>`)", highlight=False)
