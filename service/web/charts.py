"""Small inline SVG charts, drawn on the server (no script, no external library).

Colours come from classes styled in ``static/app.css``; every text that comes from data
(column names, categories) is escaped. Each chart has a ``<title>`` for screen readers and
each bar or cell its own, which browsers show on hover.
"""

from __future__ import annotations

import math
from typing import Any

from markupsafe import Markup, escape

_FONT = 11


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


_STEPS = (0.01, 0.02, 0.025, 0.05, 0.1, 0.2, 0.25)


def _axis(peak: float) -> tuple[float, int]:
    """A round tick step and how many ticks reach ``peak``: at most 5 ticks above zero."""
    step = next((s for s in _STEPS if peak <= 5 * s), 0.25)
    return step, max(1, math.ceil(peak / step - 1e-9))


def marginal_bars(m: dict[str, Any], *, width: int = 520, height: int = 230) -> Markup:
    """Grouped bars: the real (training rows) and synthetic share of each bin of one column."""
    labels, real, syn = m["labels"], m["real"], m["synthetic"]
    left, right, top, bottom = 44, 8, 10, 78
    plot_w, plot_h = width - left - right, height - top - bottom
    n = max(len(labels), 1)
    group = plot_w / n
    bar = max(2.0, min(18.0, group * 0.38))
    step, ticks = _axis(max([*real, *syn, 0.0]))
    peak = step * ticks
    name = escape(m["column"])
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{name}: '
        f'real and synthetic share of each {"bin" if m["numeric"] else "category"}">',
        f"<title>{name}: real (training rows) vs synthetic</title>",
    ]
    for k in range(ticks + 1):
        value = step * k
        y = top + plot_h - plot_h * k / ticks
        parts.append(f'<line class="grid" x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(
            f'<text class="tick" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{100 * value:.0f}%</text>'
        )
    for i, label in enumerate(labels):
        x0 = left + i * group + group / 2
        for offset, values, cls, who in ((-bar, real, "real", "real"), (0.0, syn, "syn", "synthetic")):
            h = plot_h * values[i] / peak
            title = f"{escape(label)}: {who} {_pct(values[i])}"
            parts.append(
                f'<rect class="bar-{cls}" x="{x0 + offset:.1f}" y="{top + plot_h - h:.1f}" '
                f'width="{bar:.1f}" height="{max(h, 0):.1f}"><title>{title}</title></rect>'
            )
        y = top + plot_h + 12
        parts.append(
            f'<text class="tick" x="{x0:.1f}" y="{y}" text-anchor="end" '
            f'transform="rotate(-40 {x0:.1f} {y})">{escape(_cut(str(label), 16))}</text>'
        )
    parts.append(
        f'<line class="axis" x1="{left}" x2="{width - right}" y1="{top + plot_h}" y2="{top + plot_h}"/>'
    )
    parts.append("</svg>")
    return Markup("".join(parts))


def _cell_class(value: float) -> str:
    """One of 6 steps of |value|, blue for positive and orange for negative (Pearson only)."""
    step = min(5, int(abs(value) * 5.999))
    return f"heat-{'neg' if value < 0 else 'pos'}-{step}"


def heatmap(matrix: dict[str, Any], *, title: str) -> Markup:
    """A square heatmap of pairwise associations, labelled on both axes."""
    cols, values = matrix["columns"], matrix["values"]
    n = max(len(cols), 1)
    cell = max(12.0, min(40.0, 300 / n))
    label_w = 96
    width = label_w + cell * n + 48  # room for the last column's slanted label
    height = label_w + cell * n + 8
    show_numbers = cell >= 26
    parts = [
        f'<svg class="chart heatmap" viewBox="0 0 {width:.0f} {height:.0f}" role="img" '
        f'aria-label="{escape(title)}: association of each pair of columns">',
        f"<title>{escape(title)}</title>",
    ]
    for i, name in enumerate(cols):
        short = escape(_cut(str(name), 14))
        y = label_w + cell * i + cell / 2 + 4
        parts.append(f'<text class="tick" x="{label_w - 6}" y="{y:.1f}" text-anchor="end">{short}</text>')
        x = label_w + cell * i + cell / 2 + 4
        parts.append(
            f'<text class="tick" x="{x:.1f}" y="{label_w - 6}" transform="rotate(-50 {x:.1f} {label_w - 6})">'
            f"{short}</text>"
        )
    for i, row in enumerate(values):
        for j, value in enumerate(row):
            x, y = label_w + cell * j, label_w + cell * i
            tip = f"{escape(cols[i])} × {escape(cols[j])}: {value:.2f}"
            parts.append(
                f'<rect class="{_cell_class(value)}" x="{x:.1f}" y="{y:.1f}" width="{cell - 1:.1f}" '
                f'height="{cell - 1:.1f}"><title>{tip}</title></rect>'
            )
            if show_numbers:
                ink = "ink-light" if abs(value) >= 0.5 else "ink-dark"
                shown = f"{value:.2f}".replace("0.", ".", 1) if abs(value) < 1 else f"{value:.0f}"
                parts.append(
                    f'<text class="cell {ink}" x="{x + (cell - 1) / 2:.1f}" y="{y + cell / 2 + 3:.1f}" '
                    f'text-anchor="middle">{shown}</text>'
                )
    parts.append("</svg>")
    return Markup("".join(parts))


def stacked_bar(segments: list[tuple[str, float, str]], *, width: int = 600, height: int = 22) -> Markup:
    """One horizontal bar split into ``(css class, share, title)`` segments (shares add to <= 1)."""
    parts = [
        f'<svg class="stack" viewBox="0 0 {width} {height}" preserveAspectRatio="none" role="img" '
        f'aria-label="{escape("; ".join(f"{t} {_pct(s)}" for _, s, t in segments))}">',
        f'<rect class="stack-empty" x="0" y="0" width="{width}" height="{height}" rx="4"/>',
    ]
    x = 0.0
    for cls, share, title in segments:
        w = width * max(0.0, share)
        if w > 0:
            parts.append(
                f'<rect class="{escape(cls)}" x="{x:.2f}" y="0" width="{w:.2f}" height="{height}">'
                f"<title>{escape(title)}: {_pct(share)}</title></rect>"
            )
        x += w
    parts.append("</svg>")
    return Markup("".join(parts))


def legend() -> Markup:
    """The key of the marginal charts."""
    return Markup(
        '<p class="legend"><span class="swatch bar-real-swatch"></span> real (training rows) '
        '<span class="swatch bar-syn-swatch"></span> synthetic</p>'
    )
