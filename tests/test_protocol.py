"""ffnode against its own wire-protocol test vectors (protocol/vectors/*.json, protocol/README.md).

Every vector file is loaded and replayed through the implementation: encodings must reproduce the exact
bytes, signatures must verify and be reproduced from the seed (Ed25519 is deterministic), IDs must match,
invalid inputs must raise WireError for the stated reason, and py-libp2p must derive the same peer IDs.
The stream vectors run the real ffnode.net.streams code over an in-memory stream.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import json
import re
from collections.abc import Awaitable, Callable
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgpack
import pytest
import trio
from libp2p.crypto.ed25519 import Ed25519PublicKey, create_new_key_pair
from libp2p.peer.id import ID

from ffnode import arch
from ffnode.artifacts import codec
from ffnode.artifacts.blob import MAX_HEADER_BYTES
from ffnode.artifacts.codec import WireError, canonical_bytes, signing_payload
from ffnode.artifacts.manifest import MAX_BLOB_BYTES, MAX_CLASSES, MAX_LINEAGE, Manifest
from ffnode.artifacts.revocation import MAX_IDS, MAX_REASON, Revocation
from ffnode.artifacts.store import Store, Trust, open_announcement
from ffnode.config import LimitsConfig
from ffnode.expert.config import ExpertConfig, expert_size
from ffnode.factory.config import FactoryConfig, unet_size
from ffnode.identity import Identity, b58decode, peer_id_from_public_key, public_key_from_peer_id, verify
from ffnode.net import streams
from ffnode.net.discovery import open_record, seal
from ffnode.net.sync import (
    MAX_CURSOR,
    MAX_INVENTORY_ITEMS,
    MAX_PAGE_BYTES,
    MAX_REQUEST_BYTES,
    inventory_page,
    inventory_request,
    inventory_response,
    parse_inventory_request,
    parse_inventory_response,
    parse_peers_response,
    parse_request,
    peers_request,
    peers_response,
)
from ffnode.privacy.policy import AuditPolicy, audit_of, judge
from ffnode.privacy.policy import verdict as three_way

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "protocol" / "vectors"
DIGITS = [str(d) for d in range(10)]  # the vectors' federation 'digits' and its class list

# What the WireError text says for each reason category: proves each vector fails for the reason it claims.
REASONS = {
    "malformed": r"malformed msgpack|map keys must be strings|cannot be encoded|ext types are not allowed|"
    r"nest deeper than",
    "oversized": r"exceeds the \d+-byte limit",
    "not-envelope": r"not an envelope|envelope body must be|unknown message type None",
    "version": r"unsupported version",
    "unknown-type": r"unknown message type",
    "owner-key": r"owner_key must be",
    "owner-mismatch": r"owner does not match",
    "signature": r"bad signature",
    "schema": r"fields differ from the schema|has type",
    "value": r"unknown artifact kind|blob must be|non-negative|classes must be|lineage must|has no lineage|"
    r"ids must be|reason longer|class_list|class name|names a label twice|"
    r"not understood|out of bounds|are not sizes|its images exceed",  # the last four: the arch schema
    "limit": r"over this node's limit|sampler steps \(limit|declares \d+ bytes for",  # the node's arch bounds
    "wrong-federation": r"is not this node's",
    "wrong-classes": r"is not this federation's",
    "not-allowed": r"allowed_publishers|not trusted here",
    "blob-owner": r"names owner|naming its owner",
    "revoked": r"was revoked",
    "replayed-seq": r"replayed sequence number",
    "revocation-unknown-artifact": r"names unknown artifact",
    "revocation-not-owner": r"not signed by its owner",
    "revocation-seq": r"is not newer than",
}


@cache
def load(name: str) -> Any:
    return json.loads((VECTORS / name).read_text())


def node_store(path: Path, federation: str, classes: list[str] | None = None, trust: Trust | None = None) -> Store:
    """A store that checks like the running node's: with the arch check at the default limits."""
    vet = functools.partial(arch.vet, limits=LimitsConfig())
    return Store(path, federation=federation, classes=classes, trust=trust or Trust(), vet=vet)


