"""The server runtime: `fwrepo serve`, `fwrepo ftps` and `fwrepo db upgrade`."""

from __future__ import annotations

import argparse
import logging
import signal
import ssl
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import make_url

from repo_service import __version__
from repo_service.cli.arguments import DATABASE, EVERY_SETTING, add_settings, settings_from
from repo_service.errors import FwrepoError
from repo_service.settings import Settings

if TYPE_CHECKING:
    from ftps.server import FtpsServers
    from repo_service.services import Services

# Pending writes younger than this may belong to an upload still running on another node.
SWEEP_AGE = timedelta(hours=24)


def register(commands: Any) -> None:
    serve = commands.add_parser("serve", help="run the API and download service (and FTPS)",
                                description="Run the API, the download endpoint and (unless --no-ftps) FTPS.")
    add_settings(serve, EVERY_SETTING)
    serve.set_defaults(handler=_serve)
    ftps = commands.add_parser("ftps", help="run the FTPS server on its own",
                               description="Run only the FTPS server, for a node that serves chargers over FTPS.")
    add_settings(ftps, EVERY_SETTING)
    ftps.set_defaults(handler=_ftps)
    database = commands.add_parser("db", help="database schema")
    upgrade = database.add_commands(dest="db_command", required=True, metavar="COMMAND").add_parser(
        "upgrade", help="apply migrations up to the newest schema")
    add_settings(upgrade, DATABASE)
    upgrade.set_defaults(handler=_db_upgrade)


def announce(settings: Settings, text: str, level: int = logging.INFO) -> None:
    """Start-up news: printed for a person at a terminal, a log line when logs are JSON for machines."""
    if settings.log_format == "json":
        logging.getLogger("fwrepo").log(level, text.strip())
    else:
        print(text, flush=True)


def database_place(settings: Settings) -> str:
    """Where the metadata lives, as an operator looks for it: the SQLite file, or the server without its password."""
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        return f"{url.database} (SQLite)"
    return url.render_as_string(hide_password=True)


def _started_services(settings: Settings) -> Services:
    """What serve and ftps share: logging, services, a signing key, leftovers of a crash swept."""
    from repo_service.domain.audit import Performer
    from repo_service.logs import configure_logging
    from repo_service.services import build_services

    configure_logging(settings)
    storage_place = settings.local_storage_dir if settings.storage == "local" else f"s3://{settings.s3_bucket}"
    announce(settings, f"fwrepo {__version__}: data {settings.data_dir}; database {database_place(settings)}; "
             f"storage {storage_place}")
    services = build_services(settings)
    if services.signing_keys.active() is None:
        if settings.env == "production":
            raise FwrepoError("no active signing key: bring one in with `fwrepo keys import` before serving")
        key = services.signing_keys.init_development(Performer("fwrepo serve (first start)"))
        announce(settings, f"  made development signing key {key.id} under {settings.signing_keys_dir}")
    if services.development_passphrase:
        announce(settings, f"  WARNING: signing keys are encrypted with a generated development passphrase "
                 f"({settings.signing_keys_dir}/dev-passphrase): for development only; set FWREPO_KEY_PASSPHRASE",
                 logging.WARNING)
    swept = services.uploads.sweep(SWEEP_AGE)
    if swept:
        logging.getLogger("fwrepo").info("removed %d interrupted uploads", len(swept))
    return services


def _started_ftps(settings: Settings, services: Services) -> FtpsServers:
    from ftps.server import open_servers

    servers = open_servers(settings, services)
    announce(settings, f"  FTPS listening on {settings.ftps_host}:{settings.ftps_port} (explicit, AUTH TLS) and "
             f"{settings.ftps_host}:{settings.ftps_implicit_port} (implicit); "
             f"locations name host {settings.ftps_public_host}")
    return servers


def _serve(arguments: argparse.Namespace) -> None:
    from repo_service.domain.grants import MAX_LOCATION
    from repo_service.http.app import create_app
    from repo_service.http.server import listen, serve
    from repo_service.tls import tls_files

    settings = settings_from(arguments)
    # Bound before anything else starts: a taken port stops start-up with one line naming FWREPO_PORT.
    listener = listen(settings)
    services = _started_services(settings)
    tls: dict[str, Any] = {}
    if settings.tls:
        files = tls_files(settings, services.signing_keys.passphrase)
        if files.development_ca is not None:
            announce(settings, f"  development TLS certificate; verify it with: curl --cacert {files.development_ca}")
        tls = {"ssl_certfile": str(files.certificate), "ssl_keyfile": str(files.key),
               "ssl_keyfile_password": files.key_password}
        if settings.charger_ca is not None:  # asked of every client, required only by bound grants
            tls |= {"ssl_ca_certs": str(settings.charger_ca), "ssl_cert_reqs": ssl.CERT_OPTIONAL}
    if services.grants.location_limit > MAX_LOCATION:
        announce(settings, f"  download locations are up to {services.grants.location_limit} characters "
                 f"(FWREPO_PUBLIC_URL is {len(settings.public_url)}): over OCPP 1.6's {MAX_LOCATION}, so only "
                 "2.0.1 and later chargers (or FTPS grants) take them", logging.WARNING)
    if not services.clients.list():
        announce(settings, "  no API clients yet: create one with `fwrepo clients create --name NAME --role admin`")
    if not services.users.list():
        announce(settings, "  no console users yet: create one with `fwrepo users create --name NAME --role admin` "
                 "(it asks for the password)")
    ftps = _started_ftps(settings, services) if settings.ftps else None
    if ftps is not None:
        ftps.start()
    # The grace period runs from the first SIGTERM, for HTTPS and FTPS alike.
    deadline = 0.0

    def stopping() -> None:
        nonlocal deadline
        deadline = deadline or time.monotonic() + settings.shutdown_grace

    def listening() -> None:
        scheme = "https" if settings.tls else "http"
        announce(settings, f"fwrepo listening on {scheme}://{settings.host}:{settings.port} (API and downloads); "
                 f"public URL {settings.public_url}; console {settings.public_url.rstrip('/')}/console/")

    try:
        serve(create_app(services), settings, tls, listener, on_listening=listening, on_exit=stopping)
    finally:
        if ftps is not None:
            ftps.stop(until=deadline)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _ftps(arguments: argparse.Namespace) -> None:
    settings = settings_from(arguments)
    services = _started_services(settings)
    servers = _started_ftps(settings, services)
    # SIGTERM ends the loop like Ctrl-C does, so the last download records are written.
    signal.signal(signal.SIGTERM, _interrupt)
    with services.running():
        try:
            servers.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            servers.stop(until=time.monotonic() + settings.shutdown_grace)


def _db_upgrade(arguments: argparse.Namespace) -> None:
    from repo_service.db.migrate import current_revision
    from repo_service.services import open_database

    settings = settings_from(arguments)
    database = open_database(settings)
    print(f"database {database_place(settings)} at revision {current_revision(database)}")
