"""The domain services one process needs, built once from settings and shared by every adapter."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import timedelta

from repo_service.csms.citrineos import CitrineOS
from repo_service.db.migrate import upgrade
from repo_service.db.session import Database
from repo_service.domain.audit import Audit
from repo_service.domain.audit_checkpoints import CheckpointWriter, open_checkpoint_key
from repo_service.domain.campaigns import Campaigns
from repo_service.domain.catalog import Catalog
from repo_service.domain.charger_certificates import ChargerCertificates
from repo_service.domain.clients import Clients
from repo_service.domain.clock import Clock, utc_now
from repo_service.domain.dispatch import Dispatcher
from repo_service.domain.downloads import Downloads
from repo_service.domain.ftp_logins import FtpsEndpoint
from repo_service.domain.grants import Grants
from repo_service.domain.keys import SigningKeys, open_signing_keys
from repo_service.domain.owner_files import read_or_create_secret
from repo_service.domain.quotas import Quotas
from repo_service.domain.revocations import Revocations
from repo_service.domain.sealed import Sealer
from repo_service.domain.sharing import Shares
from repo_service.domain.signers import Signers
from repo_service.domain.status_events import StatusEvents
from repo_service.domain.tenants import Tenants
from repo_service.domain.tokens import TokenSigner
from repo_service.domain.update_jobs import UpdateJobs
from repo_service.domain.users import Users
from repo_service.domain.uploads import Uploads
from repo_service.domain.webhooks import Outbox, Webhooks
from repo_service.metrics import Metrics
from repo_service.settings import Settings
from repo_service.storage import open_storage


@dataclass(frozen=True)
class Services:
    settings: Settings
    database: Database
    audit: Audit
    tenants: Tenants
    clients: Clients
    users: Users
    signing_keys: SigningKeys
    # True when the keys are encrypted with the generated development passphrase.
    development_passphrase: bool
    signers: Signers
    catalog: Catalog
    uploads: Uploads
    grants: Grants
    downloads: Downloads
    jobs: UpdateJobs
    campaigns: Campaigns
    status_events: StatusEvents
    metrics: Metrics
    audit_checkpoints: CheckpointWriter
    webhooks: Webhooks
    # Campaigns fwrepo carries out itself, through the CSMS each names (none unless one is configured).
    dispatchers: tuple[Dispatcher, ...] = ()

    @contextmanager
    def running(self) -> Iterator[None]:
        """What a serving process does in the background: write download records, tick campaigns, send
        webhooks, dispatch through CSMSs, and sign checkpoints of the audit chain (outermost, so the last one
        covers the download records flushed last)."""
        with (self.audit_checkpoints.writing(), self.downloads.recording(), self.campaigns.ticking(),
              self.webhooks.sending(), ExitStack() as dispatching):
            for dispatcher in self.dispatchers:
                dispatching.enter_context(dispatcher.running())
            yield


def open_database(settings: Settings, migrate: bool = True) -> Database:
    database = Database(settings.database_url)
    if migrate:
        upgrade(database)
    return database


def open_keys(settings: Settings, database: Database, clock: Clock = utc_now) -> tuple[SigningKeys, bool]:
    return open_signing_keys(
        database, Audit(database, clock), settings.signing_keys_dir, settings.key_passphrase,
        settings.signing_algorithm, clock,
    )


def webhook_outbox(settings: Settings, clock: Clock = utc_now) -> Outbox:
    return Outbox(Sealer(token_secret(settings), "webhooks"), clock)


def open_shares(settings: Settings, clock: Clock = utc_now) -> Shares:
    """The tenants' shares, for the command line (a share ended cancels campaigns: their webhooks hear it)."""
    database = open_database(settings)
    return Shares(database, Audit(database, clock), Revocations(clock), webhook_outbox(settings, clock), clock)


