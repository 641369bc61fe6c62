"""The CitrineOS harness against the real CitrineOS: simulated chargers boot on it, take UpdateFirmware sent through
its REST API and download from fwrepo; it restarts; two instances run side by side without meeting.

These are what the CitrineOS connector's tests stand on (issue 15), so each checks the peer as it is, not as its
documentation says it is.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from tests.support.builds import published_build
from tests.support.citrineos import CitrineOS, status_patch_applied
from tests.support.examples import ocpp_example
from tests.support.fwrepo import Fwrepo, start_fwrepo

charger_example = ocpp_example("charger")

OLD, NEW = "1.3.0", "1.4.0"
SIZE = 64 * 1024
# A boot, a download of SIZE from fwrepo and a reboot take about a second; CitrineOS on a busy machine, longer.
UPDATE_SECONDS = 60
# Every status the simulator reports for a plain OCPP 1.6 update that succeeds.
PLAIN_16_STATUSES = ["Downloading", "Downloaded", "Installing", "Installed"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fwrepo_for_chargers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fwrepo]:
    """fwrepo on SQLite: the chargers' download location; the database under it is not what these tests check."""
    server = start_fwrepo(tmp_path_factory.mktemp("fwrepo-citrineos"))
    yield server
    server.stop()


def charger(citrineos: CitrineOS, fwrepo: Fwrepo, charger_id: str, ocpp_version: str, **options: Any) -> Any:
    """A simulated charger on OLD, connecting to the CitrineOS port of its OCPP version and trusting fwrepo."""
    url = citrineos.ws201_url if ocpp_version == "2.0.1" else citrineos.ws16_url
    return charger_example.Charger(charger_id, url, version=OLD, ocpp_version=ocpp_version, ca_file=fwrepo.ca,
                                   firmware_root=str(fwrepo.data_dir / "keys" / "root-ca.pem"), **options)


def grant_of_new_firmware(fwrepo: Fwrepo, charger_id: str) -> dict[str, Any]:
    """A grant for the charger to fetch a published NEW build (whose image header names NEW) over HTTPS."""
    with fwrepo.client("release") as release, fwrepo.client("csms") as csms:
        firmware = published_build(release, f"V{charger_id}", NEW, charger_example.make_image(NEW, SIZE))
        reply = csms.post("/api/v1/grants", json={"firmware_id": firmware["id"], "charger_id": charger_id})
        assert reply.status_code == 201, reply.text
        return reply.json()


async def update_firmware(citrineos: CitrineOS, charger_id: str, ocpp_version: str, body: dict[str, Any]) -> Any:
    """POST UpdateFirmware through CitrineOS's REST API; its reply, one entry per identifier."""
    async with httpx.AsyncClient(base_url=citrineos.rest_url, timeout=30) as client:
        reply = await client.post(f"/ocpp/{ocpp_version}/configuration/updateFirmware",
                                  params={"identifier": charger_id, "tenantId": citrineos.tenant_id}, json=body)
    assert reply.status_code == 200, reply.text
    return reply.json()


def stations(citrineos: CitrineOS) -> dict[str, str | None]:
    """The stations CitrineOS keeps in its database, with the firmware version of each one's last boot."""
    with psycopg.connect(host="127.0.0.1", user="citrine", password="citrine", dbname=citrineos.db) as connection:
        rows = connection.execute('SELECT id, "firmwareVersion" FROM "ChargingStations"').fetchall()
    return dict(rows)


def recorded_boot(citrineos: CitrineOS, charger_id: str, version: str) -> bool:
    """Whether CitrineOS's database shows the charger's boot with this version, waiting a little: CitrineOS
    answers a BootNotification before its module has written the station's row."""
    deadline = time.monotonic() + 10
    while stations(citrineos).get(charger_id) != version:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def downloads(fwrepo: Fwrepo, grant: dict[str, Any]) -> list[Any]:
    with fwrepo.client("csms") as csms:
        return csms.get(f"/api/v1/grants/{grant['id']}").json()["downloads"]


