"""Small bar charts drawn on the server as inline SVG: no script, no library, readable by a screen
reader (``role="img"`` with a title and a description; the pages also give the numbers as a
table). Colours come from the stylesheet (classes ``bar ok|failed|running``), so that the CSP
needs no inline style."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from html import escape
from itertools import count

from markupsafe import Markup

WIDTH, HEIGHT = 640, 200
LEFT, RIGHT, TOP, BOTTOM = 64, 8, 12, 40  # margins: y labels on the left, x labels below
MAX_LABELS = 12  # x labels shown at most (every n-th bar beyond that)

_ids = count(1)


@dataclass(frozen=True)
class Bar:
    label: str  # under the bar (a release, a date)
    value: float
    kind: str = "ok"  # css class: ok, failed, running
    note: str = ""  # tooltip text after the value


def bar_chart(bars: list[Bar], *, title: str, describe: Callable[[float], str], empty: str) -> Markup:
    """An SVG bar chart of ``bars`` (left to right), values formatted by ``describe``."""
    if not bars:
        return Markup('<p class="muted">{}</p>').format(empty)
    chart_id = f"chart{next(_ids)}"
    top = max(b.value for b in bars) or 1.0
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / len(bars)
    bar_w = max(2.0, min(48.0, slot * 0.7))
    step = max(1, -(-len(bars) // MAX_LABELS))
    parts = [
        (f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="{chart_id}-t {chart_id}-d" '
         f'preserveAspectRatio="xMidYMid meet">'),
        f'<title id="{chart_id}-t">{escape(title)}</title>',
        f'<desc id="{chart_id}-d">{escape(_summary(bars, describe))}</desc>',
        f'<line class="axis" x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH - RIGHT}" y2="{TOP + plot_h}"/>',
        f'<line class="grid" x1="{LEFT}" y1="{TOP}" x2="{WIDTH - RIGHT}" y2="{TOP}"/>',
        f'<text class="tick" x="{LEFT - 6}" y="{TOP + 4}" text-anchor="end">{escape(describe(top))}</text>',
        f'<text class="tick" x="{LEFT - 6}" y="{TOP + plot_h}" text-anchor="end">0</text>',
    ]
    for i, bar in enumerate(bars):
        h = 0 if top <= 0 else max(1.0, plot_h * bar.value / top) if bar.value > 0 else 0
        x = LEFT + slot * i + (slot - bar_w) / 2
        y = TOP + plot_h - h
        tip = f"{bar.label}: {describe(bar.value)}" + (f", {bar.note}" if bar.note else "")
        parts.append(f'<rect class="bar {escape(bar.kind)}" x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" '
                     f'height="{h:.1f}"><title>{escape(tip)}</title></rect>')
        if i % step == 0:
            parts.append(f'<text class="tick" x="{x + bar_w / 2:.1f}" y="{TOP + plot_h + 16}" '
                         f'text-anchor="middle">{escape(_short(bar.label))}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def _short(label: str, size: int = 12) -> str:
    return label if len(label) <= size else label[: size - 1] + "…"


def _summary(bars: list[Bar], describe: Callable[[float], str]) -> str:
    shown = bars[-10:]
    text = "; ".join(f"{b.label}: {describe(b.value)}" + (f" ({b.kind})" if b.kind != "ok" else "") for b in shown)
    return (f"{len(bars)} values, the last {len(shown)}: " if len(bars) > len(shown) else "") + text
