"""protocol/check_vectors.py, the checker that rebuilds every vector's verdict from protocol/README.md alone
(issue 34): it reaches every case of every file with no mismatch, needs nothing of ffnode, and fails on a vector
whose expected verdict is wrong, on a field it never reads and on a file it has no check for."""

from __future__ import annotations

import ast
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHECKER = ROOT / "protocol" / "check_vectors.py"
VECTORS = ROOT / "protocol" / "vectors"


def run_checker(vectors: Path) -> tuple[int, dict[str, dict[str, list[str]]]]:
    """The checker as an implementer runs it: its exit code and its --json report."""
    done = subprocess.run(
        [sys.executable, str(CHECKER), "--json", "--vectors", str(vectors)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done.returncode, json.loads(done.stdout)


def load_checker() -> Any:
    spec = importlib.util.spec_from_file_location("check_vectors", CHECKER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


checker = load_checker()  # in-process for the corrupted copies: one interpreter start per run is most of its time


def cases_in(doc: dict[str, Any]) -> set[str]:
    """The README's definition of a case: each object under a top-level key, each item of a list of objects."""
    found: set[str] = set()

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                sub = f"{path}.{key}" if path else key
                if not path and isinstance(item, dict):
                    found.add(sub)
                walk(item, sub)
        elif isinstance(value, list):
            objects = bool(value) and all(isinstance(x, dict) for x in value)
            for i, item in enumerate(value):
                if objects:
                    found.add(f"{path}[{i}]")
                walk(item, f"{path}[{i}]")

    walk(doc, "")
    return found


def test_every_case_of_every_file_checks_out() -> None:
    code, results = run_checker(VECTORS)
    files = sorted(p.name for p in VECTORS.glob("*.json"))
    assert sorted(results) == files and len(files) >= 12
    total = 0
    for name in files:
        expected = cases_in(json.loads((VECTORS / name).read_text()))
        assert set(results[name]) == expected, name  # no pseudo-case: nothing unread, nothing unchecked
        mismatched = {case: errors for case, errors in results[name].items() if errors}
        assert not mismatched, (name, mismatched)
        total += len(expected)
    assert code == 0
    assert total >= 384  # 386 on 2026-12-07: a file that lost its cases would show here


def test_the_checker_needs_nothing_of_ffnode() -> None:
    """Only the standard library and pyca/cryptography, what an implementer in any language has equivalents of."""
    tree = ast.parse(CHECKER.read_text())
    modules = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    modules |= {
        node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    assert modules - {"__future__"} <= set(sys.stdlib_module_names) | {"cryptography"}, modules


def corrupt_invalid_reason(folder: Path) -> str:
    doc = json.loads((folder / "invalid.json").read_text())
    case = next(c for c in doc["cases"] if c["name"] == "sig-bit-flipped")
    case["reason"] = "schema"  # the envelope fails its signature, not its schema
    (folder / "invalid.json").write_text(json.dumps(doc))
    return "sig-bit-flipped"


def corrupt_arch_params(folder: Path) -> str:
    doc = json.loads((folder / "arch.json").read_text())
    case = next(c for c in doc["cases"] if c["name"] == "factory-one-level")
    case["params"] += 1  # the README works it out term by term: 10 593
    (folder / "arch.json").write_text(json.dumps(doc))
    return "factory-one-level"


def corrupt_acceptance_output(folder: Path) -> str:
    doc = json.loads((folder / "acceptance.json").read_text())
    step = doc["scenarios"][0]["steps"][1]  # the same envelope again: a duplicate
    step["output"] = "accepted"
    (folder / "acceptance.json").write_text(json.dumps(doc))
    return "lifecycle step 2"


def corrupt_quota_limit(folder: Path) -> str:
    doc = json.loads((folder / "quota.json").read_text())
    step = doc["scenarios"][0]["steps"][11]  # Bob's second blob: over store_bytes, within his blob bytes
    step["limit"] = "blob_bytes_per_publisher"
    (folder / "quota.json").write_text(json.dumps(doc))
    return "publisher-quotas step 12"


def corrupt_loopback_verdict(folder: Path) -> str:
    doc = json.loads((folder / "discovery.json").read_text())
    case = next(c for c in doc["loopback_records"] if c["name"] == "ip4-mapped")
    case["other_node"] = case["loopback_node"]  # ::ffff:127.0.0.1 is loopback for every node that does not listen there
    (folder / "discovery.json").write_text(json.dumps(doc))
    return "ip4-mapped"


def add_unread_field(folder: Path) -> str:
    doc = json.loads((folder / "identity.json").read_text())
    doc["cases"][0]["private_key_pem"] = "a field no rule of the document checks"
    (folder / "identity.json").write_text(json.dumps(doc))
    return "private_key_pem"


def add_unknown_file(folder: Path) -> str:
    (folder / "roster.json").write_text(json.dumps({"cases": [{"name": "founders", "output": "accepted"}]}))
    return "no check for roster.json"


@pytest.mark.parametrize(
    "corrupt",
    [
        corrupt_invalid_reason,
        corrupt_arch_params,
        corrupt_acceptance_output,
        corrupt_quota_limit,
        corrupt_loopback_verdict,
        add_unread_field,
        add_unknown_file,
    ],
)
def test_a_corrupted_copy_fails(tmp_path: Path, corrupt: Any) -> None:
    folder = tmp_path / "vectors"
    shutil.copytree(VECTORS, folder)
    named = corrupt(folder)
    errors = [e for path in sorted(folder.glob("*.json")) for errs in checker.check_file(path).values() for e in errs]
    assert errors and all(named in e for e in errors), errors


def test_the_checker_exits_1_on_a_mismatch(tmp_path: Path) -> None:
    folder = tmp_path / "vectors"
    shutil.copytree(VECTORS, folder)
    corrupt_arch_params(folder)
    code, results = run_checker(folder)
    assert code == 1 and any(results["arch.json"].values())