def depth(value: Any) -> int:
    """The depth of the deepest container in `value`, the top-level value being depth 0 (-1: no container)."""
    if isinstance(value, dict | list):
        items = list(value.values() if isinstance(value, dict) else value)
        return 1 + max((depth(v) for v in items), default=-1)
    return -1


def from_json(value: Any) -> Any:
    """Inverse of the files' JSON view: `<key>_hex` holds bin (or an array of bin) for `<key>`."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if key.endswith("_hex"):
                out[key[:-4]] = [bytes.fromhex(x) for x in item] if isinstance(item, list) else bytes.fromhex(item)
            else:
                out[key] = from_json(item)
        return out
    if isinstance(value, list):
        return [from_json(v) for v in value]
    return value


def reversed_keys(value: Any) -> Any:
    """The same value with every map built in reverse key order: the encoding must not change."""
    if isinstance(value, dict):
        return {k: reversed_keys(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [reversed_keys(v) for v in value]
    return value


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def cases_of(name: str, key: str = "cases") -> list[Any]:
    return [pytest.param(c, id=c["name"]) for c in load(name)[key]]


# --- identity ------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", cases_of("identity.json"))
def test_identity(case: dict[str, Any]) -> None:
    ident = Identity(h(case["seed_hex"]))
    pk = ident.public_key
    assert pk.hex() == case["public_key_hex"]
    assert ident.peer_id == peer_id_from_public_key(pk) == case["peer_id"]
    assert public_key_from_peer_id(case["peer_id"]) == pk
    assert b58decode(case["peer_id"]).hex() == case["peer_id_multihash_hex"]
    assert case["peer_id_multihash_hex"] == "0024" + case["public_key_protobuf_hex"]
    assert ident.sign(b"").hex() == case["signature_of_empty_message_hex"]
    assert verify(pk, h(case["signature_of_empty_message_hex"]), b"")


@pytest.mark.parametrize("case", cases_of("identity.json"))
def test_peer_id_agrees_with_py_libp2p(case: dict[str, Any]) -> None:
    libp2p_key = Ed25519PublicKey.from_bytes(h(case["public_key_hex"]))
    assert libp2p_key.serialize().hex() == case["public_key_protobuf_hex"]
    assert ID.from_pubkey(libp2p_key).to_base58() == case["peer_id"]
    # NetHost derives its libp2p key pair from the same seed: the host's peer ID is the signer's.
    pair = create_new_key_pair(h(case["seed_hex"]))
    assert ID.from_pubkey(pair.public_key).to_base58() == case["peer_id"]


# --- canonical encoding --------------------------------------------------------------------------


@pytest.mark.parametrize("case", cases_of("canonical.json"))
def test_canonical_encoding(case: dict[str, Any]) -> None:
    value = from_json(case["value"])
    expected = h(case["canonical_hex"])
    assert canonical_bytes(value) == expected
    assert canonical_bytes(reversed_keys(value)) == expected
    for data in case["noncanonical_inputs_hex"]:
        assert h(data) != expected
        assert canonical_bytes(codec.decode(h(data))) == expected
    assert codec.decode(expected) == value


# --- signed messages -----------------------------------------------------------------------------


def signed_cases() -> list[Any]:
    return [
        pytest.param(c, id=f"{f}:{c['name']}") for f in ("manifest.json", "revocation.json") for c in load(f)["cases"]
    ] + [pytest.param(load("audit.json")["factory"], id="audit.json:factory")]


@pytest.mark.parametrize("case", signed_cases())
def test_signed_message(case: dict[str, Any]) -> None:
    kind, body = case["type"], from_json(case["body"])
    ident = Identity(h(case["signer_seed_hex"]))
    assert canonical_bytes(body).hex() == case["canonical_body_hex"]
    payload = signing_payload(kind, body)
    assert payload == b"ffnode/v1/" + kind.encode() + b"\x00" + h(case["canonical_body_hex"])
    assert payload.hex() == case["signing_payload_hex"]
    assert ident.sign(payload).hex() == case["signature_hex"]
    assert verify(ident.public_key, h(case["signature_hex"]), payload)
    assert codec.seal(kind, body, ident).hex() == case["envelope_hex"]
    assert codec.body_id(body) == case["id"]
    assert len(h(case["envelope_hex"])) == case["envelope_bytes"]

    msg = open_announcement(h(case["envelope_hex"]))
    assert isinstance(msg, Manifest if kind == "manifest" else Revocation)
    assert msg.id == case["id"]
    assert msg.seal(ident).hex() == case["envelope_hex"]  # the dataclass path signs the same bytes


def noncanonical_cases() -> list[Any]:
    return [
        pytest.param(c, id=c["name"]) for f in ("manifest.json", "revocation.json") for c in load(f)["noncanonical"]
    ]


@pytest.mark.parametrize("case", noncanonical_cases())
def test_noncanonical_envelope_is_accepted(case: dict[str, Any]) -> None:
    data = h(case["envelope_hex"])
    assert data != h(case["canonical_envelope_hex"])
    assert open_announcement(data).id == case["id"]
    assert canonical_bytes(codec.decode(data)) == h(case["canonical_envelope_hex"])


def size_limit_cases() -> list[Any]:
    return [
        pytest.param(c, id=f"{f}:{c['name']}")
        for f in ("manifest.json", "revocation.json")
        for c in load(f)["size_limit"]
    ]


@pytest.mark.parametrize("case", size_limit_cases())
def test_envelope_at_a_limit_is_accepted(case: dict[str, Any]) -> None:
    data = h(case["envelope_hex"])
    assert len(data) == case["envelope_bytes"] <= codec.MAX_ENVELOPE_BYTES
    assert open_announcement(data).id == case["id"]


def test_manifest_vectors_are_accepted_by_a_node(tmp_path: Path) -> None:
    """The signed manifests of manifest.json, size limits included, pass the running node's checks (the arch
    schema among them), each on an empty node; but for the 4 GiB blob, which ffnode's cost bounds refuse."""
    vectors = load("manifest.json")
    for i, case in enumerate(vectors["cases"] + vectors["noncanonical"] + vectors["size_limit"]):
        store = node_store(tmp_path / str(i), "digits", DIGITS)
        if case["name"] == "largest-blob-size":
            with pytest.raises(WireError, match=REASONS["limit"]):
                store.add(h(case["envelope_hex"]))
        else:
            added = store.add(h(case["envelope_hex"]))
            assert added is not None and added.id == case["id"], case["name"]


