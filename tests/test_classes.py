"""A federation is its name and its class list: sites whose lists differ refuse each other, with real daemons.

Before r5 of the protocol, two sites of one federation name but different class lists federated silently and
read each other's labels by index: site B's factory of its class 0 ('1') was used as site A's class 0 ('0').
"""

from __future__ import annotations

from pathlib import Path

from ffnode.daemon import control
from harness.localnet import Daemons, init_home, status, wait_for
from tests.daemons import CLASSES, class_file, free_port

OTHER = ["1", "0", "2"]  # the same names in another order: every label index means another class


def logged(home: Path, *needles: str) -> bool:
    text = (home / "node.log").read_text()
    return all(n in text for n in needles)


def test_sites_with_another_class_list_refuse_each_other(tmp_path: Path) -> None:
    a_home, b_home, c_home = (tmp_path / n for n in "abc")
    a = init_home(a_home, port=free_port(), data=class_file(tmp_path, [0], "a"), classes=CLASSES, profile="tiny")
    init_home(b_home, port=free_port(), data=class_file(tmp_path, [1], "b"), classes=OTHER, bootstrap=[a],
              profile="tiny", seed=1)  # fmt: skip
    init_home(c_home, port=free_port(), data=class_file(tmp_path, [1, 2], "c"), classes=CLASSES, bootstrap=[a],
              profile="tiny", seed=2)  # fmt: skip
    ours, theirs = "['0', '1', '2'] (3 classes)", "['1', '0', '2'] (3 classes)"
    with Daemons() as daemons:
        for home in (a_home, b_home, c_home):
            daemons.start(home)
        # a has every class once c's factories arrive: b's, of another class list, are never among them
        wait_for(lambda: (s := status(a_home)) and s["phase"] == "ready", timeout=180, what="a ready", daemons=daemons)
        b_id = status(b_home)["peer_id"]  # type: ignore[index]
        # both sides refuse the other's sync requests and manifests, each log line naming both lists
        for home, mine, other in ((a_home, ours, theirs), (b_home, theirs, ours)):
            wait_for(
                lambda h=home, m=mine, o=other: (
                    logged(h, f"with classes {o}, but this federation's are {m}")
                    and logged(h, f"its class list {o} is not this federation's {m}")
                ),
                timeout=60,
                what=f"{home.name} to refuse the other class list",
                daemons=daemons,
            )
        owners = {r["owner"] for r in control.call(a_home, "artifacts")}
        assert b_id not in owners  # nothing of b's is held, let alone used
        assert status(c_home)["peer_id"] in owners  # type: ignore[index]
        peers = {p["peer_id"]: p for p in control.call(a_home, "peers")}
        assert peers[b_id]["rejected"] > 0  # counted against the peer
        assert status(b_home)["phase"] != "ready"  # b learnt no class from a federation it does not match
