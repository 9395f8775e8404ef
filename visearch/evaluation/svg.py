"""Line charts as inline SVG: the report stays one self-contained file.

Deliberately small (axes, ticks, one polyline per series, a legend): a
plotting library would be a heavy dependency for two charts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
WIDTH, HEIGHT = 560, 340
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 16, 44


def _ticks(low: float, high: float, log: bool) -> list[float]:
    if log:
        first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
        return [10.0**e for e in range(first, last + 1)]
    return [low + (high - low) * i / 5 for i in range(6)]


def line_chart(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    x_label: str,
    y_label: str,
    log_x: bool = False,
    x_range: tuple[float, float] = (0.0, 1.0),
    legend_at_bottom: bool = False,
) -> str:
    """``{label: (xs, ys)}`` with y in [0, 1] as an ``<svg>`` element.

    The legend goes where the curves are not: top left for rising curves,
    bottom left (``legend_at_bottom``) for falling ones.
    """
    x_low, x_high = x_range
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def sx(x: float) -> float:
        if log_x:
            span = math.log10(x_high) - math.log10(x_low)
            fraction = (math.log10(x) - math.log10(x_low)) / span
        else:
            fraction = (x - x_low) / (x_high - x_low)
        return LEFT + fraction * plot_w

    def sy(y: float) -> float:
        return TOP + (1.0 - y) * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(y_label)} '
        f'against {escape(x_label)}" font-family="sans-serif" font-size="11">',
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" '
        'fill="none" stroke="#999"/>',
    ]
    for i in range(6):
        y = i / 5
        parts.append(
            f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" '
            f'stroke="#eee"/><text x="{LEFT - 6}" y="{sy(y) + 4:.1f}" '
            f'text-anchor="end">{y:.1f}</text>'
        )
    for x in _ticks(x_low, x_high, log_x):
        if x_low <= x <= x_high:
            text = f"{x:g}"
            parts.append(
                f'<text x="{sx(x):.1f}" y="{TOP + plot_h + 16}" text-anchor="middle">{text}</text>'
            )
    parts.append(
        f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 6}" text-anchor="middle">'
        f"{escape(x_label)}</text>"
        f'<text transform="translate(14 {TOP + plot_h / 2}) rotate(-90)" text-anchor="middle">'
        f"{escape(y_label)}</text>"
    )
    for n, (label, (xs, ys)) in enumerate(series.items()):
        colour = COLOURS[n % len(COLOURS)]
        points = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in zip(xs, ys, strict=True))
        parts.append(
            f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2">'
            f"<title>{escape(label)}</title></polyline>"
        )
        first = TOP + plot_h - 8 - 16 * (len(series) - 1) if legend_at_bottom else TOP + 14
        legend_y = first + 16 * n
        parts.append(
            f'<line x1="{LEFT + 10}" x2="{LEFT + 28}" y1="{legend_y - 4}" y2="{legend_y - 4}" '
            f'stroke="{colour}" stroke-width="2"/>'
            f'<text x="{LEFT + 34}" y="{legend_y}">{escape(label)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
