"""`ffnode query`: classify image files by Product-of-Experts over the node's live experts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from ffnode.cli.output import HomeOption, JsonOption, abort, emit_json, table
from ffnode.config import Config, check_poe_rule
from ffnode.daemon import control


def query(
    images: list[Path] = typer.Argument(..., help="Image files (PNG/JPEG) of the federation's size."),
    home: Path = HomeOption,
    rule: str = typer.Option("", help="PoE rule: prior | product (default: the config's learning.poe_rule)."),
    as_json: bool = JsonOption,
) -> None:
    """Predict each image's class; through the running node, or from the store when it is stopped."""
    from ffnode.data.images import load_image_file

    config = Config.load(home)
    try:
        rule = check_poe_rule(rule or config.learning.poe_rule, "--rule")
    except ValueError as exc:
        abort(str(exc))
    shape = _image_shape(config)
    batch = np.stack([load_image_file(p, shape) for p in images])  # DataError names the bad file
    if (home / control.SOCKET_FILE).exists():
        result = control.call(home, "query", control.encode_images(batch) | {"rule": rule}, timeout=300)
    else:
        from ffnode.artifacts.store import Store, trust_of
        from ffnode.identity import load_identity
        from ffnode.query import ExpertPool

        me = load_identity(home).peer_id
        store = Store(home / "store", federation=config.federation.name, trust=trust_of(config, me))
        pool = ExpertPool(store, len(config.federation.classes), shape)
        result = pool.query(batch, config.federation.classes, rule)
    if as_json:
        emit_json({"images": [str(p) for p in images], **result})
        return
    rows = [
        [str(p), pred, f"{max(probs):.3f}"]
        for p, pred, probs in zip(images, result["predictions"], result["probabilities"], strict=True)
    ]
    table(f"PoE ({result['rule']} rule) over {len(result['experts'])} experts", ["image", "class", "p"], rows)


def _image_shape(config: Config) -> tuple[int, int, int]:
    """The federation's image shape: from the config, else (a home made before it recorded one) the local data."""
    if (shape := config.image_shape) is not None:
        return shape
    from ffnode.data.sources import load_dataset

    return load_dataset(config.data.spec, split=config.data.split, classes=config.federation.classes).image_shape
