"""Tenants and API keys made in the test process, through the same domain calls `fwrepo tenants create` and
`fwrepo clients create` make, on the server's own settings.

A test's setup makes many of them; as CLI subprocesses each cost an interpreter start and its imports (about
a second, several on a loaded machine). The commands themselves are still run for real where they are under
test (tests/test_tenants.py, test_cli.py, test_access.py, ...).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Mapping, Sequence

from repo_service.cli.admin import _first_keys, _operator
from repo_service.db.session import Database
from repo_service.db.tenancy import acting_in
from repo_service.domain.audit import Audit
from repo_service.domain.clients import Clients, Role
from repo_service.domain.quotas import Quota, Quotas, parse_limit
from repo_service.domain.tenants import Tenants
from repo_service.services import open_database, open_keys, open_shares
from repo_service.settings import Settings, load_settings


@contextlib.contextmanager
def _opened(environment: Mapping[str, str]) -> Iterator[tuple[Settings, Database]]:
    """The settings and database a local command on this environment would use; the engine is let go after
    (a test may replace the database file or drop the database)."""
    settings = load_settings(environ=environment)
    database = open_database(settings)
    try:
        yield settings, database
    finally:
        database.engine.dispose()


def create_tenant(environment: Mapping[str, str], name: str) -> None:
    """What `fwrepo tenants create NAME` does: the tenant, and in development its signing keys."""
    with _opened(environment) as (settings, database), contextlib.redirect_stdout(io.StringIO()):
        Tenants(database, Audit(database)).create(name, _operator())
        _first_keys(settings, database, name)


def create_key(environment: Mapping[str, str], name: str, role: str, tenant: str | None = None,
               vendors: Sequence[str] = ()) -> str:
    """What `fwrepo clients create --name NAME --role ROLE [--tenant T] [--vendor V ...]` prints: the key."""
    with _opened(environment) as (_, database):
        _, key = Clients(database, Audit(database)).create(name, Role(role), _operator(), tenant or "default",
                                                           vendors)
    return key


def set_quotas(environment: Mapping[str, str], tenant: str, **limits: str) -> None:
    """What `fwrepo tenants quota TENANT --builds 2 ...` sets, limits named by field (builds="2",
    grants_per_minute="none")."""
    parsed = {Quota(field): parse_limit(Quota(field), text, "--" + field.replace("_", "-"))
              for field, text in limits.items()}
    with _opened(environment) as (_, database):
        Quotas(database, Audit(database)).set(Tenants(database, Audit(database)).get(tenant).name, parsed,
                                              _operator())


def share(environment: Mapping[str, str], source: str, *targets: str) -> None:
    """What `fwrepo tenants share SOURCE --with TARGET ...` does."""
    shares = open_shares(load_settings(environ=environment))
    try:
        shares.share(source, list(targets), _operator())
    finally:
        shares.database.engine.dispose()


def active_signing_key(environment: Mapping[str, str], tenant: str = "default") -> str:
    """The id of the key `fwrepo keys list --tenant TENANT` shows as active."""
    with _opened(environment) as (settings, database):
        keys, _ = open_keys(settings, database)
        Tenants(database, keys.audit).get(tenant)
        with acting_in(tenant):
            return next(key.id for key in keys.list() if key.status.value == "active")
