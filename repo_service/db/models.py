"""The tables. Migrations in ``migrations/versions`` must match these (a test checks)."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from sqlalchemy import JSON, BigInteger, Column, ForeignKey, Index, String, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from repo_service.db.tenancy import tenant_column
from repo_service.db.types import UtcDateTime


class Tenant(SQLModel, table=True):
    """A party whose builds, keys, grants, campaigns and records no other tenant's key can see."""

    __tablename__ = "tenant"

    name: str = Field(primary_key=True, max_length=63)
    created_at: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))
    # A disabled tenant's keys, download tokens and FTPS logins stop working; nothing of it is deleted.
    disabled_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime(), nullable=True))
    # Quotas (repo_service.domain.quotas); None: no limit. Bytes of every build it holds, yanked ones included
    # (their bytes stay stored), the number of those builds, and grants it may issue in any 60 seconds.
    max_stored_bytes: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    max_builds: int | None = Field(default=None, nullable=True)
    max_grants_per_minute: int | None = Field(default=None, nullable=True)


class TenantShare(SQLModel, table=True):
    """source shares its published builds with target: target sees them, grants and campaigns them, changes
    nothing of them (repo_service.db.tenancy)."""

    __tablename__ = "tenant_share"

    source: str = Field(sa_column=Column(String(63), ForeignKey("tenant.name"), primary_key=True))
    # Indexed: every firmware read of a receiving tenant looks its sources up by target.
    target: str = Field(sa_column=Column(String(63), ForeignKey("tenant.name"), primary_key=True, index=True))
    created_at: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))


class ApiClient(SQLModel, table=True):
    __tablename__ = "api_client"

    id: str = Field(primary_key=True, max_length=32)
    tenant: str = Field(default=None, sa_column=tenant_column())
    name: str = Field(max_length=100)
    role: str = Field(max_length=16)
    # SHA-256 of the key: keys are 256 random bits, so a fast hash is enough
    # and lets a request be authenticated with one indexed lookup.
    key_hash: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    key_prefix: str = Field(max_length=16)
    created_at: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))
    revoked_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime(), nullable=True))
    # A release key limited to these vendors' builds (a charger maker's engineer in an operator's tenant);
    # null: any vendor.
    vendors: list[str] | None = Field(default=None, sa_column=Column(JSON, nullable=True))


class ConsoleUser(SQLModel, table=True):
    """A person who signs in to the console (repo_service.domain.users); API clients are ApiClient."""

    __tablename__ = "console_user"

    id: str = Field(primary_key=True, max_length=32)
    tenant: str = Field(default=None, sa_column=tenant_column())
    # Unique across the installation, not per tenant: the sign-in form asks for a name, not a tenant.
    name: str = Field(sa_column=Column(String(100), nullable=False, unique=True))
    role: str = Field(max_length=16)
    # scrypt, with its parameters and salt (repo_service.domain.users.hash_password).
    password_hash: str = Field(max_length=200)
    created_at: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))
    disabled_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime(), nullable=True))
    # Failed sign-ins since the last good one: at the limit they lock the account until an admin resets its
    # password (the backoff is SignInFailure's, per name tried).
    failed_logins: int = Field(default=0)
    locked_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime(), nullable=True))
    last_login_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime(), nullable=True))


class SignInFailure(SQLModel, table=True):
    """Failed sign-ins in a row under one name, whether a user has it or not: the backoff is the same for both, so
    it does not tell an attacker which names exist. Keyed by the name's SHA-256 (no name an attacker typed is
    kept in clear); rows older than the longest wait are deleted as new failures come."""

    __tablename__ = "sign_in_failure"

    name_hash: str = Field(primary_key=True, max_length=64)
    failures: int
    last_failed_at: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False, index=True))


class ConsoleSession(SQLModel, table=True):
    """A signed-in browser: the cookie carries a random token, signed; only its SHA-256 is stored here, so that
    logging out, disabling the user or resetting the password ends it on every node at once."""

    __tablename__ = "console_session"

    token_hash: str = Field(primary_key=True, max_length=64)
    tenant: str = Field(default=None, sa_column=tenant_column())
    user_id: str = Field(sa_column=Column(String(32), ForeignKey("console_user.id"), nullable=False, index=True))
    created_at: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))
    expires_at: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))
    ended_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime(), nullable=True))


