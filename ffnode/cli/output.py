"""All CLI output goes through here: data on stdout, messages on stderr, errors as one line."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

PIPED_WIDTH = 100_000  # stdout to a pipe or file: a table as wide as its widest cell, never folded to 80 columns


def _stdout() -> Console:
    """Data on stdout. A line is never hard-wrapped (a terminal wraps it for the eye; `$(ffnode id | tail -1)` gets
    it whole); on a terminal a table still fits the window (long cells fold inside their column), and to a pipe it
    is as wide as it needs (COLUMNS, often 80 or unset there, does not apply)."""
    console = Console(soft_wrap=True)
    return console if console.is_terminal else Console(soft_wrap=True, width=PIPED_WIDTH)


err = Console(stderr=True, soft_wrap=True)  # an error stays one line, whatever the terminal width
out = _stdout()


class UserError(Exception):
    """Bad input from the operator: printed as `error: ...`, exit code 1, no traceback."""


def abort(message: str) -> NoReturn:
    raise UserError(message)


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, sort_keys=True) + "\n")


def listing(items: list[dict], as_json: bool, title: str, columns: list[str], row: Callable[[dict], list]) -> None:
    """An inspection command's output: the items as one JSON document, or a table of one row per item."""
    if as_json:
        emit_json(items)
    else:
        table(title, columns, [row(item) for item in items])


def table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    """Cells are shown as written: peers' text (reasons, names) can hold `[...]`, which must not be read as
    markup; a cell that is styled on purpose is a rich Text (`styled`)."""
    t = Table(title=escape(title), title_justify="left")
    for c in columns:
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*[v if isinstance(v, Text) else escape(str(v)) for v in r])
    out.print(t)


def styled(markup: str) -> Text:
    """A table cell in rich markup: only for the CLI's own words, never for text from a peer."""
    return Text.from_markup(markup)


def short(text: str | None, n: int = 12) -> str:
    return "" if text is None else text[:n]


def ago(ts: float | None) -> str:
    if not ts:
        return "never"
    s = time.time() - ts
    return f"{s:.0f}s ago" if s < 120 else f"{s / 60:.0f}m ago"


def size(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


HomeOption = typer.Option(..., "--home", help="The node's home folder (made by `ffnode init`).")
JsonOption = typer.Option(False, "--json", help="Print one JSON document on stdout instead of a table.")
