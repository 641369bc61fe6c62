"""The domain services one process needs, built once from settings and shared by every adapter."""

from __future__ import annotations

from dataclasses import dataclass

from repo_service.db.migrate import upgrade
from repo_service.db.session import Database
from repo_service.domain.catalog import Catalog
from repo_service.domain.clients import Clients
from repo_service.domain.clock import Clock, utc_now
from repo_service.domain.uploads import Uploads
from repo_service.settings import Settings
from repo_service.storage import open_storage


@dataclass(frozen=True)
class Services:
    settings: Settings
    database: Database
    clients: Clients
    catalog: Catalog
    uploads: Uploads


def open_database(settings: Settings, migrate: bool = True) -> Database:
    database = Database(settings.database_url)
    if migrate:
        upgrade(database)
    return database


def build_services(settings: Settings, clock: Clock = utc_now) -> Services:
    database = open_database(settings)
    catalog = Catalog(database, open_storage(settings), clock)
    return Services(
        settings=settings,
        database=database,
        clients=Clients(database, clock),
        catalog=catalog,
        uploads=Uploads(catalog, settings.max_upload_bytes),
    )
