"""Fuzz targets over everything that parses peer bytes, with hypothesis strategies that reach past the first
check: raw bytes, msgpack values of any shape (deep, wide, every type), mutated valid envelopes and frames,
valid values with fields replaced at any depth, and records and protobuf frames signed or framed correctly
around hostile contents (so that they get past the signature and the length prefix into the checks behind).

Each target feeds one input to one parser and says which exception types it declares (the parser's rejection
type). `check` runs a target on an input and returns None, or the type name of an undeclared exception: the
bug a hostile peer would trigger. tests/test_fuzz.py runs a few hundred inputs per target; scripts/fuzz.py runs
10^5 and more and prints what it found.

The relay and DCUtR targets run py-libp2p's own code (its frame reader, protobuf parsing and what its handlers
do with the fields before acting) on the bytes a peer writes on those streams; those handlers catch every
Exception themselves, and ffnode wraps every stream handler in `streams.guard_handler`, so the declared types
here are the ones the library documents, and anything else would be contained there rather than kill a node.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import multiaddr
from google.protobuf.message import DecodeError
from hypothesis import strategies as st
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.exceptions import ParseError
from libp2p.io.exceptions import IncompleteReadError, MessageTooLarge
from libp2p.peer.envelope import ENVELOPE_DOMAIN, PEER_RECORD_CODEC, Envelope, make_unsigned
from libp2p.peer.id import ID
from libp2p.peer.pb.peer_record_pb2 import PeerRecord
from libp2p.relay.circuit_v2.dcutr import DCUtRProtocol, _tcp_ip_port, read_dcutr_msg
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage, StopMessage
from libp2p.relay.circuit_v2.pb.dcutr_pb2 import HolePunch
from libp2p.relay.circuit_v2.protocol_buffer import StatusCode
from libp2p.relay.circuit_v2.utils import maybe_consume_signed_record, read_delimited_msg
from libp2p.utils.varint import encode_uvarint, encode_varint_prefixed

from ffnode.arch import expert_spec, factory_config, vet
from ffnode.artifacts.blob import BlobFormatError, blob_owner
from ffnode.artifacts.charter import Charter, cosign, open_charter, open_membership, seal_cosigned
from ffnode.artifacts.codec import WireError, decode
from ffnode.artifacts.manifest import Manifest
from ffnode.artifacts.revocation import Revocation
from ffnode.artifacts.store import Store, open_announcement
from ffnode.config import LimitsConfig
from ffnode.identity import Identity
from ffnode.net import streams
from ffnode.net.discovery import Discovery, open_record, seal
from ffnode.net.sync import (
    inventory_page,
    parse_inventory_request,
    parse_inventory_response,
    parse_peers_response,
    parse_request,
    peers_request,
    peers_response,
)
from ffnode.privacy.policy import AuditPolicy, audit_of, audit_verdict, judge, verdict_text

ALICE = Identity(b"\x21" * 32)
BOB = Identity(b"\x22" * 32)
ALICE_KEY = create_new_key_pair(b"\x21" * 32).private_key  # ALICE's key as libp2p holds it: peer records
BOB_KEY = create_new_key_pair(b"\x22" * 32).private_key  # a second peer: records of someone else, relays
VECTORS = Path(__file__).resolve().parents[2] / "protocol" / "vectors"
# the library logs an error line for each bad field a peer sends (a sender record, a multiaddr): 10^5 of them
logging.getLogger("libp2p").setLevel(logging.CRITICAL)

# msgpack values of any shape: nesting past every limit, every scalar type, ext types, int map keys
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=True),
    st.text(max_size=40),
    st.binary(max_size=80),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6),
        st.dictionaries(st.one_of(st.text(max_size=12), st.integers(0, 9)), inner, max_size=6),
    ),
    max_leaves=60,
)


def deep(depth: int) -> bytes:
    """An array nested `depth` deep, the bomb that once killed a node with 801 bytes."""
    return b"\x91" * depth + b"\xc0"


def _pack(value: Any) -> bytes:
    try:
        return msgpack.packb(value, use_bin_type=True, strict_types=False)
    except (TypeError, ValueError, OverflowError):
        return b"\xc1"  # never used by msgpack: malformed on purpose


def valid_envelopes() -> list[bytes]:
    factory = Manifest(
        "factory", ALICE.peer_id, ALICE.public_key, "fuzz", [1], ["0", "1"], {"sample_steps": 8}, "a" * 64, 10, 1, 1
    )
    revocation = Revocation(ALICE.peer_id, ALICE.public_key, "fuzz", [factory.id], "fuzz", 2, 2)
    return [factory.seal(ALICE), revocation.seal(ALICE)]


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A valid message with bytes flipped, cut, repeated or inserted: past the decoder, into the checks."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        op, at = draw(st.integers(0, 3)), draw(st.integers(0, max(0, len(data) - 1)))
        if op == 0 and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == 1:
            del data[at:]
        elif op == 2:
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            data += data[at:]
    return bytes(data)


def inputs(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=200),
        values.map(_pack),
        st.integers(1, 3000).map(deep),
        mutated(seeds),
    )


@dataclass(frozen=True)
class Target:
    name: str
    run: Callable[[bytes], Any]
    declared: tuple[type[BaseException], ...]
    strategy: st.SearchStrategy[bytes]


_STORE_DIR = tempfile.TemporaryDirectory(prefix="ffnode-fuzz-")  # removed at exit; check() writes nothing


@functools.cache
def _store() -> Store:
    return Store(Path(_STORE_DIR.name), federation="fuzz")


def _store_check(data: bytes) -> None:
    _store().check(data)


def _blob_owner(data: bytes) -> str:
    with tempfile.NamedTemporaryFile() as f:
        f.write(data)
        f.flush()
        return blob_owner(Path(f.name))


def _page(data: bytes) -> bytes:
    cursor = data.decode("utf-8", "replace")
    return inventory_page([("a" * 64, b"x")], [("b" * 64, b"y")], cursor)


# --- valid values with fields replaced at any depth: the arch schema, audit figures, sync requests ----------

EDGE_INTS = (0, 1, -1, 2, 7, 8, 9, 16, 17, 20, 50, 51, 64, 512, 513, 1024, 1025, 4096, 4097, 10_000, 10_001, 2**31)
EDGE_INTS += (2**53 + 1, 2**63 - 1, 2**64 - 1, -(2**63))  # past float precision, msgpack's int range ends
EDGE_FLOATS = (0.0, -0.0, 0.5, 0.55, 1.0, 1.5, 1e4, 1e4 + 1, 1e308, 5e-324, math.nan, math.inf, -math.inf)
edges = st.one_of(
    st.sampled_from(EDGE_INTS),
    st.sampled_from(EDGE_FLOATS),
    st.lists(st.sampled_from(EDGE_INTS), max_size=9),
    values,
)


@st.composite
def tweaked(draw: st.DrawFn, seeds: list[Any]) -> Any:
    """A valid value with 1 to 4 fields replaced, removed or added, each in a container at any depth: one bad
    field among good ones, which is what gets past the first check into the bounds and arithmetic behind."""
    value = copy.deepcopy(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        node = value
        while True:  # walk down, entering a child container with probability 1/2 at each level
            inner = [v for v in (node.values() if isinstance(node, dict) else node) if isinstance(v, dict | list)]
            if not inner or draw(st.booleans()):
                break
            node = draw(st.sampled_from(inner))
        op = draw(st.integers(0, 2))
        if isinstance(node, dict):
            keys = list(node)
            if op == 0 and keys:
                node[draw(st.sampled_from(keys))] = draw(edges)
            elif op == 1 and keys:
                del node[draw(st.sampled_from(keys))]
            else:
                node[draw(st.text(max_size=12))] = draw(edges)
        elif op == 0 and node:
            node[draw(st.integers(0, len(node) - 1))] = draw(edges)
        elif op == 1 and node:
            del node[draw(st.integers(0, len(node) - 1))]
        else:
            node.append(draw(edges))
    return value


def fields_of(seeds: list[Any]) -> st.SearchStrategy[bytes]:
    """Seeds with fields replaced, as msgpack, beside the byte-level inputs over the seeds' encodings."""
    return st.one_of(tweaked(seeds).map(_pack), inputs([_pack(s) for s in seeds]))