def test_limit_vectors_sit_on_the_limits() -> None:
    limits: dict[str, tuple[int, Any]] = {}
    for f in ("manifest.json", "revocation.json"):
        for c in load(f)["size_limit"]:
            limits[c["name"]] = (len(h(c["envelope_hex"])), open_announcement(h(c["envelope_hex"])))
    assert limits["largest"][0] == codec.MAX_ENVELOPE_BYTES
    assert limits["largest-blob-size"][1].size == MAX_BLOB_BYTES == 4 * 2**30
    assert len(limits["longest-lineage"][1].lineage) == MAX_LINEAGE
    most = limits["most-ids"][1]
    assert len(most.ids) == MAX_IDS and len(most.reason) == MAX_REASON
    assert len(most.reason.encode("utf-16-le")) // 2 > MAX_REASON  # code points, not UTF-16 units
    deepest = next(c for c in load("manifest.json")["size_limit"] if c["name"] == "deepest")
    assert depth(codec.decode(h(deepest["envelope_hex"]))) == codec.MAX_DEPTH
    too_deep = next(c for c in load("invalid.json")["cases"] if c["name"] == "too-deep")
    assert depth(msgpack.unpackb(h(too_deep["input"]["envelope_hex"]), raw=False)) == codec.MAX_DEPTH + 1
    assert depth({"a": [0]}) == 1 and depth([[]]) == 1 and depth(0) == -1  # only containers count


@pytest.mark.parametrize("case", cases_of("invalid.json"))
def test_invalid_envelope_is_rejected(case: dict[str, Any]) -> None:
    assert case["output"] is None
    with pytest.raises(WireError, match=REASONS[case["reason"]]):
        open_announcement(h(case["input"]["envelope_hex"]))


# --- the arch schema -----------------------------------------------------------------------------


