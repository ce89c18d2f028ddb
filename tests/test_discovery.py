"""Discovery: signed peer records (what a forger cannot do), the peer book's limits, and real daemons that find
each other from a chained bootstrap and stay connected when the bootstrap node is gone for good."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path

import multiaddr
import pytest
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.rsa import create_new_key_pair as rsa_key_pair
from libp2p.peer.envelope import Envelope, seal_record
from libp2p.peer.id import ID
from libp2p.peer.peer_record import PeerRecord
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage
from libp2p.relay.circuit_v2.pb.circuit_pb2 import PeerId as CircuitPeerId
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP
from libp2p.relay.circuit_v2.protocol import STOP_PROTOCOL_ID as STOP
from libp2p.relay.circuit_v2.utils import read_delimited_msg, write_delimited_msg

from ffnode.artifacts.codec import WireError
from ffnode.net.discovery import (
    DIALS_PER_ROUND,
    EXCHANGE_MAX_S,
    EXCHANGE_MIN_S,
    TRIM_GRACE_S,
    TRIM_SLACK,
    Discovery,
    PeerBook,
    open_record,
    own_record,
    seal,
    to_trim,
)
from harness.localnet import Daemons, ffnode_cmd, init_home, status, wait_for
from tests.daemons import CLASSES, Peer, chained_federation, class_file, free_port
from tests.test_hostile import set_limits

ALICE, BOB = create_new_key_pair(bytes(range(32))), create_new_key_pair(b"\x01" * 32)


def peer_of(kp: object) -> str:
    return ID.from_pubkey(kp.public_key).to_base58()


def test_record_round_trip_names_its_signer() -> None:
    data = seal(ALICE.private_key, [f"/ip4/10.0.0.1/tcp/4747/p2p/{peer_of(ALICE)}", "/ip4/10.0.0.2/tcp/1"], seq=7)
    r = open_record(data)
    assert r.peer_id == peer_of(ALICE) and r.seq == 7
    assert r.addrs == (f"/ip4/10.0.0.1/tcp/4747/p2p/{r.peer_id}", f"/ip4/10.0.0.2/tcp/1/p2p/{r.peer_id}")


def test_relay_address_is_kept_with_the_records_peer() -> None:
    relay = f"/ip4/10.0.0.9/tcp/4001/p2p/{peer_of(BOB)}/p2p-circuit"
    r = open_record(seal(ALICE.private_key, [relay], seq=1))
    assert r.addrs == (f"{relay}/p2p/{r.peer_id}",)


def test_forged_and_malformed_records_are_refused() -> None:
    good = seal(ALICE.private_key, ["/ip4/10.0.0.1/tcp/4747"], seq=1)
    flipped = bytearray(good)
    flipped[-1] ^= 1  # the signature
    with pytest.raises(WireError, match="signature"):
        open_record(bytes(flipped))
    # Bob signs a record claiming Alice's ID: a valid signature, by the wrong key
    claim = PeerRecord(ID.from_pubkey(ALICE.public_key), [multiaddr.Multiaddr("/ip4/10.6.6.6/tcp/1")], 2)
    forged = seal_record(claim, BOB.private_key).marshal_envelope()
    with pytest.raises(WireError, match="another key"):
        open_record(forged)
    too_many = [f"/ip4/10.0.0.{i}/tcp/1" for i in range(9)]
    with pytest.raises(WireError, match="1 to 8"):
        open_record(seal(ALICE.private_key, too_many, seq=1))
    for addr in ("/ip4/10.0.0.1/udp/1", "/unix/tmp/x", "/ip4/10.0.0.1/tcp/1/p2p-circuit/p2p/" + peer_of(BOB)):
        with pytest.raises(WireError):
            open_record(seal(ALICE.private_key, [addr], seq=1))
    with pytest.raises(WireError, match="payload type"):
        env = Envelope(ALICE.public_key, b"\x03\x02", b"", b"")
        open_record(env.marshal_envelope())
    with pytest.raises(WireError, match="at most"):
        open_record(b"\x00" * 4096)


def test_book_takes_newer_records_and_bounds_each_source() -> None:
    book = PeerBook("me", capacity=100, per_source=3)
    keys = [create_new_key_pair(bytes([i]) * 32) for i in range(2, 8)]
    records = [open_record(seal(k.private_key, ["/ip4/10.0.0.1/tcp/1"], seq=1)) for k in keys]
    assert [book.learn(r, "via X") for r in records[:4]] == [True, True, True, False]  # X's share is 3
    assert book.refused == 1
    assert book.learn(records[3], "via Y")  # another peer's share
    book.connected(records[0].peer_id, member=False)  # a connection alone proves nothing
    assert not book.learn(records[4], "via X")
    book.connected(records[0].peer_id, member=True)  # a member no longer counts against X
    assert book.learn(records[4], "via X")
    newer = open_record(seal(keys[0].private_key, ["/ip4/10.0.0.2/tcp/1"], seq=2))
    assert book.learn(newer, "via Z") and not book.learn(records[0], "via Z")
    assert book.rows()[newer.peer_id]["record_addrs"] == list(newer.addrs)


def test_members_are_asked_for_peers_less_often_while_they_have_nothing_new() -> None:
    book = PeerBook("me", capacity=10, per_source=10)
    rec = open_record(seal(ALICE.private_key, ["/ip4/10.0.0.1/tcp/1"], seq=1))
    book.learn(rec, "direct", member=True)
    alice, connected = rec.peer_id, {rec.peer_id}
    assert book.claim_exchange("12D3KooWnobody", 0.0)  # a peer not in the book: ask it
    assert book.exchange_due(100.0, connected) == [alice] and not book.claim_exchange(alice, 101.0)  # stamped
    waits, now = [], 100.0
    for _ in range(8):  # nothing new in each answer: each wait twice the last, up to EXCHANGE_MAX_S
        book.exchanged(alice, 0)
        wait = book.entries[alice].exchange_every
        assert book.exchange_due(now + wait - 0.5, connected) == [] and book.exchange_due(now + wait + 0.5, connected)
        waits.append(wait)
        now += wait + 0.5
    assert waits[:3] == [2 * EXCHANGE_MIN_S, 4 * EXCHANGE_MIN_S, 8 * EXCHANGE_MIN_S] and waits[-1] == EXCHANGE_MAX_S
    book.exchanged(alice, 2)  # news: soon again
    assert book.entries[alice].exchange_every == EXCHANGE_MIN_S


def test_verified_records_are_remembered_within_the_books_capacity(tmp_path: Path) -> None:
    """A peer answering with ever new records costs a signature check each, and the memory of at most
    `limits.peer_records` of them; the same record again costs no check."""
    refused: list[str] = []
    d = Discovery(me="me", record=lambda: None, request=None, dial=None, connected=lambda: [],  # type: ignore[arg-type]
                  path=tmp_path / "peers.msgpack", max_peers=32, capacity=4, per_source=2,
                  reject=lambda peer, why: refused.append(why), loopback=False, hang_up=None)  # fmt: skip
    envelopes = [
        seal(create_new_key_pair(bytes([i]) * 32).private_key, ["/ip4/10.0.0.1/tcp/1"], 1) for i in range(40, 50)
    ]
    first = d._open(envelopes[0])
    assert d._open(envelopes[0]) is first  # remembered: not verified again
    d.take("12D3KooWsender", envelopes)
    assert len(d._opened) == 4 and not refused
    d.take("12D3KooWsender", [b"\x00" * 64])
    assert len(d._opened) == 4 and len(refused) == 1  # a forged one is refused and not remembered


def test_book_evicts_candidates_never_members_and_dials_within_its_limits() -> None:
    book = PeerBook("me", capacity=3, per_source=100)
    keys = [create_new_key_pair(bytes([i]) * 32) for i in range(10, 20)]
    recs = [open_record(seal(k.private_key, ["/ip4/10.0.0.1/tcp/1"], seq=1)) for k in keys]
    member = recs[0]
    book.learn(member, "direct", member=True)
    book.failed(member.peer_id, 0.0)  # a member that failed a dial still outranks any candidate
    for r in recs[1:]:
        assert book.learn(r, "via X")  # each new candidate evicts the oldest one
    assert set(book.entries) == {member.peer_id, recs[-2].peer_id, recs[-1].peer_id}
    full = PeerBook("me", capacity=1, per_source=100)
    full.learn(member, "saved", member=True)
    assert not full.learn(recs[1], "via X") and full.refused == 1  # only members: nothing to evict

    book = PeerBook("me", capacity=100, per_source=100)
    for r in recs:
        book.learn(r, "via X")
    due = book.due(0.0, set(), max_peers=32)
    assert len(due) == DIALS_PER_ROUND
    assert {r.peer_id for r in book.due(0.0, set(), max_peers=32)}.isdisjoint(r.peer_id for r in due)  # in flight
    for r in due:
        book.failed(r.peer_id, 0.0)
    key_of = {peer_of(k): k for k in keys}
    re_signed = open_record(seal(key_of[due[0].peer_id].private_key, ["/ip4/10.0.0.3/tcp/1"], seq=9))
    book.learn(re_signed, "direct")  # a newer record of its own: new addresses, the same backoff
    assert due[0].peer_id not in {r.peer_id for r in book.due(1.0, set(), max_peers=32)}
    others = {r.peer_id for r in recs[:2]}  # connected, but not members: they take no member's place
    assert len(book.due(50.0, others, max_peers=2)) == 2  # not 0
    book.connected(recs[0].peer_id, member=True)
    book.connected(recs[1].peer_id, member=True)
    assert book.due(100.0, others, max_peers=2) == []  # at the target degree


def test_over_its_bound_a_node_hangs_up_on_settled_peers_down_to_max_peers() -> None:
    """Up to max_peers + TRIM_SLACK nothing is closed; one over, the node comes back to max_peers, never closing a
    connection younger than the grace or a relay; two nodes over their bound drop different peers."""
    now = 1000.0
    since = {f"p{i}": now - TRIM_GRACE_S - i for i in range(4 + TRIM_SLACK)}
    assert to_trim("me", since, now, 4, frozenset()) == []
    since |= {"young": now - 1, "relay": now - 900}
    trims = to_trim("me", since, now, 4, frozenset({"relay"}))
    assert len(trims) == len(since) - 4 and not {"young", "relay"} & set(trims)
    assert to_trim("other", since, now, 4, frozenset({"relay"})) != trims  # its own order
    assert to_trim("me", since, now, 4, frozenset({"relay"})) == trims  # but a stable one


def test_records_that_would_make_us_dial_nonsense_are_refused() -> None:

    me = ALICE.private_key
    for addr in ("/ip4/0.0.0.0/tcp/1", "/ip4/224.0.0.1/tcp/1", "/ip4/255.255.255.255/tcp/1", "/ip6/::/tcp/1"):
        with pytest.raises(WireError, match="unicast"):
            open_record(seal(me, [addr], seq=1))
    with pytest.raises(WireError, match="dialable"):
        open_record(seal(me, ["/tcp/1/ip4/10.0.0.1"], seq=1))  # the right protocols in the wrong order
    for addr in ("/ip4/127.0.0.1/tcp/1", "/dns/localhost/tcp/1"):
        assert open_record(seal(me, [addr], seq=1)).addrs  # fine for a node on loopback (tests, testnets)
        with pytest.raises(WireError, match="loopback"):
            open_record(seal(me, [addr], seq=1), loopback=False)
    rsa = rsa_key_pair(1024)
    with pytest.raises(WireError, match="Ed25519"):
        open_record(seal(rsa.private_key, ["/ip4/10.0.0.1/tcp/1"], seq=1))


def test_own_record_drops_loopback_and_caps_addresses() -> None:
    me = peer_of(ALICE)
    addrs = ["/ip4/127.0.0.1/tcp/1"] + [f"/ip4/10.0.0.{i}/tcp/1/p2p/{me}" for i in range(1, 12)]
    record = open_record(own_record(ALICE.private_key, addrs))
    assert len(record.addrs) == 8 and not any("/127." in a for a in record.addrs)
    assert open_record(own_record(ALICE.private_key, ["/ip4/127.0.0.1/tcp/1"])).addrs  # all loopback: keep it
    assert own_record(ALICE.private_key, []) is None  # behind NAT before a relay slot: nothing to say


def peers_json(home: Path) -> dict[str, dict]:
    out = subprocess.run(ffnode_cmd("peers", "--home", str(home), "--json"), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return {p["peer_id"]: p for p in json.loads(out.stdout)}


def connected_to(home: Path) -> set[str]:
    try:
        return {p for p, row in peers_json(home).items() if row["connected"]}
    except (AssertionError, json.JSONDecodeError, subprocess.TimeoutExpired):
        return set()


def test_chained_bootstrap_becomes_a_mesh_that_outlives_the_bootstrap_node(tmp_path: Path) -> None:
    """c knows only b, b knows only a: within a minute all three are connected pairwise; b dies for good, and
    a and c stay connected, and a restarted c finds a again from the records it saved."""
    homes, addrs = chained_federation(tmp_path)
    ids = [a.rsplit("/p2p/", 1)[1] for a in addrs]
    a, b, c = homes
    with Daemons() as daemons:
        for home in homes:
            daemons.start(home)
        t0 = time.monotonic()
        wait_for(
            lambda: all(connected_to(h) >= set(ids) - {ids[i]} for i, h in enumerate(homes)),
            timeout=60,  # from starting the processes: imports and data included
            what="a full mesh of three",
            daemons=daemons,
        )
        print(f"full mesh after {time.monotonic() - t0:.1f} s")
        # a and c met through b: whichever of them heard of the other from b first dialled, and the one
        # dialled may have taken the dialler's own record before b's list reached it ("direct")
        c_of_a, a_of_c = peers_json(c)[ids[0]], peers_json(a)[ids[2]]
        assert c_of_a["member"] and a_of_c["member"], (c_of_a, a_of_c)
        assert f"via {ids[1]}" in (c_of_a["learnt"], a_of_c["learnt"]), (c_of_a, a_of_c)
        assert peers_json(b)[ids[0]]["learnt"] == "bootstrap"

        daemons.kill(b)  # the bootstrap node is gone for good, without a goodbye
        time.sleep(16)  # past a redial round (2 s) and an exchange round (15 s)
        assert ids[2] in connected_to(a) and ids[0] in connected_to(c)

        daemons.stop(c)  # c restarts knowing only b, which is dead: its saved records name a
        daemons.start(c)
        wait_for(lambda: ids[0] in connected_to(c), timeout=60, what="c reconnected to a", daemons=daemons)
        assert peers_json(c)[ids[0]]["learnt"] in ("saved", f"via {ids[1]}")


async def test_a_hostile_peer_cannot_take_a_relays_slots_nor_pose_as_relayed_peers(tmp_path: Path) -> None:
    """Against a relay with 2 slots, a peer asks for 5 reservations in invented names (py-libp2p believed the
    name inside the message) and offers a relayed connection though it is no relay of ours: it gets one slot in
    its own name and a refusal, and an honest site behind NAT still gets its reservation."""

    relay, site = tmp_path / "relay", tmp_path / "site"
    addr = init_home(relay, port=free_port(), data=class_file(tmp_path, [0], "zero"), classes=CLASSES,
                     profile="tiny", extra=["--relay-service"])  # fmt: skip
    set_limits(relay, relay_reservations=2)
    relay_id = addr.rsplit("/p2p/", 1)[1]
    with Daemons() as daemons:
        daemons.start(relay)
        await asyncio.to_thread(wait_for, lambda: status(relay), timeout=60, what="the relay up", daemons=daemons)
        peer = Peer(topic="/ffnode/1/testnet/announce", seed=b"\x44" * 32)
        await peer.start(addr)

        async def attack() -> list[int]:
            statuses = []
            for i in range(5):
                stream = await peer.host._t_open_stream(relay_id, HOP)
                fake = ID.from_pubkey(create_new_key_pair(bytes([60 + i]) * 32).public_key).to_bytes()
                await write_delimited_msg(stream, HopMessage(type=HopMessage.RESERVE, peer=CircuitPeerId(id=fake)))
                statuses.append((await read_delimited_msg(stream, HopMessage)).status)
                await stream.close()
            try:  # "here is a relayed connection for you"
                stream = await peer.host._t_open_stream(relay_id, STOP)
                await stream.write(b"\x00")
                await stream.read(1)
            except Exception:  # reset: refused (the reset may even beat the protocol negotiation's answer)
                pass
            return statuses

        try:
            await peer.host._call("relay attack", attack)
        finally:
            await peer.stop()
        log = (relay / "node.log").read_text()
        assert f"refused a relayed connection offered by {peer.host.peer_id}" in log
        init_home(site, port=free_port(), data=class_file(tmp_path, [1], "one"), classes=CLASSES, profile="tiny",
                  bootstrap=[addr], extra=["--relay", addr, "--unreachable"], seed=2)  # fmt: skip
        daemons.start(site)
        await asyncio.to_thread(
            wait_for, lambda: "reserved a slot on relay" in (site / "node.log").read_text(), timeout=60,
            what="the honest site's reservation", daemons=daemons,
        )  # fmt: skip


def test_every_spelling_of_loopback_is_refused_to_a_remote_node() -> None:
    """A peer must not make a node dial its own loopback by naming it another way (protocol/README.md)."""
    me = ALICE.private_key
    for addr in ("/ip6/::1/tcp/1", "/ip4/127.8.9.10/tcp/1", "/ip6/::ffff:127.0.0.1/tcp/1", "/dns4/LocalHost/tcp/1",
                 "/dns/app.localhost/tcp/1"):  # fmt: skip
        assert open_record(seal(me, [addr], seq=1)).addrs
        with pytest.raises(WireError, match="loopback"):
            open_record(seal(me, [addr], seq=1), loopback=False)
    for addr in ("/ip4/10.0.0.1/tcp/1", "/ip4/192.168.1.2/tcp/1", "/ip6/fd00::1/tcp/1", "/ip6/::ffff:10.0.0.1/tcp/1"):
        assert open_record(seal(me, [addr], seq=1), loopback=False).addrs  # private hosts are no loopback
