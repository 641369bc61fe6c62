"""The OCPP requests a CSMS sends for a grant, ready as JSON: what fwrepo knows of OCPP's UpdateFirmware and
PublishFirmware, how long a location each OCPP version takes, and the grant as the CSMS gets it with them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from repo_service.domain.clock import rfc3339

if TYPE_CHECKING:
    from repo_service.domain.catalog import FirmwareRecord
    from repo_service.domain.grants import GrantRecord

# The longest location each OCPP version lets a CSMS send. 1.6 UpdateFirmware.req sets none, but its chargers keep
# it in small buffers: 255 is our bar (DESIGN.md). 2.0.1 UpdateFirmware and PublishFirmware: 512 (also 1.6's
# security extension SignedUpdateFirmware). 2.1: 2000.
LOCATION_LIMITS = {"1.6": 255, "2.0.1": 512, "2.1": 2000}


def location_fits(location: str) -> dict[str, bool]:
    """For each OCPP version, whether location is within its limit."""
    return {version: len(location) <= limit for version, limit in LOCATION_LIMITS.items()}


def update_firmware_requests(grant: GrantRecord, firmware: FirmwareRecord) -> dict[str, Any]:
    """OCPP 1.6 UpdateFirmware, 1.6 security extension SignedUpdateFirmware, 2.0.1 UpdateFirmware, and 2.0.1
    PublishFirmware (to a local controller) when the build has an MD5."""
    signed_firmware: dict[str, Any] = {
        "location": grant.location,
        "retrieveDateTime": rfc3339(grant.retrieve_date),
        "signingCertificate": firmware.signing_certificate,
        "signature": firmware.signature,
    }
    if grant.install_date is not None:
        signed_firmware["installDateTime"] = rfc3339(grant.install_date)
    retry_plan = {"retries": grant.retries, "retryInterval": grant.retry_interval}
    requests = {
        "update_firmware": {"location": grant.location, "retrieveDate": rfc3339(grant.retrieve_date), **retry_plan},
        "signed_update_firmware": {"requestId": grant.id, **retry_plan, "firmware": signed_firmware},
        "update_firmware_v201": {"requestId": grant.id, **retry_plan, "firmware": dict(signed_firmware)},
    }
    # PublishFirmwareRequest requires checksum (OCPP 2.0.1 use case L03): a build stored before fwrepo computed MD5s
    # has none to give until `fwrepo storage checksum` read it, and a made-up one would fail the controller's check.
    if firmware.md5 is not None:
        requests["publish_firmware_v201"] = {"location": grant.location, "checksum": firmware.md5,
                                             "requestId": grant.id, **retry_plan}
    return requests


def grant_json(grant: GrantRecord, firmware: FirmwareRecord) -> dict[str, Any]:
    """A grant as the CSMS gets it, in a reply or a webhook: its fields and its OCPP requests."""
    # Written out rather than dataclasses.asdict: a batch makes 10,000 of these,
    # and asdict's deep copies were most of the batch's time.
    return {
        "id": grant.id,
        "request_id": grant.id,
        "firmware_id": grant.firmware_id,
        "charger_id": grant.charger_id,
        "protocol": grant.protocol,
        "location": grant.location,
        "location_fits": location_fits(grant.location),
        "created_at": rfc3339(grant.created_at),
        "retrieve_date": rfc3339(grant.retrieve_date),
        "install_date": rfc3339(grant.install_date) if grant.install_date else None,
        "expires_at": rfc3339(grant.expires_at),
        "retries": grant.retries,
        "retry_interval": grant.retry_interval,
        "max_downloads": grant.max_downloads,
        "downloads_completed": grant.downloads_completed,
        "revoked_at": rfc3339(grant.revoked_at) if grant.revoked_at else None,
        "revoke_reason": grant.revoke_reason,
        "bind": grant.bind,
        "charger_serial": grant.charger_serial,
        "ocpp": update_firmware_requests(grant, firmware),
    }
