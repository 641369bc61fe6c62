"""Connectors to CSMSs that fwrepo drives itself: each sends a charger's UpdateFirmware through its CSMS and
turns what the CSMS reports back into `Heard` facts. They translate and nothing more: which grant a fact is
about, and what it does to the job, is decided in repo_service/domain/dispatch.py.

A connector for another CSMS is a module of the same shape as citrineos.py: a class with `name`,
`send(charger_id, ocpp_version, request)` and `listening(heard)`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol


class Sent(StrEnum):
    """What became of one request to the CSMS."""

    SENT = "sent"  # the CSMS sent the CALL to the charger
    NOT_CONNECTED = "not_connected"  # the CSMS has no connection to that charger now
    REFUSED = "refused"  # the CSMS will not send this request, ever (it is invalid to it)
    UNREACHABLE = "unreachable"  # the CSMS did not take the request: nothing went out; try again
    UNKNOWN = "unknown"  # the CSMS may have sent it or not (a timeout after the request went)


@dataclass(frozen=True)
class Outcome:
    sent: Sent
    detail: str = ""


class Kind(StrEnum):
    """What a frame the CSMS reports back says, for fwrepo's purposes."""

    REQUEST_SENT = "request_sent"  # the CSMS sent an UpdateFirmware (ours, or one an operator sent by hand)
    ANSWER = "answer"  # the charger's answer to an UpdateFirmware
    STATUS = "status"  # FirmwareStatusNotification or PublishFirmwareStatusNotification
    BOOTED = "booted"  # BootNotification, with the firmware version it runs
    SECURITY_EVENT = "security_event"  # SecurityEventNotification of a firmware kind
    ALIVE = "alive"  # anything else the charger sent: it is connected now


@dataclass(frozen=True)
class Heard:
    kind: Kind
    charger_id: str
    timestamp: datetime
    # The CSMS's id of the OCPP message: a request and its answer share it.
    correlation_id: str | None = None
    # What the charger named: the requestId of a status, the location of a request that went out.
    request_id: int | None = None
    location: str | None = None
    status: str | None = None
    info: str | None = None
    # OCPP's statusInfo as fwrepo's events take it ({"reason_code", "additional_info"}), and the message a status
    # came in when it is a local controller's PublishFirmwareStatusNotification.
    status_info: Mapping[str, str] | None = None
    notification: str | None = None
    firmware_version: str | None = None


class Connector(Protocol):
    name: str

    def send(self, charger_id: str, ocpp_version: str, request: Mapping[str, Any]) -> Outcome: ...

    def listening(self, heard: Callable[[Heard], None]) -> AbstractContextManager[None]: ...