LIMITS = LimitsConfig()


def _arch(data: bytes) -> None:
    """`vet` on a [kind, arch, size] triple, as the store runs it on every manifest before storing it; an arch it
    accepts must also load (factory_config, expert_spec: the jobs' side), or a peer could make every job fail."""
    value = decode(data)
    if not (isinstance(value, list) and len(value) == 3 and value[0] in ("factory", "expert")):
        raise WireError("not [kind, arch, size]")
    kind, arch, size = value
    if not isinstance(arch, dict) or type(size) is not int:  # the manifest schema's types
        raise WireError("arch must be a map and size an int")
    m = Manifest(kind, ALICE.peer_id, ALICE.public_key, "fuzz", [0], ["0"], arch, "a" * 64, size, 1, 1)
    vet(m, LIMITS)
    factory_config(m) if kind == "factory" else expert_spec(m)


POLICIES = (AuditPolicy(), AuditPolicy(max_mia_auc=0.0, mia_z=0.0, min_holdout=1, inconclusive="refuse"))


def _audit(data: bytes) -> None:
    """A peer factory's meta through every reader of meta.audit: the store's verdict (judge), the artifacts
    column (audit_verdict) and `ffnode audit`'s text, under the default thresholds and a strict site's."""
    meta = decode(data)
    if not isinstance(meta, dict):
        raise WireError("meta must be a map")  # the manifest schema
    for policy in POLICIES:
        judge(meta, policy)
        audit_verdict(meta, policy)
        if isinstance(figures := audit_of(meta), dict):
            verdict_text(figures, policy)


