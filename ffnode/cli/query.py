"""`ffnode query`: classify image files by Product-of-Experts over the node's live experts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer
from rich.markup import escape

from ffnode.cli.output import HomeOption, JsonOption, abort, emit_json, err, table
from ffnode.config import Config, check_poe_rule
from ffnode.daemon import control


def query(
    images: list[Path] = typer.Argument(..., help="Image files (PNG/JPEG) of the federation's size."),
    home: Path = HomeOption,
    rule: str = typer.Option("", help="PoE rule: prior | product (default: the config's learning.poe_rule)."),
    as_json: bool = JsonOption,
) -> None:
    """Predict each image's class; through the running node, or from the store when no node answers (stopped,
    killed, or still starting). Every answer names the classes no answering expert covers (`uncovered_classes`,
    also warned about on stderr): an image of one of them is answered with another class. Experts that cover
    fewer than two classes give no answer: the command fails and says which class they cover."""
    from ffnode.data.images import load_image_file

    config = Config.load(home)
    try:
        rule = check_poe_rule(rule or config.learning.poe_rule, "--rule")
    except ValueError as exc:
        abort(str(exc))
    shape = image_shape(config)
    batch = np.stack([load_image_file(p, shape, config.data.bit_depth) for p in images])  # DataError names the file
    try:
        result = control.call(home, "query", control.encode_images(batch) | {"rule": rule}, timeout=300)
        result["answered_by"] = "node"
    except control.NotRunning:
        result = _from_store(home, config, batch, shape, rule) | {"answered_by": "store"}
        err.print(f"(the node at {home} is not running: answered from its store)", highlight=False)
    if uncovered := result["uncovered_classes"]:
        why = "; ".join(f"{name}: {result['uncovered_why'][name]}" for name in uncovered)
        n = f"{len(uncovered)} of the {len(result['classes'])} classes"
        err.print(f"[yellow]warning:[/] no live expert covers {n}; no image of them is answered right: " + escape(why))
    if as_json:
        emit_json({"images": [str(p) for p in images], **result})
        return
    rows = [
        [str(p), pred, f"{max(probs):.3f}"]
        for p, pred, probs in zip(images, result["predictions"], result["probabilities"], strict=True)
    ]
    title = f"PoE ({result['rule']} rule) over {len(result['experts'])} experts"
    if uncovered:
        title += f"; not covered, never answered right: {', '.join(uncovered)}"
    table(title, ["image", "class", "p"], rows)


def _from_store(home: Path, config: Config, batch: np.ndarray, shape: tuple[int, int, int], rule: str) -> dict:
    """The answer of the experts in the home's store, as the node would give it."""
    from ffnode.artifacts.store import Store, trust_of
    from ffnode.identity import load_identity
    from ffnode.query import ExpertPool
    from ffnode.voters import CannotAnswer, NoExperts

    me = load_identity(home).peer_id
    store = Store(
        home / "store", federation=config.federation.name, classes=config.federation.classes, trust=trust_of(config, me)
    )
    pool = ExpertPool(store, len(config.federation.classes), shape)
    try:
        return pool.query(batch, config.federation.classes, rule)
    except (CannotAnswer, NoExperts) as exc:
        abort(f"{exc} (answered from the store: the node at {home} is not running)")


def image_shape(config: Config) -> tuple[int, int, int]:
    """The federation's image shape: from the config, else (a home made before it recorded one) the local data."""
    if (shape := config.image_shape) is not None:
        return shape
    from ffnode.data.sources import load_dataset

    return load_dataset(config.data.spec, split=config.data.split, classes=config.federation.classes).image_shape
