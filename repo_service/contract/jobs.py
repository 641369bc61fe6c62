"""Status events a CSMS reports (OCPP FirmwareStatusNotification), and the update job they add up to."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from repo_service.contract.base import Body, Moment, MomentText, Reply
from repo_service.contract.grants import GrantId
from repo_service.domain.update_jobs import BOOTED, EXTRA_STATUSES, MAX_EVENTS, MAX_INFO, OCPP_STATUSES, JobState

STATUS_DESCRIPTION = (f"an OCPP firmware status ({', '.join(OCPP_STATUSES)}), the charger's answer to UpdateFirmware "
                      f"or a firmware security event ({', '.join(EXTRA_STATUSES)}), or {BOOTED} (the charger sent "
                      "BootNotification with firmware_version); compared without regard to case")


class StatusEvent(Body):
    status: str = Field(description=STATUS_DESCRIPTION, examples=["Downloading", "Installed", BOOTED])
    timestamp: MomentText = Field(description="when the charger reported it, with a zone, as OCPP sends it")
    info: str = Field(None, max_length=MAX_INFO, description="OCPP 2.0.1 statusInfo, printable text")
    firmware_version: str = Field(None, description=f"the firmwareVersion of BootNotification; {BOOTED} only")


class GrantStatusEvent(StatusEvent):
    """An event in a batch names its grant: grant_id or request_id (the same number; give one)."""

    grant_id: GrantId = None  # type: ignore[assignment]
    request_id: GrantId = None  # type: ignore[assignment]


class StatusEvents(Body):
    events: list[GrantStatusEvent] = Field(min_length=1, max_length=MAX_EVENTS)


class JobEvent(Reply):
    status: str
    timestamp: Moment
    info: str | None
    firmware_version: str | None


class Timeline(Reply):
    granted: Moment
    first_byte: Moment | None
    last_byte: Moment | None
    boot_confirmed: Moment | None


class Job(Reply):
    state: Literal[tuple(JobState)]  # type: ignore[valid-type]
    final: bool
    timeline: Timeline
    download_seconds: float | None
    completion_seconds: float | None
    events: list[JobEvent]


class EventRecorded(Reply):
    grant_id: int
    duplicate: bool = Field(description="true when this event was reported before: nothing changed")
    job: Job


class EventsRecorded(Reply):
    accepted: int
    duplicates: int