FOUNDERS = sorted([ALICE, BOB], key=lambda i: i.public_key)
CHARTER = Charter("fuzz", [i.public_key for i in FOUNDERS], 2, 1)


def charter_bodies() -> list[dict[str, Any]]:
    """What a co-signed envelope carries: the charter, an admission and a removal ({"t": kind, "body": body})."""
    member = Identity(b"\x23" * 32).peer_id
    body = {"charter": CHARTER.id, "peer": member, "seq": 1, "created": 2}
    return [
        {"t": "charter", "body": {"federation": "fuzz", "founders": CHARTER.founders, "threshold": 2, "created": 1}},
        {"t": "membership", "body": body | {"action": "admit"}},
        {"t": "membership", "body": body | {"action": "remove", "seq": 2}},
    ]


def _cosigned(value: Any) -> bytes:
    """`value`'s body signed by both founders, whatever it holds: the checks behind the signatures get fuzzed."""
    if not (isinstance(value, dict) and isinstance(value.get("t"), str) and isinstance(value.get("body"), dict)):
        return _pack(value)
    try:
        return cosign(seal_cosigned(value["t"], value["body"], FOUNDERS[0]), FOUNDERS[1])
    except (TypeError, ValueError, OverflowError, WireError):  # a body canonical bytes cannot encode
        return b"\xc1"


def charter_seeds() -> list[bytes]:
    """The charter both founders signed, and an admission and a removal each signed by both."""
    return [_cosigned(v) for v in charter_bodies()]


def _charter(data: bytes) -> None:
    """A co-signed envelope as a joining site reads a charter file and as every site reads a membership message
    of its pinned charter from gossip or an inventory page."""
    try:
        open_charter(data)
    except WireError:
        open_membership(data, CHARTER)


# --- signed peer records around hostile contents -----------------------------------------------------------

