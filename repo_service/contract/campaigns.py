"""Campaigns: staged rollouts of one build to many chargers, in waves, halted on failures."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from repo_service.contract.base import Body, Moment, Reply
from repo_service.contract.grants import ChargerId, Grant, RetryPlan
from repo_service.domain.campaigns import (
    DISPATCHES, MAX_CHARGERS, MAX_WAVES, OCPP_VERSIONS, CampaignStatus,
)
from repo_service.domain.dispatch import DispatchStatus
from repo_service.domain.documents import MAX_CHARGER_ID

# Model names, hardware revisions and versions in a campaign's list of chargers, as BootNotification gives them.
MAX_CHARGER_FIELD = 50
ClockTime = Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):([0-5][0-9])$", examples=["01:00"])]
Share = Annotated[str, Field(pattern=r"^(100|[1-9][0-9]?)(\.[0-9]+)?%$", examples=["10%"])]
Fraction = Annotated[float, Field(ge=0, le=1)]
CampaignState = Literal[tuple(CampaignStatus)]  # type: ignore[valid-type]
DispatchName = Literal[DISPATCHES]  # type: ignore[valid-type]
DispatchState = Literal[tuple(DispatchStatus)]  # type: ignore[valid-type]


class CampaignCharger(Body):
    charger_id: ChargerId
    current_version: str = Field(min_length=1, max_length=MAX_CHARGER_FIELD,
                                 description="the firmwareVersion of its last BootNotification")
    model: str = Field(None, min_length=1, max_length=MAX_CHARGER_FIELD)
    hardware_revision: str = Field(None, min_length=1, max_length=MAX_CHARGER_FIELD)
    time_zone: str = Field("UTC", min_length=1, max_length=MAX_CHARGER_ID, description="IANA zone, e.g. Europe/Berlin")
    serial: ChargerId = Field(None, description="the name in its client certificate; needs bind")
    ocpp_version: Literal[OCPP_VERSIONS] = Field(  # type: ignore[valid-type]
        None, description='the UpdateFirmware fwrepo sends it when the campaign\'s dispatch is not "csms"; '
                          'default 2.0.1')


class Window(Body):
    start: ClockTime
    end: ClockTime


class CampaignRequest(RetryPlan):
    firmware_id: str = Field(min_length=1)
    chargers: list[CampaignCharger] = Field(min_length=1, max_length=MAX_CHARGERS)
    waves: list[Share | Annotated[int, Field(ge=1)]] = Field(
        ["100%"], min_length=1, max_length=MAX_WAVES, description="cumulative sizes: shares or charger counts")
    failure_threshold: Fraction | list[Fraction] = Field(
        0.1, description="halt when a wave's failed share passes this: one value, or one per wave")
    window: Window = Field(None, description="the maintenance window in each charger's local time")
    dispatch: DispatchName = Field(
        "csms", description='who sends each charger its UpdateFirmware: "csms" polls for due grants (or takes '
                            'grants.due webhooks); "citrineos" is fwrepo itself, through FWREPO_CITRINEOS_URL')


class WaveReport(Reply):
    wave: int
    chargers: int
    states: dict[str, int]
    failure_rate: float | None
    failure_threshold: float


class Percentiles(Reply):
    median: float | None
    p95: float | None


class JobSummary(Reply):
    jobs: int
    states: dict[str, int]
    finished: int
    success_rate: float | None
    download_seconds: Percentiles
    completion_seconds: Percentiles
    bytes_served: int


class CampaignReport(JobSummary):
    id: str
    firmware_id: str
    status: CampaignState
    status_reason: str | None
    current_wave: int
    created_at: Moment
    chargers: int
    skipped: dict[str, int]
    pending: int
    dispatch: DispatchName
    dispatches: dict[DispatchState, int] | None = Field(
        description="dispatched campaigns: UpdateFirmware requests by state; null for dispatch csms")
    waves: list[WaveReport]


class CampaignListItem(Reply):
    id: str
    firmware_id: str
    status: CampaignState
    current_wave: int = Field(description="counted from 1")
    waves: int
    created_at: Moment


class CampaignList(Reply):
    items: list[CampaignListItem]


class DueGrants(Reply):
    """Grants whose retrieve_date has come, each handed out once."""

    campaign_id: str
    grants: list[Grant]


class FirmwareStats(JobSummary):
    firmware_id: str
    campaigns: int

