"""Export a site's Product-of-Experts as one self-contained ONNX file, its JSON sidecar, and tell stale exports.

The file is the classifier a query here answers with, and nothing else is needed to run it: the experts
ffnode.voters admits (each owner's newest live expert, none of whose lineage is revoked), their weights, and the
combination rule with its priors baked in as constants. Its graph is

    images (B, H, W, C) uint8, 0..255
      -> expert k: log_softmax(ResNet_k(images))          (K, B, C); each expert normalises x / 127.5 - 1 itself
      -> poe_combine (ffnode.poe: the product, or the prior-corrected rule with the counts as constants)
      -> probabilities = exp(.)  (B, C) float32,  label = argmax  (B,) int64

traced from the same modules and the same `poe_combine` a query runs, by torch's ONNX exporter (torch.export,
dynamo), with a dynamic batch axis and the weights inside the file (no external-data side file).

Staleness. An export is a copy of experts that the federation may later withdraw: a revocation (a site left or
withdrew a factory), a quarantine or a blocked publisher makes the node drop them and retrain, but the file keeps
answering with them. So each export is recorded in the home (`exports.jsonl`: its path, sha256 and the artifact
IDs it depends on: its experts and the factories in their lineage), and `stale` judges a record against the store:
it is stale when one of those artifacts is no longer live here (revoked, quarantined, blocked, refused, or gone
with its tombstone), or when the experts that answer queries now are not the ones it holds.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ffnode.artifacts.manifest import Manifest
from ffnode.artifacts.store import Store, atomic_write, fsync_dir, sha256_file
from ffnode.poe import poe_combine
from ffnode.query import ExpertPool
from ffnode.voters import Priors, Voters, admit, candidates

FORMAT = 1  # the sidecar's format version: a reader refuses versions it does not know
EXPORTS = "exports.jsonl"  # in the home: one line per export, appended, never rewritten
INPUT, OUTPUTS = "images", ("probabilities", "label")
UNUSABLE = ("revoked", "untrusted", "quarantined", "refused")  # store states that withdraw an artifact here


class PoEModel(nn.Module):
    """The experts and the combination rule as one module: what the ONNX file holds.

    The rule's priors are numpy counts that `poe_combine` turns into tensors while it is traced, so they end up as
    constants of the graph, computed by the very code a query runs."""

    def __init__(self, experts: Sequence[nn.Module], priors: Priors | None) -> None:
        super().__init__()
        self.experts = nn.ModuleList(experts)
        self.priors = priors

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, H, W, C) pixel values 0..255 -> (B, C) probabilities and (B,) class indices."""
        log_probs = torch.stack([F.log_softmax(m(images).float(), dim=1) for m in self.experts])  # (K, B, C)
        combined = poe_combine(log_probs, self.priors)  # (B, C) log-probabilities
        return combined.exp(), combined.argmax(dim=1)


@dataclass(frozen=True)
class Site:
    """Whose PoE is exported: the node's identity and its federation's terms."""

    federation: str
    peer_id: str
    classes: list[str]
    image_shape: tuple[int, int, int]  # (H, W, C)


def export_poe(store: Store, site: Site, rule: str, out: Path, home: Path, notes: Sequence[str] = ()) -> dict:
    """Write the PoE a query by `rule` is answered with now as the ONNX file `out`, its sidecar `out`.json, and
    a line in the home's exports.jsonl. Returns the sidecar.

    NoExperts or CannotAnswer (ffnode.voters) when a query would be refused: the file would answer nothing, or
    one class for every image. `notes`: warnings from the caller (the node is training), kept in the sidecar."""
    pool = ExpertPool(store, len(site.classes), site.image_shape)
    experts = pool.experts()
    manifests = [m for m, _ in experts]
    report, priors = admit(store, manifests, site.classes, rule)
    model = PoEModel([module for _, module in experts], priors).eval()
    t0 = time.perf_counter()
    opset = _write_onnx(model, site.image_shape, out)
    seconds = time.perf_counter() - t0
    h, w, c = site.image_shape
    sidecar = {
        "format": FORMAT,
        "file": out.name,
        "sha256": sha256_file(out),
        "size": out.stat().st_size,
        "exporter": {"format": "onnx", "opset": opset, "via": f"torch.onnx.export (dynamo), torch {torch.__version__}"},
        "export_seconds": round(seconds, 2),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "federation": site.federation,
        "peer_id": site.peer_id,
        "classes": site.classes,
        "input": {
            "name": INPUT,
            "shape": ["batch", h, w, c],
            "layout": "NHWC",
            "dtype": "uint8",
            "range": [0, 255],
            # inside the graph: feed the raw pixel values, as `ffnode query` reads an image file
            "normalisation": "x / 127.5 - 1, per pixel and channel, inside the graph",
        },
        "outputs": {
            "probabilities": {"shape": ["batch", len(site.classes)], "dtype": "float32"},
            "label": {"shape": ["batch"], "dtype": "int64", "meaning": "index into classes"},
        },
        "rule": "product" if priors is None else "prior",
        "priors": None
        if priors is None
        else {"train_counts": priors.train_counts.tolist(), "real_counts": priors.real_counts.tolist()},
        "experts": [{"id": m.id, "owner": m.owner, "seq": m.seq, "lineage": sorted(m.lineage)} for m in manifests],
        "lineage": sorted({aid for m in manifests for aid in m.lineage}),
        "uncovered_classes": report["uncovered_classes"],
        "uncovered_why": report["uncovered_why"],
        "warnings": [*notes, *retraining(store)],
    }
    atomic_write(sidecar_path(out), (json.dumps(sidecar, indent=2, sort_keys=True) + "\n").encode())
    _record(home, out, sidecar)
    return sidecar


