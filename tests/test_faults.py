"""The short form of scripts/faults.py: kill -9, damaged store files and checkpoints, and retraining at random
moments of a three-site federation (tiny profile), then every site must be up and converged with no leftover temp
files."""

from __future__ import annotations

from pathlib import Path

from tests.daemons import free_port
from tests.test_federation import script


def test_random_kills_and_damaged_files_leave_a_converged_federation(tmp_path: Path) -> None:
    faults = script("faults")
    report = faults.main(
        ["--nodes", "3", "--minutes", "0.35", "--interval", "3", "--settle", "150", "--seed", "1",
         "--base-port", str(free_port()), "--workdir", str(tmp_path / "f")]
    )  # fmt: skip
    assert report["crashed"] is None, report["crashed"]
    kinds = {f["kind"] for f in report["faults"]}
    assert kinds <= {"kill", "corrupt", "retrain"} and len(report["faults"]) >= 4, report["faults"]
    assert report["converged"], report
