"""Status events a CSMS reports (OCPP FirmwareStatusNotification), and the update job they add up to."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from repo_service.contract.base import Body, Moment, MomentText, Reply
from repo_service.contract.grants import GrantId
from repo_service.domain.update_jobs import (
    BOOTED, EXTRA_STATUSES, MAX_ADDITIONAL_INFO, MAX_EVENTS, MAX_INFO, MAX_REASON_CODE, NOTIFICATIONS, OCPP_STATUSES,
    PUBLISH_NOTIFICATION, PUBLISH_STATUSES, JobState,
)

STATUS_DESCRIPTION = (f"an OCPP firmware status ({', '.join(OCPP_STATUSES)}), the charger's answer to UpdateFirmware "
                      f"or a firmware security event ({', '.join(EXTRA_STATUSES)}), or {BOOTED} (the charger sent "
                      f"BootNotification with firmware_version); with notification {PUBLISH_NOTIFICATION}, a local "
                      f"controller's publish status ({', '.join(PUBLISH_STATUSES)}); compared without regard to case")
NOTIFICATION_DESCRIPTION = (f"the OCPP message the status came in: {PUBLISH_NOTIFICATION} for a local controller "
                            "publishing the build (its statuses only); absent or FirmwareStatusNotification for the "
                            "charger's own firmware")
Notification = Literal[tuple(NOTIFICATIONS)]  # type: ignore[valid-type]


class StatusInfo(Body):
    """OCPP's statusInfo (2.1's FirmwareStatusNotification, PublishFirmwareStatusNotification) in snake_case."""

    reason_code: str = Field(min_length=1, max_length=MAX_REASON_CODE, description="reasonCode, printable text")
    additional_info: str = Field(None, max_length=MAX_ADDITIONAL_INFO, description="additionalInfo, printable text")


class StatusEvent(Body):
    status: str = Field(description=STATUS_DESCRIPTION, examples=["Downloading", "Installed", BOOTED])
    timestamp: MomentText = Field(description="when the charger reported it, with a zone, as OCPP sends it")
    info: str = Field(None, max_length=MAX_INFO,
                      description="free printable text: a security event's techInfo, the CSMS's note")
    status_info: StatusInfo = Field(None, description="OCPP statusInfo: why the charger reports this status")
    notification: Notification = Field(None, description=NOTIFICATION_DESCRIPTION)
    firmware_version: str = Field(None, description=f"the firmwareVersion of BootNotification; {BOOTED} only")


class GrantStatusEvent(StatusEvent):
    """An event in a batch names its grant: grant_id or request_id (the same number; give one)."""

    grant_id: GrantId = None  # type: ignore[assignment]
    request_id: GrantId = None  # type: ignore[assignment]


class StatusEvents(Body):
    events: list[GrantStatusEvent] = Field(min_length=1, max_length=MAX_EVENTS)


class StatusInfoReply(Reply):
    reason_code: str
    additional_info: str | None


class JobEvent(Reply):
    status: str
    timestamp: Moment
    info: str | None
    status_info: StatusInfoReply | None = None
    notification: str | None = Field(None, description=f"{PUBLISH_NOTIFICATION}, or null: the charger's own firmware")
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
