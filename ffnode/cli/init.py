"""`ffnode init`: make a node's home: identity key (0600), config.toml, store."""

from __future__ import annotations

from pathlib import Path

import typer

from ffnode.cli.output import JsonOption, abort, emit_json, err
from ffnode.config import Config
from ffnode.identity import create_identity


def init(
    home: Path = typer.Option(..., "--home", help="Folder to create for this node."),
    listen: list[str] = typer.Option(["/ip4/127.0.0.1/tcp/4747"], "--listen", help="Multiaddr to listen on."),
    bootstrap: list[str] = typer.Option([], "--bootstrap", help="Peer multiaddr with /p2p/<id> (repeatable)."),
    federation: str = typer.Option("digits", "--federation", help="Federation name (the gossip topic)."),
    data: str = typer.Option("digits", "--data", help="digits | bloodmnist | retinamnist | cifar10 | PATH.npz | DIR"),
    split: str = typer.Option("train", "--split", help="Which split of --data this site trains on."),
    classes: str = typer.Option("", "--classes", help="Comma-separated federation classes (default: the data's)."),
    profile: str = typer.Option("default", "--profile", help="tiny, default, cpu or gpu (docs/operators.md)."),
    seed: int = typer.Option(0, "--seed"),
    threads: int = typer.Option(0, "--threads", help="torch CPU threads (0 = torch default)."),
    allow: list[str] = typer.Option([], "--allow", help="Only accept artifacts from this peer ID (repeatable)."),
    relay: list[str] = typer.Option([], "--relay", help="Relay multiaddr to be reachable through (repeatable)."),
    unreachable: bool = typer.Option(False, "--unreachable", help="Behind NAT: advertise only relayed addresses."),
    relay_service: bool = typer.Option(False, "--relay-service", help="Relay for sites behind NAT."),
    as_json: bool = JsonOption,
) -> None:
    """Create a node home with a new identity and a config."""
    from ffnode.data.sources import DataError, default_classes, load_dataset  # heavy: only for this command
    from ffnode.profiles import PROFILES

    if profile not in PROFILES:
        abort(f"unknown profile {profile!r}: use one of {', '.join(PROFILES)}")
    if home.exists() and any(home.iterdir()):
        abort(f"{home} exists and is not empty: pick a new folder (a home is never overwritten)")
    try:
        names = [c.strip() for c in classes.split(",") if c.strip()] if classes else list(default_classes(data))
        local = load_dataset(data, split=split, classes=names)  # bad data fails now, not at start
    except DataError as exc:
        abort(str(exc))
    config = Config()
    config.network.listen, config.network.bootstrap = list(listen), list(bootstrap)
    config.network.relays, config.network.reachable = list(relay), not unreachable
    config.network.relay_service = relay_service
    config.federation.name, config.federation.classes = federation, names
    config.federation.image_shape = "x".join(str(x) for x in local.image_shape)
    config.federation.allowed_publishers = list(allow)
    config.data.spec, config.data.split = data, split
    config.learning.profile, config.learning.seed, config.learning.threads = profile, seed, threads
    config.validate("--options")
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o700)  # the control socket's safety rests on this folder being private
    identity = create_identity(home)
    config.save(home)
    held = sorted({names[int(c)] for c in set(local.labels.tolist())})
    info = {"home": str(home), "peer_id": identity.peer_id, "federation": federation, "local_classes": held}
    if as_json:
        emit_json(info)
    else:
        err.print(
            f"initialised [bold]{home}[/]: peer {identity.peer_id}, federation {federation!r}, "
            f"{len(local.labels)} images of classes {held}"
        )
