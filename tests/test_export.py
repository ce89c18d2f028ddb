"""`ffnode export`: the site's Product-of-Experts as one ONNX file that onnxruntime runs to the node's answers on
every digits test image (both rules), its sidecar, its staleness once a revocation retrains the federation
(`ffnode verify-unlearning` names it), and a clear refusal where there is nothing to export. Real daemons on
127.0.0.1, tiny profile."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from ffnode.cli.export import home_store
from ffnode.config import Config
from ffnode.daemon import control
from ffnode.data.sources import load_dataset
from ffnode.export import EXPORTS, Site, check_exports, export_poe
from ffnode.query import ExpertPool
from harness.localnet import Daemons, init_home, status, wait_for
from tests.daemons import CLASSES, class_file, cli, cli_json, free_port, ready_chain, retrained_without, rows

TIMEOUT = 180.0
SHAPE = (8, 8, 1)


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[Path], list[str], Daemons]]:
    with ready_chain(tmp_path_factory.mktemp("export"), TIMEOUT) as federation:
        yield federation


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    """Every image of the digits test split (360, 8, 8, 1) uint8: the federation's 3 classes and the 7 others."""
    return load_dataset("digits", split="test", classes=[str(i) for i in range(10)]).images


def run_onnx(path: Path, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    probs, labels = session.run(["probabilities", "label"], {"images": images})
    return probs, labels


def test_the_exported_file_answers_as_the_node(
    fed: tuple[list[Path], list[str], Daemons], digits: np.ndarray, tmp_path: Path
) -> None:
    a = fed[0][0]
    out = tmp_path / "poe.onnx"
    doc = cli_json("export", "--home", str(a), "--out", str(out))
    sidecar = json.loads((tmp_path / "poe.onnx.json").read_text())
    assert doc == sidecar | {"path": str(out), "sidecar_path": str(tmp_path / "poe.onnx.json")}

    node = control.call(a, "query", control.encode_images(digits) | {"rule": "prior"}, timeout=120)
    probs, labels = run_onnx(out, digits)
    assert labels.tolist() == node["labels"]  # the same argmax on every image
    np.testing.assert_allclose(probs, node["probabilities"], rtol=0, atol=1e-4)
    # tiny experts are weak (most images get one class), but their answers vary far beyond the tolerance
    assert (probs.max(axis=0) - probs.min(axis=0)).min() > 0.01
    one, _ = run_onnx(out, digits[:1])  # the batch axis is dynamic
    np.testing.assert_allclose(one, probs[:1], rtol=0, atol=1e-5)

    # the sidecar: what the file takes and gives, and every artifact it derives from
    store_rows = rows(a)
    assert sidecar["format"] == 1 and sidecar["file"] == "poe.onnx"
    assert sidecar["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest() and sidecar["size"] == out.stat().st_size
    assert sidecar["exporter"]["format"] == "onnx" and sidecar["exporter"]["opset"] >= 18
    assert (sidecar["federation"], sidecar["peer_id"], sidecar["classes"]) == ("testnet", status(a)["peer_id"], CLASSES)
    assert sidecar["input"] | {"normalisation": None} == {
        "name": "images", "shape": ["batch", *SHAPE], "layout": "NHWC", "dtype": "uint8", "range": [0, 255],
        "normalisation": None,
    }  # fmt: skip
    assert sidecar["rule"] == "prior" and len(sidecar["priors"]["train_counts"]) == 3
    assert [{"id": e["id"], "owner": e["owner"]} for e in sidecar["experts"]] == node["experts"]
    for e in sidecar["experts"]:
        assert e["lineage"] == sorted(store_rows[e["id"]]["lineage"]) and len(e["lineage"]) == 2
    assert sidecar["lineage"] == sorted({f for e in sidecar["experts"] for f in e["lineage"]})
    assert all(store_rows[f]["kind"] == "factory" for f in sidecar["lineage"])
    assert (sidecar["uncovered_classes"], sidecar["warnings"]) == ([], [])
    recorded = json.loads((a / EXPORTS).read_text().splitlines()[-1])
    assert recorded["path"] == str(out) and recorded["sha256"] == sidecar["sha256"]
    assert recorded["experts"] == [e["id"] for e in sidecar["experts"]]


def test_a_revocation_makes_the_export_stale(
    fed: tuple[list[Path], list[str], Daemons], digits: np.ndarray, tmp_path: Path
) -> None:
    """B exports the paper's product rule beside its running node (the file answers as ExpertPool does). A revokes
    its factory: B's export holds B's and C's experts, both trained on it, so it is stale once B has retrained;
    `verify-unlearning` on B names it and why, and passes (the file is the operator's copy)."""
    homes, _, daemons = fed
    a, b, _ = homes
    out = tmp_path / "b.onnx"
    store, peer_id = home_store(b, Config.load(b))  # a reader beside the running node, as `ffnode export` opens it
    site = Site(federation="testnet", peer_id=peer_id, classes=CLASSES, image_shape=SHAPE)
    exported = export_poe(store, site, "product", out, b)
    want = ExpertPool(store, 3, SHAPE).query(digits, CLASSES, "product")
    probs, labels = run_onnx(out, digits)
    assert exported["rule"] == "product" and exported["priors"] is None
    assert labels.tolist() == want["labels"]
    np.testing.assert_allclose(probs, want["probabilities"], rtol=0, atol=1e-4)
    assert [e["stale"] for e in check_exports(b, store, 3, SHAPE)] == [False]

    me = status(a)["peer_id"]
    victim = next(r["id"] for r in rows(a).values() if r["kind"] == "factory" and r["owner"] == me)
    assert victim in exported["lineage"]
    old = status(b)["current_expert"]
    assert cli("revoke", "--home", str(a), victim).returncode == 0
    wait_for(lambda: retrained_without(b, victim, old), timeout=TIMEOUT, what="B to retrain", daemons=daemons)

    report = cli_json("verify-unlearning", "--home", str(b))
    assert report["bitwise_identical"] is True and report["live_lineage_clean"] is True
    assert report["stale_exports"] == [str(out)]
    (entry,) = report["exports"]
    assert entry["present"] and entry["stale"] and entry["sha256"] == exported["sha256"]
    assert f"factory {victim[:12]} of {me[:12]} is revoked" in entry["why"]
    assert any(w.startswith(f"expert {old[:12]}") and w.endswith("is revoked") for w in entry["why"])
    assert any(w.startswith("the node answers with other experts now") for w in entry["why"])


def test_nothing_to_export_is_refused_clearly(tmp_path: Path) -> None:
    home = tmp_path / "lone"
    init_home(home, port=free_port(), data=class_file(tmp_path, [0], "zeros"), classes=CLASSES, profile="tiny")
    out = tmp_path / "x.onnx"
    refused = cli("export", "--home", str(home), "--out", str(out))
    assert refused.returncode == 1
    assert f"error: nothing to export from {home}: no live experts yet" in refused.stderr
    assert not out.exists() and not (home / EXPORTS).exists()
    bad = cli("export", "--home", str(home), "--out", str(tmp_path / "no" / "x.onnx"))
    assert bad.returncode == 1 and f"folder {tmp_path / 'no'} does not exist" in bad.stderr
