"""A reference CSMS wired to fwrepo: chargers connect over OCPP, campaigns come from fwrepo.

What the CSMS does for fwrepo, and nothing else:

* remembers what each charger said in its BootNotification (vendor, model, firmwareVersion), which is what
  a campaign needs to know about it;
* pulls the grants that are due (`GET /api/v1/campaigns/{id}/grants?due=now`: each grant is handed out once),
  or with --webhook-listen takes them pushed (a signed `grants.due` webhook, docs/webhooks.md), and sends
  each charger the request fwrepo prepared for it: `UpdateFirmware` (OCPP 1.6),
  `SignedUpdateFirmware` (1.6 security extension) or `UpdateFirmware` (2.0.1);
* forwards every (Signed)FirmwareStatusNotification, and the BootNotification that follows an update as
  `Booted`, to `POST /api/v1/events`, keyed by the grant id (the OCPP requestId). Plain 1.6 notifications
  carry no requestId: the CSMS keys them by the grant it last sent that charger;
* once a campaign is over, keeps serving until fwrepo calls the job of every update a charger accepted final
  (or --linger passes, or SIGINT/SIGTERM), so that no charger still mid-update loses its last reports, and says
  on leaving how many finished and which it stopped waiting for.

    FWREPO_KEY=fwr_... python csms.py --fwrepo https://127.0.0.1:8443 --cacert var/tls/ca.pem \\
        --listen 127.0.0.1:9000 --campaign 3f9a0c1d2e4b5a6f

State lives in memory here; a production CSMS keeps the charger table and each charger's active grant in
its own database, so that a restart does not lose which grant a plain 1.6 charger is working on.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import signal
import ssl
import time
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ocpp.charge_point import camel_to_snake_case
from ocpp.routing import after, on
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v16.enums import Action as Action16
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201
from ocpp.v201.enums import Action as Action201
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from repo_service.client import Fwrepo, FwrepoError, InvalidInput

LOG = logging.getLogger("csms")
SUBPROTOCOLS = ("ocpp2.0.1", "ocpp1.6")
HEARTBEAT_SECONDS = 300
# Statuses after which the charger will not work on this grant again; DownloadFailed is not one (it retries).
GRANT_ENDING = {"InstallationFailed", "InvalidSignature", "InstallVerificationFailed"}
INSTALL_PHASE = {"InstallScheduled", "Installing", "InstallRebooting", "Installed"}
CAMPAIGN_OVER = {"completed", "halted", "cancelled"}
# fwrepo takes up to 10,000 events a request; smaller batches keep one bad event from holding many back.
EVENT_BATCH = 500
_BAD_EVENT = re.compile(r"^events\[(\d+)\]")


class FwrepoClient:
    """The five fwrepo calls a CSMS makes, with a csms-role API key, through fwrepo's typed client.

    The typed client is synchronous: each call runs in a thread, so chargers are answered meanwhile.
    Replies are handed on as their JSON (model_dump): the ocpp library takes its payloads as dicts.
    The client retries what may be retried (reads, status events) on connection errors and 503.
    """

    def __init__(self, url: str, api_key: str, ca_file: str | None = None, timeout: float = 30) -> None:
        self.client = Fwrepo(url, api_key, ca_file=ca_file, timeout=timeout)

    async def close(self) -> None:
        await asyncio.to_thread(self.client.close)

    async def create_campaign(self, body: dict[str, Any]) -> dict[str, Any]:
        campaign = await asyncio.to_thread(self.client.create_campaign, **body)
        return campaign.model_dump(mode="json")

    async def due_grants(self, campaign_id: str) -> list[dict[str, Any]]:
        due = await asyncio.to_thread(self.client.due_grants, campaign_id)
        return [grant.model_dump(mode="json") for grant in due.grants]

    async def report(self, campaign_id: str) -> dict[str, Any]:
        return (await asyncio.to_thread(self.client.campaign, campaign_id)).model_dump(mode="json")

    async def post_events(self, events: list[dict[str, Any]]) -> None:
        await asyncio.to_thread(self.client.report_events, events)

    async def job(self, grant_id: int) -> dict[str, Any]:
        return (await asyncio.to_thread(self.client.job, grant_id)).model_dump(mode="json")


class EventForwarder:
    """Sends status events to fwrepo in batches, retrying until they are stored.

    Retrying is safe: fwrepo keeps an event (grant, status, timestamp) once. A
    charger's message is answered at once and never waits on fwrepo.
    """

    def __init__(self, fwrepo: FwrepoClient, flush_seconds: float = 0.2) -> None:
        self.fwrepo = fwrepo
        self.flush_seconds = flush_seconds
        self._pending: list[dict[str, Any]] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def add(self, grant_id: int, status: str, *, info: str | None = None,
            firmware_version: str | None = None) -> None:
        event: dict[str, Any] = {"request_id": grant_id, "status": status, "timestamp": datetime.now(UTC).isoformat()}
        if info:
            event["info"] = info[:255]
        if firmware_version is not None:
            event["firmware_version"] = firmware_version
        self._pending.append(event)
        self._idle.clear()
        self._wake.set()

    async def drain(self) -> None:
        """Wait until every event added so far is stored (or refused for good)."""
        await self._idle.wait()

    async def stop(self) -> None:
        await self.drain()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        backoff = self.flush_seconds
        while True:
            if not self._pending:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
            await asyncio.sleep(self.flush_seconds)
            batch = self._pending[:EVENT_BATCH]
            try:
                await self.fwrepo.post_events(batch)
            except InvalidInput as refusal:
                self._drop_refused(batch, refusal)
            except FwrepoError as error:
                LOG.warning("fwrepo did not take events, %d kept for later: %s", len(self._pending), error)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30)
                continue
            else:
                del self._pending[:len(batch)]
            backoff = self.flush_seconds

    def _drop_refused(self, batch: list[dict[str, Any]], refusal: InvalidInput) -> None:
        # fwrepo refuses a whole batch for one bad event and names it (events[i].field): drop it, resend the rest.
        match = _BAD_EVENT.match(refusal.field or "")
        index = int(match.group(1)) if match and int(match.group(1)) < len(batch) else 0
        LOG.error("fwrepo refused event %s: %s", batch[index], refusal.detail)
        self._pending.remove(batch[index])


@dataclass
class ChargerRecord:
    """What the CSMS knows about a charger, from its last BootNotification and the grants it was sent."""

    charger_id: str
    ocpp_version: str
    vendor: str
    model: str
    firmware_version: str
    time_zone: str = "UTC"
    active_grant: int | None = None
    version_at_grant: str | None = None
    install_seen: bool = False
    link: _Csms16Link | _Csms201Link | None = field(default=None, repr=False)


class Csms:
    """The WebSocket server chargers connect to, and the loop that drives fwrepo campaigns."""

    def __init__(self, fwrepo: FwrepoClient, *, signed_firmware: Iterable[str] = (), poll_seconds: float = 0.5,
                 time_zones: dict[str, str] | None = None) -> None:
        self.fwrepo = fwrepo
        # Which 1.6 chargers get SignedUpdateFirmware: those with the security extension. A production CSMS
        # knows from the charger's configuration (e.g. it has a firmware signing root installed).
        self.signed_firmware = set(signed_firmware)
        self.poll_seconds = poll_seconds
        self.time_zones = time_zones or {}
        self.chargers: dict[str, ChargerRecord] = {}
        self.events = EventForwarder(fwrepo)
        # Every update a charger accepted (grant id -> charger id), until fwrepo calls its job final.
        self.unfinished: dict[int, str] = {}
        self.finished: set[int] = set()
        # Grants of chargers that were offline (charger id -> grant), sent after their next BootNotification.
        self.parked: dict[str, dict[str, Any]] = {}
        self._server: Server | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen; the port it listens on (0 picks a free one)."""
        self.events.start()
        self._server = await serve(self._connected, host, port, subprotocols=list(SUBPROTOCOLS))
        return self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        await self.events.stop()

    # -- chargers -------------------------------------------------------------------------------

    async def _connected(self, connection: ServerConnection) -> None:
        charger_id = (connection.request.path if connection.request else "").strip("/")
        if not charger_id or connection.subprotocol is None:
            await connection.close(1002, "need /CHARGER_ID and an OCPP subprotocol")
            return
        link = (_Csms201Link if connection.subprotocol == "ocpp2.0.1" else _Csms16Link)(self, charger_id, connection)
        try:
            await link.start()
        except ConnectionClosed:
            pass
        finally:
            record = self.chargers.get(charger_id)
            if record is not None and record.link is link:
                record.link = None

    def booted(self, link: _Csms16Link | _Csms201Link, vendor: str, model: str, version: str | None) -> None:
        """A BootNotification: the charger's facts, and the end of an update it may have been making."""
        version = version or ""
        record = self.chargers.get(link.id)
        if record is None:
            record = ChargerRecord(link.id, link.ocpp_version, vendor, model, version,
                                   self.time_zones.get(link.id, "UTC"))
            self.chargers[link.id] = record
        record.ocpp_version, record.vendor, record.model, record.firmware_version = (
            link.ocpp_version, vendor, model, version)
        record.link = link
        if record.active_grant is not None:
            self.events.add(record.active_grant, "Booted", firmware_version=version)
            if record.install_seen or version != record.version_at_grant:
                record.active_grant = None

    async def accepted(self, charger_id: str) -> None:
        """After the BootNotification's answer went out (a charger takes requests only once accepted)."""
        parked = self.parked.pop(charger_id, None)
        if parked is not None:
            await self.send_grant(parked)

    def firmware_status(self, charger_id: str, status: str, request_id: int | None) -> None:
        record = self.chargers.get(charger_id)
        grant_id = request_id if request_id is not None else (record.active_grant if record else None)
        if grant_id is None:
            LOG.info("%s: %s for no known grant, not forwarded", charger_id, status)
            return
        self.events.add(grant_id, status)
        if record is not None and grant_id == record.active_grant:
            record.install_seen = record.install_seen or status in INSTALL_PHASE
            if status in GRANT_ENDING:
                record.active_grant = None

    # -- grants -----------------------------------------------------------------------------------

    async def send_grant(self, grant: dict[str, Any]) -> None:
        """Send the charger the OCPP request fwrepo prepared; park it until the charger is online."""
        charger_id = grant["charger_id"]
        record = self.chargers.get(charger_id)
        if record is None or record.link is None:
            self.parked[charger_id] = grant
            return
        record.active_grant, record.version_at_grant, record.install_seen = (
            grant["id"], record.firmware_version, False)
        try:
            refusal = await record.link.update_firmware(grant["ocpp"], signed=charger_id in self.signed_firmware)
        except (ConnectionClosed, asyncio.TimeoutError) as error:
            LOG.warning("%s: UpdateFirmware not delivered (%s), kept for its next boot", charger_id, error)
            self.parked[charger_id] = grant
            return
        if refusal is not None:
            # fwrepo has no "rejected" status: a certificate refusal is a signature problem, any other a failed download.
            status = "InvalidSignature" if refusal in ("InvalidCertificate", "RevokedCertificate") else "DownloadFailed"
            self.events.add(grant["id"], status, info=f"charger answered UpdateFirmware with {refusal}")
            record.active_grant = None
            return
        self.unfinished[grant["id"]] = charger_id

    async def start_campaign(self, firmware_id: str, charger_ids: Iterable[str] | None = None,
                             **options: Any) -> dict[str, Any]:
        """Start a campaign for these chargers (default: every charger seen), as their BootNotifications describe
        them; options are fwrepo's (protocol, ftps_mode, waves, failure_threshold, window, retries, ...)."""
        ids = list(charger_ids) if charger_ids is not None else sorted(self.chargers)
        chargers = [{"charger_id": record.charger_id, "current_version": record.firmware_version,
                     "model": record.model, "time_zone": record.time_zone}
                    for record in (self.chargers[charger_id] for charger_id in ids)]
        return await self.fwrepo.create_campaign({"firmware_id": firmware_id, "chargers": chargers, **options})

    async def run_campaign(self, campaign_id: str) -> dict[str, Any]:
        """Hand out due grants until the campaign is completed, halted or cancelled; its report then.

        A halted campaign waits for a person (fwrepo's cancel: a halt cannot be resumed); this loop returns so that the
        CSMS can tell one.
        """
        while True:
            try:
                grants = await self.fwrepo.due_grants(campaign_id)
                await asyncio.gather(*(self.send_grant(grant) for grant in grants))
                await self.events.drain()
                report = await self.fwrepo.report(campaign_id)
            except FwrepoError as error:
                if error.status is not None and error.status < 500:
                    raise
                # A failed due=now claims nothing (its transaction rolled back): the next poll gets the same grants.
                LOG.warning("campaign %s: fwrepo failed, polling again: %s", campaign_id, error)
                await asyncio.sleep(self.poll_seconds)
                continue
            if report["status"] in CAMPAIGN_OVER:
                return report
            await asyncio.sleep(self.poll_seconds)

    async def wait_for_chargers(self, stop: asyncio.Event, seconds: float | None = None) -> list[str]:
        """Keep serving until fwrepo calls the job of every update a charger accepted final; the chargers still
        unfinished when `stop` is set or `seconds` pass (None: wait for fwrepo's job timeout to end them).

        A campaign ends when its waves are decided, not when its chargers are done: a charger of the last wave,
        or of a halted one, may still be installing, and its last reports (or the boot that decides its job)
        must reach fwrepo. fwrepo's `final` is the judge, so its rules (a late Installed, one DownloadFailed
        for all attempts, the job timeout) are applied here as they are in reports.
        """
        deadline = None if seconds is None else time.monotonic() + seconds
        while True:
            # One look even when already stopped, so that the count said on leaving is up to date.
            await _unless_stopped(self.events.drain(), stop)
            for grant_id in list(self.unfinished):
                try:
                    final = (await self.fwrepo.job(grant_id))["final"]
                except FwrepoError as error:
                    LOG.warning("grant %d: job not read: %s", grant_id, error)
                    break
                if final and self.unfinished.pop(grant_id, None) is not None:  # another waiter may have seen it first
                    self.finished.add(grant_id)
            left = None if deadline is None else deadline - time.monotonic()
            if not self.unfinished or stop.is_set() or (left is not None and left <= 0):
                return sorted(self.unfinished.values())
            await _until(stop, self.poll_seconds if left is None else min(self.poll_seconds, left))


