"""`fwrepo COMMAND ...` in a process of its own, forked from one that has imported fwrepo already.

The console script spends most of a run starting Python and importing fwrepo and its libraries (about 1.4 s
of CPU each, far longer in wall time on a loaded machine) before the command does its few milliseconds of work.
Here each command still runs in a fresh process of its own, with its own environment, arguments, standard
streams and exit status, through the same `repo_service.cli.main` the script calls; only the imports are done
once, in a fork server (one per test process), before any test's threads exist.

The console script itself is still run as such by the tests of start-up and of the command line
(tests/test_cli.py, test_audit.py, test_database.py, test_settings.py, ...), as they call it directly.
FWREPO_TEST_CLI_SUBPROCESS=1 runs every command through the script instead.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

# What a command imports before it does anything: the parser and every command's own lazy imports.
PRELOAD = ["repo_service.cli", "repo_service.cli.admin", "repo_service.cli.remote", "repo_service.cli.runtime",
           "repo_service.services", "repo_service.db.migrate", "tests.support.cli_process"]

_context = None


def _forkserver() -> multiprocessing.context.BaseContext:
    global _context
    if _context is None:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(PRELOAD)
        _context = context
    return _context


def _command(argv: list[str], environment: dict[str, str], stdin: str, stdout: str, stderr: str) -> None:
    """The child: the command's streams on the given files, its environment alone, then main's exit status."""
    for fd, path, flags in ((0, stdin, os.O_RDONLY), (1, stdout, os.O_WRONLY), (2, stderr, os.O_WRONLY)):
        opened = os.open(path, flags)
        os.dup2(opened, fd)
        os.close(opened)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 (the process's own stdin, as the script has it)
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
    os.environ.clear()
    os.environ.update(environment)
    sys.argv = [str(Path(sys.executable).with_name("fwrepo")), *argv]
    from repo_service.cli import main

    try:
        code = main(argv)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    sys.exit(code)


def run_fwrepo(script: str, argv: Sequence[str], environment: Mapping[str, str], timeout: float,
               stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """What subprocess.run([script, *argv], env=environment, capture_output=True, text=True, ...) returns."""
    if os.environ.get("FWREPO_TEST_CLI_SUBPROCESS") == "1":
        return subprocess.run([script, *argv], env=dict(environment), capture_output=True, text=True,
                              timeout=timeout, input=stdin)
    with tempfile.TemporaryDirectory(prefix="fwrepo-cli-") as place:
        paths = {name: os.path.join(place, name) for name in ("stdin", "stdout", "stderr")}
        for name, path in paths.items():
            with open(path, "w") as file:
                if name == "stdin" and stdin:
                    file.write(stdin)
        process = _forkserver().Process(target=_command, args=(
            list(argv), dict(environment), paths["stdin"], paths["stdout"], paths["stderr"]))
        process.start()
        process.join(timeout)
        if process.exitcode is None:
            process.kill()
            process.join()
            raise subprocess.TimeoutExpired([script, *argv], timeout)
        with open(paths["stdout"]) as out, open(paths["stderr"]) as err:
            return subprocess.CompletedProcess([script, *argv], process.exitcode, out.read(), err.read())
