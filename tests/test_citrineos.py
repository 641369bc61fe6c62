"""Campaigns carried out through a real CitrineOS: fwrepo sends UpdateFirmware by CitrineOS's REST API and learns
what chargers did from its RabbitMQ exchange; nothing is written on the CSMS's side.

The chargers are examples/ocpp/charger.py on the `ocpp` package, connected to CitrineOS over OCPP 2.0.1 (whose
UpdateFirmware carries the signing certificate and signature, which they verify) and 1.6 (whose
FirmwareStatusNotification CitrineOS 1.8.3 answers with a CALLERROR; the frame still reaches the exchange).
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import secrets
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pika
import pytest

from repo_service.csms.citrineos import CitrineOS as CitrineOSConnector
from repo_service.domain.clock import rfc3339
from tests.support.builds import published_build, unique_vendor
from tests.support.citrineos import CitrineOS
from tests.support.databases import scratch_postgres
from tests.support.examples import ocpp_example
from tests.support.fwrepo import Fwrepo, start_fwrepo, two_nodes

charger_example = ocpp_example("charger")

OLD, NEW = "1.0.0", "2.0.0"
SIZE = 48 * 1024
# Short waits, so that a charger away at first is tried again within seconds (1, 2, 4 s ...).
FAST = {"FWREPO_CITRINEOS_RETRY_BASE": "1", "FWREPO_SHUTDOWN_GRACE": "1"}
CAMPAIGN_SECONDS = 60
# CitrineOS 1.8.3 exits when a station connects again while it is still tearing down that station's last
# connection (its per-station queue is deleted under the new binding: "QueueBind; 404 (NOT-FOUND)", then an
# unhandled "Channel ended"). A charger takes far longer than this to reboot; the simulator's default 0.1 s
# meets the race.
REBOOT_SECONDS = 2.0


def citrineos_settings(citrineos: CitrineOS, queue: str, **more: str) -> dict[str, str]:
    return {"FWREPO_CITRINEOS_URL": citrineos.rest_url, "FWREPO_CITRINEOS_AMQP_URL": citrineos.amqp_url,
            "FWREPO_CITRINEOS_AMQP_EXCHANGE": citrineos.exchange, "FWREPO_CITRINEOS_TENANT": str(citrineos.tenant_id),
            "FWREPO_CITRINEOS_QUEUE": queue, **FAST, **more}


@contextmanager
def driving(data_dir: Path, citrineos: CitrineOS, queue: str, **more: str) -> Iterator[Fwrepo]:
    """A fwrepo that dispatches through this CitrineOS while the block runs, stopped after it."""
    server = start_fwrepo(data_dir, **citrineos_settings(citrineos, queue, **more))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def driven(tmp_path: Path, citrineos: CitrineOS) -> Iterator[Fwrepo]:
    """A fwrepo that dispatches through this CitrineOS, with a queue of its own on CitrineOS's broker."""
    with driving(tmp_path, citrineos, f"fwrepo-{tmp_path.name}") as server:
        yield server


def build(fwrepo: Fwrepo, vendor: str, version: str = NEW) -> dict[str, Any]:
    with fwrepo.client("release") as release:
        return published_build(release, vendor, version, charger_example.make_image(version, SIZE), models="AC22")


def charger(fwrepo: Fwrepo, citrineos: CitrineOS, charger_id: str, vendor: str, ocpp_version: str,
            **faults: bool) -> Any:
    return charger_example.Charger(
        charger_id, citrineos.ws201_url if ocpp_version == "2.0.1" else citrineos.ws16_url, version=OLD,
        vendor=vendor, model="AC22", ocpp_version=ocpp_version, ca_file=fwrepo.ca,
        firmware_root=str(fwrepo.keys_dir / "root-ca.pem"), faults=charger_example.Faults(**faults),
        reboot_seconds=REBOOT_SECONDS)


def campaign(fwrepo: Fwrepo, firmware: dict[str, Any], chargers: list[Any], **fields: Any) -> dict[str, Any]:
    with fwrepo.client("csms") as csms:
        reply = csms.post("/api/v1/campaigns", json={
            "firmware_id": firmware["id"], "dispatch": "citrineos", **fields,
            "chargers": [{"charger_id": one.charger_id, "current_version": OLD, "model": "AC22",
                          "ocpp_version": one.ocpp_version} for one in chargers]})
    assert reply.status_code == 201, reply.text
    return reply.json()


