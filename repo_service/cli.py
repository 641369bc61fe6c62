"""The `fwrepo` command: run the service, manage it locally, and talk to a running one."""

from __future__ import annotations

import argparse
import json
import logging
import os
import getpass
import signal
import socket
import ssl
import sys
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from sqlalchemy.exc import OperationalError

from repo_service import __version__
from repo_service.domain.audit import Performer
from repo_service.errors import FwrepoError, SettingsError
from repo_service.settings import SETTINGS, Settings, load_settings

if TYPE_CHECKING:
    from ftps.server import FtpsServers
    from repo_service.db.session import Database
    from repo_service.services import Services

DEFAULT_URL = "https://127.0.0.1:8443"
# Pending writes younger than this may belong to an upload still running on another node.
SWEEP_AGE = timedelta(hours=24)


def _settings_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("settings (each also read from its FWREPO_* variable)")
    for setting in SETTINGS:
        group.add_argument(setting.flag, dest=f"setting_{setting.field}", metavar=setting.field.upper(),
                           help=f"{setting.help} [{setting.env}]")
    return parser


def _client_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--url", default=os.environ.get("FWREPO_URL", DEFAULT_URL),
                        help=f"fwrepo server [FWREPO_URL, default {DEFAULT_URL}]")
    parser.add_argument("--key", default=os.environ.get("FWREPO_KEY"), help="API key [FWREPO_KEY]")
    development_ca = Path(os.environ.get("FWREPO_DATA_DIR", "var")) / "tls" / "ca.pem"
    default_ca = os.environ.get("FWREPO_CACERT") or (str(development_ca) if development_ca.exists() else None)
    parser.add_argument("--cacert", type=Path, default=default_ca,
                        help=f"CA certificate that the server's TLS certificate chains to [FWREPO_CACERT; default "
                             f"{development_ca} when it exists, else the system's trust store]")
    return parser


