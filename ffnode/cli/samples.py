"""`ffnode samples`: a grid of a factory's synthetic images, what an operator checks before trusting a
peer's module. It shows generated images only, never real data."""

from __future__ import annotations

from pathlib import Path

import typer

from ffnode.cli.output import HomeOption, JsonOption, abort, emit_json, err
from ffnode.data.images import image_grid


def samples(
    home: Path = HomeOption,
    factory: str = typer.Option(..., "--factory", help="Factory ID or unique prefix (ffnode artifacts)."),
    out: Path = typer.Option(Path("grid.png"), "--out", help="PNG file to write."),
    n: int = typer.Option(64, "--n", min=1, max=1024, help="How many samples."),
    seed: int = typer.Option(0, "--seed"),
    as_json: bool = JsonOption,
) -> None:
    """Write a PNG grid of synthetic samples from one factory held by this node."""
    from PIL import Image

    from ffnode.arch import LoadError
    from ffnode.artifacts.store import Store
    from ffnode.config import Config
    from ffnode.factory.sample import sample_factory
    from ffnode.loaders import load_factory

    config = Config.load(home)
    store = Store(home / "store", federation=config.federation.name, classes=config.federation.classes)
    m = store.get(store.resolve(factory))
    if m is None or m.kind != "factory":
        abort(f"{factory} is not a factory: pick a factory ID from `ffnode artifacts --home {home}`")
    if store.blob_path(m.blob) is None:
        abort(f"factory {m.id[:12]} is not held here (state {store.entry(m.id).state}): nothing to sample")
    try:
        cfg, weights = load_factory(store, m)
        images = sample_factory(weights, cfg, n, seed=seed)
    except (LoadError, RuntimeError) as exc:  # RuntimeError: weights that do not fit the config
        abort(f"cannot sample factory {m.id[:12]}: {exc}")
    grid = image_grid(images)
    Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(out)
    label = config.federation.classes[m.classes[0]]
    info = {"factory": m.id, "owner": m.owner, "class": label, "n": n, "seed": seed, "out": str(out)}
    if as_json:
        emit_json(info)
    else:
        err.print(f"wrote {n} samples of class {label!r} from factory {m.id[:12]} to {out}")
