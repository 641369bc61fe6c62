"""Firmware builds: the multipart upload, the catalog's records and pages, yank, manifest, updates."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from repo_service.contract.base import Body, Moment, Reply
from repo_service.contract.keys import SIGNING_ALGORITHM
from repo_service.domain.catalog import MAX_YANK_REASON, Status
from repo_service.domain.uploads import MAX_LIST, MAX_NAME, MAX_RELEASE_NOTES
from repo_service.domain.versions import MAX_LENGTH as MAX_VERSION

FirmwareStatus = Literal[tuple(Status)]  # type: ignore[valid-type]
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME)]


class UploadForm(Body):
    """multipart/form-data fields of an upload; the domain checks them (repo_service.domain.uploads).

    Send the fields before the file part: a bad field then stops the upload before any byte is stored.
    ``models`` and ``hardware_revisions`` may be repeated parts or one comma-separated value.
    """

    file: bytes = Field(json_schema_extra={"format": "binary"}, description="the image, the last part")
    vendor: Name
    models: list[Name] = Field(min_length=1, max_length=MAX_LIST)
    version: str = Field(min_length=1, max_length=MAX_VERSION)
    channel: str = Field("stable", pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")
    hardware_revisions: list[Name] = Field(default_factory=list, max_length=MAX_LIST)
    min_version: str | None = Field(None, max_length=MAX_VERSION)
    release_notes: str = Field("", description=f"at most {MAX_RELEASE_NOTES} bytes of UTF-8")
    sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$",
                               description="when given, the upload is refused unless the bytes have this digest")
    signature: str | None = Field(None, description="the release engineer's detached signature over the image: "
                                                    "base64 DER, checked against the trusted signer keys")


class Build(Reply):
    """What identifies a build and what it may be installed on: shared by its record and its signed manifest."""

    id: str
    vendor: str
    models: list[str]
    hardware_revisions: list[str]
    version: str
    channel: str
    size: int
    sha256: str
    min_version: str | None


class Firmware(Build):
    tenant: str = Field(description="whose build it is: the caller's own tenant, or one that shares its published "
                                    "builds with it (`fwrepo tenants share`), which alone may publish or yank it")
    status: FirmwareStatus
    md5: str | None = Field(None, pattern=r"^[0-9a-f]{32}$",
                            description="the image's MD5 in hex (OCPP 2.0.1 PublishFirmware checksum); null for a "
                                        "build stored before fwrepo computed it, until `fwrepo storage checksum` ran")
    filename: str
    release_notes: str
    uploaded_by: str | None
    created_at: Moment
    published_at: Moment | None
    yanked_at: Moment | None
    yank_reason: str | None
    signed_by: str | None = Field(description="the trusted signer whose signature the upload carried")
    signature: str | None = Field(description="the repository's signature (base64 DER), for SignedUpdateFirmware")
    signing_certificate: str | None = Field(description="PEM certificate of the repository key that signed it")
    signing_key_id: str | None
    signing_algorithm: str | None = Field(description=SIGNING_ALGORITHM)


class FirmwarePage(Reply):
    items: list[Firmware]
    total: int
    limit: int
    offset: int
    next: str | None = Field(description="the URL of the next page, from FWREPO_PUBLIC_URL; null on the last page")


class YankRequest(Body):
    reason: str = Field(min_length=1, max_length=MAX_YANK_REASON,
                        description="why this build must not be installed, for the people who will ask")


class ManifestDocument(Build):
    created: Moment
    signing_key_id: str
    signing_algorithm: str = Field(description=SIGNING_ALGORITHM + "; it signed the manifest too")


class Manifest(Reply):
    """A signed release manifest: check ``signature`` over the canonical JSON of ``manifest``."""

    manifest: ManifestDocument
    signature: str
    signing_certificate: str | None
    image_signature: str | None


class UpdateOffer(Reply):
    update: Firmware | None = Field(description="the build to offer the charger, or null when it is up to date")
