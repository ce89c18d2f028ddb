"""The report chart: a readable PNG from a full testnet report, and from one without baselines."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from harness.report_chart import HEIGHT, WIDTH, write_chart

FL = {"rounds": 20, "local_epochs": 1}
REPORT = {
    "dataset": "digits",
    "nodes": 10,
    "partition": "silo",
    "profile": "default",
    "poe_accuracy": {"mean": 0.978, "min": 0.978, "per_node": [0.978] * 10},
    "server_mode": {"accuracy": 0.967},
    "baselines": {
        "centralized": {"accuracy": 0.986},
        "local_only": {"accuracy_mean": 0.1},
        "fedavg": {"accuracy": 0.197, **FL},
        "fedprox": {"accuracy": 0.194, **FL},
        "feddyn": {"accuracy": 0.253, **FL},
        "scaffold": {"accuracy": 0.472, **FL},
    },
}


@pytest.mark.parametrize("report", [REPORT, {k: v for k, v in REPORT.items() if k != "baselines"}])
def test_chart_is_a_png_of_the_expected_size(tmp_path: Path, report: dict) -> None:
    out = tmp_path / "charts" / "report.png"
    write_chart(report, out, num_classes=10)
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (WIDTH, HEIGHT)
        assert len(image.getcolors(maxcolors=1 << 16) or []) > 10  # drawn on, not a blank canvas
    assert 5_000 < out.stat().st_size < 500_000


def test_chart_without_any_accuracy_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no accuracy figures"):
        write_chart({"dataset": "digits"}, tmp_path / "empty.png")