ALICE_ID = ID.from_pubkey(ALICE_KEY.get_public_key())
BOB_ID = ID.from_pubkey(BOB_KEY.get_public_key())
# binary multiaddr protocols a record may name: (code, value size; None: length-prefixed)
_PROTOCOLS = ((0x04, 4), (0x06, 2), (0x0111, 2), (0x29, 16), (0x35, None), (0x36, None), (0x37, None))
_PROTOCOLS += ((0x01A5, None), (0x0122, 0), (0x0190, None), (0x01DD, 0))  # p2p, p2p-circuit, unix, ws


@st.composite
def raw_multiaddrs(draw: st.DrawFn) -> bytes:
    """Binary multiaddr components with values of any content: names that are not UTF-8, IDs that are no
    multihash, a relay part anywhere."""
    out = bytearray()
    for _ in range(draw(st.integers(1, 5))):
        code, size = draw(st.sampled_from(_PROTOCOLS))
        value = draw(st.binary(max_size=40)) if size is None else draw(st.binary(min_size=size, max_size=size))
        out += encode_uvarint(code) + (value if size is not None else encode_uvarint(len(value)) + value)
    return bytes(out)


def _multiaddr_bytes(text: str) -> bytes:
    try:
        return multiaddr.Multiaddr(text).to_bytes()
    except Exception:  # a form the library will not encode: its text goes as the bytes instead
        return text.encode()


_hosts = st.one_of(
    st.ip_addresses(v=4).map(lambda a: f"/ip4/{a}"),
    st.ip_addresses(v=6).map(lambda a: f"/ip6/{a}"),
    st.tuples(st.sampled_from(("dns", "dns4", "dns6")), st.text(min_size=1, max_size=30)).map("/{0[0]}/{0[1]}".format),
)
_tails = ("", f"/p2p/{BOB_ID}", f"/p2p/{BOB_ID}/p2p-circuit", f"/p2p/{BOB_ID}/p2p-circuit/p2p/{ALICE_ID}")
_tails += ("/p2p-circuit", "/ws", f"/p2p/{ALICE_ID}", "/p2p-circuit/p2p-circuit")
multiaddrs = st.one_of(
    st.tuples(_hosts, st.sampled_from(("tcp", "udp")), st.integers(0, 65535), st.sampled_from(_tails))
    .map("{0[0]}/{0[1]}/{0[2]}{0[3]}".format)
    .map(_multiaddr_bytes),
    raw_multiaddrs(),
    st.binary(max_size=40),
)


@st.composite
def record_payloads(draw: st.DrawFn) -> bytes:
    """A PeerRecord protobuf: mostly naming its signer, any sequence number, 0 to 10 addresses of any form."""
    peer = draw(st.sampled_from((ALICE_ID.to_bytes(), ALICE_ID.to_bytes(), BOB_ID.to_bytes(), b"")))
    record = PeerRecord(peer_id=peer, seq=draw(st.integers(0, 2**64 - 1)))
    for addr in draw(st.lists(multiaddrs, max_size=10)):
        record.addresses.add(multiaddr=addr)
    return record.SerializeToString()


def _signed(payload: bytes, key: Any = ALICE_KEY, payload_type: bytes = PEER_RECORD_CODEC) -> bytes:
    """An envelope whose signature verifies, around any payload: past the signature, into the record's parsing."""
    signature = key.sign(make_unsigned(ENVELOPE_DOMAIN, payload_type, payload))
    return Envelope(key.get_public_key(), payload_type, payload, signature).marshal_envelope()


def valid_records() -> list[bytes]:
    return [
        seal(ALICE_KEY, ["/ip4/192.0.2.1/tcp/4747", "/dns/example.org/tcp/4747"]),
        seal(ALICE_KEY, [f"/ip4/192.0.2.1/tcp/4747/p2p/{BOB_ID}/p2p-circuit"]),
    ]


