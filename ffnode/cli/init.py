"""`ffnode init`: make a node's home: identity key (0600), config.toml, store.

The data is loaded and checked here, so nothing bad is found minutes into `start`: the federation's class list
must be stated (`--classes`) for data given as a path, images of several sizes are refused unless `--resize`
makes them one (the resized copy goes to the home), and the profile is the one sized for the data (`auto`, the
default) or a named one that fits (`--force-profile` keeps one that does not, its cost stated).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape

from ffnode.cli.output import JsonOption, abort, emit_json, err
from ffnode.config import Config
from ffnode.identity import create_identity

if TYPE_CHECKING:
    from ffnode.data.sources import ImageSet

RESIZED_DATA = "data.npz"  # in the home: the site's images resized by `--resize`, what `start` then loads


def init(
    home: Path = typer.Option(..., "--home", help="Folder to create for this node."),
    listen: list[str] = typer.Option(["/ip4/127.0.0.1/tcp/4747"], "--listen", help="Multiaddr to listen on."),
    bootstrap: list[str] = typer.Option([], "--bootstrap", help="Peer multiaddr with /p2p/<id> (repeatable)."),
    federation: str = typer.Option("digits", "--federation", help="Federation name (the gossip topic)."),
    data: str = typer.Option("digits", "--data", help="digits | bloodmnist | retinamnist | cifar10 | PATH.npz | DIR"),
    split: str = typer.Option("train", "--split", help="Which split of --data this site trains on."),
    classes: str = typer.Option(
        "", "--classes", help="The federation's classes, comma-separated, in order (required when --data is a PATH)."
    ),
    resize: str = typer.Option("", "--resize", help="HxW: resize every image to it (a copy goes to the home)."),
    profile: str = typer.Option("auto", "--profile", help="auto, tiny, default, cpu or gpu (docs/operators.md)."),
    force_profile: bool = typer.Option(False, "--force-profile", help="Keep a named profile sized for other images."),
    seed: int = typer.Option(0, "--seed"),
    threads: int = typer.Option(0, "--threads", help="torch CPU threads (0 = torch default)."),
    allow: list[str] = typer.Option([], "--allow", help="Only accept artifacts from this peer ID (repeatable)."),
    relay: list[str] = typer.Option([], "--relay", help="Relay multiaddr to be reachable through (repeatable)."),
    unreachable: bool = typer.Option(False, "--unreachable", help="Behind NAT: advertise only relayed addresses."),
    relay_service: bool = typer.Option(False, "--relay-service", help="Relay for sites behind NAT."),
    as_json: bool = JsonOption,
) -> None:
    """Create a node home with a new identity and a config."""
    # heavy: only for this command
    from ffnode.data.sources import DataError, default_classes, is_named, load_dataset, parse_size, save_npz
    from ffnode.profiles import AUTO, PROFILES, ProfileError, choose_profile

    if profile != AUTO and profile not in PROFILES:
        abort(f"unknown profile {profile!r}: use one of {AUTO}, {', '.join(PROFILES)}")
    if home.exists() and any(home.iterdir()):
        abort(f"{home} exists and is not empty: pick a new folder (a home is never overwritten)")
    spec = data if is_named(data) else str(Path(data).expanduser().resolve())  # `start` may run elsewhere
    try:
        size = parse_size(resize) if resize else None
        if classes:
            names = [c.strip() for c in classes.split(",") if c.strip()]
        elif is_named(data):
            names = list(default_classes(data))  # a named dataset's full class list is the federation's
        else:
            abort(_classes_needed(data, load_dataset(spec, split=split, size=size)))
        local = load_dataset(spec, split=split, classes=names, size=size)  # bad data fails now, not at start
    except DataError as exc:
        abort(str(exc))
    h, w, _ = local.image_shape
    if h != w:
        abort(f"--data {data}: images are {h}x{w} but factories need square images: pass --resize {h}x{h} or crop")
    held = sorted(set(local.labels.tolist()))
    try:
        chosen, said = choose_profile(
            profile, local.image_shape, [(len(local.labels), len(names) - len(held))], force=force_profile
        )
    except ProfileError as exc:
        abort(f"--data {data}: {exc}")
    config = Config()
    config.network.listen, config.network.bootstrap = list(listen), list(bootstrap)
    config.network.relays, config.network.reachable = list(relay), not unreachable
    config.network.relay_service = relay_service
    config.federation.name, config.federation.classes = federation, names
    config.federation.image_shape = "x".join(str(x) for x in local.image_shape)
    config.federation.allowed_publishers = list(allow)
    config.data.spec, config.data.split = spec, split
    config.data.bit_depth = local.bit_depth if local.bit_depth > 8 else 0  # queries are read at the same depth
    config.learning.profile, config.learning.seed, config.learning.threads = chosen, seed, threads
    config.validate("--options")
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o700)  # the control socket's safety rests on this folder being private
    notes = list(local.notes)
    if local.resized:  # `start` loads the resized copy: the source stays as it is
        copy = home.resolve() / RESIZED_DATA
        save_npz(copy, {split: (local.images, local.labels)}, names)
        copy.chmod(0o600)  # the site's own images: for this node only
        config.data.spec = str(copy)
        notes.append(f"the resized images are in {copy} (data.spec in config.toml), read from {spec}")
    identity = create_identity(home)
    config.save(home)
    held_names = sorted(names[c] for c in held)
    info = {
        "home": str(home),
        "peer_id": identity.peer_id,
        "federation": federation,
        "local_classes": held_names,
        "images": len(local.labels),
        "image_shape": config.federation.image_shape,
        "data": config.data.spec,
        "profile": chosen,
        "notes": notes + ([said] if said else []),
    }
    if as_json:
        emit_json(info)
        return
    for note in notes:
        err.print(f"[yellow]warning:[/] {escape(note)}")
    if said:
        err.print(f"{'[yellow]warning:[/] ' if force_profile and profile != AUTO else ''}{escape(said)}")
    err.print(
        f"initialised [bold]{escape(str(home))}[/]: peer {identity.peer_id}, federation {escape(repr(federation))}, "
        f"{len(local.labels)} images of {config.federation.image_shape} of classes {escape(str(held_names))}, "
        f"profile {chosen!r}"
    )


def _classes_needed(data: str, own: ImageSet) -> str:
    """The one-line refusal of a PATH without --classes, naming the classes it holds and the flag to pass."""
    held = [own.classes[c] for c in sorted(set(own.labels.tolist()))]
    every = ",".join(own.classes)
    return (
        f"--data {data} is a path, so the federation's class list (names and order, the same at every site) "
        f"must be stated: pass --classes with every class of the federation, in its order; this data holds "
        f"{', '.join(held)} (e.g. --classes {every} if those are all of them)"
    )