def _now() -> str:
    return datetime.now(UTC).isoformat()


async def _until(stop: asyncio.Event, seconds: float) -> None:
    """Sleep for `seconds`, or less when `stop` is set meanwhile."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass


async def _unless_stopped(work: Awaitable[Any], stop: asyncio.Event) -> Any:
    """What `work` returns, or None when `stop` is set first (the work is then cancelled)."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if task.done():
        return task.result()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return None


class _Csms16Link(ChargePoint16):
    ocpp_version = "1.6"

    def __init__(self, csms: Csms, charger_id: str, connection: ServerConnection) -> None:
        super().__init__(charger_id, connection)
        self.csms = csms

    async def update_firmware(self, payloads: dict[str, Any], *, signed: bool) -> str | None:
        """Send (Signed)UpdateFirmware; the charger's refusal, or None when it accepted."""
        if signed:
            reply = await self.call(call16.SignedUpdateFirmware(
                **camel_to_snake_case(payloads["signed_update_firmware"])), suppress=False)
            return None if reply.status == "Accepted" else str(reply.status)
        await self.call(call16.UpdateFirmware(**camel_to_snake_case(payloads["update_firmware"])), suppress=False)
        return None

    @on(Action16.boot_notification)
    def on_boot_notification(self, charge_point_vendor: str, charge_point_model: str,
                             firmware_version: str | None = None, **_: Any) -> result16.BootNotification:
        self.csms.booted(self, charge_point_vendor, charge_point_model, firmware_version)
        return result16.BootNotification(current_time=_now(), interval=HEARTBEAT_SECONDS, status="Accepted")

    @after(Action16.boot_notification)
    async def after_boot_notification(self, **_: Any) -> None:
        await self.csms.accepted(self.id)

    @on(Action16.heartbeat)
    def on_heartbeat(self) -> result16.Heartbeat:
        return result16.Heartbeat(current_time=_now())

    @on(Action16.firmware_status_notification)
    def on_firmware_status(self, status: str) -> result16.FirmwareStatusNotification:
        self.csms.firmware_status(self.id, status, None)
        return result16.FirmwareStatusNotification()

    @on(Action16.signed_firmware_status_notification)
    def on_signed_firmware_status(self, status: str,
                                  request_id: int | None = None) -> result16.SignedFirmwareStatusNotification:
        self.csms.firmware_status(self.id, status, request_id)
        return result16.SignedFirmwareStatusNotification()


