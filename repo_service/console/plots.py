"""Plots for the console, drawn on the server as SVG markup: pure functions of the data, standard library only.

Each one is made to be inlined in a page served with a strict Content-Security-Policy: no script, no style
attribute or element (style-src 'self' blocks both); colours, fonts and dashes are presentation attributes.
It scales to the width of its container (a viewBox, width 100 %), names itself to assistive technology
(role="img", aria-labelledby its <title> and a <desc> that says in words what the plot shows), and every
text from outside is escaped, so a charger id or a title cannot inject markup.
"""

from __future__ import annotations

import hashlib
import math
import re
import statistics
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from html import escape

WIDTH, HEIGHT = 480, 300
# Room around the plotting area for the title, tick labels and axis labels.
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 36, 52
# About how wide a character of the tick labels is (12 px sans-serif), to keep a label inside the drawing.
CHARACTER_WIDTH = 7
FONT = "system-ui, -apple-system, Segoe UI, Roboto, sans-serif"
# Characters of the title the heading shows before it would run off the plot (the <title> has all of it).
HEADING = 52
# Contrast against white (WCAG 2.1): text and axes 17:1, the blue 6.6:1 and the green 6.3:1 (AA asks 4.5:1 of
# text and 3:1 of graphics); the grid is decoration and may be faint.
INK = "#1a1a1a"
BLUE = "#1f5fa8"
GREEN = "#17703a"
GRID = "#d9d9d9"
# Characters XML 1.0 does not allow at all (escaping cannot make them legal): shown as U+FFFD.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def histogram(values: Sequence[float], *, title: str, unit: str = "s", bins: int = 20) -> str:
    """How values are spread, in bins of equal width from the smallest to the largest; values that are all the
    same make one bar. NaN and infinities are left out."""
    if bins < 1:
        raise ValueError(f"bins must be 1 or more, got {bins}")
    finite = sorted(value for value in values if math.isfinite(value))
    if not finite:
        return _no_data(title)
    low, high = finite[0], finite[-1]
    if high == low:
        bins, low, high = 1, low - 0.5, high + 0.5
    width = (high - low) / bins
    counts = [0] * bins
    for value in finite:
        counts[min(int((value - low) / width), bins - 1)] += 1
    median = statistics.median(finite)
    p95 = finite[min(len(finite) - 1, math.ceil(0.95 * len(finite)) - 1)]
    description = (f"Histogram of {_count(len(finite), 'value')}: median {_number(median)} {unit}, "
                   f"95th percentile {_number(p95)} {unit}, from {_number(finite[0])} to {_number(finite[-1])} {unit}.")
    y_ticks = _ticks(0, max(counts), integers=True)
    y_top = y_ticks[-1]
    x_of = _scale(low, high, LEFT, WIDTH - RIGHT)
    y_of = _scale(0, y_top, HEIGHT - BOTTOM, TOP)
    parts = [_grid_and_y_axis(y_ticks, y_of, "count")]
    for index, count in enumerate(counts):
        if count == 0:
            continue
        start, end = low + index * width, low + (index + 1) * width
        left, right = x_of(start), x_of(end)
        # A hair of white between bars, so neighbours of the same height stay two bars.
        parts.append(f'<rect x="{left + 0.5:.1f}" y="{y_of(count):.1f}" width="{max(right - left - 1, 0.5):.1f}" '
                     f'height="{y_of(0) - y_of(count):.1f}" fill="{BLUE}">'
                     f'<title>{_text(f"{_number(start)} to {_number(end)} {unit}: {count:,}")}</title></rect>')
    x_ticks = [tick for tick in _ticks(low, high) if low <= tick <= high]
    parts.append(_x_axis([(x_of(tick), f"{_number(tick)}") for tick in x_ticks],
                         "seconds" if unit == "s" else unit))
    return _svg("histogram", title, description, parts)