def report(fwrepo: Fwrepo, campaign_id: str) -> dict[str, Any]:
    with fwrepo.client("csms") as csms:
        return csms.get(f"/api/v1/campaigns/{campaign_id}").json()


def jobs(fwrepo: Fwrepo, campaign_id: str) -> dict[str, dict[str, str]]:
    with fwrepo.client("csms") as csms:
        reply = csms.get(f"/api/v1/campaigns/{campaign_id}/jobs.csv")
        assert reply.status_code == 200, reply.text
    return {row["charger_id"]: row for row in csv.DictReader(io.StringIO(reply.text))}


def timeline(fwrepo: Fwrepo, grant_id: str | int) -> list[str]:
    with fwrepo.client("csms") as csms:
        return [event["status"] for event in csms.get(f"/api/v1/grants/{grant_id}/job").json()["events"]]


def logged(fwrepo: Fwrepo, text: str) -> bool:
    return text in (fwrepo.data_dir / "serve.log").read_text()


async def eventually(check: Callable[[], bool], seconds: float = CAMPAIGN_SECONDS, what: str = "") -> None:
    deadline = time.monotonic() + seconds
    while not await asyncio.to_thread(check):
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        await asyncio.sleep(0.25)


@asynccontextmanager
async def connected(chargers: list[Any]):  # type: ignore[no-untyped-def]
    """The chargers running (each connects, boots and stays connected) while the block runs."""
    runs = [asyncio.create_task(one.run()) for one in chargers]
    try:
        await asyncio.wait_for(asyncio.gather(*(one.booted.wait() for one in chargers)), 30)
        yield
    finally:
        await asyncio.gather(*(one.stop() for one in chargers))
        await asyncio.gather(*runs, return_exceptions=True)


def run(scenario: Awaitable[None]) -> None:
    asyncio.run(scenario)  # type: ignore[arg-type]


# -- what a campaign request may say ---------------------------------------------------------------------


def chargers_on(version: str = OLD, **fields: Any) -> list[dict[str, Any]]:
    return [{"charger_id": "CP-1", "current_version": version, **fields}]


def test_a_dispatch_the_service_cannot_carry_out_is_refused_naming_what_is_missing(fwrepo: Fwrepo) -> None:
    firmware = build(fwrepo, unique_vendor())
    with fwrepo.client("csms") as csms:
        unknown = csms.post("/api/v1/campaigns", json={"firmware_id": firmware["id"], "dispatch": "steve",
                                                       "chargers": chargers_on()})
        unconfigured = csms.post("/api/v1/campaigns", json={"firmware_id": firmware["id"], "dispatch": "citrineos",
                                                            "chargers": chargers_on()})
        version = csms.post("/api/v1/campaigns", json={"firmware_id": firmware["id"], "dispatch": "csms",
                                                       "chargers": chargers_on(ocpp_version="2.1")})
    assert unknown.status_code == 422 and unknown.json()["field"] == "dispatch"
    assert "csms, citrineos" in unknown.json()["detail"]
    assert unconfigured.status_code == 422 and "FWREPO_CITRINEOS_URL" in unconfigured.json()["detail"]
    assert version.status_code == 422 and version.json()["field"] == "chargers[0].ocpp_version"


@pytest.fixture
def stranded(tmp_path: Path) -> Iterator[Fwrepo]:
    """A fwrepo whose CitrineOS never answers (nothing listens on its port): campaigns are made, sends wait."""
    server = start_fwrepo(tmp_path, FWREPO_CITRINEOS_URL="http://127.0.0.1:9", **FAST)
    yield server
    server.stop()


def dispatched_campaign(fwrepo: Fwrepo, csms: httpx.Client) -> dict[str, Any]:
    firmware = build(fwrepo, unique_vendor())
    return csms.post("/api/v1/campaigns", json={"firmware_id": firmware["id"], "dispatch": "citrineos",
                                                "chargers": chargers_on()}).json()


def test_a_dispatched_campaign_hands_no_grant_to_a_poll(stranded: Fwrepo) -> None:
    with stranded.client("csms") as csms:
        created = dispatched_campaign(stranded, csms)
        poll = csms.get(f"/api/v1/campaigns/{created['id']}/grants", params={"due": "now"})
    assert poll.status_code == 409 and "dispatched by fwrepo through citrineos" in poll.json()["detail"]
    assert created["dispatch"] == "citrineos"


