"""End to end over real OCPP: fwrepo, the example CSMS (examples/ocpp) and simulated chargers in one event loop.

The chargers speak OCPP 1.6 (plain and with the security extension) and 2.0.1,
fetch over HTTPS and FTPS (explicit and implicit), misbehave on purpose and
report in each order OCPP leaves open (Installed after the reboot, one
DownloadFailed for all attempts); the campaign report and every job must tell
what the chargers actually did.
"""

from __future__ import annotations

import asyncio
import csv
import io
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.builds import upload
from tests.support.campaigns import csv_agrees_with_report
from tests.support.checkout import ROOT
from tests.support.examples import ocpp_example
from tests.support.fwrepo import Fwrepo, free_port, start_fwrepo

csms_example = ocpp_example("csms")
charger_example = ocpp_example("charger")

SIZE = 64 * 1024
OLD, NEW = "1.3.0", "1.4.0"
# Past half the image: a one-download grant's budget keeps half an image for what a dropped link loses
# in flight, and this small image sits in socket buffers whole (docs/http-api.md).
DROP_AT = 40_000
FLAVOURS = ("1.6", "1.6-signed", "2.0.1")
# fwrepo calls a lone DownloadFailed final this long after the grant's retry interval (FWREPO_RETRY_GRACE).
RETRY_GRACE = 2
# Campaigns whose jobs must end on the charger's word: far below the job timeout (a day).
CAMPAIGN_SECONDS = 60


@dataclass
class Simulated:
    charger: Any  # charger_example.Charger
    flavour: str
    expected: str  # the job's final state


def published_firmware(fwrepo: Fwrepo, vendor: str) -> dict[str, Any]:
    with fwrepo.client("release") as release:
        reply = upload(release, vendor, NEW, charger_example.make_image(NEW, SIZE))
        assert reply.status_code == 201, reply.text
        return release.post(f"/api/v1/firmware/{reply.json()['id']}/publish").json()


def simulated(charger_id: str, flavour: str, fwrepo: Fwrepo, vendor: str, expected: str, faults: Any = None,
              conventions: Any = None) -> Simulated:
    """A charger on OLD of this flavour, trusting fwrepo's TLS CA and firmware root."""
    # The CSMS's address is known once it listens: with_csms_and_chargers fills it in.
    return Simulated(charger_example.Charger(
        charger_id, "ws://unset", version=OLD, vendor=vendor, model="AC22",
        ocpp_version="2.0.1" if flavour == "2.0.1" else "1.6", ca_file=fwrepo.ca,
        firmware_root=str(fwrepo.data_dir / "keys" / "root-ca.pem"), faults=faults, conventions=conventions),
        flavour, expected)


def fleet(prefix: str, count: int, fwrepo: Fwrepo, vendor: str, faults: dict[int, tuple[Any, str]]) -> list[Simulated]:
    """`count` chargers of every flavour in turn; every fourth loses its link mid-download and resumes."""
    chargers = []
    for n in range(count):
        fault, expected = faults.get(n, (charger_example.Faults(), "succeeded"))
        if n % 4 == 3:
            fault.drop_link_at = DROP_AT
        chargers.append(simulated(f"{prefix}-{n:02d}", FLAVOURS[n % 3], fwrepo, vendor, expected, fault))
    return chargers


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.2)


async def with_csms_and_chargers(fwrepo: Fwrepo, groups: list[list[Simulated]],
                                 scenario: Callable[[Any], Awaitable[None]]) -> None:
    """Run the CSMS, connect and boot every charger, run the scenario, then shut it all down."""
    everyone = [simulated for group in groups for simulated in group]
    client = csms_example.FwrepoClient(fwrepo.url, fwrepo.key("csms"), fwrepo.ca)
    csms = csms_example.Csms(client, poll_seconds=0.2, signed_firmware={
        simulated.charger.charger_id for simulated in everyone if simulated.flavour == "1.6-signed"})
    port = await csms.start()
    for simulated in everyone:
        simulated.charger.csms_url = f"ws://127.0.0.1:{port}"
    runs = [asyncio.create_task(simulated.charger.run()) for simulated in everyone]
    try:
        await asyncio.wait_for(asyncio.gather(*(simulated.charger.booted.wait() for simulated in everyone)), 20)
        await scenario(csms)
    finally:
        await asyncio.gather(*(simulated.charger.stop() for simulated in everyone))
        await asyncio.gather(*runs, return_exceptions=True)
        await csms.stop()
        await client.close()


