"""A testnet report's charts, drawn with Pillow alone: accuracies as bars, accuracy against bytes sent, and (over
several reports) memory and wall time against the number of sites.

Pillow is already a dependency (image loading); matplotlib would add ~40 MB for one picture. The chart puts
FederatedFactory's two modes (decentralised PoE, server mode) beside the references (centralised, local
only) and the federated-learning baselines, with the chance level, so a report reads at a glance.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from harness.line_chart import PALETTE, Series, font, write_line_chart

# (report path, bar label, colour group); a bar whose path is missing from the report is left out
BARS: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("poe_accuracy", "mean"), "PoE\n(mean)", "ours"),
    (("server_mode", "accuracy"), "server\nmode", "ours"),
    (("baselines", "centralized", "accuracy"), "centralised", "reference"),
    (("baselines", "local_only", "accuracy_mean"), "local\nonly", "reference"),
    (("baselines", "fedavg", "accuracy"), "FedAvg", "fl"),
    (("baselines", "fedprox", "accuracy"), "FedProx", "fl"),
    (("baselines", "feddyn", "accuracy"), "FedDyn", "fl"),
    (("baselines", "scaffold", "accuracy"), "SCAFFOLD", "fl"),
)
FL_NAMES = {"fedavg": "FedAvg", "fedprox": "FedProx", "feddyn": "FedDyn", "scaffold": "SCAFFOLD"}
COLOURS = {"ours": (31, 119, 180), "reference": (140, 140, 140), "fl": (230, 126, 34)}
CHANCE_COLOUR = (200, 30, 30)
LEGEND = {
    "ours": "FederatedFactory",
    "reference": "references (real data pooled / own data only)",
    "fl": "FL baselines",
}

WIDTH, HEIGHT = 1200, 700  # pixels; big enough for a README, small enough to skim in a terminal viewer
LEFT, RIGHT, TOP, BOTTOM = 90, 30, 145, 130  # plot margins: axis labels left, bar labels and legend below


def _get(report: dict[str, Any], path: tuple[str, ...]) -> float | None:
    node: Any = report
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return float(node) if isinstance(node, int | float) else None


def _fl_note(report: dict[str, Any]) -> str | None:
    """'20 rounds x 1 local epoch' when the FL baselines agree on their budget (the testnet runs them alike)."""
    budgets = {
        (b.get("rounds"), b.get("local_epochs"))
        for name in FL_NAMES
        if isinstance(b := report.get("baselines", {}).get(name), dict)
    }
    if len(budgets) != 1:
        return None
    rounds, epochs = budgets.pop()
    if rounds is None or epochs is None:
        return None
    return f"FL baselines: {rounds} rounds x {epochs} local epoch{'s' if epochs != 1 else ''}"


def write_chart(report: dict[str, Any], path: Path, num_classes: int | None = None) -> None:
    """Draw the report's accuracies as a PNG at `path`; with `num_classes`, a dashed chance line at 1/K."""
    bars = [(label, value, group) for keys, label, group in BARS if (value := _get(report, keys)) is not None]
    if not bars:
        raise ValueError("the report has no accuracy figures to chart (expected at least poe_accuracy.mean)")
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    title_font, text_font, small_font = font(28), font(20), font(17)

    # title: what was run
    title = (
        f"{report.get('dataset', '?')}: {report.get('nodes', '?')} nodes, "
        f"{report.get('partition', '?')} partition, profile {report.get('profile', '?')}"
    )
    draw.text((LEFT, 20), title, fill="black", font=title_font)
    draw.text((LEFT, 60), "accuracy on the held-out test split", fill=(80, 80, 80), font=small_font)
    if note := _fl_note(report):
        draw.text((LEFT, 84), note, fill=(80, 80, 80), font=small_font)

    # axes: y from 0 to 1, gridlines every 0.2
    x0, x1, y0, y1 = LEFT, WIDTH - RIGHT, HEIGHT - BOTTOM, TOP  # y0 is the baseline (accuracy 0)

    def y_of(value: float) -> float:
        return y0 - (y0 - y1) * min(max(value, 0.0), 1.0)

    for tick in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0):
        y = y_of(tick)
        draw.line([(x0, y), (x1, y)], fill=(225, 225, 225) if tick else "black", width=1)
        draw.text((x0 - 12, y), f"{tick:.1f}", fill="black", font=small_font, anchor="rm")

    # bars with their value above and their name below
    slot = (x1 - x0) / len(bars)
    for i, (label, value, group) in enumerate(bars):
        left, right = x0 + i * slot + slot * 0.18, x0 + (i + 1) * slot - slot * 0.18
        centre = (left + right) / 2
        draw.rectangle([left, y_of(value), right, y0], fill=COLOURS[group])
        draw.text((centre, y_of(value) - 6), f"{value:.3f}", fill="black", font=text_font, anchor="md")
        draw.multiline_text((centre, y0 + 10), label, fill="black", font=text_font, anchor="ma", align="center")

    # chance level, dashed, over the bars; named in the legend, where no bar can hide its label
    if num_classes:
        y = y_of(1.0 / num_classes)
        for start in range(int(x0), int(x1), 16):
            draw.line([(start, y), (min(start + 9, x1), y)], fill=CHANCE_COLOUR, width=2)

    # legend: the groups that are drawn, then the chance line
    x = float(x0)
    for group in dict.fromkeys(g for _, _, g in bars):
        draw.rectangle([x, HEIGHT - 34, x + 18, HEIGHT - 16], fill=COLOURS[group])
        draw.text((x + 26, HEIGHT - 25), LEGEND[group], fill="black", font=small_font, anchor="lm")
        x += 26 + draw.textlength(LEGEND[group], font=small_font) + 36
    if num_classes:
        for start in (0, 14):
            draw.line([(x + start, HEIGHT - 25), (x + start + 9, HEIGHT - 25)], fill=CHANCE_COLOUR, width=2)
        text = f"chance (1/{num_classes} = {1.0 / num_classes:.3f})"
        draw.text((x + 32, HEIGHT - 25), text, fill="black", font=small_font, anchor="lm")

    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")