@pytest.mark.parametrize("case", cases_of("arch.json"))
def test_arch_schema(case: dict[str, Any], tmp_path: Path) -> None:
    """Each arch through the running node's acceptance path (the gossip validator and sync run the same check)."""
    vectors = load("arch.json")
    limits = dataclasses.replace(LimitsConfig(), **vectors["limits"])
    assert vectors["max_header_bytes"] == MAX_HEADER_BYTES
    store = Store(
        tmp_path,
        federation=vectors["federation"],
        classes=vectors["class_list"],
        vet=functools.partial(arch.vet, limits=limits),
    )
    data = h(case["envelope_hex"])
    m = open_announcement(data)  # checks 1-8 but the arch: what the vector varies is the arch alone
    assert (m.kind, m.id, m.size) == (case["kind"], case["id"], case["size"])
    assert canonical_bytes(m.arch) == canonical_bytes(from_json(case["arch"]))
    if case["output"] is None:
        with pytest.raises(WireError, match=REASONS[case["reason"]]):
            store.add(data)
        assert store.get(m.id) is None
    else:
        assert case["output"] == "accepted"
        added = store.add(data)
        assert added is not None and added.id == case["id"]
    if "params" in case:  # the schema passed: the count the limits were checked against
        if m.kind == "factory":
            counted = unet_size(arch.factory_config(m))
        else:
            counted = expert_size(*arch.expert_spec(m))
        assert counted == (case["params"], case["weight_bytes"])
    else:
        assert case["reason"] == "value"


def test_readme_arch_tables_are_the_code_defaults() -> None:
    """The field tables of protocol/README.md ("Arch schema") list exactly the config fields, with their types and
    defaults, and the worked examples give the counts arch.json holds."""
    text = (ROOT / "protocol" / "README.md").read_text()
    section = text.split("### Arch schema", 1)[1].split("\n### ", 1)[0]
    tables: dict[str, dict[str, tuple[str, Any]]] = {}
    current = None
    for line in section.splitlines():
        if m := re.match(r"\*\*([^*]+)\*\*", line):
            current = m.group(1)
        elif current and (m := re.match(r"\|\s*`(\w+)`\s*\|\s*([^|]+?)\s*\|\s*`([^`]+)`\s*\|", line)):
            tables.setdefault(current, {})[m.group(1)] = (m.group(2), json.loads(m.group(3)))
    types = {int: "int", float: "float", bool: "bool", str: "str", tuple: "array of int"}
    for title, cls in (("Factory", FactoryConfig), ("Expert network", ExpertConfig)):
        code = {f.name: (types[type(f.default)], f.default) for f in dataclasses.fields(cls)}
        plain = {k: (t, list(v) if isinstance(v, tuple) else v) for k, (t, v) in code.items()}
        assert tables[title] == plain, title
        for name, (_, default) in tables[title].items():  # 0.0 is a float default, 0 an int one
            assert type(default) is type(plain[name][1]), name
    counts = {c["name"]: (c["params"], c["weight_bytes"]) for c in load("arch.json")["cases"] if "params" in c}
    examples = re.findall(r"\|\s*`([\w-]+)`\s*\|[^|\n]*\|\s*([\d ]+?)\s*\|\s*([\d ]+?)\s*\|$", section, re.M)
    assert len(examples) >= 8
    for name, params, weight_bytes in examples:
        assert counts[name] == (int(params.replace(" ", "")), int(weight_bytes.replace(" ", ""))), name


# --- stateful acceptance -------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", cases_of("acceptance.json", "scenarios"))
def test_acceptance(scenario: dict[str, Any], tmp_path: Path) -> None:
    trust = Trust(allowed=frozenset(scenario["allowed_publishers"]))
    store = node_store(tmp_path, scenario["federation"], scenario["class_list"], trust)
    stored: set[bytes] = set()
    for step in scenario["steps"]:
        data = h(step["envelope_hex"])
        assert store.knows(data) == (data in stored), step["description"]  # sync skips exactly these
        if step["output"] is None:
            with pytest.raises(WireError, match=REASONS[step["reason"]]):
                store.add(data)
        elif step["output"] == "duplicate":
            assert store.add(data) is None, step["description"]
        else:
            assert step["output"] == "accepted"
            msg = store.add(data)
            assert msg is not None and msg.id == step["id"], step["description"]
            stored.add(data)
    if "inventory_after" in scenario:
        expected = from_json(scenario["inventory_after"])
        expected = expected["manifests"], expected["revocations"]

        def served(s: Store) -> tuple[list[bytes], list[bytes]]:
            manifests, revocations = s.inventory()
            return [d for _, d in manifests], [d for _, d in revocations]

        assert served(store) == expected  # in ID order, as the pages serve it
        # the inventory survives a restart from the files on disk
        assert served(Store(tmp_path, federation=scenario["federation"], trust=trust)) == expected
        for data in expected[0]:
            if store.is_revoked(open_announcement(data).id):
                with pytest.raises(WireError, match=REASONS["revoked"]):
                    store.check(data)