# -- end to end ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["FirmwareStatusNotification", "PublishFirmwareStatusNotification"])
def test_a_status_frame_keeps_its_status_info_and_says_when_a_local_controller_sent_it(action: str) -> None:
    connector = CitrineOSConnector("http://citrineos.invalid", 1, "amqp://broker.invalid", "citrineos", "fwrepo", 5)
    headers = {"action": action, "origin": "cs", "state": "1", "tenantId": "1", "stationId": "LC-1",
               "timestamp": "2026-12-03T08:00:00Z"}
    payload = {"status": "InvalidChecksum" if action.startswith("Publish") else "InstallRebooting", "requestId": 7,
               "statusInfo": {"reasonCode": "R" * 30, "additionalInfo": "MD5 differs"}}
    frame = connector.translate(headers, json.dumps({"payload": payload}).encode())
    assert frame is not None and (frame.status, frame.request_id) == (payload["status"], 7)
    assert frame.status_info == {"reason_code": "R" * 20, "additional_info": "MD5 differs"}  # cut to OCPP's bound
    assert frame.notification == (action if action.startswith("Publish") else None)


def test_a_campaign_runs_through_citrineos_with_nothing_written_on_its_side(
    driven: Fwrepo, citrineos: CitrineOS,
) -> None:
    vendor = unique_vendor()
    firmware = build(driven, vendor)
    fleet = [charger(driven, citrineos, f"{vendor}-V2-{n}", vendor, "2.0.1") for n in range(5)]
    fleet += [charger(driven, citrineos, f"{vendor}-V16-{n}", vendor, "1.6") for n in range(4)]
    failing = charger(driven, citrineos, f"{vendor}-FAIL", vendor, "2.0.1", fail_install=True)
    late = charger(driven, citrineos, f"{vendor}-LATE", vendor, "1.6")
    everyone = [*fleet, failing, late]

    async def scenario() -> None:
        async with connected([*fleet, failing]):
            started = time.monotonic()
            created = campaign(driven, firmware, everyone, waves=["50%", "100%"], failure_threshold=0.2)
            # The late one is not connected when its UpdateFirmware is first sent: it is sent again when
            # CitrineOS reports it booting.
            await eventually(lambda: logged(driven, f"to {late.charger_id} through citrineos: not_connected"),
                             what="the late charger's first try")
            async with connected([late]):
                await eventually(lambda: report(driven, created["id"])["status"] != "running",
                                 what="the campaign finishing")
                finished = report(driven, created["id"])
                elapsed = time.monotonic() - started
        print(f"11-charger campaign through CitrineOS: {elapsed:.1f} s end to end")
        assert finished["status"] == "completed", finished
        assert finished["states"] == {"succeeded": 10, "installation_failed": 1}
        assert finished["dispatches"] == {"sent": 11}
        assert [wave["chargers"] for wave in finished["waves"]] == [6, 5]
        by_charger = jobs(driven, created["id"])
        for one in everyone:
            expected = "installation_failed" if one is failing else "succeeded"
            assert by_charger[one.charger_id]["state"] == expected, (one.charger_id, by_charger[one.charger_id])
            assert len(one.observed.updates) == 1, one.charger_id  # each sent once, the late one too
            assert one.observed.downloads_completed == 1
            assert one.version == (OLD if one is failing else NEW)
        signed = [one for one in everyone if one.ocpp_version == "2.0.1"]
        assert all(one.observed.updates[0].signature and "SignatureVerified" in one.observed.statuses
                   for one in signed)

    run(scenario())


def test_a_wave_that_fails_too_often_halts_the_campaign_and_the_rest_is_never_sent(
    driven: Fwrepo, citrineos: CitrineOS,
) -> None:
    vendor = unique_vendor()
    firmware = build(driven, vendor)
    first = charger(driven, citrineos, f"{vendor}-FIRST", vendor, "2.0.1", fail_install=True)
    rest = [charger(driven, citrineos, f"{vendor}-REST-{n}", vendor, "1.6") for n in range(2)]

    async def scenario() -> None:
        async with connected([first, *rest]):
            created = campaign(driven, firmware, [first, *rest], waves=[1, "100%"], failure_threshold=0.0)
            await eventually(lambda: report(driven, created["id"])["status"] == "halted", what="the halt")
            halted = report(driven, created["id"])
            await asyncio.sleep(2)  # two rounds of the dispatcher: nothing more goes out
        assert halted["states"] == {"installation_failed": 1} and halted["pending"] == 2
        assert halted["dispatches"] == {"sent": 1}
        assert "wave 1" in halted["status_reason"]
        assert all(one.observed.updates == [] for one in rest)

    run(scenario())


