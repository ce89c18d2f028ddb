"""A short fuzz run over every parser of peer bytes (scripts/fuzz.py runs the long one): no input may raise
anything but the parser's declared rejection type."""

from __future__ import annotations

import json

import msgpack
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from libp2p.relay.circuit_v2.config import RelayConfig
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage
from libp2p.relay.circuit_v2.protocol import CircuitV2Protocol
from libp2p.relay.circuit_v2.transport import CircuitV2Transport
from libp2p.utils.varint import encode_varint_prefixed

from harness.fuzz import (
    BOB_ID,
    VECTORS,
    _arch,
    _audit,
    _Bytes,
    _dcutr,
    _host,
    _open_record,
    _pb,
    _relay_hop,
    _relay_stop,
    check,
    relay_seeds,
    targets,
    valid_records,
)


@pytest.mark.parametrize("target", targets(), ids=lambda t: t.name)
def test_only_declared_errors(target) -> None:  # noqa: ANN001
    @settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(target.strategy)
    def run(data: bytes) -> None:
        assert check(target, data) is None, data[:80]

    run()


def test_the_targets_accept_what_is_valid() -> None:
    """The strategies start from valid messages: a target that refused them would only ever fuzz its first check."""
    for record in valid_records():
        _open_record(record)
    hop_reserve, hop_connect, hop_status, stop, connect, connect_sync = relay_seeds()
    for frame in (hop_reserve, hop_connect, hop_status):
        _relay_hop(frame)
    _relay_stop(stop)
    _dcutr(connect)
    _dcutr(connect_sync)
    cases = json.loads((VECTORS / "arch.json").read_text())["cases"]
    accepted = [c for c in cases if c["output"] == "accepted"]
    assert accepted, "arch.json names its accepted cases"
    for case in accepted:
        _arch(msgpack.packb([case["kind"], case["arch"], case["size"]]))
    for case in json.loads((VECTORS / "audit.json").read_text())["cases"]:
        _audit(msgpack.packb(case["meta"]))


class _ReadOnly(_Bytes):
    async def write(self, data: bytes) -> None:
        """The reservation request goes nowhere; the relay's answer is already in the buffer."""


def test_a_relay_status_outside_the_enum_costs_only_the_reservation() -> None:
    """relay_hop declares ValueError: py-libp2p's client raises it reading a relay's status outside its enum
    (the fuzzer found 194). This pins where it is contained: the library's own reservation code, which then
    reports the reservation as failed, as it does for a refusal."""
    transport = CircuitV2Transport(_host(), CircuitV2Protocol(_host()), RelayConfig())
    answers = {status: encode_varint_prefixed(_pb([(1, HopMessage.STATUS), (5, status)])) for status in (100, 194)}
    with pytest.raises(ValueError):
        _relay_hop(answers[194])
    assert trio.run(transport._make_reservation, _ReadOnly(answers[100]), BOB_ID) is True
    assert trio.run(transport._make_reservation, _ReadOnly(answers[194]), BOB_ID) is False