async def running(*chargers: Any) -> list[asyncio.Task[None]]:
    """Start the chargers and wait until CitrineOS has accepted each one's BootNotification."""
    runs = [asyncio.create_task(each.run()) for each in chargers]
    await asyncio.wait_for(asyncio.gather(*(each.booted.wait() for each in chargers)), UPDATE_SECONDS)
    return runs


async def stopped(chargers: list[Any], runs: list[asyncio.Task[None]]) -> None:
    await asyncio.gather(*(each.stop() for each in chargers))
    await asyncio.gather(*runs, return_exceptions=True)


async def updated(simulated: Any) -> None:
    """Return once the charger has taken the update, installed it, rebooted and booted again."""
    async def installed() -> None:
        # CitrineOS replies to the REST call once the CALL is sent, before the charger has it.
        while not simulated.observed.updates:
            await asyncio.sleep(0.1)
        await simulated.settled()

    await asyncio.wait_for(installed(), UPDATE_SECONDS)


def updated_through_citrineos(citrineos: CitrineOS, fwrepo: Fwrepo, charger_id: str, ocpp_version: str,
                              request: str) -> tuple[Any, dict[str, Any]]:
    """A charger on OLD, sent the grant's OCPP request (its `ocpp` key `request`) by REST, once it is back on NEW."""
    simulated = charger(citrineos, fwrepo, charger_id, ocpp_version)
    grant = grant_of_new_firmware(fwrepo, charger_id)

    async def scenario() -> None:
        runs = await running(simulated)
        try:
            reply = await update_firmware(citrineos, charger_id, ocpp_version, grant["ocpp"][request])
            assert reply == [{"success": True}]
            await updated(simulated)
        finally:
            await stopped([simulated], runs)

    asyncio.run(scenario())
    return simulated, grant


def test_a_201_charger_takes_signed_update_firmware_sent_through_citrineos_and_boots_the_new_version(
        citrineos: CitrineOS, fwrepo_for_chargers: Fwrepo) -> None:
    fwrepo = fwrepo_for_chargers
    # fwrepo's 2.0.1 request is CitrineOS's REST body as it is: requestId, firmware, retries.
    simulated, grant = updated_through_citrineos(citrineos, fwrepo, "CP-C201", "2.0.1", "update_firmware_v201")
    assert simulated.version == NEW and simulated.observed.boots == [OLD, NEW]
    assert simulated.observed.updates[0].request_id == grant["request_id"]
    assert simulated.observed.statuses == ["Downloading", "Downloaded", "SignatureVerified", "Installing", "Installed"]
    assert simulated.observed.call_errors == []
    assert len(downloads(fwrepo, grant)) == 1
    assert recorded_boot(citrineos, "CP-C201", NEW)


def test_a_16_charger_takes_update_firmware_sent_through_citrineos_and_goes_on_past_its_status_callerrors(
        citrineos: CitrineOS, fwrepo_for_chargers: Fwrepo) -> None:
    """CitrineOS 1.8.3 answers every 1.6 FirmwareStatusNotification with CALLERROR NotSupported (citrineos#216)."""
    fwrepo = fwrepo_for_chargers
    simulated, grant = updated_through_citrineos(citrineos, fwrepo, "CP-C16", "1.6", "update_firmware")
    assert simulated.version == NEW and simulated.observed.boots == [OLD, NEW]
    assert simulated.observed.statuses == PLAIN_16_STATUSES
    refused = [] if status_patch_applied() else [("FirmwareStatusNotification", "NotSupported")] * 4
    assert simulated.observed.call_errors == refused
    assert len(downloads(fwrepo, grant)) == 1
    assert recorded_boot(citrineos, "CP-C16", NEW)


