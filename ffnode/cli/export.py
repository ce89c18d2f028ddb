"""`ffnode export`: write the site's current Product-of-Experts as one ONNX file and its JSON sidecar."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape

from ffnode.cli.output import HomeOption, JsonOption, abort, emit_json, err, size, table
from ffnode.cli.query import image_shape
from ffnode.config import Config, check_poe_rule
from ffnode.daemon import control

if TYPE_CHECKING:
    from ffnode.artifacts.store import Store

TRAINING = ("factories", "waiting", "synthesis")  # learner phases after which the node's experts change


def export(
    home: Path = HomeOption,
    out: Path = typer.Option(..., "--out", help="The ONNX file to write (its sidecar: the same name + .json)."),
    rule: str = typer.Option("", help="PoE rule: prior | product (default: the config's learning.poe_rule)."),
    as_json: bool = JsonOption,
) -> None:
    """Export the experts a query is answered with now, and the combination rule, as one ONNX file that runs
    without ffnode (onnxruntime): input (B, H, W, C) uint8 images, outputs probabilities (B, C) and label (B,).
    The sidecar names the classes, the input, the rule and every artifact the file derives from; the export is
    recorded in the home, so `ffnode verify-unlearning` names it once a revocation makes it stale. Works from
    the home's store, whether the node runs or not."""
    config = Config.load(home)
    try:
        rule = check_poe_rule(rule or config.learning.poe_rule, "--rule")
    except ValueError as exc:
        abort(str(exc))
    if not out.parent.is_dir():
        abort(f"--out {out}: folder {out.parent} does not exist: make it first, or write elsewhere")
    if out.is_dir():
        abort(f"--out {out} is a folder: name the .onnx file to write")
    notes: list[str] = []
    try:
        status = control.call(home, "status", timeout=30)
        if status["phase"] in TRAINING:
            notes.append(
                f"the node is training (phase {status['phase']}: {status['task'] or 'waiting for classes'}): its "
                "experts change when it is done; export again once `ffnode status` shows phase 'ready'"
            )
    except control.NotRunning:  # stopped, or starting: the store says what it holds
        pass

    from ffnode.voters import CannotAnswer, NoExperts, Voters, admit

    store, me = home_store(home, config)
    fed, shape = config.federation, image_shape(config)
    try:
        admit(store, Voters(store, len(fed.classes), shape).current(), fed.classes, rule)  # refused before torch loads
        from ffnode.export import Site, export_poe, sidecar_path

        site = Site(federation=fed.name, peer_id=me, classes=fed.classes, image_shape=shape)
        sidecar = export_poe(store, site, rule, out, home, notes)
    except (NoExperts, CannotAnswer) as exc:
        abort(f"nothing to export from {home}: {exc}")
    for note in sidecar["warnings"]:
        err.print(f"[yellow]warning:[/] {escape(note)}")
    if uncovered := sidecar["uncovered_classes"]:
        err.print(f"[yellow]warning:[/] no image of these classes is answered right: {escape(', '.join(uncovered))}")
    if as_json:
        emit_json({"path": str(out), "sidecar_path": str(sidecar_path(out)), **sidecar})
        return
    exporter = sidecar["exporter"]
    table(
        f"exported: {out}",
        ["field", "value"],
        [
            ["sidecar", sidecar_path(out)],
            ["format", f"ONNX opset {exporter['opset']} ({exporter['via']})"],
            ["size", size(sidecar["size"])],
            ["sha256", sidecar["sha256"]],
            ["rule", sidecar["rule"]],
            ["experts", ", ".join(f"{e['id'][:12]} ({e['owner'][:12]})" for e in sidecar["experts"])],
            ["classes", ", ".join(sidecar["classes"])],
            ["input", "uint8 (batch, {}, {}, {}), values 0..255".format(*sidecar["input"]["shape"][1:])],
        ],
    )


def home_store(home: Path, config: Config) -> tuple[Store, str]:
    """The home's store as this node sees it (its trust settings), and the node's peer ID. A reader: it changes
    no file, so it may be opened beside a running node."""
    from ffnode.artifacts.store import Store, trust_of
    from ffnode.identity import load_identity

    me = load_identity(home).peer_id
    fed = config.federation
    return Store(home / "store", federation=fed.name, classes=fed.classes, trust=trust_of(config, me)), me
