"""Charts as inline SVG, drawn in Python: stacked bars, vertical or horizontal, with axes, labels and a legend.

Every chart carries its title (`aria-label` and `<title>`), both axis labels, and one `<rect class="bar">`
per non-zero value with `data-series` / `data-value` attributes and a hover `<title>` giving the exact
number. No script, no external font: the page renders the same offline.
"""

from __future__ import annotations

import colorsys
import math
from html import escape
from typing import Callable, Sequence

PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#8C6D31", "#999999")
WIDTH = 600
Series = Sequence[tuple[str, Sequence[float]]]


def nice_ticks(top: float, count: int = 5) -> list[float]:
    """Round tick values from 0 to at least `top` (steps of 1, 2 or 5 x 10^k)."""
    if top <= 0 or not math.isfinite(top):
        return [0.0, 1.0]
    raw = top / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    return [i * step for i in range(int(math.ceil(top / step - 1e-9)) + 1)]


def _num(value: float) -> str:
    """Short numbers for ticks: 1.2k, 3M, 0.004."""
    a = abs(value)
    if a >= 1e6:
        return f"{value / 1e6:g}M"
    if a >= 1e3:
        return f"{value / 1e3:g}k"
    return f"{value:.4g}"


LEGEND_ROW = 16


def _legend(series: Series, colors: Sequence[str], y: float, x: float = 10.0) -> tuple[list[str], float]:
    """Every series' swatch and name, wrapped onto as many rows as the chart's width needs (however many
    models there are); returns the elements and the height they take."""
    out, left, rows = [], x, 1
    for (name, _), color in zip(series, colors):
        width = 24 + 6.5 * len(name)
        if x > left and x + width - 10 > WIDTH:
            x, y, rows = left, y + LEGEND_ROW, rows + 1
        out.append(f'<rect class="swatch" x="{x:.0f}" y="{y:.0f}" width="10" height="10" fill="{color}"/>'
                   f'<text class="legend" x="{x + 14:.0f}" y="{y + 9:.0f}">{escape(name)}</text>')
        x += width
    return out, rows * LEGEND_ROW


def _open(chart_id: str, title: str, height: float) -> list[str]:
    return [f'<svg class="chart" data-chart="{escape(chart_id)}" role="img" aria-label="{escape(title)}" '
            f'viewBox="0 0 {WIDTH} {height:.0f}" width="100%" xmlns="http://www.w3.org/2000/svg">',
            f"<title>{escape(title)}</title>"]


def _color(i: int) -> str:
    """The i-th series colour: the palette, then hues a golden angle apart, so no two series share one."""
    if i < len(PALETTE):
        return PALETTE[i]
    r, g, b = colorsys.hls_to_rgb((i - len(PALETTE)) * 0.381966 % 1.0, 0.42, 0.6)
    return f"#{round(r * 255):02X}{round(g * 255):02X}{round(b * 255):02X}"


def _colors(series: Series, colors: dict[str, str] | None) -> list[str]:
    return [(colors or {}).get(name, _color(i)) for i, (name, _) in enumerate(series)]


def bar_chart(chart_id: str, title: str, x_label: str, y_label: str, categories: Sequence[str], series: Series,
              fmt: Callable[[float], str] = _num, colors: dict[str, str] | None = None, height: float = 320) -> str:
    """Vertical bars, one per category, stacking the series."""
    palette = _colors(series, colors)
    legend, legend_h = _legend(series, palette, 6)
    left, right, top = 64, 10, 12 + legend_h
    height += legend_h - LEGEND_ROW  # extra legend rows add room, the plot keeps its height
    slot = (WIDTH - left - right) / max(len(categories), 1)
    rotate = len(categories) > 6 or max((len(c) for c in categories), default=0) * 6 > slot
    bottom = 84 if rotate else 44
    plot_w, plot_h = WIDTH - left - right, height - top - bottom
    totals = [sum(values[i] or 0 for _, values in series) for i in range(len(categories))]
    ticks = nice_ticks(max(totals, default=0))
    scale = plot_h / ticks[-1]
    out = _open(chart_id, title, height) + legend
    for t in ticks:
        y = top + plot_h - t * scale
        out.append(f'<line class="grid" x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}"/>'
                   f'<text class="tick" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(_num(t))}</text>')
    bar_w = max(min(slot * 0.7, 60), 2)
    for i, category in enumerate(categories):
        x = left + slot * i + (slot - bar_w) / 2
        y = top + plot_h
        for (name, values), color in zip(series, palette):
            v = values[i] or 0
            if v <= 0:
                continue
            h = v * scale
            y -= h
            out.append(f'<rect class="bar" data-series="{escape(name)}" data-value="{v}" x="{x:.1f}" y="{y:.1f}" '
                       f'width="{bar_w:.1f}" height="{max(h, 0.5):.1f}" fill="{color}">'
                       f"<title>{escape(category)} · {escape(name)}: {escape(fmt(v))}</title></rect>")
        cx, cy = left + slot * i + slot / 2, top + plot_h + 12
        label = escape(category if len(category) <= 22 else category[:21] + "…")
        out.append(f'<text class="tick" x="{cx:.1f}" y="{cy:.1f}" '
                   + (f'text-anchor="end" transform="rotate(-35 {cx:.1f} {cy:.1f})">' if rotate else 'text-anchor="middle">')
                   + f"{label}</text>")
    out.append(f'<line class="axis" x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}"/>'
               f'<line class="axis" x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}"/>')
    out += _axis_labels(x_label, y_label, left + plot_w / 2, height - 6, top + plot_h / 2)
    return "".join(out + ["</svg>"])


