"""Taking turns with other benchmarks and test runs on a shared machine."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

from harness import say
from harness.machine import busy_fraction
from harness.procs import Proc, descendants, proc_cpu_seconds, proc_table

BUSY_LIMIT = 0.25  # share of all CPUs busy with other work that makes us wait
T = TypeVar("T")


class Turns:
    """Waits for other benchmarks and pytest runs to finish, and notices when they overlap a run.

    Other benchmarks are what `pgrep -f 'bench/|pytest'` finds, minus this
    process, its ancestors (the shell that started it) and its descendants,
    each with its whole process tree (servers, Ceph daemons). One that is
    itself only waiting (no CPU for a while) does not hold us up, so two
    benchmarks that both wait for the other cannot wait forever: an older one
    must be idle for 10 s, a newer one for 3 s.
    """

    def __init__(self, notes: list[str], max_wait: float = 1800) -> None:
        self.notes = notes
        self.max_wait = max_wait
        self.me = os.getpid()
        self.my_start = proc_table()[self.me].start
        self.waited = 0.0

    def _family(self, table: dict[int, Proc]) -> set[int]:
        family = descendants(table, self.me)
        pid = self.me
        while pid in table and pid > 1:
            family.add(pid)
            pid = table[pid].parent
        return family

    def foreign(self) -> dict[int, set[int]]:
        """Root pid -> its process tree, for every other benchmark or pytest run."""
        found = subprocess.run(["pgrep", "-f", "bench/|pytest"], capture_output=True, text=True, check=False).stdout
        table = proc_table()
        family = self._family(table)
        matches = {int(p) for p in found.split()} - family
        matches &= table.keys()
        roots: dict[int, set[int]] = {}
        for pid in sorted(matches, key=lambda p: table[p].start):
            if any(pid in tree for tree in roots.values()):
                continue
            roots[pid] = descendants(table, pid) - family
        return roots

    @staticmethod
    def tree_cpu(pids: Iterable[int]) -> float:
        return sum(proc_cpu_seconds(pid) for pid in pids)

    @staticmethod
    def describe(roots: dict[int, set[int]]) -> str:
        table = proc_table()
        return "; ".join(f"{pid} {' '.join(table[pid].cmdline.split())[:100] if pid in table else '?'}"
                         for pid in roots)

    def wait(self, label: str) -> None:
        """Until the machine is quiet (or max_wait has passed, which becomes a note)."""
        began = time.monotonic()
        idle_for = 0
        last_said = 0.0
        while True:
            roots = self.foreign()
            if not roots:
                busy = busy_fraction(1.0)
                if busy <= BUSY_LIMIT:
                    break
                why = f"{busy:.0%} of the CPUs busy with other work"
            else:
                before = {root: self.tree_cpu(tree) for root, tree in roots.items()}
                time.sleep(1.0)
                active = [root for root, tree in roots.items() if self.tree_cpu(tree) - before[root] > 0.05]
                idle_for = 0 if active else idle_for + 1
                table = proc_table()
                older = any(root in table and table[root].start < self.my_start for root in roots)
                if idle_for >= (10 if older else 3) and busy_fraction(1.0) <= BUSY_LIMIT:
                    break  # they are waiting too, probably for us
                why = f"other benchmark/pytest running: {self.describe(roots)}"
            now = time.monotonic()
            if now - began > self.max_wait:
                waited = f"{self.max_wait / 60:.0f} min" if self.max_wait >= 60 else f"{self.max_wait:.0f} s"
                self.notes.append(f"Waited {waited} for a quiet machine before {label} and then ran anyway ({why}).")
                break
            if now - last_said > 30:
                say(f"waiting before {label}: {why}")
                last_said = now
        self.waited += time.monotonic() - began

    def snapshot(self) -> dict[int, float]:
        """CPU seconds of every process in another benchmark's tree, now."""
        return {pid: proc_cpu_seconds(pid) for tree in self.foreign().values() for pid in tree}

    def foreign_cpu_since(self, snapshot: dict[int, float]) -> float:
        now = self.snapshot()
        return sum(max(cpu - snapshot.get(pid, 0.0), 0.0) for pid, cpu in now.items())

    def quiet(self, label: str) -> dict[int, float]:
        """Wait for a quiet machine; the snapshot to judge afterwards whether others disturbed what follows."""
        self.wait(label)
        return self.snapshot()

    def disturbance(self, snapshot: dict[int, float], seconds: float) -> float | None:
        """CPU seconds other benchmarks used since snapshot, when that is more than noise over seconds."""
        foreign = self.foreign_cpu_since(snapshot)
        return foreign if foreign > 0.1 * seconds + 0.2 else None

    def measured(self, label: str, run: Callable[[], T], retries: int = 2) -> T:
        """Run one measurement on a quiet machine; repeat it when other benchmarks used CPU meanwhile."""
        for attempt in range(retries + 1):
            snapshot, began = self.quiet(label), time.monotonic()
            result = run()
            foreign = self.disturbance(snapshot, time.monotonic() - began)
            if foreign is None:
                return result
            if attempt < retries:
                say(f"  {label}: other benchmarks used {foreign:.1f} CPU s during the run; repeating it")
            else:
                self.notes.append(f"{label}: other benchmarks used {foreign:.1f} CPU s during the run "
                                  f"({retries + 1} attempts); kept the last one.")
        return result