async def settle(csms: Any, chargers: list[Simulated], campaign_id: str, bytes_expected: int) -> dict[str, Any]:
    """The report once every charger is idle, every event is in and the download records (batched) are too."""
    await asyncio.wait_for(asyncio.gather(*(simulated.charger.settled() for simulated in chargers)), 30)
    await csms.events.drain()

    async def counted() -> bool:
        return (await csms.fwrepo.report(campaign_id))["bytes_served"] >= bytes_expected

    await eventually(counted)
    return await csms.fwrepo.report(campaign_id)


async def campaign_grants(client: Any, campaign_id: str) -> dict[str, int]:
    """Each charger's grant id, from the campaign's CSV export."""
    export = await asyncio.to_thread(client.client.campaign_jobs_csv, campaign_id)
    # Chargers of a wave not started (pending) have no grant yet.
    return {row["charger_id"]: int(row["grant_id"]) for row in csv.DictReader(io.StringIO(export))
            if row["grant_id"]}


async def campaign_jobs(client: Any, campaign_id: str) -> dict[str, dict[str, Any]]:
    """Each charger's job, read job by job."""
    return {charger_id: await client.job(grant_id)
            for charger_id, grant_id in (await campaign_grants(client, campaign_id)).items()}


async def job_states(client: Any, campaign_id: str) -> dict[str, str]:
    return {charger_id: job["state"] for charger_id, job in (await campaign_jobs(client, campaign_id)).items()}


async def run_to_the_end(csms: Any, campaign_id: str) -> dict[str, Any]:
    """The campaign's final report, and the CSMS's word that every charger it sent an update to is done."""
    try:
        final = await asyncio.wait_for(csms.run_campaign(campaign_id), CAMPAIGN_SECONDS)
    except TimeoutError:
        pytest.fail(f"campaign {campaign_id} not over in {CAMPAIGN_SECONDS} s, its jobs: "
                    f"{await job_states(csms.fwrepo, campaign_id)}")
    assert await csms.wait_for_chargers(asyncio.Event(), CAMPAIGN_SECONDS) == []
    return final


def check_campaign(report: dict[str, Any], group: list[Simulated], jobs: dict[str, str]) -> None:
    """Report and jobs against what the chargers did."""
    expected = Counter(simulated.expected for simulated in group)
    assert report["status"] == "completed", report
    assert report["states"] == dict(expected)
    assert report["finished"] == len(group)
    assert report["success_rate"] == pytest.approx(expected["succeeded"] / len(group))
    assert sum(sum(wave["states"].values()) for wave in report["waves"]) == len(group)
    assert report["download_seconds"]["median"] is not None and report["completion_seconds"]["p95"] is not None
    assert jobs == {simulated.charger.charger_id: simulated.expected for simulated in group}
    for simulated in group:
        charger = simulated.charger
        assert len(charger.observed.updates) == 1, charger.charger_id
        assert (charger.observed.updates[0].signature is not None) == (simulated.flavour != "1.6"), charger.charger_id
        assert charger.version == (NEW if simulated.expected == "succeeded" else OLD), charger.charger_id
        assert (charger.observed.link_drops > 0) == (charger.faults.drop_link_at is not None), charger.charger_id
    downloads = sum(simulated.charger.observed.downloads_completed for simulated in group)
    drops = sum(simulated.charger.observed.link_drops for simulated in group)
    assert sum(simulated.charger.observed.bytes_received for simulated in group) == downloads * SIZE
    # A dropped link may have had the rest of the image in flight already: served, never received.
    assert downloads * SIZE <= report["bytes_served"] <= (downloads + drops) * SIZE


