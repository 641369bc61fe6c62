"""Grants: the request a CSMS sends for a download location, and the grant with its OCPP payloads."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from repo_service.contract.base import Body, Moment, MomentText, Reply
from repo_service.domain.charger_certificates import BINDINGS
from repo_service.domain.documents import (
    DEFAULT_RETRIES, DEFAULT_RETRY_INTERVAL, MAX_CHARGER_ID, PROTOCOLS, RETRIES, RETRY_INTERVAL,
)
from repo_service.domain.downloads import Refusal
from repo_service.domain.ftp_logins import MODES as FTPS_MODES
from repo_service.domain.grants import MAX_BATCH, MAX_DOWNLOADS, MAX_GRANT_ID
from repo_service.domain.ocpp import LOCATION_LIMITS

Protocol = Literal[PROTOCOLS]  # type: ignore[valid-type]
FtpsMode = Literal[FTPS_MODES]  # type: ignore[valid-type]
Binding = Literal[BINDINGS]  # type: ignore[valid-type]
ChargerId = Annotated[str, Field(min_length=1, max_length=MAX_CHARGER_ID, pattern=r"^[!-~]([ -~]*[!-~])?$",
                                 description="OCPP charge point identity: printable ASCII, no surrounding spaces")]
GrantId = Annotated[int, Field(ge=1, le=MAX_GRANT_ID, description="the grant's number, also its OCPP requestId")]


class RetryPlan(Body):
    """OCPP's retries and retryInterval, and the protocol a charger downloads with.

    An optional field is omitted rather than sent as null: null is refused like any other wrong type.
    """

    protocol: Protocol = "https"
    ftps_mode: FtpsMode = Field(None, description='only with protocol "ftps"')
    retries: int = Field(DEFAULT_RETRIES, ge=RETRIES[0], le=RETRIES[1])
    retry_interval: int = Field(DEFAULT_RETRY_INTERVAL, ge=RETRY_INTERVAL[0], le=RETRY_INTERVAL[1],
                                description="seconds between a charger's attempts")
    bind: Binding = Field(None, description="client_certificate: the download must come over a TLS "
                                                   "connection with the charger's own certificate")


class GrantTerms(RetryPlan):
    firmware_id: str = Field(min_length=1)
    retrieve_date: MomentText = Field(None, description="when the charger should fetch; default now")
    install_date: MomentText = Field(None, description="OCPP installDateTime; not before retrieve_date")
    expires_in: int = Field(None, ge=60, description="seconds the grant lives; at most "
                                                            "FWREPO_GRANT_MAX_LIFETIME, at least to the retry plan's end")
    max_downloads: int = Field(None, ge=MAX_DOWNLOADS[0], le=MAX_DOWNLOADS[1],
                                      description="complete downloads allowed; default 1 for ftps, else unlimited")


class GrantRequest(GrantTerms):
    charger_id: ChargerId
    charger_serial: ChargerId = Field(None, description="the name in the charger's certificate when it is not "
                                                               "charger_id; needs bind")


class GrantBatchRequest(GrantTerms):
    charger_ids: list[ChargerId] = Field(min_length=1, max_length=MAX_BATCH, description="distinct charger ids")
    charger_serials: dict[str, ChargerId] = Field(None, description="charger id → certificate name; needs bind")


class UpdateFirmware(Reply):
    """OCPP 1.6 UpdateFirmware.req."""

    location: str
    retrieveDate: Moment
    retries: int
    retryInterval: int


class SignedFirmware(Reply):
    location: str
    retrieveDateTime: Moment
    installDateTime: Moment | None = None
    signingCertificate: str | None
    signature: str | None


class SignedUpdateFirmware(Reply):
    """OCPP 1.6 security extension SignedUpdateFirmware.req; OCPP 2.0.1 UpdateFirmwareRequest has the same shape."""

    requestId: int
    retries: int
    retryInterval: int
    firmware: SignedFirmware


class PublishFirmware(Reply):
    """OCPP 2.0.1 PublishFirmwareRequest, which a CSMS sends a local controller to fetch and serve the build."""

    location: str
    checksum: str = Field(pattern=r"^[0-9a-f]{32}$", description="the image's MD5, 32 hexadecimal characters")
    requestId: int
    retries: int
    retryInterval: int


class OcppRequests(Reply):
    update_firmware: UpdateFirmware
    signed_update_firmware: SignedUpdateFirmware
    update_firmware_v201: SignedUpdateFirmware
    publish_firmware_v201: PublishFirmware | None = Field(
        None, description="absent when the build has no MD5 yet (stored before fwrepo computed it; "
                          "`fwrepo storage checksum` fills it)")


def _fits(version: str) -> Any:
    return Field(alias=version, description=f"location is at most {LOCATION_LIMITS[version]} characters, "
                                            f"what OCPP {version} takes")


class LocationFits(Reply):
    """For each OCPP version, whether the location is within what it takes (an open set: versions may be added)."""

    ocpp_1_6: bool = _fits("1.6")
    ocpp_2_0_1: bool = _fits("2.0.1")
    ocpp_2_1: bool = _fits("2.1")


class Grant(Reply):
    id: int
    request_id: int = Field(description="the same number as id: OCPP's requestId")
    firmware_id: str
    charger_id: str
    protocol: Protocol
    location: str = Field(description="what goes into OCPP location: at most 255 characters, or 512 where "
                                      "FWREPO_PUBLIC_URL is over 199 characters (HTTPS only)")
    location_fits: LocationFits = Field(description="which OCPP versions' location limits it is within")
    created_at: Moment
    retrieve_date: Moment
    install_date: Moment | None
    expires_at: Moment
    retries: int
    retry_interval: int
    max_downloads: int | None
    downloads_completed: int
    revoked_at: Moment | None
    revoke_reason: str | None
    bind: Binding | None
    charger_serial: str | None
    ocpp: OcppRequests


class DownloadRecord(Reply):
    """One download of a grant: a transfer, or a refusal with its reason."""

    charger_id: str | None = Field(description="null when the token was refused before its grant was read (expired)")
    client_address: str = Field(description="the address the request came from, as fwrepo saw it")
    protocol: str = Field(description="https or ftps")
    range_start: int | None = Field(description="the first byte asked for (Range, FTP REST); null: from the start")
    range_end: int | None = Field(description="the last byte asked for; null: to the end")
    bytes_sent: int
    completed: bool = Field(description="the image's last byte was sent")
    refusal: Literal[tuple(Refusal)] | None = Field(  # type: ignore[valid-type]
        description="why the download was refused (an open set: new reasons may appear); null for a transfer")
    started_at: Moment
    duration_ms: int


class GrantWithDownloads(Grant):
    downloads: list[DownloadRecord]


class GrantBatch(Reply):
    firmware_id: str
    count: int
    grants: list[Grant]