def hbar_chart(chart_id: str, title: str, x_label: str, y_label: str, labels: Sequence[str], series: Series,
               fmt: Callable[[float], str] = _num, colors: dict[str, str] | None = None,
               reference: tuple[float, str] | None = None, label_width: int = 190) -> str:
    """Horizontal bars, one per label (top to bottom), stacking the series; `reference` draws a marked line."""
    palette = _colors(series, colors)
    legend, legend_h = _legend(series, palette, 6, x=label_width)
    left, right, top, bottom, row = label_width, 16, 14 + legend_h, 40, 20
    height = top + bottom + row * max(len(labels), 1)
    plot_w, plot_h = WIDTH - left - right, row * max(len(labels), 1)
    totals = [sum(values[i] or 0 for _, values in series) for i in range(len(labels))]
    ticks = nice_ticks(max(totals + ([reference[0]] if reference else []), default=0))
    scale = plot_w / ticks[-1]
    out = _open(chart_id, title, height) + legend
    for t in ticks:
        x = left + t * scale
        out.append(f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + plot_h}"/>'
                   f'<text class="tick" x="{x:.1f}" y="{top + plot_h + 14}" text-anchor="middle">{escape(_num(t))}</text>')
    for i, label in enumerate(labels):
        y = top + row * i + 3
        x = float(left)
        for (name, values), color in zip(series, palette):
            v = values[i] or 0
            if v <= 0:
                continue
            w = v * scale
            out.append(f'<rect class="bar" data-series="{escape(name)}" data-value="{v}" x="{x:.1f}" y="{y:.1f}" '
                       f'width="{max(w, 2):.1f}" height="{row - 6}" fill="{color}">'
                       f"<title>{escape(label)} · {escape(name)}: {escape(fmt(v))}</title></rect>")
            x += w
        room = (label_width - 30) // 6  # characters that fit beside the y-axis label
        short = label if len(label) <= room else label[: room - 1] + "…"
        out.append(f'<text class="tick" x="{left - 6}" y="{y + row - 9:.1f}" text-anchor="end">{escape(short)}'
                   f"<title>{escape(label)}</title></text>")
    if reference:
        x = left + reference[0] * scale
        out.append(f'<line class="reference" x1="{x:.1f}" x2="{x:.1f}" y1="{top - 4}" y2="{top + plot_h}"/>'
                   f'<text class="reference-label" x="{x - 4:.1f}" y="{top + 10}" text-anchor="end">'
                   f"{escape(reference[1])}</text>")
    out.append(f'<line class="axis" x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}"/>'
               f'<line class="axis" x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}"/>')
    # the y label heads the label column: rotated, it would not fit beside a few short rows
    out += [f'<text class="axis-label x-label" x="{left + plot_w / 2:.1f}" y="{height - 6}" text-anchor="middle">'
            f"{escape(x_label)}</text>",
            f'<text class="axis-label y-label" x="{left - 6}" y="{top - 6}" text-anchor="end">{escape(y_label)}</text>']
    return "".join(out + ["</svg>"])


def _axis_labels(x_label: str, y_label: str, x_mid: float, x_y: float, y_mid: float) -> list[str]:
    return [f'<text class="axis-label x-label" x="{x_mid:.1f}" y="{x_y:.1f}" text-anchor="middle">{escape(x_label)}</text>',
            f'<text class="axis-label y-label" x="12" y="{y_mid:.1f}" text-anchor="middle" '
            f'transform="rotate(-90 12 {y_mid:.1f})">{escape(y_label)}</text>']
