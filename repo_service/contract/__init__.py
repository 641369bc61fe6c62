"""The wire format of fwrepo's HTTP API, as pydantic models: the one place it is defined.

repo_service.http validates request bodies and checks replies with these
models, and builds the OpenAPI description (GET /api/v1/openapi.json) from
them; a typed client parses replies with them. One module per capability.
"""

from repo_service.contract.audit import AuditEvent, AuditPage
from repo_service.contract.base import Body, Reply
from repo_service.contract.campaigns import (
    CampaignCharger, CampaignList, CampaignListItem, CampaignReport, CampaignRequest, DueGrants, FirmwareStats,
    JobSummary, Percentiles, WaveReport, Window,
)
from repo_service.contract.firmware import (
    Build, Firmware, FirmwarePage, Manifest, ManifestDocument, UpdateOffer, UploadForm, YankRequest,
)
from repo_service.contract.grants import (
    DownloadRecord, Grant, GrantBatch, GrantBatchRequest, GrantRequest, GrantWithDownloads, OcppRequests,
    SignedFirmware, SignedUpdateFirmware, UpdateFirmware,
)
from repo_service.contract.jobs import (
    EventRecorded, EventsRecorded, GrantStatusEvent, Job, JobEvent, StatusEvent, StatusEvents, Timeline,
)
from repo_service.contract.keys import Signer, SignerList, SignerRequest, SigningKey, SigningKeyList
from repo_service.contract.problem import PROBLEM_MEDIA_TYPE, Problem
from repo_service.contract.service import Health, Readiness
from repo_service.contract.tenants import Tenant, TenantList, TenantRequest
from repo_service.contract.webhooks import (
    WEBHOOK_EVENTS, Delivery, DeliveryAttempt, DeliveryList, Webhook, WebhookList, WebhookRequest,
)

__all__ = [
    "AuditEvent", "AuditPage", "Body", "Build", "CampaignCharger", "CampaignList", "CampaignListItem",
    "CampaignReport", "CampaignRequest", "Delivery", "DeliveryAttempt", "DeliveryList", "DownloadRecord",
    "DueGrants", "EventRecorded", "EventsRecorded", "Firmware", "FirmwarePage", "FirmwareStats", "Grant",
    "GrantBatch", "GrantBatchRequest", "GrantRequest", "GrantStatusEvent", "GrantWithDownloads", "Health", "Job",
    "JobEvent", "JobSummary", "Manifest", "ManifestDocument", "OcppRequests", "PROBLEM_MEDIA_TYPE", "Percentiles",
    "Problem", "Readiness", "Reply", "SignedFirmware", "SignedUpdateFirmware", "Signer", "SignerList",
    "SignerRequest", "SigningKey", "SigningKeyList", "StatusEvent", "StatusEvents", "Tenant", "TenantList",
    "TenantRequest", "Timeline", "UpdateFirmware",
    "UpdateOffer", "UploadForm", "WEBHOOK_EVENTS", "WaveReport", "Webhook", "WebhookList", "WebhookRequest",
    "Window", "YankRequest",
]