peer_records = st.one_of(
    record_payloads().map(_signed),
    record_payloads().map(functools.partial(_signed, key=BOB_KEY)),  # signed by another key than it names
    st.tuples(record_payloads(), st.binary(max_size=4)).map(lambda t: _signed(t[0], payload_type=t[1])),
    st.binary(max_size=80).map(_signed),  # no record at all, signed
    st.binary(max_size=300),
    mutated(valid_records()),
)


def _open_record(data: bytes) -> None:
    open_record(data, loopback=False)


@functools.cache
def _discovery() -> Discovery:
    """A node's discovery (its peer book and its cache of verified envelopes), as the daemon builds it."""

    def unused(*_: Any) -> None:
        raise AssertionError("take() neither dials nor asks")

    return Discovery(
        me=ALICE.peer_id, record=lambda: None, request=unused, dial=unused, connected=list,
        path=Path(_STORE_DIR.name) / "peers.msgpack", max_peers=32, capacity=1024, per_source=64,
        reject=lambda peer, reason: None, loopback=False, hang_up=unused,
    )  # fmt: skip


def _peers(data: bytes) -> None:
    """A peers response as `Discovery.ask` takes it: parsed, then every record verified and learnt."""
    _discovery().take(BOB_ID.to_base58(), parse_peers_response(data))


# --- relay and DCUtR frames, read by py-libp2p's own code -------------------------------------------------


def _pb(fields: list[tuple[int, Any]]) -> bytes:
    """Protobuf wire bytes of (field number, varint int or length-delimited bytes) pairs, in any order, repeated,
    unknown or of the wrong wire type: what a peer can write that a generated encoder never would."""
    out = bytearray()
    for number, value in fields:
        if isinstance(value, int):
            out += encode_uvarint(number << 3) + encode_uvarint(value)
        else:
            out += encode_uvarint(number << 3 | 2) + encode_uvarint(len(value)) + value
    return bytes(out)


def _record(peer: ID, seq: int, addrs: list[bytes]) -> bytes:
    record = PeerRecord(peer_id=peer.to_bytes(), seq=seq)
    for addr in addrs:
        record.addresses.add(multiaddr=addr)
    return record.SerializeToString()


@functools.cache
def _byte_pool() -> tuple[bytes, ...]:
    """Signed records, valid and hostile, and addresses of every form, made once: drawing them afresh inside
    each nested protobuf field made a relay input cost 35 ms to generate against 0.07 ms to parse."""
    tcp = encode_uvarint(0x06) + b"\x12\x8b"
    addrs = [
        _multiaddr_bytes(f"{host}/tcp/4747{tail}")
        for host in ("/ip4/192.0.2.1", "/ip4/0.0.0.0", "/ip4/127.0.0.1", "/ip6/::1", "/dns/example.org")
        for tail in _tails
    ]
    addrs += [encode_uvarint(0x35) + b"\x02\xff\xfe" + tcp, encode_uvarint(0x01A5) + b"\x03abc" + tcp, b"\x04\x7f"]
    hostile = [
        _record(ALICE_ID, 2**64 - 1, addrs[-3:]),
        _record(ALICE_ID, 0, addrs[:9]),
        _record(BOB_ID, 1, addrs[:1]),
    ]
    return (*valid_records(), *map(_signed, hostile), _signed(hostile[2], BOB_KEY), *addrs)


_pb_scalars = st.one_of(
    st.integers(0, 2**64 - 1),
    st.sampled_from((0, 1, 2, 3, 100, 200, 201, 300, 400, 401, 2**32)),  # the enums' values, and past them
    st.binary(max_size=40),
    st.sampled_from((ALICE_ID.to_bytes(), BOB_ID.to_bytes())),
    raw_multiaddrs(),
    st.deferred(lambda: st.sampled_from(_byte_pool())),
)
_pb_fields = st.recursive(
    _pb_scalars, lambda inner: st.lists(st.tuples(st.integers(0, 7), inner), max_size=6).map(_pb), max_leaves=8
)
_pb_frames = st.lists(st.tuples(st.integers(0, 7), _pb_fields), max_size=6).map(_pb).map(encode_varint_prefixed)


