"""`ffnode audit`: the privacy audits of this site's factories (published or withheld) and the audit figures its
peers' factories carry, each judged under this node's thresholds; `--picture` draws an own audit for the owner.

It reads the home's files (the store, and the audit records in work/factory-<class>/), so it works whether the
node runs or not.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from ffnode.cli.output import HomeOption, JsonOption, abort, emit_json, err, short, table


def _row(r: dict) -> list:
    from ffnode.privacy.policy import mia_se

    f = r["figures"]
    if f is None:
        numbers = ["-"] * 5
    else:
        se = mia_se(f["mia_members"], f["n_holdout"])
        numbers = [
            f"{f['memorised']:.1%}",
            f"{f['dcr_close']:.1%} / {f['dcr_ratio']:.2f}",
            f"{f['mia_auc']:.3f} ± {se:.3f}",
            f"{f['mia_tpr_1pct']:.1%} / {f['mia_tpr_01pct']:.1%}",
            f"{f['n_train']} / {f['n_holdout']}",
        ]
    owner = "this node" if r["own"] else short(r["owner"], 16)
    return [short(r["factory"]) or "-", r["class"], owner, r["step"] or "-", *numbers, r["state"], r["verdict"]]


def audit(
    home: Path = HomeOption,
    factory: str = typer.Option("", "--factory", help="Only this factory (ID or unique prefix)."),
    class_name: str = typer.Option("", "--class", help="Only factories of this class (name)."),
    picture: Path | None = typer.Option(
        None,
        "--picture",
        help="Write a PNG of an own factory's most copy-like samples beside their nearest "
        "training images (real patient images: for this site only; never written into the store).",
    ),  # fmt: skip
    as_json: bool = JsonOption,
) -> None:
    """Privacy audits of this site's factories and the audit figures of its peers', judged under this node's
    thresholds ([privacy] in config.toml)."""
    from ffnode.artifacts.store import Store, trust_of
    from ffnode.config import Config
    from ffnode.identity import load_identity
    from ffnode.privacy.policy import AuditPolicy
    from ffnode.privacy.report import audit_rows

    config, me = Config.load(home), load_identity(home).peer_id
    store = Store(
        home / "store", federation=config.federation.name, classes=config.federation.classes, trust=trust_of(config, me)
    )
    rows = audit_rows(home, config, store, me, AuditPolicy.of(config.privacy))
    if factory:
        aid = store.resolve(factory)
        rows = [r for r in rows if r["factory"] == aid]
    if class_name:
        if class_name not in config.federation.classes:
            abort(f"no class {class_name!r}: the federation's classes are {', '.join(config.federation.classes)}")
        rows = [r for r in rows if r["class"] == class_name]
    if picture is not None:
        own = [r for r in rows if r["own"]]
        if not own:
            abort("--picture draws an own factory's audit: name one with --factory or --class (see `ffnode audit`)")
        _draw(home, config, own[0], picture)
    if as_json:
        emit_json(rows)
        return
    columns = ["factory", "class", "owner", "step", "memorised", "DCR close / ratio", "MIA AUC", "TPR@1% / 0.1%",
               "train / held out", "state", "verdict"]  # fmt: skip
    table("privacy audits (thresholds: [privacy] in config.toml)", columns, [_row(r) for r in rows])
    if not rows:
        err.print(
            "no audits yet: factories are audited when they finish training (a class too small to audit is "
            "withheld untrained: `ffnode status` says why)"
        )


def _draw(home: Path, config: Any, row: dict, path: Path) -> None:
    """Redraw the audited samples of an own factory and write the picture of its closest pairs to `path`."""
    from PIL import Image

    from ffnode.data.sources import load_dataset
    from ffnode.factory.sample import sample_factory
    from ffnode.factory.train import load_snapshot
    from ffnode.jobs.build import audit_seed, factory_dp, factory_seed, factory_split
    from ffnode.privacy.picture import closest_pairs
    from ffnode.privacy.policy import AUDIT_FILE
    from ffnode.profiles import site_profile

    if path.resolve().is_relative_to((home / "store").resolve()):
        abort(f"{path} is inside the node's store: the picture holds real images; write it somewhere else")
    label, step = config.federation.classes.index(row["class"]), row["step"]
    cfg = config.data
    data = load_dataset(cfg.spec, split=cfg.split, classes=config.federation.classes, bit_depth=cfg.bit_depth)
    cfg = site_profile(config, data.image_shape).factory
    train, _held = factory_split(data, label, config.learning.seed, config.privacy)
    work = home / "work" / f"factory-{label}"
    dp = factory_dp(config.privacy, len(train), cfg)  # a DP factory's snapshots are keyed by its plan too
    weights = load_snapshot(work, train, cfg, factory_seed(config.learning.seed, label), step, dp)
    if weights is None:
        abort(f"the weights of class {row['class']!r} at step {step} are not in {work} (or do not match the data)")
    report = json.loads((work / AUDIT_FILE).read_text())["audits"][str(step)]
    samples = sample_factory(weights, cfg, row["figures"]["samples"], seed=audit_seed(config.learning.seed, label))
    grid = closest_pairs(samples, train, report["closest"], cfg.hflip)
    Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(path)
    err.print(f"wrote the {len(report['closest'])} most copy-like samples of class {row['class']!r} (step {step}), "
              f"each beside its nearest training image, to {path}: real images, keep them at this site")  # fmt: skip