def test_late_joiner_gets_what_lifecycle_serves() -> None:
    """The late joiner applies the inventory of the lifecycle node (manifests first) and ends up serving the
    same; the sync vectors serve exactly that inventory, in one page and in three."""
    scenarios = {s["name"]: s for s in load("acceptance.json")["scenarios"]}
    served = scenarios["lifecycle"]["inventory_after"]
    steps = scenarios["late-joiner"]["steps"]
    synced = [s["envelope_hex"] for s in steps[1:] if s["output"] in ("accepted", "duplicate")]
    assert synced == served["manifests_hex"] + served["revocations_hex"]  # manifests first
    assert scenarios["late-joiner"]["inventory_after"] == served
    sync = load("sync.json")
    response = from_json(sync["response"]["value"])
    assert [x.hex() for x in response["manifests"]] == served["manifests_hex"]
    assert [x.hex() for x in response["revocations"]] == served["revocations_hex"]
    paged: dict[str, list[str]] = {"manifests": [], "revocations": []}
    for exchange in sync["pages"]["exchanges"]:
        page = from_json(exchange["response"]["value"])
        for key in paged:
            paged[key] += [x.hex() for x in page[key]]
    assert paged == {"manifests": served["manifests_hex"], "revocations": served["revocations_hex"]}


@pytest.mark.parametrize("case", cases_of("ownership.json", "cases"))
def test_blob_ownership(case: dict[str, Any], tmp_path: Path) -> None:
    store = node_store(tmp_path, load("ownership.json")["federation"])
    m = store.add(h(case["manifest_envelope_hex"]))
    tmp = store.tmp_path(m.blob)
    tmp.write_bytes(h(case["blob_hex"]))
    if case["output"] == "live":
        store.put_blob_file(tmp, m)
        assert store.entry(m.id).state == "live"
    else:
        with pytest.raises(WireError, match=REASONS[case["reason"]]):
            store.put_blob_file(tmp, m)
        assert store.get(m.id) is None and not (tmp_path / "blobs" / m.blob).exists()  # dropped, nothing kept
        with pytest.raises(WireError, match="was refused here"):
            store.add(h(case["manifest_envelope_hex"]))


# --- in-memory libp2p stream for the stream protocols ---------------------------------------------