class Firmware(SQLModel, table=True):
    __tablename__ = "firmware"
    # The states in which a build is seen by the tenants its tenant shares with (tenancy.py): never a draft.
    __shared_statuses__: ClassVar[tuple[str, ...]] = ("published", "yanked")
    __table_args__ = (
        UniqueConstraint("tenant", "vendor", "version_canonical", name="uq_firmware_vendor_version"),
        Index("ix_firmware_vendor_status_channel", "vendor", "status", "channel"),
    )

    id: str = Field(primary_key=True, max_length=32)
    tenant: str = Field(default=None, sa_column=tenant_column())
    vendor: str = Field(max_length=64)
    version: str = Field(max_length=64)
    version_canonical: str = Field(max_length=64)
    channel: str = Field(max_length=32)
    status: str = Field(max_length=16)
    size: int = Field(sa_column=Column(BigInteger, nullable=False))
    sha256: str = Field(max_length=64)
    # Hex MD5 for OCPP 2.0.1 PublishFirmware; null for builds stored before fwrepo computed it (migration 0015)
    # until `fwrepo storage checksum` reads them once.
    md5: str | None = Field(default=None, max_length=32)
    storage_key: str = Field(max_length=200)
    filename: str = Field(max_length=200)
    min_version: str | None = Field(default=None, max_length=64)
    hardware_revisions: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    release_notes: str = Field(default="", sa_column=Column(Text, nullable=False))
    uploaded_by: str | None = Field(default=None, max_length=32)
    created_at: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))
    published_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime(), nullable=True))
    yanked_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime(), nullable=True))
    yank_reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # The registered uploader key whose signature came with the image, if any.
    signed_by: str | None = Field(default=None, max_length=100)


class FirmwareModel(SQLModel, table=True):
    """One charger model a firmware is built for; a table so the catalog can filter by model."""

    __tablename__ = "firmware_model"

    firmware_id: str = Field(
        sa_column=Column(String(32), ForeignKey("firmware.id", ondelete="CASCADE"), primary_key=True)
    )
    model: str = Field(sa_column=Column(String(64), primary_key=True, index=True))


class PendingWrite(SQLModel, table=True):
    """A storage write in progress: if its process dies, `fwrepo storage sweep` removes what it left."""

    __tablename__ = "pending_write"

    storage_key: str = Field(primary_key=True, max_length=200)
    started_at: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))


class SigningKey(SQLModel, table=True):
    """A firmware-signing key a tenant signs with; its private half is a file under the keys directory."""

    __tablename__ = "signing_key"
    # A tenant that shares its builds here also shows the keys that signed them (read only, see tenancy.py):
    # a receiver's catalog and update checks must see a shared build's signature.
    __shared_statuses__: ClassVar[tuple[str, ...]] = ("active", "retired", "revoked")

    id: str = Field(primary_key=True, max_length=32)
    # Whose builds it signs: each tenant's chargers trust its own root.
    tenant: str = Field(default=None, sa_column=tenant_column())
    algorithm: str = Field(max_length=16)
    # active: signs new publications (one at a time); retired: its signatures stay valid;
    # revoked: its signatures no longer count.
    status: str = Field(max_length=16)
    origin: str = Field(max_length=16)
    certificate_pem: str = Field(sa_column=Column(Text, nullable=False))
    chain_pem: str = Field(sa_column=Column(Text, nullable=False))
    fingerprint: str = Field(max_length=64)
    not_before: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))
    not_after: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))
    created_at: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))
    revoked_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime(), nullable=True))


class FirmwareSignature(SQLModel, table=True):
    """The repository's signature over one firmware image, by one signing key."""

    __tablename__ = "firmware_signature"

    id: int | None = Field(default=None, primary_key=True)
    firmware_id: str = Field(
        sa_column=Column(String(32), ForeignKey("firmware.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    key_id: str = Field(sa_column=Column(String(32), ForeignKey("signing_key.id"), nullable=False))
    signature: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))


class Signer(SQLModel, table=True):
    """A release engineer's public key: uploads signed with it are known to be theirs."""

    __tablename__ = "signer"
    __table_args__ = (UniqueConstraint("tenant", "name", name="uq_signer_tenant_name"),)

    id: str = Field(primary_key=True, max_length=32)
    tenant: str = Field(default=None, sa_column=tenant_column())
    name: str = Field(max_length=100)
    public_key_pem: str = Field(sa_column=Column(Text, nullable=False))
    fingerprint: str = Field(max_length=64)
    created_at: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))
    removed_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime(), nullable=True))


