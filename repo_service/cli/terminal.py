"""What the command prints for a person: tables, progress bars, and values read as a person reads them."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TextIO

BAR_WIDTH = 30
# A redraw more often than this only costs the terminal.
REDRAW_SECONDS = 0.1


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())


def moment(value: datetime | str | None) -> str:
    """A time in UTC to the second: 2026-12-02 05:46:01 UTC."""
    if value is None:
        return "-"
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    if when.tzinfo is not None:
        when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


def size(count: int) -> str:
    """Bytes in the largest binary unit that keeps a number of at least 1: 1.5 MiB."""
    amount, unit = float(count), "bytes"
    for larger in ("KiB", "MiB", "GiB", "TiB"):
        if amount < 1024:
            break
        amount, unit = amount / 1024, larger
    return f"{count} bytes" if unit == "bytes" else f"{amount:.1f} {unit}"


def duration(seconds: float | None) -> str:
    """Seconds as a person says them: 0.4 s, 12 s, 3 min 5 s, 2 h 10 min; "-" for none."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


def percent(fraction: float | None, digits: int = 0) -> str:
    return "-" if fraction is None else f"{fraction:.{digits}%}"


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    filled = int(max(0.0, min(fraction, 1.0)) * width)
    return f"[{'#' * filled}{'.' * (width - filled)}]"


class StatusLine:
    """A line that changes: redrawn in place on a terminal; elsewhere (a pipe, a log) one line per change."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.terminal = stream.isatty()
        self.shown = ""

    def show(self, text: str) -> None:
        if text == self.shown:
            return
        if self.terminal:
            # Pad over what a longer previous line left on screen.
            self.stream.write("\r" + text.ljust(len(self.shown)))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
        self.shown = text

    def end(self) -> None:
        """Leave the cursor on a fresh line after an in-place line."""
        if self.terminal and self.shown:
            self.stream.write("\n")
            self.stream.flush()


class ProgressBar:
    """An upload's progress bar on stderr, when stderr is a terminal: the client's progress callback."""

    def __init__(self) -> None:
        self.started = self.drawn = time.monotonic()
        self.line = StatusLine(sys.stderr) if sys.stderr.isatty() else None

    def __call__(self, sent: int, total: int) -> None:
        now = time.monotonic()
        if self.line is not None and (now - self.drawn > REDRAW_SECONDS or sent == total):
            self.drawn = now
            fraction = sent / total if total else 1.0
            rate = sent / max(now - self.started, 1e-6)
            self.line.show(f"{bar(fraction)} {fraction:4.0%} {size(sent)} of {size(total)} {size(int(rate))}/s")

    def end(self) -> None:
        if self.line is not None:
            self.line.end()