def progress(points: Sequence[tuple[datetime, int, int]], total: int, *, title: str) -> str:
    """Jobs finished and succeeded over time, cumulative, on a scale from 0 to total (the campaign's jobs)."""
    if not points:
        return _no_data(title)
    ordered = sorted(points, key=lambda point: point[0])
    moments = [_utc(moment).timestamp() for moment, _, _ in ordered]
    start, end = moments[0], moments[-1]
    if end == start:
        # One moment only: a minute either side, so it shows as a point in the middle.
        start, end = start - 60, end + 60
    _, finished, succeeded = ordered[-1]
    top = max(total, max(point[1] for point in ordered), 1)
    share = f" ({finished / total:.1%})" if total > 0 else ""
    description = (f"Progress over time: {finished:,} of {total:,} jobs finished{share}, {succeeded:,} succeeded, "
                   f"from {_moment(moments[0])} to {_moment(moments[-1])}.")
    x_of = _scale(start, end, LEFT, WIDTH - RIGHT)
    y_ticks = _ticks(0, top, integers=True)
    y_of = _scale(0, y_ticks[-1], HEIGHT - BOTTOM, TOP)
    parts = [_grid_and_y_axis(y_ticks, y_of, "jobs")]
    if total > 0:
        parts.append(f'<line x1="{LEFT}" y1="{y_of(total):.1f}" x2="{WIDTH - RIGHT}" y2="{y_of(total):.1f}" '
                     f'stroke="{INK}" stroke-width="1" stroke-dasharray="2 3"/>')
        parts.append(f'<text x="{WIDTH - RIGHT}" y="{y_of(total) - 4:.1f}" text-anchor="end">'
                     f'{_text(f"all {total:,}")}</text>')
    # Told apart by dash as well as colour, for readers who do not see the difference in hue.
    for index, (name, colour, dashes) in enumerate((("finished", BLUE, None), ("succeeded", GREEN, "7 4"))):
        line = " ".join(f"{x_of(moment):.1f},{y_of(point[index + 1]):.1f}" for moment, point in zip(moments, ordered))
        dash = f' stroke-dasharray="{dashes}"' if dashes else ""
        parts.append(f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="2.5"{dash}/>')
        parts.append(f'<circle cx="{x_of(moments[-1]):.1f}" cy="{y_of(ordered[-1][index + 1]):.1f}" r="3.5" '
                     f'fill="{colour}"/>')
        legend_y = TOP + 14 + 18 * index
        parts.append(f'<line x1="{LEFT + 10}" y1="{legend_y - 4}" x2="{LEFT + 34}" y2="{legend_y - 4}" '
                     f'stroke="{colour}" stroke-width="2.5"{dash}/>')
        parts.append(f'<text x="{LEFT + 40}" y="{legend_y}">{_text(f"{name} ({ordered[-1][index + 1]:,})")}</text>')
    ticks = [start + (end - start) * step / 4 for step in range(5)]
    # The finest clock that tells the ticks apart: a first wave's minutes read in seconds, a rollout's days by date.
    shown = "%m-%d %H:%M" if end - start > 36 * 3600 else "%H:%M" if end - start > 600 else "%H:%M:%S"
    parts.append(_x_axis([(x_of(tick), _clock(tick, shown)) for tick in ticks], "time (UTC)"))
    return _svg("progress", title, description, parts)


# -- drawing ----------------------------------------------------------------------------------


def _svg(kind: str, title: str, description: str, parts: Sequence[str]) -> str:
    body = "".join(parts)
    # Ids unique to the content: several plots inlined in one page must not share them (aria-labelledby).
    key = hashlib.sha256(f"{kind}\0{title}\0{description}\0{body}".encode()).hexdigest()[:10]
    title_id, desc_id = f"{kind}-{key}-title", f"{kind}-{key}-desc"
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" role="img" '
        f'aria-labelledby="{title_id} {desc_id}" font-family="{FONT}" font-size="13" fill="{INK}">'
        f'<title id="{title_id}">{_text(title)}</title><desc id="{desc_id}">{_text(description)}</desc>'
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>'
        f'<text x="{LEFT}" y="22" font-size="15" font-weight="bold">{_text(_shortened(title, HEADING))}</text>'
        + body + "</svg>"
    )


def _no_data(title: str) -> str:
    return _svg("empty", title, "No data yet.", [
        f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" font-size="16">No data yet</text>'])


def _grid_and_y_axis(ticks: Sequence[float], y_of: Callable[[float], float], label: str) -> str:
    parts = []
    for tick in ticks:
        y = y_of(tick)
        parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" stroke="{GRID}"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_text(_number(tick))}</text>')
    parts.append(f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{HEIGHT - BOTTOM}" stroke="{INK}"/>')
    middle = (TOP + HEIGHT - BOTTOM) / 2
    parts.append(f'<text x="14" y="{middle:.1f}" text-anchor="middle" transform="rotate(-90 14 {middle:.1f})">'
                 f'{_text(label)}</text>')
    return "".join(parts)


def _x_axis(ticks: Sequence[tuple[float, str]], label: str) -> str:
    bottom = HEIGHT - BOTTOM
    parts = [f'<line x1="{LEFT}" y1="{bottom}" x2="{WIDTH - RIGHT}" y2="{bottom}" stroke="{INK}"/>']
    for x, text in ticks:
        parts.append(f'<line x1="{x:.1f}" y1="{bottom}" x2="{x:.1f}" y2="{bottom + 5}" stroke="{INK}"/>')
        # A label centred on a tick near the right edge would run past the drawing and be cut: it ends there.
        anchor = "end" if x + len(text) * CHARACTER_WIDTH / 2 > WIDTH - 2 else "middle"
        parts.append(f'<text x="{x:.1f}" y="{bottom + 19}" text-anchor="{anchor}">{_text(text)}</text>')
    parts.append(f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT - 10}" text-anchor="middle">{_text(label)}</text>')
    return "".join(parts)


def _scale(low: float, high: float, start: float, end: float) -> Callable[[float], float]:
    span = (high - low) or 1.0
    return lambda value: start + (value - low) / span * (end - start)


def _ticks(low: float, high: float, *, integers: bool = False) -> list[float]:
    """About five round values (1, 2 or 5 times a power of ten apart) covering low to high, the last at or
    above high."""
    span = high - low
    if span <= 0:
        return [low, low + 1]
    raw = span / 5
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(factor * magnitude for factor in (1, 2, 5, 10) if factor * magnitude >= raw)
    if integers:
        step = max(step, 1)
    first = math.floor(low / step) * step
    ticks = [first]
    while ticks[-1] < high:
        ticks.append(round(first + len(ticks) * step, 10))
    return ticks


# -- words ------------------------------------------------------------------------------------


def _text(value: str) -> str:
    return escape(_NOT_XML.sub("\ufffd", value), quote=True)


def _shortened(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _number(value: float) -> str:
    """1,200 or 42 or 3.5 or 0.125: thousands separated, at most three significant decimals, no trailing zeros."""
    if value == int(value) or abs(value) >= 100:
        return f"{value:,.0f}"
    digits = max(0, 2 - math.floor(math.log10(abs(value)))) if value else 0
    return f"{value:,.{digits}f}".rstrip("0").rstrip(".")


def _count(count: int, noun: str) -> str:
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _moment(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _clock(timestamp: float, shown: str) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime(shown)
