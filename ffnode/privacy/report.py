"""The audit table: this site's own factory audits (published, withheld or failed; from the audit records in
work/factory-<class>/) and the figures its peers' factories carry, each judged under this node's thresholds.
`ffnode audit` prints it and the HTTP API serves it; it reads files only, so a node need not run, and it loads
no torch."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ffnode.artifacts.store import Store
from ffnode.config import Config
from ffnode.privacy.policy import AUDIT_FILE, AuditPolicy, audit_of, audit_verdict, refusals, verdict_text

log = logging.getLogger("ffnode.audit")


def audit_rows(home: Path, config: Config, store: Store, me: str, policy: AuditPolicy) -> list[dict]:
    """One row per audit: factory ID (None if not published), class, owner, own, step, state, verdict ("passes",
    "inconclusive (...)" or the refusals), outcome (passes, inconclusive, fails; unreadable for figures this node
    cannot judge), power (policy.mia_power), figures."""
    return _own_rows(home, config, store, me, policy) + _peer_rows(config, store, me, policy)


def _own_rows(home: Path, config: Config, store: Store, me: str, policy: AuditPolicy) -> list[dict]:
    published = {  # (class, audited step) -> own factory manifest
        (m.classes[0], m.meta["audit"]["step"]): m
        for e in store.entries()
        if (m := e.manifest).owner == me and m.kind == "factory" and isinstance(m.meta.get("audit"), dict)
    }
    rows = []
    for path in sorted((home / "work").glob(f"factory-*/{AUDIT_FILE}")):
        try:
            label = int(path.parent.name.split("-", 1)[1])
            audits = json.loads(path.read_text())["audits"]
            reports = sorted(((int(step), r["figures"]) for step, r in audits.items()), key=lambda x: -x[0])
            config.federation.classes[label]
        except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
            log.warning("skipping %s: not an audit record of this node's classes (the next audit rewrites it)", path)
            continue
        for step, figures in reports:
            if not isinstance(audit_of({"audit": figures}), dict):
                continue
            m = published.get((label, step))
            why = refusals(figures, policy)
            rows.append({
                "factory": m.id if m else None,
                "class": config.federation.classes[label],
                "owner": me,
                "own": True,
                "step": int(step),
                "state": store.entry(m.id).state if m else ("failed" if why else "not published"),
                "verdict": verdict_text(figures, policy),
                **_judged(figures, policy),
                "figures": figures,
            })  # fmt: skip
    return rows


def _judged(figures: dict, policy: AuditPolicy) -> dict:
    """{"outcome", "power"} of valid figures under this node's thresholds (policy.audit_verdict)."""
    judged = audit_verdict({"audit": figures}, policy)
    return {"outcome": judged["verdict"], "power": judged["power"]}


def _peer_rows(config: Config, store: Store, me: str, policy: AuditPolicy) -> list[dict]:
    rows = []
    for e in store.entries():
        m = e.manifest
        if m.kind != "factory" or m.owner == me:
            continue
        figures = audit_of(m.meta)
        ok = isinstance(figures, dict)
        rows.append({
            "factory": m.id,
            "class": config.federation.classes[m.classes[0]] if m.classes[0] < len(config.federation.classes) else "?",
            "owner": m.owner,
            "own": False,
            "step": figures["step"] if ok else None,
            "state": e.state,
            "verdict": verdict_text(figures, policy) if ok else figures,
            **(_judged(figures, policy) if ok else {"outcome": "unreadable", "power": None}),
            "figures": figures if ok else None,
        })  # fmt: skip
    return rows