def relay_seeds() -> list[bytes]:
    record, addr = valid_records()[0], multiaddr.Multiaddr("/ip4/192.0.2.1/tcp/4747").to_bytes()
    peer = _pb([(1, ALICE_ID.to_bytes()), (2, addr)])
    messages = [
        HopMessage(type=HopMessage.RESERVE, senderRecord=record).SerializeToString(),
        _pb([(1, HopMessage.CONNECT), (2, peer)]),
        _pb([(1, HopMessage.STATUS), (3, _pb([(1, 2**32), (2, addr), (3, record)])), (4, _pb([(1, 120), (2, 1)]))])
        + _pb([(5, 100), (6, record)]),
        _pb([(1, StopMessage.CONNECT), (2, peer), (3, _pb([(1, 0), (2, 2**34)]))]),
        HolePunch(type=HolePunch.CONNECT, ObsAddrs=[addr]).SerializeToString(),
    ]
    frames = [encode_varint_prefixed(m) for m in messages]
    return frames + [frames[-1] + encode_varint_prefixed(HolePunch(type=HolePunch.SYNC).SerializeToString())]


def relay_frames() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=120),
        mutated(relay_seeds()),
        _pb_frames,
        st.tuples(_pb_frames, _pb_frames).map(b"".join),
    )


class _Bytes:
    """What the library's frame reader gets from a stream: the peer's bytes, then end of stream."""

    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    async def read(self, n: int | None = None) -> bytes:
        end = len(self.data) if n is None or n < 0 else self.at + n
        chunk = self.data[self.at : end]
        self.at += len(chunk)
        return chunk


def _drive(coro: Any) -> Any:
    """Run a coroutine that only reads from _Bytes (it never waits) to its end, without an event loop."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("the reader waited for something")  # the harness's mistake, reported as undeclared


@functools.cache
def _host() -> Any:
    """A py-libp2p host, never started: the peerstore that a HOP message's sender record goes into."""
    return new_host(key_pair=create_new_key_pair(b"\x23" * 32))


@functools.cache
def _hole_punch() -> DCUtRProtocol:
    return DCUtRProtocol(_host())


# the library's own rejections of a frame: a bad length prefix, one over its size limit, a truncated frame,
# protobuf that does not parse (or lacks a required field)
FRAME_ERRORS: tuple[type[BaseException], ...] = (ParseError, MessageTooLarge, IncompleteReadError, DecodeError)


def _relay_hop(data: bytes) -> None:
    """A HOP message as a relay reads it (RESERVE, CONNECT: the destination's ID) and as a client reads the relay's
    answer (STATUS), after the sender record it may carry is verified into the peerstore."""
    msg = _drive(read_delimited_msg(_Bytes(data), HopMessage))
    maybe_consume_signed_record(msg, _host(), ALICE_ID)
    if msg.type == HopMessage.CONNECT:
        ID(msg.peer.id).to_base58()
    if msg.HasField("status"):
        StatusCode(msg.status)


def _relay_stop(data: bytes) -> None:
    """A STOP message as a site behind a relay reads it: the circuit's address names the source peer's ID."""
    msg = _drive(read_delimited_msg(_Bytes(data), StopMessage))
    multiaddr.Multiaddr(f"/p2p/{BOB_ID}/p2p-circuit/p2p/{ID(msg.peer.id).to_base58()}")


def _dcutr(data: bytes) -> None:
    """CONNECT (then SYNC, if sent) as a DCUtR responder reads them: the observed addresses decoded and sorted as
    the library does before it dials them."""
    reader = _Bytes(data)
    connect = _drive(read_dcutr_msg(reader, HolePunch))
    for addr in _hole_punch()._decode_observed_addrs(list(connect.ObsAddrs)):
        _tcp_ip_port(addr) if "/p2p-circuit" not in str(addr) else None
    if reader.at < len(data):
        _drive(read_dcutr_msg(reader, HolePunch))