class MemoryStream:
    """Just enough of INetStream for ffnode.net.streams: reads from `incoming`, records what is written."""

    def __init__(self, incoming: bytes) -> None:
        self._incoming = bytearray(incoming)
        self.written = bytearray()
        self.closed = self.write_closed = self.was_reset = False
        self.muxed_conn = SimpleNamespace(peer_id=SimpleNamespace(to_base58=lambda: "12D3KooWMemoryStream"))

    async def read(self, n: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        n = len(self._incoming) if n is None else n
        chunk = bytes(self._incoming[:n])
        del self._incoming[:n]
        return chunk  # b"" at the end: the peer closed its write side

    async def write(self, data: bytes) -> None:
        await trio.lowlevel.checkpoint()
        self.written += data

    async def close(self) -> None:
        self.closed = True

    async def close_write(self) -> None:
        self.write_closed = True

    async def reset(self) -> None:
        self.was_reset = True

    def get_protocol(self) -> str:
        return "/ffnode/test"


def run(fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    return trio.run(fn, *args)


# --- sync ----------------------------------------------------------------------------------------


def test_sync_messages() -> None:
    vectors = load("sync.json")
    request, response, empty = vectors["request"], vectors["response"], vectors["empty_response"]
    federation, class_list = (from_json(request["value"])[k] for k in ("federation", "class_list"))
    assert inventory_request(federation, class_list, "").hex() == request["body_hex"]
    assert parse_inventory_request(h(request["body_hex"])) == (federation, class_list, "")

    value = from_json(response["value"])
    parts = value["manifests"], value["revocations"], value["next"]
    assert inventory_response(*parts).hex() == response["body_hex"]
    assert parse_inventory_response(h(response["body_hex"])) == (*parts, [])  # an open federation: no members
    for item in value["manifests"] + value["revocations"]:
        open_announcement(item)  # each item is a valid envelope on its own
    assert inventory_response([], [], "").hex() == empty["body_hex"]

    by_id = [(open_announcement(d).id, d) for d in value["manifests"]]
    by_id_r = [(open_announcement(d).id, d) for d in value["revocations"]]
    assert inventory_page(by_id, by_id_r, "").hex() == response["body_hex"]  # all of it fits one page
    for exchange in vectors["pages"]["exchanges"]:  # and one envelope per page, cursor by cursor
        _, _, cursor = parse_inventory_request(h(exchange["request"]["body_hex"]))
        assert inventory_page(by_id, by_id_r, cursor, max_bytes=1).hex() == exchange["response"]["body_hex"]

    for entry in (request, response, empty):
        body = h(entry["body_hex"])
        assert h(entry["frame_hex"]) == len(body).to_bytes(4, "big") + body


@pytest.mark.parametrize("case", cases_of("sync.json", "invalid"))
def test_sync_invalid(case: dict[str, Any]) -> None:
    parse = parse_inventory_request if case["name"].startswith("request") else parse_inventory_response
    with pytest.raises(WireError):
        parse(h(case["body_hex"]))


def test_sync_over_a_stream() -> None:
    vectors = load("sync.json")
    request, response = vectors["request"], vectors["response"]

    def serve_request(peer: str, body: bytes) -> bytes:
        assert parse_inventory_request(body) == ("digits", DIGITS, "")
        value = from_json(response["value"])
        return inventory_response(value["manifests"], value["revocations"], value["next"])

    server = MemoryStream(h(request["frame_hex"]))
    run(streams.serve_sync, server, serve_request)
    assert server.written.hex() == response["frame_hex"] and server.closed

    client = MemoryStream(h(response["frame_hex"]))
    body = run(streams.sync_request, client, h(request["body_hex"]), 16 * 2**20)
    assert client.written.hex() == request["frame_hex"] and client.write_closed
    assert body.hex() == response["body_hex"]


# --- blob ----------------------------------------------------------------------------------------


def test_blob_server(tmp_path: Path) -> None:
    vectors = load("blob.json")
    blob = h(vectors["blob_hex"])
    path = tmp_path / vectors["blob_id"]
    path.write_bytes(blob)
    assert hashlib.sha256(blob).hexdigest() == vectors["blob_id"] and len(blob) == vectors["blob_size"]

    def open_blob(blob_id: str) -> Path | None:
        return path if blob_id == vectors["blob_id"] else None

    server = MemoryStream(h(vectors["request"]["frame_hex"]))
    run(streams.serve_blob, server, open_blob)
    assert server.written.hex() == vectors["response_hex"] and server.closed
    assert vectors["response_hex"] == vectors["header"]["frame_hex"] + vectors["blob_hex"]

    server = MemoryStream(h(vectors["not_found"]["request_frame_hex"]))
    run(streams.serve_blob, server, open_blob)
    assert server.written.hex() == vectors["not_found"]["frame_hex"] and server.closed


@pytest.mark.parametrize("case", cases_of("blob.json", "invalid_requests"))
def test_blob_server_rejects(case: dict[str, Any], tmp_path: Path) -> None:
    server = MemoryStream(h(case["frame_hex"]))
    with pytest.raises(streams.FrameError):  # guard_handler turns this into a stream reset
        run(streams.serve_blob, server, lambda blob_id: tmp_path / "never-served")
    assert not server.written


def test_blob_client(tmp_path: Path) -> None:
    vectors = load("blob.json")
    dest = tmp_path / "fetched"
    client = MemoryStream(h(vectors["response_hex"]))
    run(streams.fetch_blob, client, vectors["blob_id"], vectors["blob_size"], dest, 5.0)
    assert client.written.hex() == vectors["request"]["frame_hex"] and client.write_closed
    assert dest.read_bytes().hex() == vectors["blob_hex"]

    header = from_json(vectors["header"]["value"])
    request = from_json(vectors["request"]["value"])
    assert header == {"t": "blob_hdr", "v": 1, "ok": True, "size": vectors["blob_size"]}
    assert request == {"t": "blob_get", "v": 1, "id": vectors["blob_id"]}


def test_blob_client_rejects_a_corrupt_blob(tmp_path: Path) -> None:
    vectors = load("blob.json")
    response = bytearray(h(vectors["response_hex"]))
    response[-1] ^= 0x01  # same size, wrong sha256
    client = MemoryStream(bytes(response))
    with pytest.raises(streams.BlobError, match="sha256 mismatch"):
        run(streams.fetch_blob, client, vectors["blob_id"], vectors["blob_size"], tmp_path / "x", 5.0)


# --- the files are what the generator writes -------------------------------------------------------


def test_vectors_are_up_to_date() -> None:
    """protocol/vectors/*.json are exactly what protocol/make_vectors.py produces from the current code."""
    spec = importlib.util.spec_from_file_location("make_vectors", ROOT / "protocol" / "make_vectors.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rendered = module.render()
    assert sorted(rendered) == sorted(p.name for p in VECTORS.glob("*.json"))
    stale = [name for name, text in rendered.items() if (VECTORS / name).read_text() != text]
    assert not stale, f"rerun `python protocol/make_vectors.py`: {stale} differ"


def test_the_largest_expert_manifest_fits_an_envelope() -> None:
    """Every bound at once: the longest class list, a label index and two label counts per class, the longest
    lineage. A federation the config accepts can always publish its experts."""
    n = codec.MAX_CLASS_LIST
    name_bytes = (codec.MAX_CLASS_LIST_BYTES - 3) // n - 1  # each name's str header is one byte
    names = [f"{i:03d}".ljust(name_bytes, "x") for i in range(n)]
    assert len(canonical_bytes(names)) <= codec.MAX_CLASS_LIST_BYTES
    owner = Identity(b"\x33" * 32)
    counts = [10**8] * n
    m = Manifest(
        "expert", owner.peer_id, owner.public_key, "federation", list(range(n)), names,
        {"expert": {"width": 1024, "blocks": [16] * 8}, "num_classes": n, "image_shape": [512, 512, 4]},
        "0" * 64, 2**32, 2**62, 2**62, ["f" * 64] * MAX_LINEAGE, 2**62,
        {"real_counts": counts, "label_counts": counts, "n_real": 10**10, "n_train": 10**10, "seconds": 1.5},
    )  # fmt: skip
    assert len(m.seal(owner)) <= codec.MAX_ENVELOPE_BYTES


def test_a_class_name_that_is_not_utf8_is_refused_by_name() -> None:
    with pytest.raises(WireError, match="not valid UTF-8"):
        codec.check_class_list(["ok", "\udc80"])


def test_readme_limits_are_the_code_constants() -> None:
    """The limits table of protocol/README.md ("Parameters and limits") states ffnode's constants."""
    table = {}
    for line in (ROOT / "protocol" / "README.md").read_text().splitlines():
        if m := re.match(r"\|\s*`([A-Z_]+)`\s*\|.*\|\s*([^|]+?)\s*\|$", line):
            table[m.group(1)] = m.group(2)

    def number(cell: str) -> int:  # "16 MiB (16777216)" -> 16777216, "800" -> 800
        inner = re.search(r"\((\d+)\)", cell)
        return int(inner.group(1) if inner else re.match(r"\d+", cell).group(0))  # type: ignore[union-attr]

    expected = {
        "VERSION": codec.VERSION,
        "MAX_ENVELOPE_BYTES": codec.MAX_ENVELOPE_BYTES,
        "MAX_BLOB_BYTES": MAX_BLOB_BYTES,
        "MAX_CLASSES": MAX_CLASSES,
        "MAX_CLASS_LIST": codec.MAX_CLASS_LIST,
        "MAX_CLASS_NAME_BYTES": codec.MAX_CLASS_NAME_BYTES,
        "MAX_CLASS_LIST_BYTES": codec.MAX_CLASS_LIST_BYTES,
        "MAX_REQUEST_BYTES": MAX_REQUEST_BYTES,
        "MAX_LINEAGE": MAX_LINEAGE,
        "MAX_IDS": MAX_IDS,
        "MAX_REASON": MAX_REASON,
        "MAX_PAGE_BYTES": MAX_PAGE_BYTES,
        "MAX_INVENTORY_ITEMS": MAX_INVENTORY_ITEMS,
        "MAX_CURSOR": MAX_CURSOR,
        "MAX_DEPTH": codec.MAX_DEPTH,
        "MAX_HEADER_BYTES": MAX_HEADER_BYTES,
        "MAX_IMAGE_SIDE": arch.MAX_IMAGE_SIDE,
        "MAX_CHANNELS": arch.MAX_CHANNELS,
        "MAX_LEVELS": arch.MAX_LEVELS,
        "MAX_WIDTH": arch.MAX_WIDTH,
        "MAX_TIMESTEPS": arch.MAX_TIMESTEPS,
    }
    assert {name: number(table[name]) for name in expected} == expected


def test_every_reason_is_known() -> None:
    reasons = {c["reason"] for c in load("invalid.json")["cases"]}
    reasons |= {c["reason"] for c in load("arch.json")["cases"] if c["output"] is None}
    for scenario in load("acceptance.json")["scenarios"]:
        reasons |= {s["reason"] for s in scenario["steps"] if s["output"] is None}
    assert reasons <= set(REASONS)
    assert all(re.compile(p) for p in REASONS.values())


# --- discovery -----------------------------------------------------------------------------------


def test_discovery_records_and_messages() -> None:
    vectors = load("discovery.json")
    assert peers_request("digits", DIGITS).hex() == vectors["request"]["body_hex"]
    assert parse_request(bytes.fromhex(vectors["request"]["body_hex"])) == ("peers_req", "digits", DIGITS, "")
    envelopes = []
    for case in vectors["records"]:
        key = create_new_key_pair(bytes.fromhex(case["signer_seed_hex"]))
        data = seal(key.private_key, case["addrs"], case["seq"])
        assert data.hex() == case["envelope_hex"], case["name"]  # Ed25519 and protobuf: byte for byte
        record = open_record(data)
        assert (record.peer_id, record.seq, list(record.addrs)) == (case["peer_id"], case["seq"], case["dial_addrs"])
        assert key.private_key.sign(bytes.fromhex(case["signing_input_hex"])).hex() == case["signature_hex"]
        envelopes.append(data)
    assert peers_response(envelopes).hex() == vectors["response"]["body_hex"]
    assert parse_peers_response(bytes.fromhex(vectors["response"]["body_hex"])) == envelopes


@pytest.mark.parametrize("case", cases_of("discovery.json", "invalid_records"))
def test_discovery_invalid_records(case: dict[str, Any]) -> None:
    with pytest.raises(WireError):
        open_record(bytes.fromhex(case["envelope_hex"]))


# --- factory audits -----------------------------------------------------------------------------------
@pytest.mark.parametrize("case", cases_of("audit.json", "cases"))
def test_factory_audit_verdicts(case: dict[str, Any]) -> None:
    meta, policy = from_json(case["meta"]), AuditPolicy(**case["thresholds"])
    verdict = judge(meta, policy)
    if case["output"] == "use":
        assert verdict is None
    else:
        assert verdict is not None
        if case["reason"] not in ("no-audit", "malformed"):
            assert case["reason"] in verdict.split(";")[0]
    if "verdict" in case:  # valid figures: the three-way verdict, and the power the spec's formula gives
        word, power = three_way(audit_of(meta), policy)
        assert (word, round(power, 4)) == (case["verdict"], case["power"])
        assert (word == "fails") == (case["output"] is None and case["reason"] != "inconclusive")
