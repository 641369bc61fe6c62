"""Samples and their medians, verdicts against targets, and the sections of docs/benchmarks.md."""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from harness import MB, ROOT

DOC = ROOT / "docs" / "benchmarks.md"
DOC_HEADER = """\
# Benchmarks

Measurements of fwrepo on a real machine, each next to a baseline that shows
what the machine itself can do (`cp`, a direct boto3 upload), so that a number
says something about fwrepo rather than about the hardware. Each section is
written by a script under `bench/` and rewritten whole on every run; the text
between a section's `<!-- bench:... -->` markers is generated, so edit the
script, not the section.

Run them with

    make bench                          # sets up what is missing, then bench/upload.py
    .venv/bin/python bench/upload.py    # [--size-mib 1024] [--repeat 3]

The S3 numbers use a throwaway single-node Ceph RADOS Gateway
(`tests/support/s3servers.py`); without Ceph installed only the local part
runs and the section says so.

"""


@dataclass
class Sample:
    """One measured run; what was not measured stays None."""

    seconds: float  # wall time of the run
    mb_s: float | None = None  # as the benchmark computes it (curl's speed, or bytes over the wall time)
    server_cpu: float | None = None  # CPU seconds of the server (nginx: master + workers) during the run
    client_cpu: float | None = None  # CPU seconds of the client (curl, or this process)
    ceph_cpu: float | None = None  # CPU seconds of Ceph's mon + osd + rgw
    rss_max_kib: int | None = None  # the server's largest VmRSS sampled during the run
    reply_bytes: int | None = None  # what the client received

    def describe(self) -> str:
        """One line for the console: speed, time and what else was measured."""
        parts = [f"{self.mb_s:8.1f} MB/s ({self.seconds:.2f} s)" if self.mb_s is not None else f"{self.seconds:7.2f} s"]
        for label, value in (("server CPU", self.server_cpu), ("Ceph CPU", self.ceph_cpu),
                             ("client CPU", self.client_cpu)):
            if value is not None:
                parts.append(f"{label} {value:.1f} s")
        if self.rss_max_kib:
            parts.append(f"RSS max {self.rss_max_kib * 1024 / MB:.0f} MB")
        return ", ".join(parts)


@dataclass
class Series:
    """The runs of one method; the median counts."""

    name: str
    samples: list[Sample] = field(default_factory=list)
    skipped: str | None = None  # why it did not run

    def median(self, attribute: str = "mb_s") -> float | None:
        values = [getattr(s, attribute) for s in self.samples if getattr(s, attribute) is not None]
        return statistics.median(values) if values else None

    def largest(self, attribute: str) -> float | None:
        values = [getattr(s, attribute) for s in self.samples if getattr(s, attribute) is not None]
        return max(values) if values else None

    def runs(self, attribute: str = "mb_s", pattern: str = "{:.0f}") -> str:
        return ", ".join(pattern.format(getattr(s, attribute)) for s in self.samples)


def fmt(value: float | None, pattern: str = "{:.1f}", missing: str = "-") -> str:
    return pattern.format(value) if value is not None else missing


def kib_to_mb(kib: float | None) -> float | None:
    return kib * 1024 / MB if kib is not None else None


@dataclass
class Verdict:
    what: str
    value: str
    target: str
    outcome: str  # PASS, FAIL, "not run", "info"
    key: str = ""  # which workload, for the benchmark's own use (what to profile)
    margin: float | None = None  # how far past the target (value / target, or target / value for a ceiling); < 1 missed

    @property
    def narrow(self) -> bool:
        """Passed, but by less than 10%: within what run-to-run noise can flip."""
        return self.outcome == "PASS" and self.margin is not None and self.margin < 1.1


def ratio_verdict(what: str, top: float | None, bottom: float | None, target: float | None,
                  key: str = "") -> Verdict:
    """top / bottom against a floor of target (None: reported, not judged)."""
    wanted = f">= {target}" if target else "-"
    if top is None or bottom is None:
        return Verdict(what, "-", wanted, "not run", key)
    value = top / bottom
    if target is None:
        return Verdict(what, f"{value:.2f}", "-", "info", key)
    return Verdict(what, f"{value:.2f}", wanted, "PASS" if value >= target else "FAIL", key, value / target)


def ceiling_verdict(what: str, value: float | None, limit: float, unit: str = "", pattern: str = "{:.0f}",
                    inclusive: bool = False, key: str = "") -> Verdict:
    """value against a ceiling: below limit (or at most limit, inclusive)."""
    wanted = f"{'<=' if inclusive else '<'} {limit:g}{unit}"
    if value is None:
        return Verdict(what, "-", wanted, "not run", key)
    passed = value <= limit if inclusive else value < limit
    return Verdict(what, pattern.format(value) + unit, wanted, "PASS" if passed else "FAIL", key,
                   limit / value if value else None)


def verdict_rows(verdicts: list[Verdict]) -> list[str]:
    """The check table, after a blank line."""
    lines = ["", "| check | value | target | result |", "| --- | ---: | --- | --- |"]
    lines += [f"| {v.what} | {v.value} | {v.target} | {v.outcome} |" for v in verdicts]
    return lines


def missed(verdicts: list[Verdict]) -> bool:
    return any(v.outcome == "FAIL" for v in verdicts)


def fact_lines(facts: dict[str, str]) -> list[str]:
    return [f"- {name}: {value}" for name, value in facts.items()]


def render_section(name: str, heading: str, intro: list[str], machine: list[str], shared: str, notes: list[str],
                   body: list[str]) -> str:
    """A whole section: heading, how it was measured (intro), the machine, the notes, then body."""
    lines = [f"<!-- bench:{name}:start -->", f"## {heading}", "", *intro, "Machine:", "", *machine, "", shared, ""]
    for note in notes:
        lines += [f"**Note:** {note}", ""]
    lines += [*body, f"<!-- bench:{name}:end -->"]
    return "\n".join(lines) + "\n"


def write_section(path: Path, name: str, section: str) -> None:
    """Replace the text between this section's markers (re-read right now: others edit the file too)."""
    start_mark, end_mark = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    text = path.read_text() if path.exists() else DOC_HEADER
    start, end = text.find(start_mark), text.find(end_mark)
    if start != -1 and end > start:
        text = text[:start] + section + text[end + len(end_mark):].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{name}.partial")
    partial.write_text(text)
    os.replace(partial, path)

