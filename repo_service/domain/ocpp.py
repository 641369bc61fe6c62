"""The OCPP requests a CSMS sends for a grant, ready as JSON: what fwrepo knows of OCPP's UpdateFirmware."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from repo_service.domain.clock import rfc3339

if TYPE_CHECKING:
    from repo_service.domain.catalog import FirmwareRecord
    from repo_service.domain.grants import GrantRecord


def update_firmware_requests(grant: GrantRecord, firmware: FirmwareRecord) -> dict[str, Any]:
    """OCPP 1.6 UpdateFirmware, 1.6 security extension SignedUpdateFirmware, and 2.0.1 UpdateFirmware."""
    signed_firmware: dict[str, Any] = {
        "location": grant.location,
        "retrieveDateTime": rfc3339(grant.retrieve_date),
        "signingCertificate": firmware.signing_certificate,
        "signature": firmware.signature,
    }
    if grant.install_date is not None:
        signed_firmware["installDateTime"] = rfc3339(grant.install_date)
    retry_plan = {"retries": grant.retries, "retryInterval": grant.retry_interval}
    return {
        "update_firmware": {"location": grant.location, "retrieveDate": rfc3339(grant.retrieve_date), **retry_plan},
        "signed_update_firmware": {"requestId": grant.id, **retry_plan, "firmware": signed_firmware},
        "update_firmware_v201": {"requestId": grant.id, **retry_plan, "firmware": dict(signed_firmware)},
    }