class Grant(SQLModel, table=True):
    """One charger's right to fetch one firmware over one protocol until a time.

    Its integer id is also the OCPP requestId: unique per grant, stable, and
    what status notifications will be matched by.
    """

    __tablename__ = "grant"
    # The grants a tenant issued in the last minute are counted on every issue (its grants-per-minute quota).
    __table_args__ = (Index("ix_grant_tenant_created_at", "tenant", "created_at"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant: str = Field(default=None, sa_column=tenant_column())
    firmware_id: str = Field(sa_column=Column(String(32), ForeignKey("firmware.id"), nullable=False, index=True))
    charger_id: str = Field(sa_column=Column(String(64), nullable=False, index=True))
    protocol: str = Field(max_length=8)
    created_at: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))
    retrieve_date: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))
    install_date: datetime | None = Field(default=None, sa_column=Column(UtcDateTime(), nullable=True))
    expires_at: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))
    retries: int
    retry_interval: int
    max_downloads: int | None = Field(default=None)
    downloads_completed: int = Field(default=0)
    # Bytes taken for transfers of a grant with max_downloads, before their first byte (what was not sent
    # is given back when they end): its budget holds across parallel requests, nodes and crashes.
    bytes_reserved: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, server_default="0"))
    created_by: str | None = Field(default=None, max_length=32)
    revoked_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime(), nullable=True))
    revoke_reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # FTPS grants: SHA-256 of the one-time user name and password, never the values themselves.
    login_hash: str | None = Field(default=None, sa_column=Column(String(64), nullable=True, unique=True))
    password_hash: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    # "client_certificate": a download needs a TLS client certificate from FWREPO_CHARGER_CA naming this
    # charger, by charger_serial when the CSMS gave one (OCPP puts the serial number in the CN), else its id.
    bind: str | None = Field(default=None, max_length=24)
    charger_serial: str | None = Field(default=None, max_length=64)


class DownloadRecord(SQLModel, table=True):
    """One download attempt or refusal, written in batches (never one write per request)."""

    __tablename__ = "download_record"
    # FTPS bans count an address's recent wrong logins across every node.
    __table_args__ = (Index("ix_download_record_address", "client_address", "started_at"),)

    id: int | None = Field(default=None, primary_key=True)
    grant_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True, index=True))
    charger_id: str | None = Field(default=None, max_length=64)
    client_address: str = Field(max_length=64)
    protocol: str = Field(max_length=8)
    range_start: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    range_end: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    bytes_sent: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    completed: bool = Field(default=False)
    # Empty for a served attempt; otherwise why it was refused (forged, expired, revoked, yanked, used_up).
    refusal: str | None = Field(default=None, max_length=16)
    started_at: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))
    duration_ms: int = Field(default=0)


class GrantEvent(SQLModel, table=True):
    """A status the charger reported for a grant (OCPP FirmwareStatusNotification), or its boot."""

    __tablename__ = "grant_event"
    # The same report twice (a CSMS retrying its forward) is one event.
    __table_args__ = (UniqueConstraint("grant_id", "status", "timestamp", name="uq_grant_event"),)

    id: int | None = Field(default=None, primary_key=True)
    grant_id: int = Field(sa_column=Column(ForeignKey("grant.id"), nullable=False, index=True))
    # InvalidFirmwareSigningCertificate, the longest word an event may carry, is 33 characters.
    status: str = Field(max_length=40)
    timestamp: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))
    info: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    firmware_version: str | None = Field(default=None, max_length=50)
    received_at: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))
    # OCPP's statusInfo, and the message when it is not the charger's own firmware story (a local controller's
    # PublishFirmwareStatusNotification); the same status at the same instant is still one event.
    reason_code: str | None = Field(default=None, max_length=20)
    additional_info: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    notification: str | None = Field(default=None, max_length=40)


