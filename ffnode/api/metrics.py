"""`GET /metrics`: the node's figures in Prometheus' text format (prometheus_client), read from the node's parts at
each scrape, so nothing is counted twice and nothing is kept that the node does not keep already.

Series (all prefixed ffnode_): info, phase, progress_{done,total}, uptime_seconds, artifacts{kind,state},
peers_connected, peers_relayed, peer_records, libp2p_connections{direction} (py-libp2p's own count),
connections_refused_total{limit}, streams_refused_total{limit}, sent_bytes_total{kind}, fetched_bytes_total,
messages_accepted_total, rejections_total{reason}, jobs_total{outcome}, job_seconds{kind} (histogram),
job_core_seconds_total{phase}, queries_total{outcome}, query_images_total, query_seconds (histogram),
query_worker_failures_total, audits{own,verdict}, fault, store_damaged, withheld_factories; and the process's own
(process_resident_memory_bytes, ...).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from ffnode.privacy.policy import AuditPolicy
from ffnode.privacy.report import audit_rows
from ffnode.stats import Histogram


def _gauge(name: str, doc: str, **kw: Any) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"ffnode_{name}", doc, **kw)


def _counter(name: str, doc: str, **kw: Any) -> CounterMetricFamily:
    return CounterMetricFamily(f"ffnode_{name}", doc, **kw)


def _histogram(name: str, doc: str, labels: list[str]) -> HistogramMetricFamily:
    return HistogramMetricFamily(f"ffnode_{name}", doc, labels=labels)


def _add(family: HistogramMetricFamily, values: list[str], h: Histogram) -> None:
    family.add_metric(values, h.buckets(), sum_value=h.total)


class NodeCollector(Collector):
    def __init__(self, node: Any, handlers: Any) -> None:
        self.node, self.handlers = node, handlers

    def collect(self) -> Iterator[Metric]:
        node, h = self.node, self.handlers
        info = _gauge("info", "This node.", labels=["peer_id", "federation"])
        info.add_metric([node.identity.peer_id, node.config.federation.name], 1)
        yield info
        if node.learner is not None:
            p = node.learner.progress
            phase = _gauge("phase", "The learner's phase (1 for the current one).", labels=["phase"])
            phase.add_metric([p.phase], 1)
            yield phase
            yield _gauge("progress_done", "Work done in the current phase.", value=p.done)
            yield _gauge("progress_total", "Work of the current phase.", value=p.total)
        yield GaugeMetricFamily(
            "ffnode_uptime_seconds", "Seconds since the node started.", value=time.time() - node.started
        )

        artifacts = GaugeMetricFamily(
            "ffnode_artifacts", "Artifacts held, by kind and state.", labels=["kind", "state"]
        )
        counts: dict[tuple[str, str], int] = {}
        for e in node.store.entries():
            counts[(e.manifest.kind, e.state)] = counts.get((e.manifest.kind, e.state), 0) + 1
        for (kind, state), n in sorted(counts.items()):
            artifacts.add_metric([kind, state], n)
        yield artifacts

        paths = node.net.connection_paths()
        yield _gauge("peers_connected", "Peers connected now.", value=len(node.net.connected_peers()))
        yield _gauge("peers_relayed", "Connected peers reached through a relay.",
                                value=sum(p == "relayed" for p in paths.values()))  # fmt: skip
        yield GaugeMetricFamily(
            "ffnode_peer_records", "Signed peer records held.", value=len(node.discovery.book.entries)
        )

        libp2p = _gauge("libp2p_connections", "Open connections, as py-libp2p's swarm counts them.",
                        labels=["direction"])  # fmt: skip
        for direction, n in sorted(node.net.connection_counts().items()):
            if direction != "peers":
                libp2p.add_metric([direction], n)
        yield libp2p
        refused = _counter("connections_refused", "Connections refused by a limit, by limit.", labels=["limit"])
        for limit, n in sorted(node.net.refusals.counts.items()):
            refused.add_metric([limit], n)
        yield refused
        reset = _counter("streams_refused", "Streams reset by a per-peer limit, by limit.", labels=["limit"])
        for limit, n in sorted(node.net.stream_refusals.counts.items()):
            reset.add_metric([limit], n)
        yield reset

        t = node.intake.traffic
        sent = _counter("sent_bytes", "Application bytes sent to peers.", labels=["kind"])
        for kind in ("blob", "sync", "gossip"):
            sent.add_metric([kind], getattr(t, f"{kind}_bytes"))
        yield sent
        yield _counter("fetched_bytes", "Blob bytes fetched from peers.", value=t.fetched_bytes)
        ledger = node.ledger
        yield _counter("messages_accepted", "Peers' messages accepted.", value=ledger.accepted_total)
        rejections = _counter("rejections", "Peers' messages refused, by reason.", labels=["reason"])
        for reason, n in sorted(ledger.reasons().items()):
            rejections.add_metric([reason], n)
        yield rejections

        runner = node.runner
        jobs = _counter("jobs", "Learning jobs ended, by outcome.", labels=["outcome"])
        for outcome, n in runner.jobs.items():
            jobs.add_metric([outcome], n)
        yield jobs
        durations = _histogram("job_seconds", "Wall seconds of each learning job, by kind.", ["kind"])
        for kind, hist in sorted(runner.durations.items()):
            _add(durations, [kind], hist)
        yield durations
        core = CounterMetricFamily(
            "ffnode_job_core_seconds", "CPU core-seconds jobs spent, by phase.", labels=["phase"]
        )
        for phase, seconds in sorted(runner.compute.items()):
            core.add_metric([phase], seconds)
        yield core

        queries = _counter("queries", "Queries, by outcome.", labels=["outcome"])
        for outcome, n in h.queries.items():
            queries.add_metric([outcome], n)
        yield queries
        yield _counter("query_images", "Images answered.", value=h.query_images)
        latency = _histogram("query_seconds", "Seconds to answer one query (one or many images).", [])
        _add(latency, [], h.query_seconds)
        yield latency
        failures = node.pool.failures if node.pool is not None else 0
        yield _counter("query_worker_failures", "Queries the query worker failed.", value=failures)

        audits = _gauge("audits", "Factory audits, by owner and verdict.", labels=["own", "verdict"])
        tally: dict[tuple[str, str], int] = {}
        rows = audit_rows(
            node.home, node.config, node.store, node.identity.peer_id, AuditPolicy.of(node.config.privacy)
        )
        for r in rows:
            key = ("true" if r["own"] else "false", r["outcome"])
            tally[key] = tally.get(key, 0) + 1
        for key, n in sorted(tally.items()):
            audits.add_metric(list(key), n)
        yield audits
        yield _gauge("fault", "1 while a local fault (e.g. a full disk) stops intake.",
                                value=int(node.intake.fault is not None))  # fmt: skip
        yield GaugeMetricFamily(
            "ffnode_store_damaged", "Artifacts found damaged at start.", value=len(node.store.damaged)
        )
        withheld = len(node.learner.withheld) if node.learner is not None else 0
        yield _gauge("withheld_factories", "Own factories withheld by the audit.", value=withheld)


class Metrics:
    """The registry /metrics renders: the node's collector and the process's own."""

    def __init__(self, node: Any, handlers: Any) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(NodeCollector(node, handlers))
        ProcessCollector(registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