class _Csms201Link(ChargePoint201):
    ocpp_version = "2.0.1"

    def __init__(self, csms: Csms, charger_id: str, connection: ServerConnection) -> None:
        super().__init__(charger_id, connection)
        self.csms = csms

    async def update_firmware(self, payloads: dict[str, Any], *, signed: bool) -> str | None:
        """Send UpdateFirmware (always with the signature: 2.0.1 chargers verify it when given)."""
        reply = await self.call(call201.UpdateFirmware(**camel_to_snake_case(payloads["update_firmware_v201"])),
                                suppress=False)
        return None if reply.status == "Accepted" else str(reply.status)

    @on(Action201.boot_notification)
    def on_boot_notification(self, charging_station: dict[str, Any], reason: str,
                             **_: Any) -> result201.BootNotification:
        self.csms.booted(self, charging_station.get("vendor_name", ""), charging_station.get("model", ""),
                         charging_station.get("firmware_version"))
        return result201.BootNotification(current_time=_now(), interval=HEARTBEAT_SECONDS, status="Accepted")

    @after(Action201.boot_notification)
    async def after_boot_notification(self, **_: Any) -> None:
        await self.csms.accepted(self.id)

    @on(Action201.heartbeat)
    def on_heartbeat(self, **_: Any) -> result201.Heartbeat:
        return result201.Heartbeat(current_time=_now())

    @on(Action201.firmware_status_notification)
    def on_firmware_status(self, status: str, request_id: int | None = None,
                           **_: Any) -> result201.FirmwareStatusNotification:
        self.csms.firmware_status(self.id, status, request_id)
        return result201.FirmwareStatusNotification()