def test_three_wave_campaigns_over_https_and_ftps_run_to_the_end(fwrepo: Fwrepo, vendor: str) -> None:
    firmware = published_firmware(fwrepo, vendor)
    faults = charger_example.Faults
    https = fleet("CP-H", 20, fwrepo, vendor, {
        # Over HTTPS the Repr-Digest catches a corrupted image before any signature check, twice (retries=1).
        4: (faults(corrupt_image=True), "download_failed"),  # wave 2, 1.6 signed
        12: (faults(corrupt_image=True), "download_failed"),  # wave 3, plain 1.6
        15: (faults(fail_install=True), "installation_failed"),  # wave 3: 2 of 10 is not above 20 %
    })
    explicit = fleet("CP-E", 15, fwrepo, vendor, {
        5: (faults(fail_install=True), "installation_failed"),  # wave 2
        10: (faults(corrupt_image=True), "invalid_signature"),  # wave 3, 1.6 signed: FTPS has no digest to check
    })
    implicit = fleet("CP-I", 15, fwrepo, vendor, {10: (faults(boot_old_version=True), "rolled_back")})
    groups = [https, explicit, implicit]

    async def scenario(csms: Any) -> None:
        options = {"waves": ["10%", "50%", "100%"], "failure_threshold": 0.2, "retries": 1, "retry_interval": 1}
        campaigns = [
            await csms.start_campaign(firmware["id"], [s.charger.charger_id for s in group], protocol=protocol,
                                      **extra, **options)
            for group, protocol, extra in ((https, "https", {}), (explicit, "ftps", {}),
                                           (implicit, "ftps", {"ftps_mode": "implicit"}))
        ]
        assert [[wave["chargers"] for wave in campaign["waves"]] for campaign in campaigns] == [
            [2, 8, 10], [2, 6, 7], [2, 6, 7]]
        finals = await asyncio.gather(*(run_to_the_end(csms, campaign["id"]) for campaign in campaigns))
        assert [final["status"] for final in finals] == ["completed"] * 3, finals
        for campaign, group in zip(campaigns, groups, strict=True):
            downloads = sum(simulated.charger.observed.downloads_completed for simulated in group)
            report = await settle(csms, group, campaign["id"], downloads * SIZE)
            check_campaign(report, group, await job_states(csms.fwrepo, campaign["id"]))
        schemes = {simulated.charger.observed.updates[0].location.split(":")[0] for group in groups for simulated in group}
        assert schemes == {"https", "ftp", "ftps"}

    asyncio.run(with_csms_and_chargers(fwrepo, groups, scenario))


def test_failed_installs_in_the_first_wave_halt_the_campaign_before_wave_two(fwrepo: Fwrepo, vendor: str) -> None:
    firmware = published_firmware(fwrepo, vendor)
    failing = charger_example.Faults
    group = fleet("CP-X", 20, fwrepo, vendor, {
        1: (failing(fail_install=True), "installation_failed"),
        3: (failing(fail_install=True), "installation_failed"),
    })

    async def scenario(csms: Any) -> None:
        campaign = await csms.start_campaign(firmware["id"], [s.charger.charger_id for s in group], protocol="https",
                                             waves=["25%", "50%", "100%"], failure_threshold=0.2)
        halted = await run_to_the_end(csms, campaign["id"])
        assert halted["status"] == "halted", halted
        assert "wave 1: 2 of 5 chargers failed (40%)" in halted["status_reason"]
        report = await settle(csms, group[:5], campaign["id"], 5 * SIZE)
        assert report["status"] == "halted" and report["current_wave"] == 1
        assert report["waves"][0]["states"] == {"succeeded": 3, "installation_failed": 2}
        assert report["waves"][1]["states"] == {} and report["waves"][2]["states"] == {}
        assert await csms.fwrepo.due_grants(campaign["id"]) == []
        assert all(simulated.charger.observed.updates == [] for simulated in group[5:])
        assert [simulated.charger.version for simulated in group[:5]] == [NEW, OLD, NEW, OLD, NEW]

    asyncio.run(with_csms_and_chargers(fwrepo, [group], scenario))


