"""A benchmark's run: its common command line, the guarded body, the clean-up and the doc section at the end."""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import signal
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import ClassVar, TypeVar

from harness import GiB, say
from harness.machine import disk_description
from harness.report import DOC, write_section
from harness.turns import Turns

T = TypeVar("T")


def argument_parser(doc: str, section: str, max_wait: float | None = 1800) -> argparse.ArgumentParser:
    """The options every benchmark has: where it works, which doc it writes, how long it waits for a quiet machine."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()),
                        help="where the temporary directory goes (default $TMPDIR or /tmp)")
    parser.add_argument("--doc", type=Path, default=DOC, help=f"file whose {section} section is rewritten")
    parser.add_argument("--no-doc", action="store_true", help="print the results only")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs) instead of removing it")
    if max_wait is not None:
        parser.add_argument("--max-wait", type=float, default=max_wait,
                            help=f"seconds to wait for a quiet machine before each measured run (default {max_wait:g})")
    return parser


def profile_options(parser: argparse.ArgumentParser, choices: Sequence[str], help: str) -> None:
    """--profile (py-spy an extra run: when) and --keep-profiles."""
    parser.add_argument("--profile", choices=choices, default="auto", help=help)
    parser.add_argument("--keep-profiles", type=Path, help="copy py-spy's raw profiles into this directory")


def profile_flag(args: argparse.Namespace) -> str:
    """--profile as the command line gave it, when not the default."""
    return "" if args.profile == "auto" else f" --profile {args.profile}"


def interleaved(names: Sequence[T], repeat: int) -> Iterator[tuple[int, T]]:
    """(round, name) for repeat rounds: odd rounds in the given order, even rounds reversed, so that no
    method always follows the same other one."""
    for round_number in range(1, repeat + 1):
        for name in names if round_number % 2 else names[::-1]:
            yield round_number, name


class Benchmark(ABC):
    """One run of a benchmark: its arguments, temporary directory, clean-up stack, notes and turns.

    A script subclasses it with what it measures; `main` runs it guarded,
    prints what it found and writes its section of docs/benchmarks.md.
    """

    section: ClassVar[str]  # its name in docs/benchmarks.md (and bench/NAME.py)
    tools: ClassVar[tuple[str, ...]] = ("curl",)  # commands it cannot run without

    def __init__(self, args: argparse.Namespace, work: Path, stack: ExitStack) -> None:
        self.args = args
        self.work = work
        self.stack = stack
        self.notes: list[str] = []
        self.turns = Turns(self.notes, max_wait=getattr(args, "max_wait", 1800))
        self.started = time.monotonic()
        self.when = dt.datetime.now(dt.UTC)

    def need_disk(self, needed: int) -> None:
        free = shutil.disk_usage(self.work).free
        if free < needed:
            raise RuntimeError(f"{self.work} has {free / GiB:.1f} GiB free; this run needs about {needed / GiB:.1f} GiB")

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def written_by(self, command: str) -> str:
        """The section's first sentence: the command that wrote it, when, and how long the run took."""
        waited = (f", of which {self.turns.waited / 60:.1f} min waiting for other benchmarks and pytest"
                  if self.turns.waited else "")
        return (f"Written by `{command}` on {self.when:%Y-%m-%d %H:%M} UTC (the run took {self.elapsed() / 60:.1f} min"
                f"{waited}).")

    @abstractmethod
    def measure(self) -> None:
        """Set up and measure; runs guarded: whatever it starts goes on self.stack."""

    def after_cleanup(self) -> None:
        """What can only be known once everything started is stopped (by default nothing)."""

    @abstractmethod
    def summary(self) -> str:
        """The results, printed after the run."""

    @abstractmethod
    def render(self) -> str:
        """Its whole section of docs/benchmarks.md."""

    def complete(self) -> bool:
        """Whether this run measured everything (a partial run writes no doc)."""
        return True

    def missed(self) -> bool:
        """Whether a target was missed (exit status 1)."""
        return False


@contextmanager
def signals_as_interrupts() -> Iterator[None]:
    """SIGTERM/SIGHUP end the run like Ctrl-C does, so that clean-up runs."""

    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def cleanup(stack: ExitStack) -> None:
    """Close the stack; a second Ctrl-C must not cut the clean-up short and leave daemons behind."""
    ignored: dict[int, Callable | int | None] = {}
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        ignored[sig] = signal.signal(sig, signal.SIG_IGN)
    try:
        try:
            say("cleaning up (servers, databases, files)")
        except OSError:
            pass  # stdout is gone (a closed pipe): clean up silently
        stack.close()
    finally:
        for sig, handler in ignored.items():
            signal.signal(sig, handler)


def run_guarded(script: str, stack: ExitStack, body: Callable[[], object]) -> int | None:
    """body() with SIGTERM/SIGHUP taken as Ctrl-C, then the clean-up of stack in any case.

    On an interruption or a failure it says so and returns the exit status (130, 2); None when body went through.
    """
    try:
        with signals_as_interrupts():
            body()
    except KeyboardInterrupt:
        cleanup(stack)
        print("interrupted: everything started was stopped and removed", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - any failure: clean up, say why, exit 2
        cleanup(stack)
        print(f"bench/{script} failed: {error!r}", file=sys.stderr)
        return 2
    cleanup(stack)
    return None


def main(kind: type[Benchmark], args: argparse.Namespace) -> int:
    """Run one benchmark: 0 all targets met, 1 a target missed, 2 it failed, 130 interrupted."""
    script = f"{kind.section}.py"
    for tool in kind.tools:
        if shutil.which(tool) is None:
            print(f"bench/{script} needs {tool}", file=sys.stderr)
            return 2
    stack = ExitStack()
    made: list[Benchmark] = []

    def body() -> None:
        args.work_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f"fwrepo-{kind.section}.", dir=args.work_dir))
        if args.keep:
            stack.callback(say, f"kept {work}")
        else:
            stack.callback(shutil.rmtree, work, ignore_errors=True)
        say(f"work directory {work} ({disk_description(work)})")
        made.append(kind(args, work, stack))
        made[0].measure()

    failed = run_guarded(script, stack, body)
    if failed is not None:
        return failed
    bench = made[0]
    bench.after_cleanup()
    say("")
    for note in bench.notes:
        say(f"note: {note}")
    say(bench.summary())
    if not args.no_doc and bench.complete():
        write_section(args.doc, kind.section, bench.render())
        say(f"\nwrote the {kind.section} section of {args.doc}")
    return 1 if bench.missed() else 0