def targets() -> list[Target]:
    envelopes, members = valid_envelopes(), charter_seeds()[1:]
    sync_seeds = [
        msgpack.packb({"t": "inv_req", "v": 1, "federation": "fuzz", "cursor": ""}),
        msgpack.packb({"t": "inv", "v": 1, "manifests": envelopes[:1], "revocations": [], "next": ""}),
        msgpack.packb({"t": "inv", "v": 1, "manifests": [], "revocations": [], "next": "", "members": members}),
    ]
    blob_seeds = [msgpack.packb({"t": "blob_get", "v": 1, "id": "a" * 64}), msgpack.packb({"t": "blob_hdr", "v": 1})]
    safetensors_seed = [b"\x20\x00\x00\x00\x00\x00\x00\x00" + b'{"__metadata__":{"owner":"12D3"}}']
    requests = [msgpack.unpackb(b) for b in (peers_request("fuzz", ["0", "1"]), sync_seeds[0])]
    archs = [[c["kind"], c["arch"], c["size"]] for c in json.loads((VECTORS / "arch.json").read_text())["cases"]]
    audits = [c["meta"] for c in json.loads((VECTORS / "audit.json").read_text())["cases"]]
    peers_seeds = [msgpack.unpackb(peers_response(valid_records()))]
    return [
        Target("decode", decode, (WireError,), inputs(envelopes)),
        Target("open_announcement", open_announcement, (WireError,), inputs(envelopes)),
        Target("store_check", _store_check, (WireError,), inputs(envelopes)),
        Target("inv_req", parse_inventory_request, (WireError,), inputs(sync_seeds)),
        Target("inv", parse_inventory_response, (WireError,), inputs(sync_seeds)),
        Target("inv_page_cursor", _page, (WireError,), st.binary(max_size=300)),
        Target("blob_get", lambda b: streams._unpack(b, "blob_get"), (streams.FrameError,), inputs(blob_seeds)),
        Target("blob_hdr", lambda b: streams._unpack(b, "blob_hdr"), (streams.FrameError,), inputs(blob_seeds)),
        Target("blob_owner", _blob_owner, (BlobFormatError,), inputs(safetensors_seed)),
        Target("sync_request", parse_request, (WireError,), fields_of(requests)),
        Target("peer_record", _open_record, (WireError,), peer_records),
        Target(
            "peers",
            _peers,
            (WireError,),
            st.one_of(fields_of(peers_seeds), st.lists(peer_records, max_size=8).map(peers_response)),
        ),
        # ValueError: a status outside StatusCode, which py-libp2p's client meets reading a relay's answer and its
        # _make_reservation catches (the reservation fails)
        Target("relay_hop", _relay_hop, (*FRAME_ERRORS, ValueError), relay_frames()),
        # multiaddr's ParseError: a source ID that is no multihash, which py-libp2p's handle_incoming_connection turns
        # into the ConnectionError its STOP handler catches
        Target("relay_stop", _relay_stop, (*FRAME_ERRORS, multiaddr.exceptions.Error), relay_frames()),
        Target("dcutr", _dcutr, FRAME_ERRORS, relay_frames()),
        Target("arch", _arch, (WireError,), fields_of(archs)),
        Target("audit", _audit, (WireError,), fields_of(audits)),
        Target(
            "charter",
            _charter,
            (WireError,),
            st.one_of(inputs(charter_seeds()), tweaked(charter_bodies()).map(_cosigned)),
        ),
    ]


def check(target: Target, data: bytes) -> str | None:
    """None if the target accepted `data` or rejected it with a declared error, else the undeclared type's name."""
    try:
        target.run(data)
    except target.declared:
        return None
    except Exception as exc:  # what a hostile peer would reach: a bug
        return type(exc).__name__
    return None