# -- when things go wrong ------------------------------------------------------------------------------


def test_a_charger_that_never_connects_is_tried_a_bounded_number_of_times_then_not_connected(
    tmp_path: Path, citrineos: CitrineOS,
) -> None:
    with driving(tmp_path, citrineos, f"fwrepo-{tmp_path.name}", FWREPO_CITRINEOS_CONNECT_TRIES="3") as fwrepo:
        vendor = unique_vendor()
        firmware = build(fwrepo, vendor)
        away = charger(fwrepo, citrineos, f"{vendor}-AWAY", vendor, "2.0.1")
        created = campaign(fwrepo, firmware, [away], failure_threshold=0.5)
        run(eventually(lambda: report(fwrepo, created["id"])["status"] != "running", 30, "the campaign ending"))
        ended = report(fwrepo, created["id"])
        [job] = jobs(fwrepo, created["id"]).values()
        tries = (fwrepo.data_dir / "serve.log").read_text().count(f"to {away.charger_id} through citrineos: not_con")
        events = timeline(fwrepo, job["grant_id"])
    assert tries == 3  # 1 s, then 2 s apart
    assert ended["states"] == {"not_connected": 1} and ended["dispatches"] == {"not_connected": 1}
    assert ended["status"] == "halted"  # a failure like any other: 1 of 1 is above the threshold
    assert job["state"] == "not_connected"
    assert events == ["NotConnected"]


def test_an_error_citrineos_answers_is_the_grants_refusal_with_its_message(tmp_path: Path, citrineos: CitrineOS) -> None:
    # An operator's slip: the URL names a path under which CitrineOS serves nothing, and it answers 404.
    with driving(tmp_path, citrineos, f"fwrepo-{tmp_path.name}",
                 FWREPO_CITRINEOS_URL=citrineos.rest_url + "/no-such-api") as fwrepo:
        vendor = unique_vendor()
        firmware = build(fwrepo, vendor)
        one = charger(fwrepo, citrineos, f"{vendor}-ONE", vendor, "2.0.1")

        async def scenario() -> None:
            async with connected([one]):
                created = campaign(fwrepo, firmware, [one], failure_threshold=0.5)
                await eventually(lambda: report(fwrepo, created["id"])["status"] != "running", 30, "the refusal")
                ended = report(fwrepo, created["id"])
                [job] = jobs(fwrepo, created["id"]).values()
                with fwrepo.client("csms") as csms:
                    events = csms.get(f"/api/v1/grants/{job['grant_id']}/job").json()["events"]
            assert ended["states"] == {"rejected": 1} and ended["dispatches"] == {"refused": 1}
            assert ended["status"] == "halted"
            assert [event["status"] for event in events] == ["Rejected"]
            assert "CitrineOS answered 404" in events[0]["info"]
            assert one.observed.updates == []

        run(scenario())


def test_what_chargers_say_while_fwrepo_restarts_waits_in_its_queue(tmp_path: Path, citrineos: CitrineOS) -> None:
    with driving(tmp_path, citrineos, f"fwrepo-{tmp_path.name}") as fwrepo:
        vendor = unique_vendor()
        firmware = build(fwrepo, vendor)
        one = charger(fwrepo, citrineos, f"{vendor}-R", vendor, "2.0.1")

        async def scenario() -> None:
            async with connected([one]):
                created = campaign(fwrepo, firmware, [one])
                await eventually(lambda: one.observed.downloads_completed == 1, 30, "the download")
                await asyncio.to_thread(fwrepo.stop)
                await eventually(lambda: one.version == NEW and one.booted.is_set(), 30, "the reboot")
                await asyncio.to_thread(fwrepo.start)
                await eventually(lambda: report(fwrepo, created["id"])["status"] == "completed",
                                 what="the statuses sent while fwrepo was down")

        run(scenario())