# -- webhooks instead of polling (docs/webhooks.md) ------------------------------------------------

# Deliveries signed longer ago than this (either way) are refused as replays.
WEBHOOK_REPLAY_WINDOW = 300
WEBHOOK_EVENTS = ("grants.due", "campaign.halted", "campaign.completed", "campaign.cancelled")
MAX_WEBHOOK_BODY = 16 * 1024 * 1024


def webhook_verified(secret: bytes, headers: dict[str, str], body: bytes) -> bool:
    """Fwrepo-Signature is v1=HMAC-SHA256(secret, Fwrepo-Timestamp + "." + body), and the timestamp is recent."""
    timestamp = headers.get("fwrepo-timestamp", "")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > WEBHOOK_REPLAY_WINDOW:
        return False
    expected = "v1=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers.get("fwrepo-signature", ""))


class WebhookReceiver:
    """A small HTTP server fwrepo POSTs events to: due grants go to the chargers, campaign ends are noted.

    It answers as soon as the delivery is verified, and works on it afterwards: fwrepo counts a slow answer
    as a failed attempt and sends again. Event ids already handled are dropped (a delivery may come twice when
    a fwrepo node stopped mid-attempt). Plain HTTP here; behind TLS (a proxy, or ssl= on start) in production.
    """

    def __init__(self, csms: Csms, secret: bytes) -> None:
        self.csms = csms
        self.secret = secret
        self.seen: set[str] = set()
        self.over: dict[str, asyncio.Event] = {}
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int, tls: ssl.SSLContext | None = None) -> int:
        self._server = await asyncio.start_server(self._connected, host, port, ssl=tls)
        return self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def campaign_over(self, campaign_id: str) -> asyncio.Event:
        return self.over.setdefault(campaign_id, asyncio.Event())

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, document = await asyncio.wait_for(self._read(reader), 30)
            writer.write(f"HTTP/1.1 {status} {'No Content' if status == 204 else 'Refused'}\r\n"
                         "Content-Length: 0\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError, ValueError):
            return
        finally:
            writer.close()
        if document is not None and document["id"] not in self.seen:
            self.seen.add(document["id"])
            task = asyncio.create_task(self._handle(document))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _read(self, reader: asyncio.StreamReader) -> tuple[int, dict[str, Any] | None]:
        request_line = await reader.readline()
        headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        if not request_line.startswith(b"POST ") or length > MAX_WEBHOOK_BODY:
            return 400, None
        body = await reader.readexactly(length)
        if not webhook_verified(self.secret, headers, body):
            LOG.warning("webhook delivery %s refused: bad signature or stale timestamp", headers.get("fwrepo-delivery"))
            return 401, None
        return 204, json.loads(body)

    async def _handle(self, document: dict[str, Any]) -> None:
        data = document["data"]
        if document["event"] == "grants.due":
            await asyncio.gather(*(self.csms.send_grant(grant) for grant in data["grants"]))
        elif document["event"] in ("campaign.halted", "campaign.completed", "campaign.cancelled"):
            self.campaign_over(data["campaign_id"]).set()


async def register_webhook(fwrepo: FwrepoClient, url: str, secret: bytes) -> dict[str, Any]:
    """POST /api/v1/webhooks for the events this CSMS acts on; fwrepo shows the secret to no one after."""
    webhook = await asyncio.to_thread(fwrepo.client.create_webhook, url, WEBHOOK_EVENTS, secret.decode())
    return webhook.model_dump(mode="json")


async def run_campaign_pushed(csms: Csms, receiver: WebhookReceiver, campaign_id: str) -> dict[str, Any]:
    """run_campaign without polling: due grants arrive at the receiver; wait for the campaign's end, then its report."""
    # A campaign given by id may have ended before the receiver listened: its end event went to no one.
    if (await csms.fwrepo.report(campaign_id))["status"] not in CAMPAIGN_OVER:
        await receiver.campaign_over(campaign_id).wait()
    await csms.events.drain()
    return await csms.fwrepo.report(campaign_id)


async def _with_webhooks(csms: Csms, arguments: argparse.Namespace) -> tuple[WebhookReceiver, dict[str, Any]]:
    """Listen on --webhook-listen and register it with fwrepo (as --webhook-url, default http://HOST:PORT/fwrepo)."""
    receiver = WebhookReceiver(csms, secrets.token_hex(32).encode())
    host, _, port = arguments.webhook_listen.rpartition(":")
    listening = await receiver.start(host, int(port))
    webhook = await register_webhook(csms.fwrepo, arguments.webhook_url or f"http://{host}:{listening}/fwrepo",
                                     receiver.secret)
    LOG.info("webhook %s: fwrepo pushes %s to %s", webhook["id"], ", ".join(webhook["events"]), webhook["url"])
    return receiver, webhook


async def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fwrepo", default=os.environ.get("FWREPO_URL", "https://127.0.0.1:8443"))
    parser.add_argument("--cacert", default=os.environ.get("FWREPO_CACERT"), help="CA of fwrepo's TLS certificate")
    parser.add_argument("--listen", default="127.0.0.1:9000", help="HOST:PORT for the chargers' WebSockets")
    parser.add_argument("--signed", default="", help="comma-separated 1.6 chargers that get SignedUpdateFirmware")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--campaign", help="drive this existing campaign")
    what.add_argument("--firmware", help="start a campaign of this firmware for every charger that booted")
    parser.add_argument("--wait", type=float, default=30, help="with --firmware: seconds to let chargers boot first")
    parser.add_argument("--waves", default="10%,50%,100%")
    parser.add_argument("--protocol", choices=("https", "ftps"), default="https")
    parser.add_argument("--failure-threshold", type=float, default=0.1)
    parser.add_argument("--linger", type=float, metavar="SECONDS",
                        help="once the campaign is over, serve chargers until their jobs are final, at most this long "
                             "(default: until fwrepo's job timeout ends them; SIGINT or SIGTERM stops at once)")
    parser.add_argument("--webhook-listen", metavar="HOST:PORT",
                        help="take due grants and campaign ends as webhooks on this address instead of polling")
    parser.add_argument("--webhook-url", help="the URL fwrepo reaches --webhook-listen at (default http://HOST:PORT/fwrepo)")
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    api_key = os.environ.get("FWREPO_KEY")
    if not api_key:
        parser.error("set FWREPO_KEY to a csms-role API key (fwrepo clients create --role csms)")
    fwrepo = FwrepoClient(arguments.fwrepo, api_key, arguments.cacert)
    csms = Csms(fwrepo, signed_firmware=filter(None, arguments.signed.split(",")))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def stop_once() -> None:
        # The first signal ends the waiting gracefully; the default handlers are back for a second one.
        stop.set()
        for signal_number in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signal_number)

    for signal_number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signal_number, stop_once)
    host, _, port = arguments.listen.rpartition(":")
    LOG.info("listening on ws://%s:%d", host, await csms.start(host, int(port)))
    receiver, webhook = await _with_webhooks(csms, arguments) if arguments.webhook_listen else (None, None)
    try:
        await _unless_stopped(_drive(csms, arguments, receiver), stop)
        unfinished = await csms.wait_for_chargers(stop, arguments.linger)
    finally:
        if receiver is not None and webhook is not None:
            await asyncio.to_thread(fwrepo.client.delete_webhook, webhook["id"])
            await receiver.stop()
        await csms.stop()
        await fwrepo.close()
    never_sent = f", {len(csms.parked)} never connected to get theirs" if csms.parked else ""
    LOG.info("%d chargers finished their update, stopped waiting for %d%s%s", len(csms.finished),
             len(unfinished), f" ({', '.join(unfinished)})" if unfinished else "", never_sent)


async def _drive(csms: Csms, arguments: argparse.Namespace, receiver: WebhookReceiver | None = None) -> None:
    """Start or follow the campaign the command line names, until it is over; without one, serve until stopped."""
    campaign_id = arguments.campaign
    if arguments.firmware:
        await asyncio.sleep(arguments.wait)
        campaign = await csms.start_campaign(arguments.firmware, protocol=arguments.protocol,
                                             waves=arguments.waves.split(","),
                                             failure_threshold=arguments.failure_threshold)
        campaign_id = campaign["id"]
        LOG.info("campaign %s started", campaign_id)
    if campaign_id:
        report = await (run_campaign_pushed(csms, receiver, campaign_id) if receiver is not None
                        else csms.run_campaign(campaign_id))
        LOG.info("campaign %s %s: %s; serving its chargers until their jobs are final", campaign_id,
                 report["status"], report["states"])
    else:
        await asyncio.Future()  # nothing to drive: serve chargers until a signal cancels this


if __name__ == "__main__":
    asyncio.run(_main())
