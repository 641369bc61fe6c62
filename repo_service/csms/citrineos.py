"""CitrineOS (1.8): UpdateFirmware through its REST API; what chargers said from its RabbitMQ exchange.

Why the exchange and not CitrineOS's webhook subscriptions: a subscription is loaded only when its charger
connects (and by a refresh every 3 minutes), so one made before dispatch misses the statuses of a charger
that was connected all along; it needs one subscription per charger; and its callbacks are unsigned POSTs
anyone who can reach fwrepo could forge. On the exchange every frame arrives as it passes, one durable
queue takes them for all chargers and all fwrepo nodes (each frame is handled by one node, and frames sent
while fwrepo restarts wait in the queue), and only holders of the broker's credentials can publish.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import httpx
import pika
import pika.exceptions

from repo_service.csms import Heard, Kind, Outcome, Sent
from repo_service.domain.clock import parse_moment
from repo_service.errors import InvalidInput

log = logging.getLogger(__name__)

NAME = "citrineos"
# The REST path of each OCPP version's UpdateFirmware.
PATHS = {"2.0.1": "/ocpp/2.0.1/configuration/updateFirmware", "1.6": "/ocpp/1.6/configuration/updateFirmware"}
NO_CONNECTION = "No connection found"
# Frames from chargers that matter, each bound on its own (a headers binding matches one value per header).
FROM_CHARGERS = ("FirmwareStatusNotification", "PublishFirmwareStatusNotification", "BootNotification",
                 "SecurityEventNotification", "Heartbeat", "StatusNotification")
FIRMWARE_SECURITY_EVENTS = frozenset({"InvalidFirmwareSignature", "InvalidFirmwareSigningCertificate",
                                      "FirmwareUpdated"})
RECONNECT_PAUSE = (1, 30)  # seconds: first, and most, between attempts to reach the broker
PREFETCH = 200


class CitrineOS:
    name = NAME

    def __init__(self, url: str, tenant: int, amqp_url: str, exchange: str, queue: str, timeout: float) -> None:
        self.url = url.rstrip("/")
        self.tenant = tenant
        self.amqp_url = amqp_url
        self.exchange = exchange
        self.queue = queue
        # One client for every send: CitrineOS answers each quickly, and a new connection per send would cost
        # more than the send.
        self.http = httpx.Client(timeout=timeout)

    # -- sending ------------------------------------------------------------------------------

    def send(self, charger_id: str, ocpp_version: str, request: Mapping[str, Any]) -> Outcome:
        params = {"identifier": charger_id, "tenantId": str(self.tenant)}
        try:
            reply = self.http.post(self.url + PATHS[ocpp_version], params=params, json=dict(request))
        except httpx.ConnectError as error:  # refused or unresolvable: the request never left
            return Outcome(Sent.UNREACHABLE, f"CitrineOS cannot be reached: {error}")
        except httpx.HTTPError as error:  # it may have gone out before the answer was lost
            return Outcome(Sent.UNKNOWN, f"no answer from CitrineOS: {type(error).__name__}: {error}")
        if reply.status_code >= 500:
            return Outcome(Sent.UNKNOWN, f"CitrineOS answered {reply.status_code}: {reply.text[:200]}")
        if reply.status_code != 200:
            return Outcome(Sent.REFUSED, f"CitrineOS answered {reply.status_code}: {_message(reply)}")
        try:
            [answer] = reply.json()
            success, payload = answer["success"], answer.get("payload")
        except (ValueError, TypeError, KeyError):
            return Outcome(Sent.UNKNOWN, f"CitrineOS answered what fwrepo cannot read: {reply.text[:200]}")
        if success is True:
            return Outcome(Sent.SENT)
        if isinstance(payload, str) and payload.startswith(NO_CONNECTION):
            return Outcome(Sent.NOT_CONNECTED, payload)
        return Outcome(Sent.REFUSED, f"CitrineOS did not send it: {str(payload)[:200]}")

    # -- listening ----------------------------------------------------------------------------

    @contextmanager
    def listening(self, heard: Callable[[Heard], None]) -> Iterator[None]:
        """While the block runs, hand every frame of interest to heard(); one that it fails on is given back to
        the broker and comes again."""
        stopped = threading.Event()
        thread = threading.Thread(target=self._consume_until, args=(stopped, heard), name="citrineos-listen",
                                  daemon=True)
        thread.start()
        try:
            yield
        finally:
            stopped.set()
            thread.join()

    def _consume_until(self, stopped: threading.Event, heard: Callable[[Heard], None]) -> None:
        pause = RECONNECT_PAUSE[0]
        while not stopped.is_set():
            try:
                self._consume(stopped, heard)
                pause = RECONNECT_PAUSE[0]
            except (pika.exceptions.AMQPError, OSError) as error:
                log.warning("CitrineOS's broker: %s: %s; trying again in %d s", type(error).__name__, error, pause)
                stopped.wait(pause)
                pause = min(pause * 2, RECONNECT_PAUSE[1])

    def _consume(self, stopped: threading.Event, heard: Callable[[Heard], None]) -> None:
        connection = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
        try:
            channel = connection.channel()
            # Declared as CitrineOS declares it, so that whichever starts first, the other finds it as it wants.
            channel.exchange_declare(self.exchange, exchange_type="headers", durable=False)
            # One consumer at a time (the others stand by): a charger's answer is then handled after the request
            # it answers, and its statuses in the order it sent them, whichever node is consuming.
            channel.queue_declare(self.queue, durable=True, arguments={"x-single-active-consumer": True})
            tenant = str(self.tenant)
            channel.queue_bind(self.queue, self.exchange, arguments={
                "x-match": "all", "action": "UpdateFirmware", "tenantId": tenant})
            for action in FROM_CHARGERS:
                channel.queue_bind(self.queue, self.exchange, arguments={
                    "x-match": "all", "action": action, "origin": "cs", "state": "1", "tenantId": tenant})
            channel.basic_qos(prefetch_count=PREFETCH)
            log.info("listening to CitrineOS on exchange %s, queue %s", self.exchange, self.queue)
            for method, properties, body in channel.consume(self.queue, inactivity_timeout=1.0):
                if stopped.is_set():
                    break
                if method is None:
                    continue
                frame = self.translate(properties.headers or {}, body)
                try:
                    if frame is not None:
                        heard(frame)
                except Exception:  # a database hiccup: the frame goes back to the queue and comes again
                    log.exception("handling a frame from %s failed; it is given back", frame.charger_id)
                    channel.basic_nack(method.delivery_tag, requeue=True)
                    stopped.wait(1)
                    continue
                channel.basic_ack(method.delivery_tag)
            channel.cancel()
        finally:
            if connection.is_open:
                connection.close()

    def translate(self, headers: Mapping[str, Any], body: bytes) -> Heard | None:
        """One frame as CitrineOS publishes it (its headers, and a body whose payload is `payload`, or
        `_payload` in CitrineOS's own answers): what it says, or None when it says nothing fwrepo uses."""
        try:
            document = json.loads(body)
            payload = document.get("payload", document.get("_payload")) or {}
            timestamp = parse_moment(str(headers["timestamp"]), "timestamp")
            charger_id = str(headers["stationId"])
        except (ValueError, KeyError, AttributeError, InvalidInput) as error:
            log.warning("a frame fwrepo cannot read on CitrineOS's exchange (%s): %.200r", error, body)
            return None
        if str(headers.get("tenantId")) != str(self.tenant) or not isinstance(payload, dict):
            return None
        action, origin, state = headers.get("action"), headers.get("origin"), str(headers.get("state"))
        correlation_id = headers.get("correlationId")
        facts = {"charger_id": charger_id, "timestamp": timestamp, "correlation_id": correlation_id}
        if action == "UpdateFirmware":
            if origin == "csms" and state == "1":
                firmware = payload.get("firmware")
                location = firmware.get("location") if isinstance(firmware, dict) else payload.get("location")
                return Heard(Kind.REQUEST_SENT, location=location if isinstance(location, str) else None, **facts)
            if origin == "cs" and state == "2":
                # 1.6's answer is empty: that the charger took the request is all it says.
                return Heard(Kind.ANSWER, status=str(payload.get("status", "Accepted")), **facts)
            return None
        if origin != "cs" or state != "1":
            return None
        if action in ("FirmwareStatusNotification", "PublishFirmwareStatusNotification"):
            request_id = payload.get("requestId")
            return Heard(Kind.STATUS, status=str(payload.get("status")), status_info=_status_info(payload),
                         notification=action if action == "PublishFirmwareStatusNotification" else None,
                         request_id=request_id if isinstance(request_id, int) else None, **facts)
        if action == "BootNotification":
            station = payload.get("chargingStation")
            version = station.get("firmwareVersion") if isinstance(station, dict) else payload.get("firmwareVersion")
            return Heard(Kind.BOOTED, firmware_version=version if isinstance(version, str) else None, **facts)
        if action == "SecurityEventNotification" and payload.get("type") in FIRMWARE_SECURITY_EVENTS:
            info = payload.get("techInfo") or payload.get("techinfo")
            return Heard(Kind.SECURITY_EVENT, status=str(payload["type"]),
                         info=info if isinstance(info, str) else None, **facts)
        return Heard(Kind.ALIVE, **facts)


def _status_info(payload: Mapping[str, Any]) -> dict[str, str] | None:
    """OCPP statusInfo ({reasonCode, additionalInfo}) as fwrepo's events take it; None without a reason code."""
    status_info = payload.get("statusInfo")
    if not isinstance(status_info, dict) or not status_info.get("reasonCode"):
        return None
    # Within OCPP 2.1's bounds, which fwrepo holds events to: a longer one from a lax charger is cut, not lost.
    translated = {"reason_code": str(status_info["reasonCode"])[:20]}
    if status_info.get("additionalInfo"):
        translated["additional_info"] = str(status_info["additionalInfo"])[:1024]
    return translated


def _message(reply: httpx.Response) -> str:
    try:
        document = reply.json()
        return str(document.get("message") or document)[:300]
    except ValueError:
        return reply.text[:300]