def build_services(settings: Settings, clock: Clock = utc_now) -> Services:
    database = open_database(settings)
    signing_keys, development_passphrase = open_keys(settings, database, clock)
    audit = signing_keys.audit
    revocations = Revocations(clock)
    signers = Signers(database, audit, clock)
    catalog = Catalog(database, open_storage(settings), signing_keys, revocations, clock)
    tokens = TokenSigner(token_secret(settings))
    certificates = (ChargerCertificates(settings.charger_ca, settings.charger_crl, settings.charger_ocsp, clock)
                    if settings.charger_ca is not None else None)
    quotas = Quotas(database, audit, clock)
    grants = Grants(database, catalog, tokens, revocations, audit, quotas, settings.public_url,
                    timedelta(seconds=settings.grant_max_lifetime), clock, ftps_endpoint(settings),
                    certificate_binding=certificates is not None)
    downloads = Downloads(database, catalog, tokens, revocations, audit, clock, certificates)
    jobs = UpdateJobs(database, catalog, downloads, audit, timedelta(seconds=settings.job_timeout),
                      timedelta(seconds=settings.retry_grace), clock)
    outbox = webhook_outbox(settings, clock)
    connectors = [CitrineOS(settings.citrineos_url, settings.citrineos_tenant, settings.citrineos_amqp_url,
                            settings.citrineos_amqp_exchange, settings.citrineos_queue, settings.citrineos_timeout)
                  ] if settings.citrineos_url else []
    campaigns = Campaigns(database, grants, jobs, outbox, clock)
    status_events = StatusEvents(jobs, campaigns)
    dispatchers = tuple(Dispatcher(database, campaigns, status_events, connector,
                                   Sealer(token_secret(settings), "dispatch"), retry_base=settings.citrineos_retry_base,
                                   connect_tries=settings.citrineos_connect_tries, timeout=settings.citrineos_timeout,
                                   clock=clock) for connector in connectors)
    campaigns.dispatchers.update({dispatcher.connector.name: dispatcher.wake for dispatcher in dispatchers})
    metrics = Metrics(quotas.usage)
    quotas.observers.append(metrics)
    grants.observers.append(metrics)
    downloads.observers.append(metrics)
    campaigns.observers.append(metrics)
    return Services(
        settings=settings,
        database=database,
        audit=audit,
        tenants=Tenants(database, audit, clock),
        clients=Clients(database, audit, clock),
        users=Users(database, audit, timedelta(seconds=settings.console_session_lifetime), clock),
        signing_keys=signing_keys,
        development_passphrase=development_passphrase,
        signers=signers,
        catalog=catalog,
        uploads=Uploads(catalog, signers, quotas, settings.max_upload_bytes, settings.require_uploader_signature),
        grants=grants,
        downloads=downloads,
        jobs=jobs,
        campaigns=campaigns,
        status_events=status_events,
        metrics=metrics,
        audit_checkpoints=CheckpointWriter(database, open_checkpoint_key(settings.audit_key_path),
                                           settings.audit_checkpoint_log_path, settings.audit_checkpoint_interval,
                                           clock),
        webhooks=Webhooks(database, audit, outbox, push_due=campaigns.push_due, timeout=settings.webhook_timeout,
                          max_attempts=settings.webhook_max_attempts, retry_base=settings.webhook_retry_base,
                          interval=settings.webhook_interval, allow_http=settings.webhook_allow_http,
                          allow_private=settings.webhook_allow_private, receiver_ca=settings.webhook_ca,
                          clock=clock),
        dispatchers=dispatchers,
    )


def ftps_endpoint(settings: Settings) -> FtpsEndpoint | None:
    if not settings.ftps:
        return None
    assert settings.ftps_public_host is not None
    return FtpsEndpoint(settings.ftps_public_host, settings.ftps_port, settings.ftps_implicit_port,
                        settings.ftps_location)


def readiness(services: Services) -> dict[str, str]:
    """Each thing a node needs to serve, "ok" or what is wrong with it."""
    checks = {}
    for name, check in (("database", services.database.ping), ("storage", services.catalog.storage.check),
                        ("signing_key", services.signing_keys.check_ready)):
        try:
            check()
            checks[name] = "ok"
        except Exception as error:  # whatever it is, the node is not ready, and the reply says why
            checks[name] = f"{type(error).__name__}: {error}"[:300]
    return checks


def token_secret(settings: Settings) -> bytes:
    """The download-token secret: the operator's (the same on every node), or one made for development."""
    if settings.token_secret:
        return settings.token_secret.encode()
    return read_or_create_secret(settings.data_dir / "token-secret")