def build_parser() -> argparse.ArgumentParser:
    settings, client = _settings_parser(), _client_parser()
    parser = argparse.ArgumentParser(prog="fwrepo", description="Secure firmware repository for EV charging networks.")
    parser.add_argument("--version", action="version", version=f"fwrepo {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser("serve", parents=[settings], help="run the API and download service (and FTPS)")
    commands.add_parser("ftps", parents=[settings], help="run the FTPS server on its own")

    database = commands.add_parser("db", help="database schema")
    database.add_subparsers(dest="db_command", required=True).add_parser(
        "upgrade", parents=[settings], help="apply migrations up to the newest schema"
    )

    clients = commands.add_parser("clients", help="API clients and their keys (local: runs on the data directory)")
    client_commands = clients.add_subparsers(dest="clients_command", required=True)
    create = client_commands.add_parser("create", parents=[settings], help="make a client; prints its key alone")
    create.add_argument("--name", required=True)
    create.add_argument("--role", required=True, choices=["release", "csms", "admin"])
    client_commands.add_parser("list", parents=[settings], help="list clients (never their keys)")
    revoke = client_commands.add_parser("revoke", parents=[settings], help="revoke a client's key")
    revoke.add_argument("client_id")

    storage = commands.add_parser("storage", help="storage housekeeping")
    storage_commands = storage.add_subparsers(dest="storage_command", required=True)
    sweep = storage_commands.add_parser("sweep", parents=[settings], help="delete what interrupted uploads left behind")
    storage_commands.add_parser("check", parents=[settings],
                                help="re-read every stored image: missing, corrupted and extra objects; exit 1 if any")
    sweep.add_argument("--older-than", type=float, default=SWEEP_AGE.total_seconds(), metavar="SECONDS",
                       help="only writes started at least this long ago (default 24 h)")

    keys = commands.add_parser("keys", help="the repository's firmware-signing keys (local)")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    key_commands.add_parser("init", parents=[settings], help="make the development root CA and a signing key")
    key_import = key_commands.add_parser("import", parents=[settings], help="bring in a production signing key")
    key_import.add_argument("--cert", type=Path, help="PEM: the signing certificate and its chain up to the root")
    key_import.add_argument("--key", dest="key_file", type=Path, help="PEM private key of the signing certificate")
    key_import.add_argument("--pkcs12", type=Path, help="a PKCS#12 file with key, certificate and chain instead")
    key_import.add_argument("--passphrase-env", metavar="VARIABLE",
                            help="environment variable holding the key's or PKCS#12 file's passphrase")
    rotate = key_commands.add_parser("rotate", parents=[settings], help="new signing key under the same root")
    rotate.add_argument("--algorithm", choices=["ecdsa-p256", "rsa-3072", "rsa-4096"])
    key_commands.add_parser("resign", parents=[settings], help="sign published firmware with the active key")
    key_revoke = key_commands.add_parser("revoke", parents=[settings], help="stop a key; its signatures stop counting")
    key_revoke.add_argument("key_id")
    key_commands.add_parser("list", parents=[settings], help="keys, their use and expiry")

    signers = commands.add_parser("signers", help="release engineers' public keys for signed uploads (local)")
    signer_commands = signers.add_subparsers(dest="signers_command", required=True)
    signer_add = signer_commands.add_parser("add", parents=[settings], help="trust a release engineer's key")
    signer_add.add_argument("name")
    signer_add.add_argument("--key", dest="key_file", type=Path, required=True, help="PEM public key or certificate")
    signer_commands.add_parser("list", parents=[settings], help="trusted signer keys")
    signer_remove = signer_commands.add_parser("remove", parents=[settings], help="stop trusting a key")
    signer_remove.add_argument("signer")

    verify = commands.add_parser("verify", help="check an image against a signed release manifest (offline)")
    verify.add_argument("image", type=Path)
    verify.add_argument("--manifest", type=Path, required=True, help="the JSON from GET /api/v1/firmware/ID/manifest")
    verify.add_argument("--root", type=Path, help="the firmware-signing root certificate you trust (PEM)")

    upload = commands.add_parser("upload", parents=[client], help="upload a firmware image")
    upload.add_argument("file", type=Path)
    upload.add_argument("--vendor", required=True)
    upload.add_argument("--model", dest="models", action="append", required=True, help="repeat for several models")
    upload.add_argument("--version", dest="firmware_version", required=True)
    upload.add_argument("--hardware-revision", dest="hardware_revisions", action="append", default=[])
    upload.add_argument("--channel")
    upload.add_argument("--min-version")
    upload.add_argument("--release-notes")
    upload.add_argument("--sha256", help="declared digest; the upload is refused if the bytes differ")
    upload.add_argument("--sign-key", type=Path, help="your PEM private key: signs here, never leaves this machine "
                        "(passphrase from FWREPO_SIGN_KEY_PASSPHRASE or a prompt)")

    listing = commands.add_parser("list", parents=[client], help="list firmware in the catalog")
    for name in ("vendor", "model", "status", "channel"):
        listing.add_argument(f"--{name}")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--json", action="store_true", help="print the JSON reply")

    show = commands.add_parser("show", parents=[client], help="show one firmware record")
    show.add_argument("firmware_id")
    publish = commands.add_parser("publish", parents=[client], help="publish an uploaded firmware")
    publish.add_argument("firmware_id")
    yank = commands.add_parser("yank", parents=[client], help="withdraw a firmware")
    yank.add_argument("firmware_id")
    yank.add_argument("--reason", required=True)

    audit = commands.add_parser("audit", help="the audit trail (local)")
    audit.add_subparsers(dest="audit_command", required=True).add_parser(
        "verify", parents=[settings], help="check the hash chain; name the first row edited, removed or reordered")

    campaigns = commands.add_parser("campaigns", help="staged rollouts (remote)")
    campaign_commands = campaigns.add_subparsers(dest="campaigns_command", required=True)
    campaign_commands.add_parser("list", parents=[client], help="campaigns, newest first")
    campaign_show = campaign_commands.add_parser("show", parents=[client], help="a campaign's report")
    campaign_show.add_argument("campaign_id")
    campaign_show.add_argument("--follow", action="store_true", help="redraw a progress bar until the campaign ends")
    campaign_show.add_argument("--json", action="store_true", help="print the JSON reply")
    for action, text in (("pause", "stop handing out grants"), ("resume", "go on after a pause"),
                         ("cancel", "stop for good and revoke every unused grant")):
        campaign_commands.add_parser(action, parents=[client], help=text).add_argument("campaign_id")
    return parser


def _load_settings(arguments: argparse.Namespace) -> Settings:
    flags = {
        setting.field: getattr(arguments, f"setting_{setting.field}")
        for setting in SETTINGS
        if getattr(arguments, f"setting_{setting.field}", None) is not None
    }
    return load_settings(flags=flags)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    try:
        handler = _HANDLERS[arguments.command]
        return handler(arguments) or 0
    except SettingsError as error:
        print(f"fwrepo: bad setting {error}", file=sys.stderr)
        return 2
    except FwrepoError as error:
        print(f"fwrepo: {error}", file=sys.stderr)
        return 1
    except RemoteError as error:
        print(f"fwrepo: {error}", file=sys.stderr)
        return 1
    except OperationalError as error:
        # An unreachable or refusing database is the operator's to fix: one line, not a traceback.
        cause = str(error.orig or error).strip().splitlines()[0]
        print(f"fwrepo: cannot use the database (FWREPO_DATABASE_URL): {cause}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


# -- local commands -----------------------------------------------------------------


def _announce(settings: Settings, text: str, level: int = logging.INFO) -> None:
    """Start-up news: printed for a person at a terminal, a log line when logs are JSON for machines."""
    if settings.log_format == "json":
        logging.getLogger("fwrepo").log(level, text.strip())
    else:
        print(text, flush=True)


def _started_services(settings: Settings) -> Services:
    """What serve and ftps share: logging, services, a signing key, leftovers of a crash swept."""
    from repo_service.logs import configure_logging
    from repo_service.services import build_services

    configure_logging(settings)
    services = build_services(settings)
    if services.signing_keys.active() is None:
        if settings.env == "production":
            raise FwrepoError("no active signing key: bring one in with `fwrepo keys import` before serving")
        key = services.signing_keys.init_development(Performer("fwrepo serve (first start)"))
        _announce(settings, f"  made development signing key {key.id} under {settings.signing_keys_dir}")
    if services.development_passphrase:
        _announce(settings, f"  WARNING: signing keys are encrypted with a generated development passphrase "
                  f"({settings.signing_keys_dir}/dev-passphrase): for development only; set FWREPO_KEY_PASSPHRASE",
                  logging.WARNING)
    swept = services.uploads.sweep(SWEEP_AGE)
    if swept:
        logging.getLogger("fwrepo").info("removed %d interrupted uploads", len(swept))
    return services


def _started_ftps(settings: Settings, services: Services) -> FtpsServers:
    from ftps.server import open_servers

    servers = open_servers(settings, services)
    _announce(settings, f"  FTPS on {settings.ftps_host}:{settings.ftps_port} (explicit, AUTH TLS) and "
              f"{settings.ftps_host}:{settings.ftps_implicit_port} (implicit); "
              f"locations name host {settings.ftps_public_host}")
    return servers


def _serve(arguments: argparse.Namespace) -> None:
    from repo_service.http.app import create_app
    from repo_service.http.server import serve
    from repo_service.tls import tls_files

    settings = _load_settings(arguments)
    services = _started_services(settings)
    storage_place = settings.local_storage_dir if settings.storage == "local" else f"s3://{settings.s3_bucket}"
    scheme = "https" if settings.tls else "http"
    _announce(settings, f"fwrepo {__version__} listening on {scheme}://{settings.host}:{settings.port} "
              "(API and downloads)")
    _announce(settings, f"  public URL {settings.public_url}; data {settings.data_dir}; storage {storage_place}")
    tls: dict[str, Any] = {}
    if settings.tls:
        files = tls_files(settings, services.signing_keys.passphrase)
        if files.development_ca is not None:
            _announce(settings, f"  development TLS certificate; verify it with: curl --cacert {files.development_ca}")
        tls = {"ssl_certfile": str(files.certificate), "ssl_keyfile": str(files.key),
               "ssl_keyfile_password": files.key_password}
    if not services.clients.list():
        _announce(settings, "  no API clients yet: create one with `fwrepo clients create --name NAME --role admin`")
    ftps = _started_ftps(settings, services) if settings.ftps else None
    if ftps is not None:
        ftps.start()
    # The grace period runs from the first SIGTERM, for HTTPS and FTPS alike.
    deadline = 0.0

    def stopping() -> None:
        nonlocal deadline
        deadline = deadline or time.monotonic() + settings.shutdown_grace

    try:
        serve(create_app(services), settings, tls, on_exit=stopping)
    finally:
        if ftps is not None:
            ftps.stop(until=deadline)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _ftps(arguments: argparse.Namespace) -> None:
    settings = _load_settings(arguments)
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


def _db(arguments: argparse.Namespace) -> None:
    from repo_service.db.migrate import current_revision
    from repo_service.services import open_database

    database = open_database(_load_settings(arguments))
    print(f"database at revision {current_revision(database)}")


def _clients(arguments: argparse.Namespace) -> None:
    from repo_service.domain.clients import Clients, Role
    from repo_service.services import open_database

    database = open_database(_load_settings(arguments))
    from repo_service.domain.audit import Audit

    clients = Clients(database, Audit(database))
    if arguments.clients_command == "create":
        record, key = clients.create(arguments.name, Role(arguments.role), _operator())
        # The key alone on stdout, so that `KEY=$(fwrepo clients create ...)` works.
        print(key)
        return
    if arguments.clients_command == "revoke":
        record = clients.revoke(arguments.client_id, _operator())
        print(f"revoked {record.id} ({record.name})")
        return
    rows = [
        [record.id, record.name, record.role.value, record.key_prefix + "…", _when(record.created_at),
         _when(record.revoked_at) if record.revoked_at else "active"]
        for record in clients.list()
    ]
    _print_table(["ID", "NAME", "ROLE", "KEY", "CREATED", "REVOKED"], rows)


def _operator() -> Performer:
    """An operator at this machine, as the audit trail names them."""
    return Performer(f"cli {getpass.getuser()}@{socket.gethostname()}")


def _audit_command(arguments: argparse.Namespace) -> int:
    from repo_service.domain.audit import Audit
    from repo_service.services import open_database

    count, broken = Audit(open_database(_load_settings(arguments))).verify()
    if broken is None:
        print(f"audit chain intact: {count} events")
        return 0
    print(f"audit chain BROKEN at row {broken.seq}: {broken.reason}", file=sys.stderr)
    return 1


def _storage(arguments: argparse.Namespace) -> int | None:
    from repo_service.services import build_services

    services = build_services(_load_settings(arguments))
    if arguments.storage_command == "check":
        from repo_service.domain.scrub import scrub

        findings = 0
        for finding in scrub(services.catalog):
            findings += 1
            print(f"{finding.kind}: {finding.key}: {finding.detail}", flush=True)
        print(f"{findings} problems" if findings else "storage and catalog agree")
        return 1 if findings else None
    swept = services.uploads.sweep(timedelta(seconds=arguments.older_than))
    print(f"removed {len(swept)} interrupted uploads")


def _keys(arguments: argparse.Namespace) -> None:
    from repo_service.services import open_database, open_keys

    settings = _load_settings(arguments)
    database = open_database(settings)
    keys, development = open_keys(settings, database)
    command = arguments.keys_command
    if command == "init":
        if settings.env == "production":
            raise FwrepoError("keys init makes development keys; in production use `fwrepo keys import`")
        key = keys.init_development(_operator())
        print(f"signing key {key.id} ({key.algorithm}) active; root certificate {keys.root_certificate_path}")
    elif command == "import":
        passphrase = None
        if arguments.passphrase_env:
            if arguments.passphrase_env not in os.environ:
                raise FwrepoError(f"--passphrase-env: {arguments.passphrase_env} is not set")
            passphrase = os.environ[arguments.passphrase_env].encode()
        if arguments.pkcs12:
            key = keys.import_pkcs12(_read(arguments.pkcs12), passphrase, _operator())
        elif arguments.cert and arguments.key_file:
            key = keys.import_key(_read(arguments.cert), _read(arguments.key_file), passphrase, _operator())
        else:
            raise FwrepoError("give --cert CHAIN.pem and --key KEY.pem, or --pkcs12 FILE.p12")
        print(f"signing key {key.id} ({key.algorithm}) imported and active; expires {_when(key.not_after)}")
    elif command == "rotate":
        key = keys.rotate(_operator(), arguments.algorithm)
        print(f"signing key {key.id} ({key.algorithm}) active; new publications are signed with it")
    elif command == "resign":
        count = keys.resign(_operator())
        print(f"re-signed {count} published firmware with the active key")
    elif command == "revoke":
        key = keys.revoke(arguments.key_id, _operator())
        print(f"revoked {key.id}: firmware signed only by it is not offered until `fwrepo keys resign`")
    else:
        rows = [[key.id, key.algorithm, key.status.value, key.origin, _when(key.not_after), str(key.signed),
                 key.fingerprint[:16]] for key in keys.list()]
        _print_table(["ID", "ALGORITHM", "STATUS", "ORIGIN", "EXPIRES", "SIGNED", "FINGERPRINT"], rows)
    if development and command != "list":
        print("note: keys are encrypted with the development passphrase; set FWREPO_KEY_PASSPHRASE in production",
              file=sys.stderr)


def _signers(arguments: argparse.Namespace) -> None:
    from repo_service.domain.signers import Signers
    from repo_service.services import open_database

    database = open_database(_load_settings(arguments))
    from repo_service.domain.audit import Audit

    signers = Signers(database, Audit(database))
    if arguments.signers_command == "add":
        signer = signers.add(arguments.name, _read(arguments.key_file), _operator())
        print(f"{signer.id}  {signer.name}  {signer.algorithm}  sha256:{signer.fingerprint}")
    elif arguments.signers_command == "remove":
        signer = signers.remove(arguments.signer, _operator())
        print(f"removed {signer.id}")
    else:
        rows = [[signer.id, signer.name, signer.algorithm, signer.fingerprint[:16], _when(signer.created_at)]
                for signer in signers.list()]
        _print_table(["ID", "NAME", "ALGORITHM", "FINGERPRINT", "ADDED"], rows)


def _verify(arguments: argparse.Namespace) -> int:
    from repo_service.domain.manifests import ManifestError, verify_release

    try:
        document = json.loads(_read(arguments.manifest))
        root = _read(arguments.root) if arguments.root else None
        with open(arguments.image, "rb") as image:
            findings = verify_release(document, image, root)
    except (ManifestError, ValueError, OSError) as error:
        print(f"fwrepo verify: FAILED: {error}", file=sys.stderr)
        return 1
    for finding in findings:
        print(finding)
    return 0


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise FwrepoError(f"{path}: {error.strerror}") from None


# -- remote commands ----------------------------------------------------------------


class RemoteError(Exception):
    """The server refused or could not be reached."""


def _request(arguments: argparse.Namespace, method: str, path: str, **kwargs: Any) -> Any:
    import httpx

    if not arguments.key:
        raise RemoteError("an API key is required: --key KEY or FWREPO_KEY")
    headers = {"Authorization": f"Bearer {arguments.key}"}
    verify: Any = ssl.create_default_context(cafile=str(arguments.cacert) if arguments.cacert else None)
    try:
        with httpx.Client(base_url=arguments.url, headers=headers, timeout=httpx.Timeout(60, write=300),
                          verify=verify) as http:
            reply = http.request(method, path, **kwargs)
    except httpx.HTTPError as error:
        raise RemoteError(f"cannot reach {arguments.url}: {error}") from None
    if reply.status_code >= 400:
        try:
            problem = reply.json()
            message = f"{problem.get('status')} {problem.get('title')}: {problem.get('detail')}"
        except ValueError:
            message = f"{reply.status_code} {reply.text[:200]}"
        raise RemoteError(message)
    return reply.json()


class _ProgressFile:
    """A file that draws a progress bar on stderr as the HTTP client reads it."""

    def __init__(self, file: BinaryIO, total: int) -> None:
        self.file, self.total, self.sent = file, total, 0
        self.started = self.drawn = time.monotonic()
        self.visible = sys.stderr.isatty()

    def read(self, size: int = -1) -> bytes:
        block = self.file.read(size)
        self.sent += len(block)
        now = time.monotonic()
        if self.visible and (now - self.drawn > 0.1 or self.sent == self.total):
            self.drawn = now
            self.draw(now)
        return block

    def draw(self, now: float) -> None:
        fraction = self.sent / self.total if self.total else 1.0
        filled = int(fraction * 30)
        rate = self.sent / max(now - self.started, 1e-6) / 2**20
        sys.stderr.write(
            f"\r[{'#' * filled}{'.' * (30 - filled)}] {fraction:4.0%} "
            f"{self.sent / 2**20:.1f}/{self.total / 2**20:.1f} MiB {rate:.1f} MiB/s"
        )
        sys.stderr.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.file, name)


def _upload(arguments: argparse.Namespace) -> None:
    path: Path = arguments.file
    if not path.is_file():
        raise RemoteError(f"{path}: no such file")
    fields: dict[str, Any] = {"vendor": arguments.vendor, "models": arguments.models, "version": arguments.firmware_version}
    for name in ("channel", "min_version", "release_notes", "sha256"):
        if getattr(arguments, name):
            fields[name] = getattr(arguments, name)
    if arguments.hardware_revisions:
        fields["hardware_revisions"] = arguments.hardware_revisions
    if arguments.sign_key:
        fields["signature"] = _sign_locally(path, arguments.sign_key)
    with open(path, "rb") as file:
        progress = _ProgressFile(file, path.stat().st_size)
        try:
            record = _request(arguments, "POST", "/api/v1/firmware", data=fields,
                              files={"file": (path.name, progress, "application/octet-stream")})
        finally:
            if progress.visible:
                sys.stderr.write("\n")
    elapsed = time.monotonic() - progress.started
    print(f"{record['id']}  {record['vendor']} {record['version']}  {record['size']} bytes  "
          f"sha256 {record['sha256']}  {record['status']}  ({elapsed:.1f} s)")


def _sign_locally(image: Path, key_path: Path) -> str:
    """The release engineer's signature, made on this machine: the private key is never sent."""
    import getpass
    import hashlib

    from repo_service.domain import pki

    data = _read(key_path)
    passphrase = os.environ.get("FWREPO_SIGN_KEY_PASSPHRASE")
    if passphrase is None and b"ENCRYPTED" in data:
        passphrase = getpass.getpass(f"passphrase for {key_path}: ")
    key = pki.load_private_key(data, passphrase.encode() if passphrase else None, "--sign-key")
    digest = hashlib.sha256()
    with open(image, "rb") as file:
        while block := file.read(1024 * 1024):
            digest.update(block)
    return pki.sign_digest(key, digest.hexdigest())


def _list(arguments: argparse.Namespace) -> None:
    params = {name: getattr(arguments, name) for name in ("vendor", "model", "status", "channel") if getattr(arguments, name)}
    params["limit"] = arguments.limit
    page = _request(arguments, "GET", "/api/v1/firmware", params=params)
    if arguments.json:
        print(json.dumps(page, indent=2))
        return
    rows = [
        [item["id"], item["vendor"], ",".join(item["models"]), item["version"], item["channel"], item["status"],
         str(item["size"]), item["created_at"][:19]]
        for item in page["items"]
    ]
    _print_table(["ID", "VENDOR", "MODELS", "VERSION", "CHANNEL", "STATUS", "SIZE", "CREATED"], rows)
    if page["total"] > len(page["items"]):
        print(f"({len(page['items'])} of {page['total']}; use --limit or filters)")


def _show(arguments: argparse.Namespace) -> None:
    print(json.dumps(_request(arguments, "GET", f"/api/v1/firmware/{arguments.firmware_id}"), indent=2))


def _publish(arguments: argparse.Namespace) -> None:
    record = _request(arguments, "POST", f"/api/v1/firmware/{arguments.firmware_id}/publish")
    print(f"{record['id']}  {record['vendor']} {record['version']}  {record['status']}")


def _yank(arguments: argparse.Namespace) -> None:
    record = _request(arguments, "POST", f"/api/v1/firmware/{arguments.firmware_id}/yank", json={"reason": arguments.reason})
    print(f"{record['id']}  {record['vendor']} {record['version']}  {record['status']}: {record['yank_reason']}")


CAMPAIGN_ENDED = ("halted", "cancelled", "completed")
FOLLOW_SECONDS = 2.0


def _campaigns(arguments: argparse.Namespace) -> None:
    command = arguments.campaigns_command
    if command == "list":
        items = _request(arguments, "GET", "/api/v1/campaigns")["items"]
        _print_table(["ID", "FIRMWARE", "STATUS", "WAVE", "CREATED"],
                     [[item["id"], item["firmware_id"], item["status"], f"{item['current_wave']}/{item['waves']}",
                       item["created_at"][:19]] for item in items])
        return
    path = f"/api/v1/campaigns/{arguments.campaign_id}"
    if command != "show":
        _print_campaign(_request(arguments, "POST", f"{path}/{command}"))
        return
    report = _request(arguments, "GET", path)
    if arguments.json:
        print(json.dumps(report, indent=2))
        return
    _print_campaign(report)
    while arguments.follow and report["status"] not in CAMPAIGN_ENDED:
        time.sleep(FOLLOW_SECONDS)
        report = _request(arguments, "GET", path)
        print(f"\r{_campaign_bar(report)}", end="", file=sys.stderr, flush=True)
    if arguments.follow:
        print(file=sys.stderr)
        _print_campaign(report)


def _campaign_bar(report: dict[str, Any], width: int = 40) -> str:
    jobs, done = sum(wave["chargers"] for wave in report["waves"]), report["finished"]
    filled = width * done // jobs if jobs else width
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{jobs} finished  wave {report['current_wave']}  {report['status']}"


def _print_campaign(report: dict[str, Any]) -> None:
    print(f"campaign {report['id']}  firmware {report['firmware_id']}  {report['status']}"
          + (f": {report['status_reason']}" if report["status_reason"] else ""))
    print(_campaign_bar(report))
    rows = [[str(wave["wave"]), str(wave["chargers"]),
             ", ".join(f"{count} {state}" for state, count in sorted(wave["states"].items())) or "-",
             "-" if wave["failure_rate"] is None else f"{wave['failure_rate']:.0%}", f"{wave['failure_threshold']:.0%}"]
            for wave in report["waves"]]
    _print_table(["WAVE", "CHARGERS", "STATES", "FAILED", "THRESHOLD"], rows)
    rate = report["success_rate"]
    print(f"success {'-' if rate is None else f'{rate:.1%}'}; download s median/p95 "
          f"{report['download_seconds']['median']}/{report['download_seconds']['p95']}; completion s median/p95 "
          f"{report['completion_seconds']['median']}/{report['completion_seconds']['p95']}; "
          f"{report['bytes_served']} bytes served; skipped {report['skipped'] or 0}")


def _when(moment) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())


_HANDLERS = {
    "serve": _serve,
    "ftps": _ftps,
    "db": _db,
    "clients": _clients,
    "storage": _storage,
    "keys": _keys,
    "signers": _signers,
    "verify": _verify,
    "upload": _upload,
    "list": _list,
    "show": _show,
    "publish": _publish,
    "yank": _yank,
    "campaigns": _campaigns,
    "audit": _audit_command,
}
