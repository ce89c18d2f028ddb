"""The `ffnode` command line: one module per command group, registered here."""

from __future__ import annotations

import sys
from typing import NoReturn

import typer

from ffnode.cli import api, audit, charter, events, export, inspect, query, samples, start, trust, unlearn
from ffnode.cli import init as init_cmd
from ffnode.cli.output import UserError, err

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # the process holds a private key
    help="ffnode: a FederatedFactory node. Sites share signed per-class generators, not classifier weights.",
)
COMMANDS = {  # name -> function; one module per command group
    "init": init_cmd.init,
    "start": start.start,
    "id": inspect.node_id,
    "status": inspect.status,
    "peers": inspect.peers,
    "artifacts": inspect.artifacts,
    "events": events.events,
    "query": query.query,
    "export": export.export,
    "samples": samples.samples,
    "audit": audit.audit,
    "revoke": unlearn.revoke,
    "leave": unlearn.leave,
    "verify-unlearning": unlearn.verify_unlearning,
    "block": trust.block,
    "quarantine": trust.quarantine,
    "charter": charter.charter,
    "invite": charter.invite,
    "remove": charter.remove,
    "sign": charter.sign,
    "join": charter.join,
    "members": charter.members,
    "api-token": api.api_token,
}
for _name, _command in COMMANDS.items():
    app.command(_name)(_command)


def _user_errors() -> tuple[type[Exception], ...]:
    from ffnode.artifacts.codec import WireError
    from ffnode.config import ConfigError
    from ffnode.daemon.control import ControlError
    from ffnode.data.sources import DataError
    from ffnode.identity import IdentityError
    from ffnode.net import NetError  # e.g. the listen port is taken

    errors = UserError, ConfigError, ControlError, DataError, IdentityError, WireError, NetError
    return (*errors, KeyError, PermissionError)


def _fail(exc: BaseException) -> NoReturn:
    err.print(f"[red]error:[/] {exc.args[0] if exc.args else exc}", highlight=False)
    sys.exit(1)


def main() -> None:
    try:
        code = app(standalone_mode=False)  # click returns a `typer.Exit`'s code here instead of exiting
    except _user_errors() as exc:
        _fail(exc)
    except ExceptionGroup as group:  # a daemon task failed, e.g. its network thread died: show its cause
        user = group.subgroup(_user_errors())
        if user is None:
            raise
        while isinstance(user, ExceptionGroup):
            user = user.exceptions[0]
        _fail(user)
    except (typer.Abort, KeyboardInterrupt):
        sys.exit(130)
    except Exception as exc:  # click's own usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
    sys.exit(code or 0)