def test_installed_after_the_reboot_changes_nothing_the_boot_decided(fwrepo: Fwrepo, vendor: str) -> None:
    """Security-extension and 2.0.1 order: InstallRebooting, the boot, then Installed; the boot is the last word."""
    firmware = published_firmware(fwrepo, vendor)
    faults, late = charger_example.Faults, charger_example.Conventions(installed_after_reboot=True)
    group = [simulated(f"CP-L-{n}", flavour, fwrepo, vendor, expected, fault, late)
             for n, (flavour, fault, expected) in enumerate([
                 ("1.6-signed", faults(boot_old_version=True), "rolled_back"),
                 ("2.0.1", faults(boot_old_version=True), "rolled_back"),
                 ("1.6-signed", faults(), "succeeded"),
                 ("2.0.1", faults(), "succeeded"),
             ])]

    async def scenario(csms: Any) -> None:
        campaign = await csms.start_campaign(firmware["id"], [s.charger.charger_id for s in group], protocol="https",
                                             waves=["100%"], failure_threshold=1.0)
        assert (await run_to_the_end(csms, campaign["id"]))["status"] == "completed"
        report = await settle(csms, group, campaign["id"], len(group) * SIZE)
        jobs = await campaign_jobs(csms.fwrepo, campaign["id"])
        assert report["states"] == dict(Counter(simulated.expected for simulated in group))
        for simulated in group:
            charger, job = simulated.charger, jobs[simulated.charger.charger_id]
            assert (job["state"], job["final"]) == (simulated.expected, True), charger.charger_id
            assert charger.observed.statuses == ["Downloading", "Downloaded", "SignatureVerified", "Installing",
                                                 "InstallRebooting", "Installed"], charger.charger_id
            booted = NEW if simulated.expected == "succeeded" else OLD
            assert charger.observed.boots == [OLD, booted], charger.charger_id
            # The late Installed is in the timeline, after the boot it did not overrule.
            assert [(event["status"], event["firmware_version"]) for event in job["events"]][-2:] == [
                ("Booted", booted), ("Installed", None)], charger.charger_id

    asyncio.run(with_csms_and_chargers(fwrepo, [group], scenario))


@pytest.fixture
def fwrepo_with_short_retry_grace(fresh_database_url: str, tmp_path: Path) -> Iterator[Fwrepo]:
    """fwrepo calling a lone DownloadFailed final RETRY_GRACE seconds after the grant's retry interval."""
    server = start_fwrepo(tmp_path, FWREPO_DATABASE_URL=fresh_database_url, FWREPO_RETRY_GRACE=str(RETRY_GRACE))
    yield server
    csv_agrees_with_report(server)
    server.stop()


def test_downloads_that_never_reach_fwrepo_end_download_failed_however_the_charger_reports_them(
        fwrepo_with_short_retry_grace: Fwrepo, vendor: str) -> None:
    """Every attempt dies in the TLS handshake; chargers report DownloadFailed per attempt, or once after the last."""
    fwrepo = fwrepo_with_short_retry_grace
    firmware = published_firmware(fwrepo, vendor)
    unreachable = charger_example.Faults(unreachable_download=True)
    once, per_attempt = charger_example.Conventions(download_failed_once=True), charger_example.Conventions()
    https = [simulated(f"CP-D-{n}", flavour, fwrepo, vendor, "download_failed", unreachable, conventions)
             for n, (flavour, conventions) in enumerate([
                 ("1.6", once), ("1.6-signed", once), ("2.0.1", once), ("1.6-signed", per_attempt)])]
    ftps = [simulated(f"CP-F-{n}", flavour, fwrepo, vendor, "download_failed", unreachable, conventions)
            for n, (flavour, conventions) in enumerate([("2.0.1", once), ("1.6", per_attempt)])]
    retries = 2

    async def scenario(csms: Any) -> None:
        options = {"waves": ["100%"], "failure_threshold": 1.0, "retries": retries, "retry_interval": 1}
        campaigns = [await csms.start_campaign(firmware["id"], [s.charger.charger_id for s in group],
                                               protocol=protocol, **options)
                     for group, protocol in ((https, "https"), (ftps, "ftps"))]
        finals = await asyncio.gather(*(run_to_the_end(csms, campaign["id"]) for campaign in campaigns))
        assert [final["status"] for final in finals] == ["completed"] * 2, finals
        for campaign, group in zip(campaigns, (https, ftps), strict=True):
            report = await settle(csms, group, campaign["id"], 0)
            assert report["states"] == {"download_failed": len(group)} and report["bytes_served"] == 0, report
            grants = await campaign_grants(csms.fwrepo, campaign["id"])
            for simulated in group:
                charger = simulated.charger
                job = await csms.fwrepo.job(grants[charger.charger_id])
                assert (job["state"], job["final"]) == ("download_failed", True), charger.charger_id
                assert charger.observed.download_attempts == 1 + retries, charger.charger_id
                reported = 1 if charger.conventions.download_failed_once else 1 + retries
                assert charger.observed.statuses.count("DownloadFailed") == reported, charger.charger_id
                # Nothing reached fwrepo's download endpoint: the charger's word is all there is.
                grant = await asyncio.to_thread(csms.fwrepo.client.show_grant, grants[charger.charger_id])
                assert grant.downloads == [], charger.charger_id

    asyncio.run(with_csms_and_chargers(fwrepo, [https, ftps], scenario))