def test_a_cancelled_campaign_sends_nothing_more(stranded: Fwrepo) -> None:
    # Every send waits for a CitrineOS that never answers; the cancel must end them all.
    with stranded.client("csms") as csms:
        created = dispatched_campaign(stranded, csms)
        run(eventually(lambda: logged(stranded, "CitrineOS cannot be reached"), 20, "a first try"))
        assert csms.post(f"/api/v1/campaigns/{created['id']}/cancel").status_code == 200
        run(eventually(lambda: report(stranded, created["id"])["dispatches"] == {"cancelled": 1}, 20,
                       "the request cancelled"))


def test_a_citrineos_down_at_dispatch_and_restarting_mid_update_gets_each_request_once(tmp_path: Path, own_citrineos: CitrineOS) -> None:
    (tmp_path / "fwrepo").mkdir()
    with driving(tmp_path / "fwrepo", own_citrineos, "fwrepo-restart") as fwrepo:
        vendor = unique_vendor()
        firmware = build(fwrepo, vendor)
        fleet = [charger(fwrepo, own_citrineos, f"{vendor}-{n}", vendor, version)
                 for n, version in enumerate(["2.0.1", "2.0.1", "1.6"])]

        async def scenario() -> None:
            async with connected(fleet):
                await asyncio.to_thread(own_citrineos.stop)
                created = campaign(fwrepo, firmware, fleet)
                await eventually(lambda: logged(fwrepo, "CitrineOS cannot be reached"), 20, "a send that fails")
                await asyncio.to_thread(own_citrineos.start)
                await eventually(lambda: report(fwrepo, created["id"])["dispatches"] == {"sent": 3}, 30,
                                 "the sends after CitrineOS came back")
                # And once more while the chargers download and reboot: what they say meanwhile is lost, their
                # BootNotification on the new build when they are back says enough.
                await asyncio.to_thread(own_citrineos.restart)
                # Twice the bound: CitrineOS starts again, and every charger reconnects and reboots, on a machine
                # three test workers share (CI ran out of 60 s once).
                await eventually(lambda: report(fwrepo, created["id"])["status"] != "running",
                                 seconds=2 * CAMPAIGN_SECONDS, what="the campaign finishing after CitrineOS restarted")
                finished = report(fwrepo, created["id"])
            assert finished["status"] == "completed", finished
            assert finished["states"] == {"succeeded": 3} and finished["dispatches"] == {"sent": 3}
            assert all(len(one.observed.updates) == 1 and one.version == NEW for one in fleet)

        run(scenario())


def publish(citrineos: CitrineOS, frames: list[tuple[dict[str, Any], bytes]]) -> None:
    """Frames put on CitrineOS's exchange as whoever holds its broker's credentials could."""
    connection = pika.BlockingConnection(pika.URLParameters(citrineos.amqp_url))
    try:
        channel = connection.channel()
        for headers, body in frames:
            channel.basic_publish(citrineos.exchange, "", body, pika.BasicProperties(headers=headers))
    finally:
        connection.close()


def status_frame(citrineos: CitrineOS, station: str, status: str, request_id: int, timestamp: str,
                 tenant: int | None = None, **headers: str) -> tuple[dict[str, Any], bytes]:
    return ({"origin": "cs", "state": "1", "action": "FirmwareStatusNotification", "stationId": station,
             "tenantId": str(citrineos.tenant_id if tenant is None else tenant), "timestamp": timestamp,
             "correlationId": f"forged-{status}", **headers},
            json.dumps({"payload": {"status": status, "requestId": request_id}}).encode())


