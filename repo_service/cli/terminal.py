"""What the command prints for a person: tables, progress bars, lines that redraw; values are worded as
``repo_service.wording`` words them, as the console does."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import TextIO

from repo_service.wording import size

BAR_WIDTH = 30
# A redraw more often than this only costs the terminal.
REDRAW_SECONDS = 0.1


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())


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
