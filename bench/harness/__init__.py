"""What every benchmark under bench/ shares; each script keeps only what it measures.

    procs     /proc: CPU seconds, RSS, process trees, a meter around one run
    machine   describing the machine, how busy it is, payload files
    servers   fwrepo serve, nginx, vsftpd, bare pyftpdlib; curl downloads
    stores    a throwaway Ceph RGW, scratch PostgreSQL databases
    turns     waiting for a quiet machine, repeating a disturbed run
    profiles  py-spy of a server during an extra run
    report    samples, medians, verdicts, the sections of docs/benchmarks.md
    run       the common command line, the guarded run and its clean-up

A script imports the parts it needs (`from harness import servers`); no
script imports another script.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # tests.support.s3servers and repo_service of this checkout

MB = 1_000_000  # throughput and RSS are reported in MB (10^6 bytes)
MiB = 1024 * 1024
GiB = 1024 * MiB


def say(message: str) -> None:
    print(message, flush=True)
