"""py-spy of a server during an extra, uncounted run, and where its time went by category."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from harness import ROOT

Categories = list[tuple[str, re.Pattern[str]]]


def py_spy() -> str | None:
    candidate = Path(sys.executable).parent / "py-spy"
    return str(candidate) if candidate.exists() else shutil.which("py-spy")


@dataclass
class ProfileSummary:
    samples: int
    rate: int
    categories: list[tuple[str, int]] = field(default_factory=list)  # (category, samples), largest first
    leaves: list[tuple[str, int]] = field(default_factory=list)  # (function (file), samples) of innermost frames
    error: str = ""
    run_seconds: float = 0.0  # wall time of the profiled run
    path: Path | None = None  # the raw profile it was read from

    def seconds(self, samples: int) -> float:
        return samples / self.rate

    def share(self, name: str) -> float:
        return dict(self.categories).get(name, 0) / self.samples if self.samples else 0.0

    def top(self, count: int) -> str:
        """The largest categories with their shares, for the console."""
        return ", ".join(f"{name} {samples / max(self.samples, 1):.0%}" for name, samples in self.categories[:count])


class Profile:
    """`py-spy record -f raw` of a process while a block runs, stopped with SIGINT at its end."""

    def __init__(self, pid: int, out: Path, seconds: int, rate: int = 100) -> None:
        self.pid, self.out, self.seconds, self.rate = pid, out, seconds, rate
        self.proc: subprocess.Popen[bytes] | None = None
        self.error = ""
        self.log = out.with_suffix(".log")

    def __enter__(self) -> Self:
        tool = py_spy()
        if tool is None:
            self.error = "py-spy not installed"
            return self
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [tool, "record", "-p", str(self.pid), "-f", "raw", "-o", str(self.out), "-d", str(self.seconds),
                 "-r", str(self.rate)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        time.sleep(1.0)  # attached and sampling before the work starts
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # py-spy writes what it has and exits
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if not self.out.exists():
            self.error = "py-spy wrote nothing: " + self.log.read_text(errors="replace").strip()[-300:]

    def summary(self, categories: Categories, run_seconds: float, keep: Path | None = None,
                transform: Callable[[Path], Path] | None = None) -> ProfileSummary:
        """What the profile says by category (after transform of the raw file); a copy of it into keep."""
        if self.error:
            return ProfileSummary(0, self.rate, error=self.error, run_seconds=run_seconds)
        path = transform(self.out) if transform else self.out
        summary = summarize_profile(path, self.rate, categories)
        summary.run_seconds = run_seconds
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, keep / path.name)
        return summary


def read_raw_profile(path: Path) -> list[tuple[list[str], int]]:
    """py-spy's raw (collapsed) format: `frame;frame;... count` per line, root first."""
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def short_path(filename: str) -> str:
    """A source file's name without the venv, interpreter or checkout prefix: `uvicorn/...`, `repo_service/...`."""
    for marker in ("site-packages/", "/lib/python3.", f"{ROOT}/"):
        if marker in filename:
            tail = filename.split(marker, 1)[1]
            return tail.split("/", 1)[1] if marker == "/lib/python3." else tail  # /lib/python3.11/x.py -> x.py
    return filename


def short_frame(frame: str) -> str:
    """`send (uvicorn/protocols/http/httptools_impl.py:123)` -> `send (uvicorn/protocols/http/httptools_impl.py)`."""
    match = re.match(r"^(.*) \((.*?)(?::\d+)?\)$", frame)
    if not match:
        return frame
    name, path = match.groups()
    return f"{name} ({short_path(path)})"


IDLE_LEAF = re.compile(r"^(Condition\.wait|Event\.wait|wait|_wait_for_tstate_lock) \(.*threading\.py")


def summarize_profile(path: Path, rate: int, categories: Categories) -> ProfileSummary:
    """Each sample goes to the category of its innermost frame that matches one (else 'other').

    Samples of threads parked in a threading wait (idle anyio worker threads,
    the download-record flusher) are left out: py-spy's idle detection does
    not catch them here.
    """
    counts: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = 0
    for frames, count in read_raw_profile(path):
        if IDLE_LEAF.search(frames[-1]):
            continue
        total += count
        leaves[short_frame(frames[-1])] += count
        chosen = "other"
        for frame in reversed(frames):
            hit = next((name for name, pattern in categories if pattern.search(frame)), None)
            if hit is not None:
                chosen = hit
                break
        counts[chosen] += count
    return ProfileSummary(total, rate, counts.most_common(), leaves.most_common(12), path=path)


def render_profile(summary: ProfileSummary, title: str) -> list[str]:
    if summary.error:
        return [f"{title}: not profiled ({summary.error}).", ""]
    lines = [
        (f"{title} ({summary.samples} samples at {summary.rate} Hz = {summary.seconds(summary.samples):.1f} s of "
        "busy thread time, all threads, idle waits left out):"),
        "",
        "| where the server's time went | share | seconds |",
        "| --- | ---: | ---: |",
    ]
    for name, count in summary.categories:
        lines.append(f"| {name} | {count / summary.samples:.0%} | {summary.seconds(count):.1f} |")
    lines += ["", "| innermost frame (self time) | share |", "| --- | ---: |"]
    for name, count in summary.leaves[:8]:
        lines.append(f"| `{name}` | {count / summary.samples:.0%} |")
    lines.append("")
    return lines


def render_profiles(profiles: dict[str, ProfileSummary], title: str) -> list[str]:
    """Each profile's tables; title is formatted with the profile's {name} and the {seconds} of its run."""
    lines: list[str] = []
    for name, summary in profiles.items():
        lines += render_profile(summary, title.format(name=name, seconds=summary.run_seconds))
    return lines
