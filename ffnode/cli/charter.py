"""Invite-only federations: `ffnode charter` (the founders draft and sign one), `ffnode invite PEER` and
`ffnode remove PEER` (a membership message `threshold` founders sign), `ffnode sign FILE` (a founder adds its
signature), `ffnode join FILE` (a site pins the charter and, when invited, stores its admission) and
`ffnode members` (who may publish).

Signatures are collected in one file passed from founder to founder: a canonical msgpack map holding the charter
envelope and, for an invitation or a removal, the membership envelope. Once a membership message has enough
signatures, the signing founder's node stores and gossips it (a stopped node stores it and serves it by sync when
it starts); the file of an invitation is then what the invited site joins with.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from ffnode.artifacts.charter import (
    Charter,
    Membership,
    cosign,
    open_charter,
    open_cosigned,
    open_membership,
    seal_cosigned,
)
from ffnode.artifacts.codec import WireError, canonical_bytes, decode
from ffnode.artifacts.store import CHARTER_FILE, Store, atomic_write, trust_of
from ffnode.cli.output import HomeOption, JsonOption, abort, emit_json, err, table
from ffnode.cli.unlearn import _call, _stopped
from ffnode.config import Config
from ffnode.daemon.handlers import members_view
from ffnode.identity import Identity, load_identity, public_key_from_peer_id


def _read(path: Path) -> dict[str, bytes]:
    """A charter file: {"charter": envelope, and "membership": envelope for an invitation or a removal}."""
    try:
        doc = decode(path.read_bytes(), max_bytes=2 * 65536 + 64)
    except (OSError, WireError) as exc:
        abort(f"{path}: not a charter file ({exc})")
    if not isinstance(doc, dict) or not isinstance(doc.get("charter"), bytes) or set(doc) - {"charter", "membership"}:
        abort(f"{path}: not a charter file (a map of charter and membership envelopes)")
    return doc


def _write(path: Path, doc: dict[str, bytes]) -> None:
    path.write_bytes(canonical_bytes(doc))


def _store(home: Path) -> Store:
    config = Config.load(home)
    fed = config.federation
    return Store(home / "store", federation=fed.name, classes=fed.classes, trust=trust_of(config))


def _pinned(home: Path) -> tuple[Identity, Store, Charter]:
    """This founder's key, store and pinned charter; aborts unless the home joined one."""
    store = _store(home)
    if store.charter is None:
        abort(f"{home} pins no charter: `ffnode join --home {home} CHARTER_FILE` first")
    return load_identity(home), store, store.charter


def _progress(doc: dict[str, bytes]) -> dict[str, Any]:
    """What a charter file holds and how many of the signatures it needs it has."""
    kind = "membership" if "membership" in doc else "charter"
    _, body, signers = open_cosigned(doc[kind], (kind,))
    if kind == "charter":
        charter = Charter.from_body(body)
        info: dict[str, Any] = {"kind": kind, "id": charter.id, "needed": len(charter.founders)}
    else:
        charter = open_charter(doc["charter"])
        m = Membership.from_body(body, signers)
        info = {"kind": kind, "id": m.id, "action": m.action, "peer": m.peer, "seq": m.seq, "needed": charter.threshold}
    missing = sorted(charter.founder_ids - signers)
    return info | {"charter": charter.id, "signed_by": sorted(signers), "unsigned_founders": missing,
                   "complete": len(signers) >= info["needed"]}  # fmt: skip


def _submit(home: Path, envelope: bytes) -> bool:
    """Hand a complete membership message to this home's node: the running node stores and gossips it, a stopped
    one's store takes it (served by sync once the node starts). True if the node was running."""
    with _stopped(home) as stopped:
        if stopped:
            _store(home).add(envelope)
            return False
    _call(home, "membership", {"envelope": envelope.hex()})
    return True


def _report(path: Path, doc: dict[str, bytes], home: Path, as_json: bool) -> None:
    """Say where the file stands; a complete membership message goes to this home's node."""
    info = _progress(doc)
    info["file"] = str(path)
    if info["complete"] and info["kind"] == "membership":
        info["node_running"] = _submit(home, doc["membership"])
    if as_json:
        emit_json(info)
        return
    what = f"{info['action']} {info['peer']}" if info["kind"] == "membership" else f"charter {info['id'][:12]}"
    err.print(f"{path}: {what}, signed by {len(info['signed_by'])} of the {info['needed']} founders it needs")
    if info["kind"] == "charter" and info["complete"]:
        err.print(f"complete: each site joins it with `ffnode join --home HOME {path}`")
    elif info["kind"] == "membership" and info["complete"]:
        where = "the running node gossiped it" if info["node_running"] else "the node serves it when it starts"
        invited = f"; the invited site joins with `ffnode join --home HOME {path}`" if info["action"] == "admit" else ""
        err.print(f"complete: {where}{invited}")
    else:
        err.print(f"next: another founder runs `ffnode sign --home HOME {path}`; unsigned: {info['unsigned_founders']}")


def charter(
    founder: list[str] = typer.Option([], "--founder", help="Peer ID of another founder (repeatable)."),
    threshold: int = typer.Option(1, "--threshold", help="Founders' signatures an invitation or removal needs."),
    out: Path = typer.Option(..., "--out", help="The charter file to write (then signed by every founder)."),
    home: Path = HomeOption,
    as_json: bool = JsonOption,
) -> None:
    """Draft the charter of an invite-only federation, founded by this site and every --founder; signed by it."""
    identity, config = load_identity(home), Config.load(home)
    try:
        keys = sorted({identity.public_key, *(public_key_from_peer_id(f) for f in founder)})
        body = {"federation": config.federation.name, "founders": keys, "threshold": threshold,
                "created": int(time.time() * 1000)}  # fmt: skip
        Charter.from_body(body)
    except (ValueError, WireError) as exc:
        abort(f"charter: {exc}")
    doc = {"charter": seal_cosigned("charter", body, identity)}
    _write(out, doc)
    _report(out, doc, home, as_json)