def write_bytes_chart(report: dict[str, Any], path: Path) -> None:
    """Accuracy against the bytes each site sent: every FL baseline's per-round curve, ffnode's one round."""
    sent = [b for b in report.get("bytes_sent_per_node", []) if b]
    if not sent or "baselines" not in report:
        raise ValueError("the report needs bytes_sent_per_node and baselines (a testnet run without --no-baselines)")
    ffnode_bytes = sum(sent) / len(sent)
    series = [Series("ffnode PoE (one round)", [(ffnode_bytes, report["poe_accuracy"]["mean"])], PALETTE[0])]
    if "server_mode" in report:
        series.append(
            Series("ffnode server mode", [(ffnode_bytes, report["server_mode"]["accuracy"])], PALETTE[1], square=True)
        )
    b = report["baselines"]
    for i, (key, name) in enumerate(FL_NAMES.items()):
        if "curve" in b.get(key, {}):
            points = [(c["bytes_sent_per_site"], c["accuracy"]) for c in b[key]["curve"]]
            series.append(Series(f"{name}, per round", points, PALETTE[2 + i]))
    if "centralized" in b:
        series.append(Series("centralised (pooled)", [(0, b["centralized"]["accuracy"])], (90, 90, 90), True))
    title = f"{report.get('dataset', '?')}: {report.get('nodes', '?')} sites, {report.get('partition', '?')}"
    subtitle = "accuracy against bytes each site sent (mean over sites); FL: the global model after each round"
    write_line_chart(path, title, subtitle, series, x_label="bytes sent per site (log scale)", x_log=True)