class Campaign(SQLModel, table=True):
    """A staged rollout of one firmware to many chargers, wave by wave."""

    __tablename__ = "campaign"

    id: str = Field(sa_column=Column(String(32), primary_key=True))
    tenant: str = Field(default=None, sa_column=tenant_column())
    firmware_id: str = Field(sa_column=Column(String(32), ForeignKey("firmware.id"), nullable=False, index=True))
    protocol: str = Field(max_length=8)
    ftps_mode: str | None = Field(default=None, max_length=8)
    retries: int
    retry_interval: int
    # Cumulative number of chargers offered the update by the end of each wave, and each wave's failure threshold.
    wave_ends: list[int] = Field(sa_column=Column(JSON, nullable=False))
    thresholds: list[float] = Field(sa_column=Column(JSON, nullable=False))
    window_start: str | None = Field(default=None, max_length=5)
    window_end: str | None = Field(default=None, max_length=5)
    bind: str | None = Field(default=None, max_length=24)
    # Who sends each charger its UpdateFirmware: "csms" polls for due grants; "citrineos" is fwrepo itself.
    dispatch: str = Field(default="csms", sa_column=Column(String(16), nullable=False, server_default="csms"))
    # running, paused, halted, cancelled, completed; current_wave counts from 0.
    status: str = Field(max_length=16)
    status_reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    current_wave: int = 0
    created_at: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))
    created_by: str | None = Field(default=None, max_length=32)


class CampaignCharger(SQLModel, table=True):
    """One charger of a campaign: its wave and grant, or why it was skipped."""

    __tablename__ = "campaign_charger"
    __table_args__ = (UniqueConstraint("campaign_id", "charger_id", name="uq_campaign_charger"),
                      Index("ix_campaign_charger_wave", "campaign_id", "wave", "final"),
                      Index("ix_campaign_charger_due", "final", "due_at"))

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: str = Field(sa_column=Column(String(32), ForeignKey("campaign.id"), nullable=False, index=True))
    position: int
    charger_id: str = Field(max_length=64)
    current_version: str = Field(max_length=50)
    model: str | None = Field(default=None, max_length=50)
    hardware_revision: str | None = Field(default=None, max_length=50)
    time_zone: str = Field(max_length=64)
    # The name its client certificate carries, for a campaign whose grants are bound to one.
    serial: str | None = Field(default=None, max_length=64)
    # "1.6" or "2.0.1": which UpdateFirmware fwrepo sends it when the campaign is dispatched by fwrepo.
    ocpp_version: str | None = Field(default=None, max_length=8)
    wave: int | None = Field(default=None)
    skip_reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    grant_id: int | None = Field(default=None, sa_column=Column(ForeignKey("grant.id"), nullable=True, index=True))
    delivered_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime(), nullable=True))
    # The job as last derived (when the charger last reported, or its deadline passed): waves are
    # judged and reports made from these, not by replaying every event of 100,000 chargers each time.
    state: str | None = Field(default=None, max_length=24)
    final: bool = Field(default=False)
    # When the clock alone changes the job if nothing more is heard (see Job.due_at): the tick looks here.
    due_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime(), nullable=True))
    granted_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime(), nullable=True))
    first_byte_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime(), nullable=True))
    last_byte_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime(), nullable=True))
    booted_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime(), nullable=True))
    bytes_served: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, server_default="0"))


class Lease(SQLModel, table=True):
    """Periodic work that exactly one node does per round: whoever moves `until` forward holds it."""

    __tablename__ = "lease"

    name: str = Field(primary_key=True, max_length=32)
    holder: str = Field(max_length=64)
    until: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))


class AuditEvent(SQLModel, table=True):
    """One security-relevant act, hash-chained to the one before it: editing, removing or reordering shows."""

    __tablename__ = "audit_event"

    # Each tenant's trail is a chain of its own, numbered from 1.
    tenant: str = Field(default=None, sa_column=tenant_column(primary_key=True))
    seq: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    at: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False, index=True))
    actor: str = Field(max_length=80, index=True)
    action: str = Field(max_length=32, index=True)
    subject: str = Field(max_length=128, index=True)
    detail: str = Field(sa_column=Column(Text, nullable=False))
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)


class AuditCheckpoint(SQLModel, table=True):
    """The audit chain's head (row seq had this hash at this time), signed with a key the database never holds.

    One copy of the checkpoint log every node writes: deleting these rows hides nothing while the log
    file survives, and a row someone made up fails its signature.
    """

    __tablename__ = "audit_checkpoint"

    id: int | None = Field(default=None, primary_key=True)
    # Whose chain: each tenant's trail has checkpoints of its own.
    tenant: str = Field(default=None, sa_column=tenant_column())
    seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    hash: str = Field(max_length=64)
    at: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False, index=True))
    reason: str = Field(max_length=16)
    node: str = Field(max_length=64)
    key_id: str = Field(max_length=16)
    signature: str = Field(max_length=128)


