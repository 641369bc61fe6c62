"""Upload throughput of fwrepo, next to what the machine itself can do.

One run measures, on one file of random bytes (default 1 GiB):

  cp            cp of the file into a directory (the page cache absorbs it)
  cp+sync       cp, then `sync FILE` (the bytes are on disk, as fwrepo's are)
  boto3         boto3 upload_file (default TransferConfig) to Ceph RGW
  fwrepo-local  curl -F to `fwrepo serve` with FWREPO_STORAGE=local
  fwrepo-s3     curl -F to `fwrepo serve` with FWREPO_STORAGE=s3 on the same RGW

each --repeat times, takes the median, checks the targets (fwrepo-local >=
0.5 x cp, fwrepo-s3 >= 0.8 x boto3, server peak RSS < 200 MB) and rewrites the
"Upload" section of docs/benchmarks.md. The local methods run first, before
Ceph starts; then boto3 and fwrepo-s3 on one fresh cluster. fwrepo serves plain
HTTP (FWREPO_TLS=false) unless --tls.

    .venv/bin/python bench/upload.py [--size-mib 1024] [--repeat 3]

Everything it starts (fwrepo servers, a throwaway Ceph cluster) and every file
it writes live under one temporary directory and are stopped/removed at the
end, also on errors and Ctrl-C. Exit status: 0 all targets met, 1 a target
missed, 2 the benchmark itself failed, 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import MB, GiB, MiB, say
from harness.machine import OtherLoad, boto3_version, busy_fraction, ceph_version, curl_version
from harness.machine import machine_facts, make_random_file, mem_available, mount_of, sync_all
from harness.procs import Meter, proc_status_kib
from harness.report import Sample, Series, Verdict, ceiling_verdict, fact_lines, fmt, kib_to_mb, missed, ratio_verdict
from harness.report import render_section, verdict_rows
from harness.run import Benchmark, argument_parser, interleaved, main
from harness.servers import FwrepoServer
from harness.stores import Ceph, CephUnavailable, start_ceph

TARGET_LOCAL = 0.5  # fwrepo-local MB/s >= 0.5 x cp
TARGET_S3 = 0.8  # fwrepo-s3 MB/s >= 0.8 x boto3 upload_file
TARGET_RSS_MB = 200  # server peak RSS below this

METHODS = ("cp", "cp+sync", "boto3", "fwrepo-local", "fwrepo-s3")
S3_METHODS = ("boto3", "fwrepo-s3")
DIRECT_BUCKET = "bench-direct"
FWREPO_BUCKET = "bench-fwrepo"


@dataclass
class Result(Series):
    peak_rss_kib: int | None = None  # server VmHWM at the end (its whole life)
    idle_rss_kib: int | None = None  # server VmRSS before the first upload

    def mb_per_s(self, size: int) -> float | None:
        median = self.median("seconds")
        return size / median / MB if median else None


class Upload(Benchmark):
    section = "upload"

    def __init__(self, args: argparse.Namespace, work: Path, stack: ExitStack) -> None:
        super().__init__(args, work, stack)
        self.size = self.args.size_mib * MiB
        self.source = self.work / "payload.bin"
        self.sha256 = ""
        self.methods = [m for m in METHODS if m in self.args.only]
        self.results = {m: Result(m) for m in self.methods}
        self.ceph: Ceph | None = None
        self.s3_client: Any = None
        self.gc_works = True
        self.servers: dict[str, FwrepoServer] = {}
        self.version_counter = 0
        self.facts: dict[str, str] = {}

    # -- set-up

    def measure(self) -> None:
        needed = (3 + self.args.repeat) * self.size  # payload, a copy, fwrepo-local's stored images
        self.need_disk(needed)
        self.other_load = OtherLoad()
        busy = busy_fraction()
        if busy > 0.25:
            warning = (
                f"{busy:.0%} of the CPUs were busy with other work just before the run; "
                "the numbers are lower than on a quiet machine."
            )
            say(f"warning: {warning}")
            self.notes.append(warning)
        self.facts = {**machine_facts(self.work), "curl": curl_version(), "boto3": boto3_version(),
                      "Ceph": ceph_version()}
        _, _, fstype = mount_of(self.work)
        if fstype in ("tmpfs", "ramfs"):
            self.notes.append(f"The work directory is on {fstype}: cp and fwrepo-local measure RAM, not a disk.")
        say(f"writing {self.size / MiB:.0f} MiB of random bytes to {self.source.name}")
        self.sha256 = make_random_file(self.source, self.size)
        (self.work / "copies").mkdir()
        self.run()

    def start_ceph(self) -> None:
        # Memstore keeps objects in RAM, capped by memstore_bytes. Each object
        # is deleted and garbage-collected right after its upload (see
        # reclaim_s3), so one or two at a time would fit in the default cap;
        # the cap leaves room for all of them, where RAM allows, in case the
        # forced garbage collection does not work.
        uploads = sum(m in self.methods for m in S3_METHODS) * self.args.repeat
        everything = uploads * self.size + GiB
        spare = mem_available() - 2 * self.size - 3 * GiB
        try:
            self.ceph = start_ceph(self.stack, self.work / "ceph", max(3 * self.size + GiB, min(everything, spare)))
        except CephUnavailable as error:
            for method in S3_METHODS:
                if method in self.results:
                    self.results[method].skipped = str(error)
            self.notes.append(f"S3 part not run: {error}.")
            say(f"S3 part skipped: {error}")
            return
        self.s3_client = self.ceph.client()
        if "boto3" in self.methods:
            self.s3_client.create_bucket(Bucket=DIRECT_BUCKET)

    def start_server(self, name: str, settings: dict[str, str]) -> None:
        server = FwrepoServer(name, self.work / name, settings, tls=self.args.tls)
        self.servers[name] = server
        self.stack.callback(server.stop)
        server.start()
        self.results[name].idle_rss_kib = proc_status_kib(server.pid, "VmRSS")
        say(f"{name}: fwrepo serve pid {server.pid} at {server.url}")

    def stop_server(self, name: str) -> None:
        server = self.servers.get(name)
        if server is None or server.proc is None:
            return
        self.results[name].peak_rss_kib = proc_status_kib(server.pid, "VmHWM")
        server.stop()

    # -- measurements

    def measure_cp(self, with_sync: bool) -> Sample:
        target = self.work / "copies" / "payload.copy"
        with Meter() as meter:
            # --reflink=never: on btrfs/XFS a reflink would copy no data at all.
            subprocess.run(["cp", "--reflink=never", str(self.source), str(target)], check=True)
            if with_sync:
                subprocess.run(["sync", str(target)], check=True)  # fsync of that one file
        target.unlink()
        return meter.sample()

    def measure_boto3(self) -> Sample:
        assert self.ceph is not None
        key = f"payload-{self.version_counter}"
        self.version_counter += 1
        with Meter(client_cpu=time.process_time, ceph_cpu=self.ceph.cpu) as meter:
            self.s3_client.upload_file(str(self.source), DIRECT_BUCKET, key)  # default TransferConfig
        size = self.s3_client.head_object(Bucket=DIRECT_BUCKET, Key=key)["ContentLength"]
        if size != self.size:
            raise RuntimeError(f"boto3 stored {size} bytes, not {self.size}")
        self.reclaim_s3(DIRECT_BUCKET)
        return meter.sample()

    def measure_fwrepo(self, name: str) -> Sample:
        server = self.servers[name]
        self.version_counter += 1
        ceph = self.ceph.cpu if name == "fwrepo-s3" and self.ceph else None
        with Meter(server.pid, ceph_cpu=ceph) as meter:
            record = server.upload_firmware(self.source, f"1.0.{self.version_counter}", statuses=("201",))
        if record.get("size") != self.size or record.get("sha256") != self.sha256:
            raise RuntimeError(f"{name} stored other bytes: {record.get('size')} bytes, SHA-256 {record.get('sha256')}")
        if name == "fwrepo-s3":
            self.reclaim_s3(FWREPO_BUCKET)
        if name == "fwrepo-local":
            # Like cp's copy, the stored image goes (untimed), so that every
            # local measurement finds the same amount of free memory for the
            # page cache; see the note on this VM's memory in the doc.
            for stored in (server.data_dir / "storage").rglob("*"):
                if stored.is_file():
                    stored.unlink()
        return meter.sample()

    def reclaim_s3(self, bucket: str) -> None:
        """Delete what an upload stored and have RGW garbage-collect it now (untimed).

        On this VM memory that a process touches for the first time is
        expensive, so with every object kept the memstore OSD grows into fresh
        memory on each upload and Ceph's CPU per GiB nearly doubles over a few
        uploads (measured: boto3 3.1 s -> 5.1 s per GiB). Deleted multipart
        data would only be collected after RGW's GC delay; `radosgw-admin gc
        process --include-all` frees it at once, so each upload reuses the
        memory of the previous one and all S3 runs start alike.
        """
        for page in self.s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                self.s3_client.delete_object(Bucket=bucket, Key=item["Key"])
        if not self.gc_works:
            return
        conf = next(iter(sorted((self.work / "ceph").glob("ceph-rgw.*/ceph.conf"))), None)
        failure = "no ceph.conf found" if conf is None else ""
        if conf is not None:
            # The ceph tools are Python scripts of the system's python3: no venv
            # PYTHONPATH, and no CEPH_* from the caller's shell.
            env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME") and not k.startswith("CEPH_")}
            try:
                done = subprocess.run(
                    ["radosgw-admin", "-c", str(conf), "gc", "process", "--include-all"],
                    env=env, capture_output=True, text=True, timeout=300, check=False,
                )  # fmt: skip
                if done.returncode != 0:
                    failure = f"exit {done.returncode}: {done.stderr.strip()[-300:]}"
            except (OSError, subprocess.SubprocessError) as error:
                failure = str(error)
        if failure:
            self.gc_works = False
            self.notes.append(
                f"`radosgw-admin gc process` failed ({failure}): later S3 uploads grew Ceph's memory "
                "and deleted data was collected on RGW's own schedule, so the S3 numbers are noisier."
            )

    def measure_one(self, method: str) -> Sample:
        if method == "cp":
            return self.measure_cp(with_sync=False)
        if method == "cp+sync":
            return self.measure_cp(with_sync=True)
        if method == "boto3":
            return self.measure_boto3()
        return self.measure_fwrepo(method)

    def run(self) -> None:
        local = [m for m in self.methods if m not in S3_METHODS]
        remote = [m for m in self.methods if m in S3_METHODS]
        # Two phases: the local measurements run before Ceph starts, so that
        # neither its CPU nor its memory (memstore grows by every object) weighs
        # on them; the S3 ones then run side by side on one fresh cluster.
        if local:
            say("-- local phase (Ceph not running)")
            if "fwrepo-local" in local:
                self.start_server("fwrepo-local", {"FWREPO_STORAGE": "local"})
            self.rounds(local)
            self.stop_server("fwrepo-local")
        if remote:
            say("-- S3 phase")
            self.start_ceph()
            if self.ceph is not None:
                if "fwrepo-s3" in remote:
                    self.start_server("fwrepo-s3", self.ceph.fwrepo_settings(FWREPO_BUCKET))
                self.rounds(remote)
                self.stop_server("fwrepo-s3")

    def rounds(self, methods: list[str]) -> None:
        for round_number, method in interleaved(methods, self.args.repeat):
            sync_all()  # untimed: the previous measurement's dirty pages go to disk now
            time.sleep(self.args.settle)
            sample = self.measure_one(method)
            sample.mb_s = self.size / sample.seconds / MB
            self.results[method].samples.append(sample)
            say(f"round {round_number}/{self.args.repeat} {method:13} {sample.describe()}")

    def after_cleanup(self) -> None:
        other = self.other_load.share()
        self.facts["CPU used by other processes during the run"] = f"about {other:.0%} of the machine"
        say(f"other processes used about {other:.0%} of the CPUs during the run")
        if other > 0.10:
            self.notes.append(
                f"Other processes used about {other:.0%} of the CPUs during the run: the numbers are lower "
                "(and noisier) than on a quiet machine."
            )

    # -- report

    def verdicts(self) -> list[Verdict]:
        def speed(method: str) -> float | None:
            result = self.results.get(method)
            return result.mb_per_s(self.size) if result is not None else None

        out: list[Verdict] = []
        for what, top, bottom, target in (("fwrepo-local / cp", "fwrepo-local", "cp", TARGET_LOCAL),
                                          ("fwrepo-local / cp+sync", "fwrepo-local", "cp+sync", None),
                                          ("fwrepo-s3 / boto3", "fwrepo-s3", "boto3", TARGET_S3)):
            if top in self.results and bottom in self.results:
                out.append(ratio_verdict(what, speed(top), speed(bottom), target))
        for method in ("fwrepo-local", "fwrepo-s3"):
            if method in self.results:
                result = self.results[method]
                peak = max(filter(None, (kib_to_mb(result.peak_rss_kib), kib_to_mb(result.largest("rss_max_kib")))),
                           default=None)
                out.append(ceiling_verdict(f"{method} server peak RSS", peak, TARGET_RSS_MB, " MB"))
        return out

    def missed(self) -> bool:
        return missed(self.verdicts())

    def complete(self) -> bool:
        return set(self.args.only) == set(METHODS)

    def summary(self) -> str:
        lines = [
            ("| method | MB/s (median) | median s | runs (s) | server peak RSS MB (VmHWM / max sampled VmRSS / idle) "
             "| CPU s per upload: server / client / Ceph |"),
            "| --- | ---: | ---: | --- | --- | --- |",
        ]
        for method, result in self.results.items():
            if result.skipped is not None:
                lines.append(f"| {method} | not run | | | | |")
                continue
            rss = "-"
            if result.peak_rss_kib is not None or result.largest("rss_max_kib") is not None:
                rss = " / ".join(fmt(kib_to_mb(v), "{:.0f}")
                                 for v in (result.peak_rss_kib, result.largest("rss_max_kib"), result.idle_rss_kib))
            cpu = " / ".join(fmt(result.median(name)) for name in ("server_cpu", "client_cpu", "ceph_cpu"))
            lines.append(
                f"| {method} | {fmt(result.mb_per_s(self.size))} | {fmt(result.median('seconds'), '{:.2f}')} "
                f"| {result.runs('seconds', '{:.2f}')} | {rss} | {cpu} |"
            )
        return "\n".join(lines + verdict_rows(self.verdicts()))

    def render(self) -> str:
        args = self.args
        transport = ("HTTPS (FWREPO_TLS=true, development certificate)" if args.tls else
                     "plain HTTP (FWREPO_TLS=false, as behind a proxy that terminates TLS; `--tls` measures HTTPS)")
        intro = [
            self.written_by(f"bench/upload.py --size-mib {args.size_mib} --repeat {args.repeat}{' --tls' if args.tls else ''}"),
            "",
            (f"One file of {args.size_mib} MiB of random bytes (in the page cache throughout), uploaded "
             f"{args.repeat} times by each method. Two phases: first cp, cp+sync and fwrepo-local, with Ceph "
             "not running; then a fresh Ceph cluster for boto3 and fwrepo-s3. Within a phase the rounds "
             "interleave the methods (even rounds in reverse order), with `sync` and a pause before each "
             "measurement (untimed). "
             "MB/s is 10^6 bytes per second of wall time, from the median run."),
            "",
            "- **cp**: `cp --reflink=never` into a directory on the same file system; the page cache absorbs it.",
            ("- **cp+sync**: the same, then `sync FILE` (fsync): the bytes are on disk, as fwrepo's are "
             "(fwrepo-local fsyncs the file and its directory)."),
            ("- **boto3**: `upload_file` with the default TransferConfig (8 MiB parts, 10 threads) and the "
             "client of `tests/support/s3servers.py` (SigV4, path style), to a bucket on the Ceph RGW "
             "that fwrepo-s3 uses."),
            ("- **fwrepo-local / fwrepo-s3**: `curl -F file=@...` to `POST /api/v1/firmware` of `fwrepo serve` "
             f"(one uvicorn process) with FWREPO_STORAGE=local / s3 (default FWREPO_S3_PART_SIZE), {transport}; "
             "a fresh version per upload, size and SHA-256 of every reply checked. "
             "After each run, untimed, what it stored is deleted: cp's copy and fwrepo-local's image, so that "
             "each local run finds the same free memory; the S3 object, followed by "
             "`radosgw-admin gc process --include-all`, so that Ceph's memstore does not grow from run to run "
             "(on this VM growing into fresh memory nearly doubles Ceph's CPU per GiB) and no RGW garbage "
             "collection overlaps a later run."),
            ("- **Server RSS**: VmHWM of the server process at the end (its whole life, start-up included) / "
             "the largest VmRSS sampled every 20 ms during the uploads / VmRSS idle before the first upload."),
            ("- **CPU**: user+system seconds during one upload (median) of the fwrepo server, of the client "
             "(curl; for boto3 the benchmark's own Python process) and of the Ceph daemons (mon+osd+rgw)."),
            "",
        ]
        shared = (f"This machine has {os.cpu_count()} CPUs, and the client (curl or boto3), fwrepo and Ceph "
                  "(radosgw + OSD + mon) all share them: the S3 numbers measure a CPU-bound setup, where every CPU "
                  "second fwrepo spends is taken from RGW, and they would differ on a machine where S3 is elsewhere. "
                  "Ceph runs with a memstore OSD (objects in RAM), so neither S3 number includes a disk.")
        return render_section(self.section, "Upload", intro, fact_lines(self.facts), shared, self.notes,
                              [self.summary(), ""])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argument_parser(__doc__, "Upload", max_wait=None)
    parser.add_argument("--size-mib", type=int, default=1024, help="payload size in MiB (default 1024)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per method; the median counts (default 3)")
    parser.add_argument("--only", default=",".join(METHODS),
                        help=f"comma-separated subset of {','.join(METHODS)} (a partial run writes no doc)")  # fmt: skip
    parser.add_argument("--settle", type=float, default=1.0, help="seconds of pause before each measurement (default 1)")
    parser.add_argument("--tls", action="store_true",
                        help="fwrepo serves HTTPS (its development certificate) instead of plain HTTP")  # fmt: skip
    args = parser.parse_args(argv)
    args.only = [m.strip() for m in args.only.split(",") if m.strip()]
    unknown = sorted(set(args.only) - set(METHODS))
    if unknown:
        parser.error(f"--only: unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    if args.size_mib <= 0 or args.repeat <= 0:
        parser.error("--size-mib and --repeat must be positive")
    return args


if __name__ == "__main__":
    sys.exit(main(Upload, parse_args(None)))
