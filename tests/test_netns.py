"""Sites on separate network stacks (Linux network namespaces on a bridge, root only): two sites that accept no
inbound connection at all reach each other through a third site's circuit relay, and blobs move over it.

Skipped, with the reason, where namespaces or nftables are not available."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from ffnode.config import Config
from ffnode.daemon import control
from harness.localnet import Daemons, init_home, wait_for
from harness.netns import Netns, available, nft_available, run
from tests.daemons import CLASSES, class_file

if (why := available()) is not None:
    pytest.skip(why, allow_module_level=True)
if not nft_available():
    pytest.skip("nftables is not installed (apt-get install -y nftables; scripts/bootstrap.sh does it as root)",
                allow_module_level=True)  # fmt: skip

PORT = 4747


@pytest.fixture()
def nat(tmp_path: Path) -> Iterator[tuple[Netns, list[Path], list[str], Daemons]]:
    """Site 0 relays; sites 1 and 2 drop every inbound connection, know only site 0, and do not hole-punch.
    Site 0 takes artifacts from nobody else (allowed_publishers is itself), so sites 1 and 2 can get each
    other's only from each other, through the relay."""
    with Netns(3, no_inbound=frozenset({1, 2})) as net, Daemons() as daemons:
        homes, addrs = [tmp_path / n for n in ("relay", "a", "b")], []
        for i, home in enumerate(homes):
            extra = ["--relay-service"] if i == 0 else ["--relay", addrs[0], "--unreachable"]
            addrs.append(
                init_home(
                    home,
                    port=PORT,
                    host=net.ip(i),
                    data=class_file(tmp_path, [i], f"c{i}"),
                    classes=CLASSES,
                    bootstrap=addrs[:1],
                    profile="tiny",
                    seed=i,
                    extra=extra,
                )  # fmt: skip
            )
            config = Config.load(home)
            config.network.hole_punch = False  # keep the relayed path, to test it
            if i == 0:
                config.federation.allowed_publishers = [addrs[0].rsplit("/p2p/", 1)[1]]
            config.save(home)
            daemons.start(home, net.exec_prefix(i))
        yield net, homes, addrs, daemons


def test_sites_behind_nat_exchange_everything_through_the_relay(
    nat: tuple[Netns, list[Path], list[str], Daemons],
) -> None:
    net, homes, addrs, daemons = nat
    ids = [a.rsplit("/p2p/", 1)[1] for a in addrs]

    def done() -> bool:  # the relay never trains an expert: it lacks classes 1 and 2
        try:
            sts = [control.call(h, "status", timeout=10) for h in homes[1:]]
        except (control.ControlError, OSError, ValueError):
            return False
        return all(s["phase"] == "ready" and s["artifacts"].get("expert_live", 0) == 2 for s in sts)

    wait_for(done, timeout=240, what="the 2 sites behind NAT ready with each other's expert", daemons=daemons)
    probe = "import socket; socket.create_connection(('{}', {}), timeout=3)"  # the firewall works both ways round
    assert run(*net.exec_prefix(1), "python3", "-c", probe.format(net.ip(0), PORT), check=False).returncode == 0
    assert run(*net.exec_prefix(0), "python3", "-c", probe.format(net.ip(1), PORT), check=False).returncode != 0
    learnt = []
    for me, other in ((1, 2), (2, 1)):
        peers = {p["peer_id"]: p for p in control.call(homes[me], "peers")}
        assert peers[ids[other]]["connected"] and peers[ids[other]]["path"] == "relayed"
        assert [a for a in peers[ids[other]]["record_addrs"] if "/p2p-circuit" not in a] == []
        learnt.append(peers[ids[other]]["learnt"])
        owned = {r["kind"] for r in control.call(homes[me], "artifacts") if r["owner"] == ids[other] and r["verified"]}
        assert owned == {"factory", "expert"}
    assert f"via {ids[0]}" in learnt  # the first to dial learnt the other's relayed address from the relay
    fetched = re.findall(rf"from ({ids[1]}|{ids[2]}) in [\d.]+ s \([\d.]+ MB/s, (\w+)\)",
                         "".join((h / "node.log").read_text() for h in homes[1:]))  # fmt: skip
    assert fetched and all(path == "relayed" for _, path in fetched), fetched