def test_the_csms_stops_when_told_and_names_the_chargers_it_stopped_waiting_for(
        fwrepo: Fwrepo, vendor: str, tmp_path: Path) -> None:
    """csms.py and charger.py as a user runs them: one charger finishes, one never reaches fwrepo and reports
    DownloadFailed once after its retries (600 s apart by default), so the campaign is not over when SIGTERM comes."""
    firmware = published_firmware(fwrepo, vendor)
    port = free_port()
    example = ROOT / "examples" / "ocpp"
    log = tmp_path / "csms.log"
    # The campaign takes the chargers connected when --wait ends; two chargers starting on a loaded machine took
    # over 5 s to connect, and a campaign without the OK one never has a finished job.
    with open(log, "wb") as output:
        csms = subprocess.Popen(
            [sys.executable, str(example / "csms.py"), "--fwrepo", fwrepo.url, "--cacert", fwrepo.ca,
             "--listen", f"127.0.0.1:{port}", "--firmware", firmware["id"], "--wait", "15", "--waves", "100%",
             "--failure-threshold", "1"],
            env={**fwrepo.env, "FWREPO_KEY": fwrepo.key("csms")}, stderr=output)
    charger = [sys.executable, str(example / "charger.py"), "--csms", f"ws://127.0.0.1:{port}", "--version", OLD,
               "--vendor", vendor, "--cacert", fwrepo.ca]
    chargers = [subprocess.Popen([*charger, "--id", f"{vendor}-OK"], stderr=subprocess.DEVNULL),
                subprocess.Popen([*charger, "--id", f"{vendor}-STUCK", "--unreachable-download",
                                  "--download-failed-once"], stderr=subprocess.DEVNULL)]
    try:
        with fwrepo.client("csms") as client:
            deadline = time.monotonic() + CAMPAIGN_SECONDS
            while "started" not in log.read_text() or not _one_job_final(client, log.read_text()):
                assert csms.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.5)
        csms.send_signal(signal.SIGTERM)
        assert csms.wait(timeout=30) == 0, log.read_text()
    finally:
        for process in (csms, *chargers):
            process.terminate()
            process.wait(timeout=30)
    assert log.read_text().splitlines()[-1].endswith(
        f"1 chargers finished their update, stopped waiting for 1 ({vendor}-STUCK)"), log.read_text()


def _one_job_final(client: httpx.Client, csms_log: str) -> bool:
    campaign_id = csms_log.split(" started")[0].rsplit(" ", 1)[-1]
    return client.get(f"/api/v1/campaigns/{campaign_id}").json()["finished"] == 1


def test_simulated_chargers_back_off_when_the_csms_is_gone() -> None:
    """A charger whose CSMS answers no WebSocket waits 0.5-1, 1-2, 2-4 s between tries: at most 4 in 4 s."""

    async def scenario() -> int:
        tries = 0

        async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal tries
            tries += 1
            writer.close()

        server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        charger = charger_example.Charger("CP-GONE", f"ws://127.0.0.1:{port}", version=OLD)
        run = asyncio.create_task(charger.run())
        await asyncio.sleep(4)
        await charger.stop()
        await asyncio.wait_for(run, 5)
        server.close()
        return tries

    assert 2 <= asyncio.run(scenario()) <= 4
