"""Fwrepo: one method per operation of fwrepo's HTTP API (docs/http-api.md), replies as repo_service.contract models."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Self, TypeVar
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel

from repo_service.client.errors import DigestMismatch, FwrepoError, Unreachable
from repo_service.client.transport import Transport
from repo_service.contract import (
    AuditPage, CampaignList, CampaignReport, DueGrants, EventRecorded, EventsRecorded, Firmware, FirmwarePage,
    FirmwareStats, Grant, GrantBatch, GrantWithDownloads, Health, Job, Manifest, Readiness, Signer, SignerList,
    SigningKeyList, Tenant, TenantList, UpdateOffer, Webhook, WebhookList,
)
from repo_service.contract.webhooks import DeliveryList

Model = TypeVar("Model", bound=BaseModel)
# (bytes so far, bytes in all): called as an upload's or a download's bytes go.
Progress = Callable[[int, int], None]
BLOCK = 1024 * 1024
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Uploaded:
    """An upload's outcome: the stored record, and whether it is new (201) or these bytes and metadata were
    already stored (200, nothing changed)."""

    firmware: Firmware
    created: bool


class _CountingFile:
    """The image as httpx's multipart encoder reads it, block by block, telling `progress` how far it got.

    httpx asks the file for its length (fileno) for Content-Length and reads it in blocks: the image is
    never in memory whole.
    """

    def __init__(self, file: BinaryIO, total: int, progress: Progress | None) -> None:
        self.file, self.total, self.progress, self.sent = file, total, progress, 0

    def read(self, size: int = -1) -> bytes:
        block = self.file.read(size)
        self.sent += len(block)
        if block and self.progress is not None:  # the read at the end finds nothing: no news
            self.progress(self.sent, self.total)
        return block

    def __getattr__(self, name: str) -> Any:
        return getattr(self.file, name)


def _sha256_etag(reply: httpx.Response) -> str | None:
    """fwrepo's ETag is the image's SHA-256; storage's (after a redirect) is its own, and says nothing here."""
    etag = reply.headers.get("etag", "").strip('"').lower()
    return etag if not reply.history and _SHA256.fullmatch(etag) else None


def _present(**values: Any) -> dict[str, Any]:
    # An optional field is left out rather than sent as null: fwrepo refuses null like any other wrong type.
    return {name: value for name, value in values.items() if value is not None}