def test_citrineos_refuses_update_firmware_for_a_charger_offline_at_first_and_sends_it_once_it_connects(
        citrineos: CitrineOS, fwrepo_for_chargers: Fwrepo) -> None:
    fwrepo = fwrepo_for_chargers
    simulated = charger(citrineos, fwrepo, "CP-LATE", "2.0.1", start_offline=True)
    grant = grant_of_new_firmware(fwrepo, "CP-LATE")
    body = grant["ocpp"]["update_firmware_v201"]

    async def scenario() -> None:
        run = asyncio.create_task(simulated.run())
        try:
            await asyncio.sleep(1)  # the charger would have connected and booted by now, were it online
            assert not simulated.booted.is_set()
            assert await update_firmware(citrineos, "CP-LATE", "2.0.1", body) == [
                {"success": False, "payload": "No connection found for identifier: 1:CP-LATE"}]
            simulated.go_online()
            await asyncio.wait_for(simulated.booted.wait(), UPDATE_SECONDS)
            assert await update_firmware(citrineos, "CP-LATE", "2.0.1", body) == [{"success": True}]
            await updated(simulated)
        finally:
            await stopped([simulated], [run])

    asyncio.run(scenario())
    assert simulated.version == NEW and len(simulated.observed.updates) == 1


def test_a_restarted_citrineos_is_back_on_the_same_ports_and_chargers_reconnect_and_take_updates(
        own_citrineos: CitrineOS, fwrepo_for_chargers: Fwrepo) -> None:
    citrineos, fwrepo = own_citrineos, fwrepo_for_chargers
    simulated = charger(citrineos, fwrepo, "CP-RST", "2.0.1")
    grant = grant_of_new_firmware(fwrepo, "CP-RST")
    ports = (citrineos.http_port, citrineos.ws201_port, citrineos.ws16_port)
    assert citrineos.process is not None
    first_pid = citrineos.process.pid

    async def scenario() -> None:
        runs = await running(simulated)
        try:
            await asyncio.to_thread(citrineos.restart)
            # The charger lost its link and comes back on its own, with a BootNotification (its second boot).
            while len(simulated.observed.boots) < 2 or not simulated.booted.is_set():
                await asyncio.sleep(0.2)
            reply = await update_firmware(citrineos, "CP-RST", "2.0.1", grant["ocpp"]["update_firmware_v201"])
            assert reply == [{"success": True}]
            await updated(simulated)
        finally:
            await stopped([simulated], runs)

    asyncio.run(asyncio.wait_for(scenario(), 3 * UPDATE_SECONDS))
    assert citrineos.process.pid != first_pid
    assert (citrineos.http_port, citrineos.ws201_port, citrineos.ws16_port) == ports
    assert simulated.observed.boots == [OLD, OLD, NEW]
    assert recorded_boot(citrineos, "CP-RST", NEW) and list(stations(citrineos)) == ["CP-RST"]  # kept over the restart


def test_two_citrineos_at_once_keep_their_stations_and_messages_apart(
        citrineos: CitrineOS, own_citrineos: CitrineOS, fwrepo_for_chargers: Fwrepo) -> None:
    """Each has its own database and vhost: on one vhost they would take each other's queued messages."""
    fwrepo = fwrepo_for_chargers
    assert len({citrineos.vhost, own_citrineos.vhost}) == len({citrineos.db, own_citrineos.db}) == 2
    on_first = charger(citrineos, fwrepo, "CP-TWO-A", "2.0.1")
    on_second = charger(own_citrineos, fwrepo, "CP-TWO-B", "1.6")
    grant = grant_of_new_firmware(fwrepo, "CP-TWO-B")

    async def scenario() -> None:
        runs = await running(on_first, on_second)
        try:
            assert await update_firmware(citrineos, "CP-TWO-B", "1.6", grant["ocpp"]["update_firmware"]) == [
                {"success": False, "payload": "No connection found for identifier: 1:CP-TWO-B"}]
            assert await update_firmware(own_citrineos, "CP-TWO-B", "1.6", grant["ocpp"]["update_firmware"]) == [
                {"success": True}]
            await updated(on_second)
        finally:
            await stopped([on_first, on_second], runs)

    asyncio.run(scenario())
    assert on_first.observed.updates == [] and on_first.observed.boots == [OLD]
    assert on_second.version == NEW
    assert "CP-TWO-A" in stations(citrineos) and "CP-TWO-B" not in stations(citrineos)
    assert recorded_boot(own_citrineos, "CP-TWO-B", NEW) and list(stations(own_citrineos)) == ["CP-TWO-B"]
