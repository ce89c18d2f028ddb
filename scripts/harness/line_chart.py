"""Line charts with Pillow alone: accuracy against bytes sent (log axis) and against heterogeneity.

The bar chart's reasoning holds (report_chart.py): one picture does not justify matplotlib. A `Series` is a
labelled list of (x, y) points; one point draws as a marker, a `flat` series as a dashed reference line;
the legend gives both their values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

WIDTH, HEIGHT = 1200, 760
LEFT, RIGHT, TOP, BOTTOM = 90, 300, 110, 90  # the legend sits in the right margin
PALETTE = (
    (31, 119, 180),  # ffnode PoE
    (23, 190, 207),  # ffnode server mode
    (230, 126, 34),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (188, 189, 34),
    (127, 127, 127),
)


@dataclass(frozen=True)
class Series:
    label: str
    points: Sequence[tuple[float, float]]
    colour: tuple[int, int, int]
    flat: bool = False  # a reference level (e.g. the centralised bound): dashed across the plot
    square: bool = False  # a single point drawn as a square, told apart from a circle it may sit on


def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled scalable font (needs FreeType, as the wheels ship)."""
    return ImageFont.load_default(size=size)


def _dashed(draw: ImageDraw.ImageDraw, a: tuple[float, float], b: tuple[float, float], colour, width: int = 2) -> None:
    length = math.dist(a, b)
    for start in range(0, int(length), 14):
        t0, t1 = start / length, min(start + 8, length) / length
        draw.line(
            [
                (a[0] + (b[0] - a[0]) * t0, a[1] + (b[1] - a[1]) * t0),
                (a[0] + (b[0] - a[0]) * t1, a[1] + (b[1] - a[1]) * t1),
            ],
            fill=colour,
            width=width,
        )


def write_line_chart(
    path: Path,
    title: str,
    subtitle: str,
    series: Sequence[Series],
    *,
    x_label: str,
    y_label: str = "accuracy (held-out test split)",
    x_log: bool = False,
    x_ticks: Sequence[tuple[float, str]] | None = None,
) -> None:
    """Draw `series` on one pair of axes (y from 0 to 1) and save a PNG at `path`.

    `x_ticks` names the x positions to mark (categorical axes pass every category); without it, a log axis
    is marked at each power of ten and a linear one at five even steps.
    """
    series = [s for s in series if s.points]
    xs = [x for s in series if not s.flat for x, _ in s.points] + [x for x, _ in x_ticks or ()]
    if not xs:
        raise ValueError("nothing to draw: every series is empty")
    if x_log and min(xs) <= 0:
        raise ValueError(f"a log axis needs x > 0, got {min(xs)}")
    f = (lambda v: math.log10(v)) if x_log else (lambda v: v)
    lo, hi = f(min(xs)), f(max(xs))
    pad = (hi - lo) * 0.05 or 0.5
    lo, hi = lo - pad, hi + pad
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    title_font, text_font, small_font = font(26), font(19), font(16)
    draw.text((LEFT, 18), title, fill="black", font=title_font)
    draw.text((LEFT, 56), subtitle, fill=(80, 80, 80), font=small_font)
    x0, x1, y0, y1 = LEFT, WIDTH - RIGHT, HEIGHT - BOTTOM, TOP

    def px(x: float) -> float:
        return x0 + (x1 - x0) * (f(x) - lo) / (hi - lo)

    def py(y: float) -> float:
        return y0 - (y0 - y1) * min(max(y, 0.0), 1.0)

    for tick in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0):
        draw.line([(x0, py(tick)), (x1, py(tick))], fill=(225, 225, 225) if tick else "black")
        draw.text((x0 - 10, py(tick)), f"{tick:.1f}", fill="black", font=small_font, anchor="rm")
    if x_ticks is None:
        if x_log:
            decades = range(math.ceil(lo), math.floor(hi) + 1)
            ends = (10.0 ** (lo + pad), 10.0 ** (hi - pad))  # less than a decade: mark the ends
            x_ticks = [(x, _bytes(x)) for x in ([10.0**e for e in decades] if len(decades) else ends)]
        else:
            x_ticks = [(v, f"{v:g}") for v in (lo + (hi - lo) * i / 4 for i in range(5))]
    for x, label in x_ticks:
        draw.line([(px(x), y0), (px(x), y1)], fill=(235, 235, 235))
        draw.text((px(x), y0 + 8), label, fill="black", font=small_font, anchor="ma")
    draw.line([(x0, y0), (x0, y1)], fill="black")
    draw.text(((x0 + x1) / 2, HEIGHT - 30), x_label, fill="black", font=text_font, anchor="mm")
    draw.text((12, y1 - 30), y_label, fill="black", font=small_font)

    def marker(s: Series, cx: float, cy: float) -> None:
        r = 7 if s.square else 9
        shape = draw.rectangle if s.square else draw.ellipse
        shape([cx - r, cy - r, cx + r, cy + r], fill=s.colour, outline="black")

    for s in sorted(series, key=lambda s: len(s.points) == 1 and not s.flat):  # points drawn over the curves
        pts = [] if s.flat else [(px(x), py(y)) for x, y in s.points]
        if s.flat:
            _dashed(draw, (x0, py(s.points[0][1])), (x1, py(s.points[0][1])), s.colour)
        elif len(pts) == 1:
            marker(s, *pts[0])
        else:
            draw.line(pts, fill=s.colour, width=3)
            for cx, cy in pts if len(pts) <= 12 else ():  # markers on a categorical axis, not on a long curve
                draw.ellipse([cx - 4, cy - 4, cx + 4, cy + 4], fill=s.colour)

    legend_y, lx = float(TOP), x1 + 24
    for s in series:
        if s.flat:
            _dashed(draw, (lx, legend_y + 9), (lx + 30, legend_y + 9), s.colour)
        elif len(s.points) == 1:
            marker(s, lx + 15, legend_y + 9)
        else:
            draw.line([(lx, legend_y + 9), (lx + 30, legend_y + 9)], fill=s.colour, width=4)
        label = f"{s.label}: {s.points[0][1]:.3f}" if s.flat or len(s.points) == 1 else s.label  # a point's value
        draw.multiline_text((lx + 40, legend_y), label, fill="black", font=small_font, spacing=2)
        legend_y += 26 + 20 * label.count("\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")


def _bytes(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:g} {unit}"
    return f"{n:g} B"