def sidecar_path(out: Path) -> Path:
    return out.with_name(out.name + ".json")


def _write_onnx(model: PoEModel, image_shape: tuple[int, int, int], out: Path) -> int:
    """Export `model` to `out` (written whole or not at all) with a dynamic batch axis; returns the opset."""
    example = torch.zeros((2, *image_shape), dtype=torch.uint8)  # 2, not 1: a batch of 1 would be specialised
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with warnings.catch_warnings(), _quiet("torch.onnx", "torch.export"), torch.no_grad():
            warnings.simplefilter("ignore")  # the exporter's deprecation notices and a missing torchvision
            program = torch.onnx.export(
                model,
                (example,),
                str(tmp),
                dynamo=True,
                external_data=False,  # one file: the weights inside
                input_names=[INPUT],
                output_names=list(OUTPUTS),
                dynamic_shapes={"images": {0: torch.export.Dim("batch")}},
                verbose=False,
            )
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(out.parent)
    return int(program.model.opset_imports[""])


@contextlib.contextmanager
def _quiet(*names: str) -> Iterator[None]:
    """Raise loggers to ERROR for a while: the exporter logs each operator set it cannot register (torchvision)."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def retraining(store: Store) -> list[str]:
    """Why the experts may change soon, from the store: live experts left out because their lineage is revoked
    (their owners retrain them without it, or are offline). An export now answers without those sites' votes."""
    tainted = [m for m in store.live("expert") if any(store.is_revoked(a) for a in m.lineage)]
    answering = {m.owner for m in candidates(store)}
    return [
        f"expert {m.id[:12]} of {m.owner[:12]} is left out until it is retrained without a revoked factory"
        + ("" if m.owner in answering else "; that site has no vote meanwhile")
        for m in tainted
    ]


def _record(home: Path, out: Path, sidecar: dict) -> None:
    """Append the export to the home's exports.jsonl: one line, written at once and made durable."""
    line = {
        "path": str(out.resolve()),
        "sha256": sidecar["sha256"],
        "created": sidecar["created"],
        "rule": sidecar["rule"],
        "experts": [e["id"] for e in sidecar["experts"]],
        "lineage": sidecar["lineage"],
    }
    with open(home / EXPORTS, "ab") as f:
        f.write((json.dumps(line, sort_keys=True) + "\n").encode())
        f.flush()
        os.fsync(f.fileno())


def exports(home: Path) -> list[dict]:
    """The home's recorded exports, the newest per path (a later export to the same path replaced the file); a
    line a crash cut short is skipped."""
    path = home / EXPORTS
    if not path.exists():
        return []
    latest: dict[str, dict] = {}
    for text in path.read_text().splitlines():
        try:
            line = json.loads(text)
        except json.JSONDecodeError:
            continue
        if isinstance(line, dict) and isinstance(line.get("path"), str):
            latest[line["path"]] = line
    return list(latest.values())


def stale(store: Store, record: dict, voters: Sequence[Manifest]) -> list[str]:
    """Why the export `record` no longer answers as the node does (empty: it still does). `voters`: the experts
    that answer queries now (ffnode.voters.Voters.current)."""
    why = []
    revoked = {aid for r in store.revocations() for aid in r.ids}
    for kind, ids in (("expert", record["experts"]), ("factory", record["lineage"])):
        for aid in ids:
            m = store.get(aid)
            if m is None:  # a revoked expert's manifest is compacted away; its tombstone stays
                why.append(f"{kind} {aid[:12]} is {'revoked' if aid in revoked else 'no longer held here'}")
            elif (state := store.entry(aid).state) in UNUSABLE:
                why.append(f"{kind} {aid[:12]} of {m.owner[:12]} is {state}")
    now = sorted(m.id for m in voters)
    if now != sorted(record["experts"]):
        why.append(f"the node answers with other experts now ({', '.join(a[:12] for a in now) or 'none'})")
    return why


def check_exports(home: Path, store: Store, num_classes: int, image_shape: tuple[int, int, int]) -> list[dict]:
    """Every recorded export (the newest per path) judged against the store: path, sha256, created, `present`
    (the file is there with the bytes exported), `stale` and `why`."""
    voters = Voters(store, num_classes, image_shape).current()
    checked = []
    for record in exports(home):
        path = Path(record["path"])
        why = stale(store, record, voters)
        present = path.is_file() and sha256_file(path) == record["sha256"]
        checked.append(
            {"path": record["path"], "sha256": record["sha256"], "created": record["created"]}
            | {"present": present, "stale": bool(why), "why": why}
        )
    return checked