def _membership(home: Path, peer: str, action: str, out: Path, as_json: bool) -> None:
    identity, store, pinned = _pinned(home)
    held, now = store.members().get(peer), int(time.time() * 1000)
    # the time as seq: a later draft wins at every site, whichever founder drafts it and whatever it holds
    body = Membership(pinned.id, peer, action, max(now, held.seq + 1 if held else 0), now).body()
    try:
        Membership.from_body(body)
    except WireError as exc:
        abort(f"{action} {peer}: {exc}")
    if action == "remove" and peer in pinned.founder_ids:
        abort(f"{peer} is a founder: a founder cannot be removed (draft a new charter without it)")
    doc = {"charter": (home / "store" / CHARTER_FILE).read_bytes(), "membership": seal_cosigned("membership", body,
                                                                                                identity)}  # fmt: skip
    _write(out, doc)
    _report(out, doc, home, as_json)


def invite(
    peer: str = typer.Argument(..., help="Peer ID of the site to admit (its `ffnode id`)."),
    out: Path = typer.Option(..., "--out", help="The invitation file to write (signed by more founders if needed)."),
    home: Path = HomeOption,
    as_json: bool = JsonOption,
) -> None:
    """Admit a site to this invite-only federation: a membership message this founder signs first."""
    _membership(home, peer, "admit", out, as_json)


def remove(
    peer: str = typer.Argument(..., help="Peer ID of the member to remove."),
    out: Path = typer.Option(..., "--out", help="The removal file to write (signed by more founders if needed)."),
    home: Path = HomeOption,
    as_json: bool = JsonOption,
) -> None:
    """Remove a member: once enough founders signed, no site uses or serves its artifacts any more."""
    _membership(home, peer, "remove", out, as_json)


def sign(
    file: Path = typer.Argument(..., help="A charter, invitation or removal file."),
    home: Path = HomeOption,
    as_json: bool = JsonOption,
) -> None:
    """Add this founder's signature to the file (the membership message if it holds one, else the charter)."""
    doc = _read(file)
    kind = "membership" if "membership" in doc else "charter"
    try:
        doc[kind] = cosign(doc[kind], load_identity(home))
        _progress(doc)
    except (ValueError, WireError) as exc:
        abort(f"{file}: {exc}")
    _write(file, doc)
    _report(file, doc, home, as_json)


def join(
    file: Path = typer.Argument(..., help="The charter, or the invitation, the founders sent."),
    home: Path = HomeOption,
    as_json: bool = JsonOption,
) -> None:
    """Join an invite-only federation: pin its charter (federation.charter) and store this site's admission."""
    doc = _read(file)
    try:
        pinned = open_charter(doc["charter"])
        admission = open_membership(doc["membership"], pinned) if "membership" in doc else None
    except WireError as exc:
        abort(f"{file}: {exc} (every founder must sign a charter, `threshold` of them a membership)")
    identity, config = load_identity(home), Config.load(home)
    if pinned.federation != config.federation.name:
        abort(f"{file} is the charter of federation {pinned.federation!r}, not this site's {config.federation.name!r}")
    member = identity.peer_id in pinned.founder_ids or (
        admission is not None and admission.peer == identity.peer_id and admission.action == "admit"
    )
    if not member:
        abort(f"{file} does not admit this site ({identity.peer_id}): ask the founders for its invitation")
    with _stopped(home) as stopped:
        if not stopped:
            abort(f"the node at {home} is running: stop it, join, then start it again")
        (home / "store").mkdir(exist_ok=True)  # a home that never ran has no store yet
        atomic_write(home / "store" / CHARTER_FILE, doc["charter"])
        config.federation.charter = pinned.id
        config.validate(home / "config.toml")
        config.save(home)
        if admission is not None:
            _store(home).add(doc["membership"])
    info = {"charter": pinned.id, "federation": pinned.federation, "peer_id": identity.peer_id,
            "founder": identity.peer_id in pinned.founder_ids}  # fmt: skip
    if as_json:
        emit_json(info)
    else:
        err.print(f"joined charter {pinned.id[:12]} of {pinned.federation!r}: start the node to take part")


def members(home: Path = HomeOption, as_json: bool = JsonOption) -> None:
    """The pinned charter, its founders and threshold, and every admitted or removed peer."""
    with _stopped(home) as stopped:
        view = members_view(_store(home)) if stopped else None
    if view is None:
        view = _call(home, "members")
    if as_json:
        emit_json(view)
        return
    if view["charter"] is None:
        err.print("an open federation: no charter pinned, any valid key may publish")
        return
    err.print(f"charter {view['charter']} of {view['federation']!r}: {len(view['founders'])} founders, "
              f"{view['threshold']} to admit or remove")  # fmt: skip
    rows = [[f, "founder", "yes", "-"] for f in view["founders"]]
    rows += [[m["peer"], m["action"], "yes" if m["member"] else "no", m["seq"]] for m in view["members"]]
    table("members", ["peer", "standing", "member", "seq"], rows)