class Fwrepo:
    """A client of one fwrepo server, with one API key.

        with Fwrepo("https://fwrepo.example:8443", api_key, ca_file="ca.pem") as fwrepo:
            build = fwrepo.upload("fw.bin", vendor="ACME", models=["AC22"], version="1.4.0").firmware

    Idempotent calls are retried on connection errors and 503 (see transport); every refusal is a
    FwrepoError subclass (see errors).
    """

    def __init__(self, url: str, api_key: str | None = None, *, ca_file: str | Path | None = None,
                 client_certificate: str | Path | tuple[str | Path, str | Path] | None = None,
                 timeout: float = 60, retries: int = 4, backoff: float = 0.5,
                 sleep: Callable[[float], None] | None = None) -> None:
        options: dict[str, Any] = {"sleep": sleep} if sleep is not None else {}
        self.transport = Transport(url, api_key, ca_file=ca_file, client_certificate=client_certificate,
                                   timeout=timeout, retries=retries, backoff=backoff, **options)

    @property
    def url(self) -> str:
        return self.transport.url

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def _call(self, model: type[Model], method: str, path: str, **kwargs: Any) -> Model:
        return model.model_validate_json(self.transport.request(method, path, **kwargs).content)

    # -- service ---------------------------------------------------------------------------------

    def health(self) -> Health:
        return self._call(Health, "GET", "/healthz")

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI 3.1 description of this server's API (docs/openapi.json is the committed copy)."""
        return self.transport.request("GET", "/api/v1/openapi.json").json()

    def readiness(self) -> Readiness:
        """Ready or not (503 is an answer here, not an error, and is not retried)."""
        return self._call(Readiness, "GET", "/readyz", idempotent=False, accept=(503,))

    # -- firmware --------------------------------------------------------------------------------

    def upload(self, image: str | Path, *, vendor: str, models: Sequence[str], version: str,
               channel: str | None = None, hardware_revisions: Sequence[str] = (), min_version: str | None = None,
               release_notes: str | None = None, sha256: str | None = None, signature: str | None = None,
               progress: Progress | None = None) -> Uploaded:
        """Stream an image with its metadata (the fields go first: a bad one stops the upload before any byte
        is stored). Not retried once the connection is open: a repeat of a stored upload is harmless, but
        a half-sent image costs the server its whole receive."""
        path = Path(image)
        fields = {"vendor": vendor, "models": list(models), "version": version, **_present(
            channel=channel, min_version=min_version, release_notes=release_notes, sha256=sha256,
            signature=signature)}
        if hardware_revisions:
            fields["hardware_revisions"] = list(hardware_revisions)
        total = path.stat().st_size
        with open(path, "rb") as file:
            def rewound() -> dict[str, Any]:
                file.seek(0)
                counted = _CountingFile(file, total, progress)
                return {"data": fields, "files": {"file": (path.name, counted, "application/octet-stream")}}

            reply = self.transport.request("POST", "/api/v1/firmware", prepare=rewound)
        return Uploaded(Firmware.model_validate_json(reply.content), created=reply.status_code == 201)

    def list_firmware(self, *, vendor: str | None = None, model: str | None = None, status: str | None = None,
                      channel: str | None = None, limit: int = 50, offset: int = 0) -> FirmwarePage:
        params = _present(vendor=vendor, model=model, status=status, channel=channel, limit=limit, offset=offset)
        return self._call(FirmwarePage, "GET", "/api/v1/firmware", params=params)

    def firmware(self, firmware_id: str) -> Firmware:
        return self._call(Firmware, "GET", f"/api/v1/firmware/{firmware_id}")

    def publish(self, firmware_id: str) -> Firmware:
        # Publishing a published build changes nothing: safe to send again.
        return self._call(Firmware, "POST", f"/api/v1/firmware/{firmware_id}/publish", idempotent=True)

    def yank(self, firmware_id: str, reason: str) -> Firmware:
        return self._call(Firmware, "POST", f"/api/v1/firmware/{firmware_id}/yank", json={"reason": reason})

    def manifest(self, firmware_id: str) -> Manifest:
        return self._call(Manifest, "GET", f"/api/v1/firmware/{firmware_id}/manifest")

    def firmware_stats(self, firmware_id: str) -> FirmwareStats:
        return self._call(FirmwareStats, "GET", f"/api/v1/firmware/{firmware_id}/stats")

    def check_updates(self, *, vendor: str, model: str, current_version: str, hardware_revision: str | None = None,
                      channel: str | None = None) -> UpdateOffer:
        params = _present(vendor=vendor, model=model, current_version=current_version,
                          hardware_revision=hardware_revision, channel=channel)
        return self._call(UpdateOffer, "GET", "/api/v1/updates", params=params)

    # -- downloads -------------------------------------------------------------------------------

    def download_firmware(self, firmware: Firmware, destination: str | Path,
                          progress: Progress | None = None) -> Path:
        """A build's bytes into a file, checked against the record's size and SHA-256 (see download)."""
        return self.download(f"/api/v1/firmware/{firmware.id}/content", destination, sha256=firmware.sha256,
                             size=firmware.size, progress=progress)

    def download(self, location: str, destination: str | Path, *, sha256: str | None = None,
                 size: int | None = None, progress: Progress | None = None) -> Path:
        """A download (a content path, or a grant's location on this server) into `destination`.

        The bytes go to DESTINATION.part first: a dropped connection, or an earlier run that left one,
        resumes from where it ended (Range, with If-Range on the image's ETag so that other bytes start
        over). The file is renamed to `destination` only once its length and SHA-256 (given, or the
        server's ETag, which is the SHA-256) are right; otherwise it is removed and DigestMismatch raised.
        """
        target = Path(destination)
        partial = target.with_name(target.name + ".part")
        path = self._on_this_server(location)
        expected = sha256.lower() if sha256 else None
        failures = 0
        while True:
            have = partial.stat().st_size if partial.exists() else 0
            headers = {"Range": f"bytes={have}-"} if have else {}
            if have and expected:
                headers["If-Range"] = f'"{expected}"'
            try:
                # fwrepo may send a charger to storage (FWREPO_DOWNLOAD_MODE=redirect); httpx drops the
                # API key when a redirect leaves this server.
                with self.transport.stream("GET", path, headers=headers, follow_redirects=True) as reply:
                    expected = expected or _sha256_etag(reply)
                    size = self._receive(reply, partial, have, size, progress)
                break
            except FwrepoError as error:
                # 416: the partial file is as long as the image or longer; whole, it is checked, else restarted.
                if error.status != 416 or not have:
                    raise
                if size is not None and have == size:
                    break
                partial.unlink()
            except httpx.TransportError as error:
                gained = partial.exists() and partial.stat().st_size > have
                failures = 0 if gained else failures + 1
                if failures > self.transport.retries:
                    raise Unreachable(self.url, error) from error
                self.transport.wait(failures)
        self._verify(partial, size, expected)
        partial.replace(target)
        return target

    def _on_this_server(self, location: str) -> str:
        # The API key goes with every request: a location elsewhere must not receive it.
        parts, server = urlsplit(location), urlsplit(self.url)
        if (parts.scheme or parts.netloc) and (parts.scheme, parts.netloc) != (server.scheme, server.netloc):
            raise ValueError(f"{location[:80]} is not on {self.url}")
        return parts.path + (f"?{parts.query}" if parts.query else "")

    @staticmethod
    def _receive(reply: httpx.Response, partial: Path, have: int, size: int | None,
                 progress: Progress | None) -> int | None:
        """Write the reply's bytes after the `have` already in `partial`; the image's whole size."""
        if reply.status_code == 206:
            total = int(reply.headers["content-range"].rsplit("/", 1)[1])
            start = int(reply.headers["content-range"].split()[1].split("-")[0])
            if start != have:
                partial.unlink()
                raise DigestMismatch(f"asked for the bytes from {have}, the server sent them from {start}")
        else:  # 200: the whole image, the partial file was of other bytes (If-Range) or there was none
            total = int(reply.headers.get("content-length", "0")) or (size or 0)
            start = 0
        if size is not None and total != size:
            raise DigestMismatch(f"the server has {total} bytes, {size} were expected")
        with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as file:
            file.seek(start)
            file.truncate(start)
            written = start
            # Written as they arrive: what came before a drop is kept for the next attempt.
            for block in reply.iter_bytes():
                file.write(block)
                written += len(block)
                if progress is not None:
                    progress(written, total)
            file.flush()
            os.fsync(file.fileno())
        return total

    @staticmethod
    def _verify(partial: Path, size: int | None, sha256: str | None) -> None:
        length = partial.stat().st_size
        digest = hashlib.sha256()
        with open(partial, "rb") as file:
            while block := file.read(BLOCK):
                digest.update(block)
        if (size is not None and length != size) or (sha256 and digest.hexdigest() != sha256):
            partial.unlink()
            raise DigestMismatch(f"received {length} bytes with SHA-256 {digest.hexdigest()}, expected "
                                 f"{size if size is not None else 'any'} bytes with {sha256 or 'any digest'}")

    # -- grants, status events, update jobs ------------------------------------------------------

    def grant(self, firmware_id: str, charger_id: str, **terms: Any) -> Grant:
        """A download location for one charger; terms as fwrepo takes them (protocol, retrieve_date, retries,
        retry_interval, expires_in, max_downloads, bind, ...)."""
        return self._call(Grant, "POST", "/api/v1/grants",
                          json={"firmware_id": firmware_id, "charger_id": charger_id, **terms})

    def grant_batch(self, firmware_id: str, charger_ids: Iterable[str], **terms: Any) -> GrantBatch:
        return self._call(GrantBatch, "POST", "/api/v1/grants/batch",
                          json={"firmware_id": firmware_id, "charger_ids": list(charger_ids), **terms})

    def show_grant(self, grant_id: int) -> GrantWithDownloads:
        return self._call(GrantWithDownloads, "GET", f"/api/v1/grants/{grant_id}")

    def revoke_grant(self, grant_id: int) -> GrantWithDownloads:
        return self._call(GrantWithDownloads, "DELETE", f"/api/v1/grants/{grant_id}")

    def report_event(self, grant_id: int, status: str, timestamp: str, *, info: str | None = None,
                     status_info: Mapping[str, str] | None = None, notification: str | None = None,
                     firmware_version: str | None = None) -> EventRecorded:
        """status_info: {"reason_code", "additional_info"}; notification: "PublishFirmwareStatusNotification" for
        a local controller's status."""
        # fwrepo keeps an event (grant, status, timestamp) once: a repeat is answered as a duplicate.
        return self._call(EventRecorded, "POST", f"/api/v1/grants/{grant_id}/events", idempotent=True,
                          json={"status": status, "timestamp": timestamp,
                                **_present(info=info, status_info=dict(status_info) if status_info else None,
                                           notification=notification, firmware_version=firmware_version)})

    def report_events(self, events: Sequence[Mapping[str, Any]]) -> EventsRecorded:
        """Events of many grants at once (each with grant_id or request_id); kept once each, so retried."""
        return self._call(EventsRecorded, "POST", "/api/v1/events", idempotent=True, json={"events": list(events)})

    def job(self, grant_id: int) -> Job:
        return self._call(Job, "GET", f"/api/v1/grants/{grant_id}/job")

    # -- campaigns -------------------------------------------------------------------------------

    def create_campaign(self, firmware_id: str, chargers: Sequence[Mapping[str, Any]],
                        **options: Any) -> CampaignReport:
        """A staged rollout; options as fwrepo takes them (waves, failure_threshold, window, protocol, ...)."""
        return self._call(CampaignReport, "POST", "/api/v1/campaigns",
                          json={"firmware_id": firmware_id, "chargers": list(chargers), **options})

    def campaigns(self) -> CampaignList:
        return self._call(CampaignList, "GET", "/api/v1/campaigns")

    def campaign(self, campaign_id: str) -> CampaignReport:
        return self._call(CampaignReport, "GET", f"/api/v1/campaigns/{campaign_id}")

    def campaign_jobs_csv(self, campaign_id: str) -> str:
        return self.transport.request("GET", f"/api/v1/campaigns/{campaign_id}/jobs.csv").text

    def due_grants(self, campaign_id: str, limit: int | None = None) -> DueGrants:
        """The grants whose retrieve_date has come, each handed out once: so never retried (a reply lost
        after fwrepo handed them out would lose them), GET though it is."""
        return self._call(DueGrants, "GET", f"/api/v1/campaigns/{campaign_id}/grants", idempotent=False,
                          params=_present(due="now", limit=limit))

    def pause_campaign(self, campaign_id: str) -> CampaignReport:
        return self._call(CampaignReport, "POST", f"/api/v1/campaigns/{campaign_id}/pause")

    def resume_campaign(self, campaign_id: str) -> CampaignReport:
        return self._call(CampaignReport, "POST", f"/api/v1/campaigns/{campaign_id}/resume")

    def cancel_campaign(self, campaign_id: str) -> CampaignReport:
        return self._call(CampaignReport, "POST", f"/api/v1/campaigns/{campaign_id}/cancel")

    # -- webhooks --------------------------------------------------------------------------------

    def create_webhook(self, url: str, events: Sequence[str], secret: str) -> Webhook:
        """Have fwrepo push these events to url, signed with secret (docs/webhooks.md); the secret is not shown back."""
        return self._call(Webhook, "POST", "/api/v1/webhooks", json={"url": url, "events": list(events),
                                                                     "secret": secret})

    def webhooks(self) -> WebhookList:
        return self._call(WebhookList, "GET", "/api/v1/webhooks")

    def webhook(self, webhook_id: str) -> Webhook:
        return self._call(Webhook, "GET", f"/api/v1/webhooks/{webhook_id}")

    def delete_webhook(self, webhook_id: str) -> Webhook:
        return self._call(Webhook, "DELETE", f"/api/v1/webhooks/{webhook_id}")

    def webhook_deliveries(self, webhook_id: str, limit: int | None = None) -> DeliveryList:
        return self._call(DeliveryList, "GET", f"/api/v1/webhooks/{webhook_id}/deliveries",
                          params=_present(limit=limit))

    # -- keys and audit --------------------------------------------------------------------------

    def signing_keys(self) -> SigningKeyList:
        return self._call(SigningKeyList, "GET", "/api/v1/signing-keys")

    def signers(self) -> SignerList:
        return self._call(SignerList, "GET", "/api/v1/signers")

    def add_signer(self, name: str, public_key: str) -> Signer:
        return self._call(Signer, "POST", "/api/v1/signers", json={"name": name, "public_key": public_key})

    def remove_signer(self, signer_id: str) -> None:
        self.transport.request("DELETE", f"/api/v1/signers/{signer_id}")

    # -- tenants (a platform key) ---------------------------------------------------------------

    def tenants(self) -> TenantList:
        return self._call(TenantList, "GET", "/api/v1/tenants")

    def create_tenant(self, name: str) -> Tenant:
        return self._call(Tenant, "POST", "/api/v1/tenants", json={"name": name})

    def disable_tenant(self, name: str) -> Tenant:
        return self._call(Tenant, "POST", f"/api/v1/tenants/{name}/disable")

    def audit(self, *, action: str | None = None, actor: str | None = None, subject: str | None = None,
              since: str | None = None, limit: int = 100, offset: int = 0) -> AuditPage:
        params = _present(action=action, actor=actor, subject=subject, since=since, limit=limit, offset=offset)
        return self._call(AuditPage, "GET", "/api/v1/audit", params=params)
