"""The dashboard's chart as geometry: stacked bars per day and channel, drawn as inline SVG by
the template (no JavaScript, no chart library; the numbers are in a table beside it too)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from notifier.store.console_log import DayCounts

CHANNELS = ("sms", "whatsapp", "email")
OUTCOMES = ("sent", "failed", "skipped")
WIDTH, HEIGHT = 760, 240
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 10, 40


@dataclass(frozen=True, kw_only=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    outcome: str
    title: str


@dataclass(frozen=True, kw_only=True)
class Label:
    x: float
    y: float
    text: str


@dataclass(frozen=True, kw_only=True)
class Chart:
    width: int
    height: int
    bars: list[Bar]
    day_labels: list[Label]
    channel_labels: list[Label]
    grid: list[Label]  # y position and the count it marks
    maximum: int


def build(days: Sequence[DayCounts], zone: ZoneInfo) -> Chart:
    """Stacked sent/failed/skipped bars, one per channel, grouped by day."""
    totals = [sum(d.counts.get((c, o), 0) for o in OUTCOMES) for d in days for c in CHANNELS]
    maximum = max([*totals, 1])
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    group = plot_w / max(len(days), 1)
    bar_w = group * 0.8 / len(CHANNELS)
    bars: list[Bar] = []
    day_labels, channel_labels = [], []
    for i, day in enumerate(days):
        x0 = LEFT + i * group + group * 0.1
        label = day.start.astimezone(zone).strftime("%d %b")
        day_labels.append(Label(x=x0 + group * 0.4, y=HEIGHT - 8, text=label))
        for j, channel in enumerate(CHANNELS):
            x = x0 + j * bar_w
            channel_labels.append(Label(x=x + bar_w / 2, y=HEIGHT - BOTTOM + 12,
                                        text=channel[0].upper()))  # fmt: skip
            bars.extend(_stack(day, channel, label, x, bar_w * 0.9, plot_h, maximum))
    grid = [Label(x=LEFT - 4, y=TOP + plot_h * (1 - f), text=str(round(maximum * f)))
            for f in (0.0, 0.5, 1.0)]  # fmt: skip
    return Chart(width=WIDTH, height=HEIGHT, bars=bars, day_labels=day_labels,
                 channel_labels=channel_labels, grid=grid, maximum=maximum)  # fmt: skip


def _stack(
    day: DayCounts, channel: str, label: str, x: float, width: float, plot_h: float, top: int
) -> list[Bar]:
    bars, base = [], TOP + plot_h
    for outcome in OUTCOMES:
        n = day.counts.get((channel, outcome), 0)
        if not n:
            continue
        height = plot_h * n / top
        base -= height
        bars.append(Bar(x=round(x, 1), y=round(base, 1), width=round(width, 1),
                        height=round(height, 1), outcome=outcome,
                        title=f"{label} {channel}: {n} {outcome}"))  # fmt: skip
    return bars
