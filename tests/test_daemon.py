"""Three real daemons as separate processes on 127.0.0.1 (tiny profile): discovery over a chained
bootstrap, signed artifacts fetched and verified everywhere, PoE queries, inspection commands, a restart
that keeps identity and store, and a late joiner that catches up by sync alone."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ffnode.daemon import control
from ffnode.data.sources import load_dataset
from harness.localnet import Daemons, init_home, status, wait_for
from tests.daemons import CLASSES, chained_federation, class_file, cli, cli_json, free_port

TIMEOUT = 180.0


@dataclass
class Federation:
    root: Path
    homes: list[Path]
    addrs: list[str]
    daemons: Daemons


def ready(homes: list[Path], experts: int) -> bool:
    sts = [status(h) for h in homes]
    return all(s and s["phase"] == "ready" and s["artifacts"].get("expert_live", 0) == experts for s in sts)


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Federation:
    root = tmp_path_factory.mktemp("fed")
    homes, addrs = chained_federation(root)
    with Daemons() as daemons:
        for home in homes:
            daemons.start(home)
        wait_for(lambda: ready(homes, 3), timeout=TIMEOUT, what="3 nodes ready with 3 experts", daemons=daemons)
        yield Federation(root, homes, addrs, daemons)


def test_chained_bootstrap_everyone_sees_everyone(fed: Federation) -> None:
    ids = [cli_json("id", "--home", str(h))["peer_id"] for h in fed.homes]
    for i, home in enumerate(fed.homes):
        peers = {p["peer_id"]: p for p in cli_json("peers", "--home", str(home))}
        others = set(ids) - {ids[i]}
        assert others <= set(peers), f"node {i} does not know {others - set(peers)}"
        for pid in others:
            assert peers[pid]["published"] == {"factory": 1, "expert": 1}
    # the chain became a mesh: discovery connected A and C through B (tests/test_discovery.py)
    a_peers = {p["peer_id"]: p for p in cli_json("peers", "--home", str(fed.homes[0]))}
    assert a_peers[ids[1]]["connected"]


def test_artifacts_fetched_and_verified_everywhere(fed: Federation) -> None:
    a_id = cli_json("id", "--home", str(fed.homes[0]))["peer_id"]
    published = [r for r in cli_json("artifacts", "--home", str(fed.homes[0])) if r["owner"] == a_id]
    assert {r["kind"] for r in published} == {"factory", "expert"}
    for home in fed.homes[1:]:
        rows = {r["id"]: r for r in cli_json("artifacts", "--home", str(home))}
        for r in published:
            assert rows[r["id"]]["state"] == "live" and rows[r["id"]]["verified"]
            blob = home / "store" / "blobs" / r["blob"]
            assert hashlib.sha256(blob.read_bytes()).hexdigest() == r["blob"]
            assert blob.stat().st_size == r["size"]


def test_query_by_product_of_experts(fed: Federation, tmp_path: Path) -> None:
    test = load_dataset("digits", split="test", classes=[str(i) for i in range(10)])
    image = test.images[np.flatnonzero(test.labels == 1)[0]]
    png = tmp_path / "one.png"
    Image.fromarray(image[..., 0]).save(png)
    result = cli_json("query", "--home", str(fed.homes[0]), str(png))
    assert len(result["experts"]) == 3
    assert result["predictions"][0] in CLASSES
    assert np.isclose(sum(result["probabilities"][0]), 1.0, atol=1e-4)
    assert result["rule"] == "prior"  # the experts' manifests carry the label counts that rule needs
    product = cli_json("query", "--home", str(fed.homes[0]), "--rule", "product", str(png))
    assert product["rule"] == "product" and product["probabilities"] != result["probabilities"]
    bogus = cli("query", "--home", str(fed.homes[0]), "--rule", "sum", str(png))
    assert bogus.returncode == 1 and "unknown --rule 'sum'" in bogus.stderr
    # bad inputs: one-line errors, exit code 1, no traceback
    wrong = tmp_path / "big.png"
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(wrong)
    text = tmp_path / "note.png"
    text.write_text("not an image")
    for bad, needle in [(wrong, "expected 8x8"), (text, "not an image"), (tmp_path / "missing.png", "does not exist")]:
        out = cli("query", "--home", str(fed.homes[0]), str(bad))
        assert out.returncode == 1 and needle in out.stderr and "Traceback" not in out.stderr


def test_inspection_commands_json(fed: Federation) -> None:
    home = str(fed.homes[1])
    ident = cli_json("id", "--home", home)
    st = cli_json("status", "--home", home)
    assert ident["peer_id"] == st["peer_id"] and ident["running"]
    assert any(a.endswith(f"/p2p/{ident['peer_id']}") for a in ident["addrs"])
    assert st["phase"] == "ready" and st["local_classes"] == ["1"] and st["bytes_sent"] > 0
    assert "eta_s" in st  # None here: nothing is being worked on
    # tables go to stdout too, errors for a stopped node are one line
    assert "ready" in cli("status", "--home", home).stdout
    out = cli("status", "--home", str(fed.root / "nowhere"))
    assert out.returncode == 1 and "error:" in out.stderr and "Traceback" not in out.stderr


def test_restart_keeps_peer_id_and_store(fed: Federation) -> None:
    b = fed.homes[1]
    before = status(b)
    artifacts_before = {r["id"]: r["state"] for r in cli_json("artifacts", "--home", str(b))}
    assert fed.daemons.stop(b) == 0  # SIGTERM: clean shutdown
    assert not (b / control.SOCKET_FILE).exists()
    fed.daemons.start(b)
    after = wait_for(
        lambda: (s := status(b)) and s["phase"] == "ready" and s, timeout=TIMEOUT, what="B back", daemons=fed.daemons
    )
    assert after["peer_id"] == before["peer_id"]
    assert after["current_expert"] == before["current_expert"]  # nothing retrained
    assert {r["id"]: r["state"] for r in cli_json("artifacts", "--home", str(b))} == artifacts_before
    wait_for(lambda: (s := status(b)) and s["connected_peers"] == 2, timeout=60, what="B reconnected to A and C")


def test_damaged_store_files_do_not_stop_a_start_and_heal_from_peers(fed: Federation) -> None:
    """C stops; one of its manifests gets a flipped byte, another is emptied, a peer's blob rots. It starts anyway,
    says what it quarantined, and holds everything live again from its peers."""
    c = fed.homes[2]
    me = status(c)["peer_id"]
    live = {r["id"]: r for r in cli_json("artifacts", "--home", str(c)) if r["state"] == "live"}
    assert fed.daemons.stop(c) == 0
    theirs = [r for r in live.values() if r["owner"] != me]
    flipped, emptied = (c / "store" / "manifests" / f"{r['id']}.msgpack" for r in theirs[:2])
    rotten = theirs[2]
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0x20
    flipped.write_bytes(bytes(data))
    emptied.write_bytes(b"")
    (c / "store" / "blobs" / rotten["blob"]).write_bytes(b"rotten")
    offline = cli("artifacts", "--home", str(c), "--json")  # used to exit 1 on the first bad file
    assert offline.returncode == 0 and offline.stderr.count("damaged store file skipped") == 2
    assert {r["id"]: r["verified"] for r in json.loads(offline.stdout)}[rotten["id"]] is False
    fed.daemons.start(c)
    wait_for(lambda: (s := status(c)) and len(s["store_damaged"]) == 3, timeout=60, what="C up", daemons=fed.daemons)

    def healed() -> bool:
        rows = {r["id"]: r for r in cli_json("artifacts", "--home", str(c))}
        return all(rows.get(aid, {}).get("state") == "live" and rows[aid]["verified"] for aid in live)

    wait_for(healed, timeout=TIMEOUT, what="C to fetch again what it quarantined", daemons=fed.daemons)
    assert len(list((c / "store" / "quarantine").iterdir())) == 3


def test_late_joiner_converges_by_sync(fed: Federation) -> None:
    """D starts after every announcement was gossiped: only the sync protocol can give it the artifacts."""
    known = {r["id"] for r in cli_json("artifacts", "--home", str(fed.homes[2]))}
    d = fed.root / "d"
    init_home(
        d,
        port=free_port(),
        data=class_file(fed.root, [0], "late"),
        classes=CLASSES,
        bootstrap=[fed.addrs[2]],
        profile="tiny",
        seed=9,
    )
    fed.daemons.start(d)

    def has_all() -> bool:
        if status(d) is None:
            return False
        rows = {r["id"]: r["state"] for r in cli_json("artifacts", "--home", str(d))}
        # D's own factory makes the others retrain, so older experts may be revoked (superseded) by now
        return all(rows.get(aid) in ("live", "revoked") for aid in known)

    wait_for(has_all, timeout=TIMEOUT, what="the late joiner to hold every artifact", daemons=fed.daemons)


def test_second_node_on_the_same_home_is_refused(fed: Federation) -> None:
    out = cli("start", "--home", str(fed.homes[0]))
    assert out.returncode == 1 and "already running" in out.stderr and "Traceback" not in out.stderr
    assert status(fed.homes[0])["phase"] == "ready"
