"""The report chart: a readable PNG from a full testnet report, and from one without baselines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from harness.line_chart import Series, write_line_chart
from harness.report_chart import HEIGHT, WIDTH, write_bytes_chart, write_chart

FL = {"rounds": 3, "local_epochs": 1}


def curve(*accuracies: float) -> list[dict]:
    return [{"round": r + 1, "accuracy": a, "bytes_sent_per_site": 40_000 * (r + 1)} for r, a in enumerate(accuracies)]


REPORT = {
    "dataset": "digits",
    "nodes": 10,
    "partition": "silo",
    "profile": "default",
    "poe_accuracy": {"mean": 0.978, "min": 0.978, "per_node": [0.978] * 10},
    "server_mode": {"accuracy": 0.967},
    "bytes_sent_per_node": [4_000_000] * 10,
    "baselines": {
        "centralized": {"accuracy": 0.986},
        "local_only": {"accuracy_mean": 0.1},
        "fedavg": {"curve": curve(0.5, 0.7, 0.8), "accuracy": 0.8, **FL},
        "fedprox": {"curve": curve(0.5, 0.7, 0.79), "accuracy": 0.79, **FL},
        "feddyn": {"curve": curve(0.3, 0.6, 0.75), "accuracy": 0.75, **FL},
        "scaffold": {"curve": curve(0.4, 0.6, 0.7), "accuracy": 0.7, **FL},
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


def test_bytes_chart_draws_curves_and_the_ffnode_point(tmp_path: Path) -> None:
    out = tmp_path / "bytes.png"
    write_bytes_chart(REPORT, out)
    with Image.open(out) as image:
        colours = {c for _, c in image.getcolors(maxcolors=1 << 16) or []}
    assert (31, 119, 180) in colours and (230, 126, 34) in colours  # ffnode's marker and FedAvg's curve
    with pytest.raises(ValueError, match="bytes_sent_per_node and baselines"):
        write_bytes_chart({k: v for k, v in REPORT.items() if k != "baselines"}, out)


def test_line_chart_needs_points(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nothing to draw"):
        write_line_chart(tmp_path / "x.png", "t", "s", [Series("flat", [(0, 0.5)], (0, 0, 0), flat=True)], x_label="x")


def test_heterogeneity_chart_from_reports(tmp_path: Path) -> None:
    """The sweep's chart is drawn from whatever reports exist; a partition without a federation has no ffnode
    point, and a sweep with no reports at all is an error."""
    import heterogeneity_sweep as sweep

    argv = ["--out", str(tmp_path), "--chart", str(tmp_path / "h.png"), "--chart-only"]
    with pytest.raises(SystemExit, match="no reports"):
        sweep.main(argv)
    (tmp_path / "centralized.json").write_text('{"baselines": {"centralized": {"accuracy": 0.98}}}')
    for partition, acc in (("silo", 0.5), ("dirichlet-0.1", 0.8)):
        fl = {k: {"accuracy": acc} for k in ("fedavg", "fedprox", "feddyn", "scaffold")}
        (tmp_path / f"{partition}-baselines.json").write_text(json.dumps({"baselines": fl}))
    (tmp_path / "silo-federation.json").write_text('{"poe_accuracy": {"mean": 0.97}, "server_mode": {"accuracy": 0.9}}')
    sweep.main(argv)
    with Image.open(tmp_path / "h.png") as image:
        colours = {c for _, c in image.getcolors(maxcolors=1 << 16) or []}
    assert (31, 119, 180) in colours and (230, 126, 34) in colours


def test_heterogeneity_federations_take_the_cache_and_whole_machine() -> None:
    """A sweep's federations can share one factory cache (a point cut off resumes its factories) and give each job
    the whole machine: both reach the testnet, which parses them."""
    import heterogeneity_sweep as sweep
    import testnet

    args = sweep.parse_args(["--factory-cache", "/tmp/fc", "--whole-machine", "--no-fl", "--patience", "300"])
    cmd = sweep.federation_cmd(args, "dirichlet:0.1", Path("/tmp/out.json"))
    parsed = testnet.parse_args(cmd[2:])
    assert parsed.factory_cache == Path("/tmp/fc") and parsed.whole_machine and parsed.partition == "dirichlet:0.1"
    assert "learning.patience_s=300.0" in cmd[cmd.index("--set") + 1] and args.no_fl


def scale_report(nodes: int) -> dict:
    memory = {"node_rss_mb_max": 140.0, "workers_rss_mb_max": 900.0, "total_pss_mb_max": 120.0 * nodes + 700}
    return {
        "dataset": "digits", "nodes": nodes, "partition": "silo", "profile": "tiny", "workers": 2,
        "hardware": {"cpus": 2}, "wall_s": 30.0 * nodes, "poe_accuracy": {"mean": 0.9},
        "compute": {"core_s_total": 50.0 * nodes},
        "memory": memory | {"total_rss_mb_max": 150.0 * nodes + 900, "samples": 60},
    }  # fmt: skip


def test_scale_chart_and_summary_from_reports(tmp_path: Path) -> None:
    """scripts/scale.py draws and sums up whatever sizes have a report; none at all is an error."""
    import scale

    argv = ["--sizes", "3,10,32", "--out", str(tmp_path), "--chart-only"]
    with pytest.raises(SystemExit, match="no reports"):
        scale.main(argv)
    for n in (3, 10):  # 32 not run (yet): left out, not guessed
        (tmp_path / f"sites-{n}.json").write_text(json.dumps(scale_report(n)))
    rows = scale.main(argv)
    assert [r["nodes"] for r in rows] == [3, 10] and rows[1]["total_pss_mb_per_site"] == 190.0
    assert json.loads((tmp_path / "scale.json").read_text()) == rows
    with Image.open(tmp_path / "scale.png") as image:
        colours = {c for _, c in image.getcolors(maxcolors=1 << 16) or []}
    assert {(31, 119, 180), (23, 190, 207), (230, 126, 34)} <= colours  # the panels' three lines


def test_scale_refuses_what_it_sets_itself() -> None:
    import scale

    with pytest.raises(SystemExit):
        scale.parse_args(["--sizes", "3", "--nodes", "4"])
    args, rest = scale.parse_args(["--sizes", "6,3", "--dataset", "digits", "--profile", "tiny"])
    assert args.sizes == [3, 6] and rest == ["--dataset", "digits", "--profile", "tiny"]