class Webhook(SQLModel, table=True):
    """An endpoint a CSMS registered: fwrepo POSTs the events it names there, signed with its secret."""

    __tablename__ = "webhook"

    id: str = Field(sa_column=Column(String(32), primary_key=True))
    tenant: str = Field(default=None, sa_column=tenant_column())
    url: str = Field(sa_column=Column(Text, nullable=False))
    events: list[str] = Field(sa_column=Column(JSON, nullable=False))
    # The secret sealed (AES-GCM) with a key derived from FWREPO_TOKEN_SECRET: usable to sign on every node,
    # useless to whoever reads the database alone. Never sent back.
    secret_sealed: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))
    created_by: str | None = Field(default=None, max_length=32)
    # Deleted endpoints keep their delivery log; nothing more is sent to them.
    deleted_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime(), nullable=True))


class WebhookDelivery(SQLModel, table=True):
    """One event for one endpoint: the outbox row its domain transaction wrote, until delivered or failed."""

    __tablename__ = "webhook_delivery"
    # The same event for the same endpoint is one delivery, however many nodes or rounds decide it.
    __table_args__ = (UniqueConstraint("webhook_id", "event_key", name="uq_webhook_delivery_event"),
                      Index("ix_webhook_delivery_ready", "status", "next_attempt_at"))

    id: int | None = Field(default=None, primary_key=True)
    webhook_id: str = Field(sa_column=Column(String(32), ForeignKey("webhook.id"), nullable=False, index=True))
    event: str = Field(max_length=32)
    event_key: str = Field(max_length=128)
    # The body sealed like the webhook's secret: due grants carry download locations and FTPS passwords.
    body_sealed: str = Field(sa_column=Column(Text, nullable=False))
    # pending, delivered, failed (out of attempts) or cancelled (its endpoint was deleted).
    status: str = Field(max_length=16)
    attempts: int = Field(default=0)
    created_at: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))
    next_attempt_at: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))
    delivered_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime(), nullable=True))
    # A node sending it holds it until then, under its token: no other node sends it meanwhile.
    claimed_until: datetime | None = Field(default=None, sa_column=Column(UtcDateTime(), nullable=True))
    claim_token: str | None = Field(default=None, max_length=32)


class WebhookAttempt(SQLModel, table=True):
    """One try at sending a delivery: what the receiver answered, or why there was no answer."""

    __tablename__ = "webhook_attempt"

    id: int | None = Field(default=None, primary_key=True)
    delivery_id: int = Field(sa_column=Column(ForeignKey("webhook_delivery.id"), nullable=False, index=True))
    at: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))
    status_code: int | None = Field(default=None)
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    duration_ms: int = Field(default=0)


class Dispatch(SQLModel, table=True):
    """One UpdateFirmware fwrepo sends through a CSMS for a grant: the outbox row that is claimed, sent,
    retried while the CSMS is down or the charger away, and matched to what the CSMS reports back."""

    __tablename__ = "dispatch"
    __table_args__ = (Index("ix_dispatch_ready", "status", "next_attempt_at"),
                      Index("ix_dispatch_charger", "charger_id", "status"))

    grant_id: int = Field(sa_column=Column(ForeignKey("grant.id"), primary_key=True))
    campaign_id: str = Field(sa_column=Column(String(32), ForeignKey("campaign.id"), nullable=False, index=True))
    charger_id: str = Field(max_length=64)
    csms: str = Field(max_length=16)
    ocpp_version: str = Field(max_length=8)
    # pending, sent, refused, not_connected (see domain/dispatch.py).
    status: str = Field(max_length=16)
    # Sends the CSMS could not make: down, or an answer that may or may not have gone out.
    attempts: int = 0
    # Sends the CSMS made but found no connection to the charger for.
    misses: int = 0
    next_attempt_at: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))
    claim_token: str | None = Field(default=None, max_length=32)
    claimed_until: datetime | None = Field(default=None, sa_column=Column(UtcDateTime(), nullable=True))
    # The OCPP request, sealed: an FTPS location carries a password.
    body_sealed: str = Field(sa_column=Column(Text, nullable=False))
    # SHA-256 of the location: how the request is recognised when the CSMS reports it went out.
    location_digest: str = Field(max_length=64)
    # The OCPP message id the CSMS gave the request: how the charger's answer to it is recognised.
    correlation_id: str | None = Field(default=None, sa_column=Column(String(64), nullable=True, index=True))
    created_at: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))
    sent_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime(), nullable=True))
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