def test_duplicate_foreign_and_forged_frames_change_nothing(driven: Fwrepo, citrineos: CitrineOS) -> None:
    vendor = unique_vendor()
    firmware = build(driven, vendor)
    one = charger(driven, citrineos, f"{vendor}-ONE", vendor, "2.0.1")

    async def scenario() -> None:
        async with connected([one]):
            created = campaign(driven, firmware, [one])
            await eventually(lambda: report(driven, created["id"])["status"] == "completed", what="the update")
            [job] = jobs(driven, created["id"]).values()
            grant_id = int(job["grant_id"])
            with driven.client("csms") as csms:
                before = csms.get(f"/api/v1/grants/{grant_id}/job").json()
            now = rfc3339(datetime.now(UTC))
            frames = [
                # What the charger said, said again: the same status at the same moment.
                *(status_frame(citrineos, one.charger_id, event["status"], grant_id, event["timestamp"])
                  for event in before["events"] if event["status"] not in ("Booted", "Accepted")),
                # Another tenant's station of the same name, and a station of this tenant naming our request.
                status_frame(citrineos, one.charger_id, "InstallationFailed", grant_id, now, tenant=99),
                status_frame(citrineos, f"{vendor}-OTHER", "InstallationFailed", grant_id, now),
                # A refusal answering no request fwrepo sent.
                ({"origin": "cs", "state": "2", "action": "UpdateFirmware", "stationId": one.charger_id,
                  "tenantId": str(citrineos.tenant_id), "timestamp": now, "correlationId": "forged"},
                 json.dumps({"payload": {"status": "Rejected"}}).encode()),
                # Garbage, and a frame without the headers fwrepo reads, last: once both are logged, every
                # frame before them was handled (one consumer takes them in order).
                status_frame(citrineos, one.charger_id, "Installed", grant_id, "yesterday"),
                ({"origin": "cs", "state": "1", "action": "FirmwareStatusNotification",
                  "tenantId": str(citrineos.tenant_id)}, b"{not json"),
            ]
            await asyncio.to_thread(publish, citrineos, frames)
            await eventually(lambda: logged(driven, "yesterday") and logged(driven, "{not json"), 20,
                             "the forged frames handled")
            with driven.client("csms") as csms:
                after = csms.get(f"/api/v1/grants/{grant_id}/job").json()
            assert logged(driven, f"{vendor}-OTHER names request {grant_id}, not one fwrepo sent it")
            assert after == before
            assert after["state"] == "succeeded"
            assert report(driven, created["id"])["states"] == {"succeeded": 1}

    run(scenario())


@pytest.fixture
def two_dispatchers(postgres_server_url: str, tmp_path: Path, citrineos: CitrineOS) -> Iterator[tuple[Fwrepo, Fwrepo]]:
    """Two fwrepo nodes on one PostgreSQL and one storage directory, both dispatching through one CitrineOS and
    sharing one queue on its broker, as replicas do."""
    shared = {**citrineos_settings(citrineos, f"fwrepo-{tmp_path.name}"),
              "FWREPO_KEYS_DIR": str(tmp_path / "keys"), "FWREPO_KEY_PASSPHRASE": secrets.token_urlsafe(24),
              "FWREPO_TOKEN_SECRET": secrets.token_urlsafe(32), "FWREPO_STORAGE_DIR": str(tmp_path / "storage"),
              "FWREPO_FTPS": "false"}
    for database_url in scratch_postgres(postgres_server_url):
        yield from two_nodes(database_url, tmp_path, shared)


def test_two_nodes_dispatch_each_grant_once(two_dispatchers: tuple[Fwrepo, Fwrepo], citrineos: CitrineOS,
                                           tmp_path: Path) -> None:
    a, b = two_dispatchers
    # Each node has a TLS certificate of its own; a charger is sent to whichever node handed its grant out.
    both = tmp_path / "both-cas.pem"
    both.write_text(Path(a.ca).read_text() + Path(b.ca).read_text())
    vendor = unique_vendor()
    firmware = build(a, vendor)
    fleet = [charger(a, citrineos, f"{vendor}-{n}", vendor, "2.0.1" if n % 2 else "1.6") for n in range(6)]
    for one in fleet:
        one.tls = ssl.create_default_context(cafile=str(both))

    async def scenario() -> None:
        async with connected(fleet):
            created = campaign(b, firmware, fleet, waves=["50%", "100%"])
            await eventually(lambda: report(a, created["id"])["status"] != "running", what="the campaign")
            finished = report(b, created["id"])
            await asyncio.sleep(2)  # a round more on each node: nothing goes out again
        assert finished["status"] == "completed", finished
        assert finished["states"] == {"succeeded": 6} and finished["dispatches"] == {"sent": 6}
        assert all(len(one.observed.updates) == 1 and one.version == NEW for one in fleet)
        sends = [(node.data_dir / "serve.log").read_text().count("through citrineos: sent") for node in (a, b)]
        assert sum(sends) == 6, sends

    run(scenario())