Figure = Callable[[dict[str, Any]], float]  # one figure of a report
# the scale chart's panels: each a title and its lines, each line a label and the figure it plots
SCALE_PANELS: tuple[tuple[str, tuple[tuple[str, Figure], ...]], ...] = (
    (
        "memory peak, all processes (MB)",
        (
            ("resident, summed", lambda r: r["memory"]["total_rss_mb_max"]),
            ("proportional (shared pages once)", lambda r: r["memory"]["total_pss_mb_max"]),
            ("workers only, resident", lambda r: r["memory"]["workers_rss_mb_max"]),
        ),
    ),
    (
        "memory per site (MB)",
        (
            ("largest node process", lambda r: r["memory"]["node_rss_mb_max"]),
            ("all, proportional / sites", lambda r: r["memory"]["total_pss_mb_max"] / r["nodes"]),
        ),
    ),
    ("wall time to convergence (s)", (("federation", lambda r: r["wall_s"]),)),
)


def write_scale_chart(reports: list[dict[str, Any]], path: Path, title: str, subtitle: str) -> None:
    """Memory and wall time against the number of sites, one panel per unit, from testnet reports (one per size)."""
    reports = sorted(reports, key=lambda r: r["nodes"])
    if not reports:
        raise ValueError("no reports to chart")
    width, height, top = 1500, 620, 120
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((40, 18), title, fill="black", font=font(26))
    draw.text((40, 56), subtitle, fill=(80, 80, 80), font=font(16))
    panel_w = (width - 40) / len(SCALE_PANELS)
    for i, (name, lines) in enumerate(SCALE_PANELS):
        box = (40 + i * panel_w + 60, top, 40 + (i + 1) * panel_w - 30, height - 150)
        series = [(label, [(r["nodes"], float(get(r))) for r in reports]) for label, get in lines]
        _panel(draw, box, name, series)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")


def _panel(
    draw: ImageDraw.ImageDraw,
    box: tuple[float, float, float, float],
    name: str,
    series: list[tuple[str, list[tuple[float, float]]]],
) -> None:
    """One pair of axes from 0 to a round top, the x ticks at the sizes run, the legend below."""
    x0, y1, x1, y0 = box
    small = font(15)
    xs = sorted({x for _, points in series for x, _ in points})
    top = _round_up(max(y for _, points in series for _, y in points))
    lo, hi = (xs[0] - 1, xs[-1] + 1) if len(xs) == 1 else (xs[0], xs[-1])
    pad = (hi - lo) * 0.06

    def px(x: float) -> float:
        return x0 + (x1 - x0) * (x - lo + pad) / (hi - lo + 2 * pad)

    def py(y: float) -> float:
        return y0 - (y0 - y1) * y / top

    draw.text((x0, y1 - 30), name, fill="black", font=font(18))
    for k in range(6):
        y = top * k / 5
        draw.line([(x0, py(y)), (x1, py(y))], fill=(225, 225, 225) if k else "black")
        draw.text((x0 - 8, py(y)), f"{y:g}", fill="black", font=small, anchor="rm")
    for x in xs:
        draw.text((px(x), y0 + 8), f"{x:g}", fill="black", font=small, anchor="ma")
    draw.text(((x0 + x1) / 2, y0 + 32), "sites", fill="black", font=small, anchor="ma")
    for j, (label, points) in enumerate(series):
        colour = PALETTE[j]
        pts = [(px(x), py(y)) for x, y in points]
        if len(pts) > 1:
            draw.line(pts, fill=colour, width=3)
        for cx, cy in pts:
            draw.ellipse([cx - 5, cy - 5, cx + 5, cy + 5], fill=colour)
        ly = y0 + 60 + 22 * j
        draw.line([(x0, ly + 8), (x0 + 26, ly + 8)], fill=colour, width=4)
        draw.text((x0 + 34, ly), label, fill="black", font=small)


def _round_up(value: float) -> float:
    """A round axis top at or above `value` (at least 1), whose fifths are round too."""
    step = 10 ** math.floor(math.log10(max(value, 1.0)))
    return next(m * step for m in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10) if m * step >= value)
