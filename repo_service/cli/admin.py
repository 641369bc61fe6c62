"""Local administration, run on the server's own data directory and database: tenants, clients, keys, signers,
storage, audit.

An operator at the machine is the platform: commands that list read every tenant's rows unless --tenant
names one; commands that make something make it in the tenant --tenant names (default: default).

Each command takes as flags only the settings it uses; the rest still come
from their FWREPO_* variables, so these commands see what `fwrepo serve` sees.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import socket
import sys
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from repo_service.cli.arguments import DATABASE, SIGNING_KEYS, STORAGE, add_settings, read, settings_from
from repo_service.cli.runtime import SWEEP_AGE
from repo_service.cli.terminal import print_table
from repo_service.db.tenancy import EVERY_TENANT, acting_in
from repo_service.domain.pki import ALGORITHMS, RSA_PADDINGS
from repo_service.errors import FwrepoError
from repo_service.wording import moment

if TYPE_CHECKING:
    from repo_service.db.session import Database
    from repo_service.domain.audit import Performer
    from repo_service.domain.keys import SigningKeys
    from repo_service.domain.quotas import Usage
    from repo_service.domain.signers import Signers
    from repo_service.settings import Settings

# What `audit verify` reads: the chain, the checkpoints, and the key to check them with.
AUDIT = (*DATABASE, "keys_dir", "audit_key", "audit_checkpoint_log", "audit_checkpoint_interval")
ROLES = ["release", "csms", "admin", "platform"]
USER_ROLES = ["release", "csms", "admin", "platform"]
TENANT_HELP = "its tenant (default: default)"


def register(commands: Any) -> None:
    tenants = commands.add_parser("tenants", help="the parties this service holds apart (local)")
    tenant_commands = tenants.add_commands(dest="tenants_command", required=True, metavar="COMMAND")
    tenant_create = tenant_commands.add_parser(
        "create", help="add a tenant; in development also its firmware-signing root and key (production: import "
                       "its own with `fwrepo keys import --tenant NAME`)")
    tenant_create.add_argument("name", help="1-63 lowercase letters, digits and inner hyphens, e.g. acme-cpo")
    # Its development keys are made with the settings keys init uses.
    add_settings(tenant_create, SIGNING_KEYS)
    tenant_list = tenant_commands.add_parser(
        "list", help="tenants, whether they are disabled, and their quotas: used/limit (- for no limit)")
    tenant_disable = tenant_commands.add_parser(
        "disable", help="stop a tenant's keys, download URLs and FTPS logins at once; nothing is deleted")
    tenant_disable.add_argument("name", help="the tenant's name")
    tenant_quota = tenant_commands.add_parser(
        "quota", help="set a tenant's quotas (those not named stay as they are) and show them with its use")
    tenant_quota.add_argument("name", help="the tenant's name")
    for flag, what in (("--stored-bytes", "bytes its builds may take in storage, yanked ones included"),
                       ("--builds", "builds it may hold, yanked ones included"),
                       ("--grants-per-minute", "grants it may issue in any 60 seconds (each of a batch counts)")):
        tenant_quota.add_argument(flag, metavar="N|none", help=f"{what}; none lifts the limit")
    for command in (tenant_list, tenant_disable, tenant_quota):
        add_settings(command, DATABASE)
    for command in (tenant_create, tenant_list, tenant_disable, tenant_quota):
        command.set_defaults(handler=_tenants)
    tenant_share = tenant_commands.add_parser(
        "share", help="let other tenants see, grant and campaign this tenant's published builds (never change them)")
    tenant_unshare = tenant_commands.add_parser(
        "unshare", help="end a share: the receiver's live grants of the builds are revoked, its campaigns cancelled")
    for command, verb in ((tenant_share, "shares"), (tenant_unshare, "stops sharing")):
        command.add_argument("source", metavar="TENANT", help=f"the tenant that {verb} its builds, e.g. a maker")
        command.add_argument("--with", dest="targets", action="append", required=True, metavar="TENANT",
                             help="the tenant it shares with, e.g. one of its customers (repeatable)")
        add_settings(command, (*DATABASE, "token_secret"))
        command.set_defaults(handler=_shares)

    clients = commands.add_parser("clients", help="API clients and their keys (local: on the data directory)")
    client_commands = clients.add_commands(dest="clients_command", required=True, metavar="COMMAND")
    create = client_commands.add_parser("create", help="make a client; prints its key alone")
    create.add_argument("--name", required=True, help="who or what the client is, e.g. the CSMS's host name")
    create.add_argument("--role", required=True, choices=ROLES,
                        help="release: builds; csms: grants, campaigns, events; admin: all of its tenant; "
                        "platform: tenants, and reading every tenant")
    create.add_argument("--tenant", default="default", help=TENANT_HELP)
    create.add_argument("--vendor", action="append", default=[], metavar="VENDOR",
                        help="a release key for this vendor's builds only (repeatable)")
    client_list = client_commands.add_parser("list", help="list clients (never their keys)")
    client_list.add_argument("--tenant", help="only this tenant's clients (default: every tenant's)")
    revoke = client_commands.add_parser("revoke", help="revoke a client's key")
    revoke.add_argument("client_id", help="the ID that `fwrepo clients list` shows")
    for command in (create, client_list, revoke):
        add_settings(command, DATABASE)
        command.set_defaults(handler=_clients)

    users = commands.add_parser("users", help="people who sign in to the console at /console/ (local)")
    user_commands = users.add_commands(dest="users_command", required=True, metavar="COMMAND")
    user_create = user_commands.add_parser(
        "create", help="make a user; the password is read from stdin",
        description="Make a console user. The password is asked twice at a terminal, else read as the first line "
                    "of stdin: echo \"$PASSWORD\" | fwrepo users create --name NAME --role ROLE.")
    user_create.add_argument("--name", required=True, help="the name the user signs in with (unique)")
    user_create.add_argument("--role", required=True, choices=USER_ROLES,
                             help="what the console lets the user do, as for API keys of that role")
    user_create.add_argument("--tenant", default="default", help=TENANT_HELP)
    user_list = user_commands.add_parser("list", help="list users (never their passwords)")
    user_list.add_argument("--tenant", help="only this tenant's users (default: every tenant's)")
    user_disable = user_commands.add_parser("disable", help="stop a user signing in; ends its sessions")
    user_disable.add_argument("name", help="the user's name")
    user_reset = user_commands.add_parser(
        "reset-password", help="set a new password from stdin; unlocks, ends its sessions",
        description="Set a user's new password, asked twice at a terminal, else read as the first line of stdin; "
                    "it unlocks the account and ends its sessions.")
    user_reset.add_argument("name", help="the user's name")
    for command in (user_create, user_list, user_disable, user_reset):
        add_settings(command, DATABASE)
        command.set_defaults(handler=_users)

    storage = commands.add_parser("storage", help="storage housekeeping (local)")
    storage_commands = storage.add_commands(dest="storage_command", required=True, metavar="COMMAND")
    sweep = storage_commands.add_parser("sweep", help="delete what interrupted uploads left behind")
    sweep.add_argument("--older-than", type=float, default=SWEEP_AGE.total_seconds(), metavar="SECONDS",
                       help="only writes started at least this long ago (default 24 h)")
    check = storage_commands.add_parser(
        "check", help="re-read every stored image: missing, corrupted and extra objects; exit 1 if any")
    checksum = storage_commands.add_parser(
        "checksum", help="read each build stored without an MD5 (before 0015) once and record it, so its grants "
                         "carry OCPP 2.0.1 PublishFirmware; exit 1 if any is missing or corrupted")
    for command in (sweep, check, checksum):
        add_settings(command, STORAGE)
        command.set_defaults(handler=_storage)

    keys = commands.add_parser("keys", help="a tenant's firmware-signing keys (local)")
    key_commands = keys.add_commands(dest="keys_command", required=True, metavar="COMMAND")
    init = key_commands.add_parser("init", help="make the development root CA and a signing key")
    key_import = key_commands.add_parser("import", help="bring in a production signing key")
    key_import.add_argument("--cert", type=Path, help="PEM: the signing certificate and its chain up to the root")
    key_import.add_argument("--key", dest="key_file", type=Path, help="PEM private key of the signing certificate")
    key_import.add_argument("--pkcs12", type=Path, help="a PKCS#12 file with key, certificate and chain instead")
    key_import.add_argument("--passphrase-env", metavar="VARIABLE",
                            help="environment variable holding the key's or PKCS#12 file's passphrase")
    # Checked by the domain, not by choices=, so that a wrong one is refused with why (docs/signing.md).
    key_import.add_argument("--scheme", metavar="|".join(RSA_PADDINGS),
                            help="how an RSA key pads its signatures: what your chargers verify (default "
                            "pkcs1v15); not for ECDSA keys")
    rotate = key_commands.add_parser("rotate", help="new signing key under the same root")
    rotate.add_argument("--algorithm", choices=ALGORITHMS,
                        help="of the new key, and its signature scheme (default FWREPO_SIGNING_ALGORITHM)")
    resign = key_commands.add_parser("resign", help="sign published firmware with the active key")
    key_revoke = key_commands.add_parser("revoke", help="stop a key; its signatures stop counting")
    key_revoke.add_argument("key_id", help="the ID that `fwrepo keys list` shows")
    key_list = key_commands.add_parser("list", help="keys, their use and expiry")
    for command in (init, key_import, rotate, resign, key_revoke, key_list):
        command.add_argument("--tenant", default="default",
                             help="whose keys: each tenant signs with its own, under its own root (default: default)")
        add_settings(command, SIGNING_KEYS)
        command.set_defaults(handler=_keys)

    signers = commands.add_parser("signers", help="release engineers' public keys for signed uploads (local)")
    signer_commands = signers.add_commands(dest="signers_command", required=True, metavar="COMMAND")
    signer_add = signer_commands.add_parser("add", help="trust a release engineer's key")
    signer_add.add_argument("name", help="whose key it is")
    signer_add.add_argument("--key", dest="key_file", type=Path, required=True, help="PEM public key or certificate")
    signer_list = signer_commands.add_parser("list", help="trusted signer keys")
    signer_remove = signer_commands.add_parser("remove", help="stop trusting a key")
    signer_remove.add_argument("signer", help="the signer's ID or name")
    for command in (signer_add, signer_list, signer_remove):
        command.add_argument("--tenant", default="default", help="whose uploads the key signs (default: default)")
        add_settings(command, DATABASE)
        command.set_defaults(handler=_signers)

    audit = commands.add_parser("audit", help="the audit trail (local)")
    audit_commands = audit.add_commands(dest="audit_command", required=True, metavar="COMMAND")
    audit_list = audit_commands.add_parser("list", help="the trail, newest first, as GET /api/v1/audit shows it")
    for name, example in (("action", "security_event"), ("actor", "client 3f2a (csms)"), ("subject", "grant 17")):
        audit_list.add_argument(f"--{name}", metavar=name.upper(), help=f"only events with this {name}, e.g. {example}")
    audit_list.add_argument("--since", metavar="TIME", help="only events at or after this moment (RFC 3339)")
    audit_list.add_argument("--limit", type=int, default=100, help="at most this many (default 100, at most 1000)")
    audit_list.add_argument("--json", action="store_true", help="the page as JSON, like the API's reply")
    audit_list.add_argument("--tenant", help="only this tenant's trail (default: every tenant's)")
    add_settings(audit_list, DATABASE)
    audit_list.set_defaults(handler=_audit_list)
    audit_verify = audit_commands.add_parser(
        "verify", help="check the hash chain against its signed checkpoints; name the first row edited, removed, "
        "reordered or rewritten, a forged checkpoint, or rows cut from the end; exit 1 if any")
    audit_verify.add_argument("--checkpoints", type=Path, action="append", default=[], metavar="FILE",
                              help="a checkpoint log, or a copy of fwrepo's process log (repeat for each node's); "
                              "default FWREPO_AUDIT_CHECKPOINT_LOG when it exists")
    audit_verify.add_argument("--public-key", type=Path, action="append", default=[], metavar="PEM",
                              help="the audit key's public half (repeat for a retired key); "
                              "default: derived from FWREPO_AUDIT_KEY")
    audit_verify.add_argument("--tenant", action="append", default=[], metavar="NAME",
                              help="check this tenant's chain (repeatable; default: every tenant's, each on its own)")
    audit_verify.add_argument("--max-age", type=float, metavar="SECONDS",
                              help="also exit 1 when the newest checkpoint is older than this: the writer stopped")
    add_settings(audit_verify, AUDIT)
    audit_verify.set_defaults(handler=_audit_command)

    verify = commands.add_parser("verify", help="check an image against a signed release manifest (offline)")
    verify.add_argument("image", type=Path, help="the firmware image file")
    verify.add_argument("--manifest", type=Path, required=True, help="the JSON from GET /api/v1/firmware/ID/manifest")
    verify.add_argument("--root", type=Path, help="the firmware-signing root certificate you trust (PEM)")
    verify.set_defaults(handler=_verify)


def _clients(arguments: argparse.Namespace) -> None:
    from repo_service.domain.audit import Audit
    from repo_service.domain.clients import Clients, Role
    from repo_service.services import open_database

    database = open_database(settings_from(arguments))
    clients = Clients(database, Audit(database))
    if arguments.clients_command == "create":
        record, key = clients.create(arguments.name, Role(arguments.role), _operator(), arguments.tenant,
                                     arguments.vendor)
        # The key alone on stdout, so that `KEY=$(fwrepo clients create ...)` works.
        print(key)
        return
    if arguments.clients_command == "revoke":
        record = clients.revoke(arguments.client_id, _operator())
        print(f"revoked {record.id} ({record.name})")
        return
    rows = [
        [record.id, record.tenant, record.name, record.role.value, ",".join(record.vendors or ["any" if record.role is Role.RELEASE else "-"]),
         record.key_prefix + "…", moment(record.created_at), moment(record.revoked_at) if record.revoked_at else "active"]
        for record in clients.list(arguments.tenant)
    ]
    print_table(["ID", "TENANT", "NAME", "ROLE", "VENDORS", "KEY", "CREATED", "REVOKED"], rows)


def _users(arguments: argparse.Namespace) -> None:
    from repo_service.domain.audit import Audit
    from repo_service.domain.users import Users, parse_user_role
    from repo_service.services import open_database

    settings = settings_from(arguments)
    database = open_database(settings)
    users = Users(database, Audit(database), timedelta(seconds=settings.console_session_lifetime))
    if arguments.users_command == "create":
        record = users.create(arguments.name, parse_user_role(arguments.role), _password(), _operator(),
                              arguments.tenant)
        print(f"created user {record.name} ({record.role.value}, tenant {record.tenant})")
        return
    with acting_in(EVERY_TENANT):
        if arguments.users_command == "disable":
            record = users.disable(arguments.name, _operator())
            print(f"disabled {record.name}: its sessions are ended")
            return
        if arguments.users_command == "reset-password":
            record = users.reset_password(arguments.name, _password(), _operator())
            print(f"new password set for {record.name}: unlocked, its sessions ended")
            return
    rows = [[record.id, record.tenant, record.name, record.role.value, moment(record.created_at),
             moment(record.last_login_at) if record.last_login_at else "never",
             "disabled" if record.disabled_at else "locked" if record.locked_at else "active"]
            for record in users.list(arguments.tenant or EVERY_TENANT)]
    print_table(["ID", "TENANT", "NAME", "ROLE", "CREATED", "LAST SIGN-IN", "STATE"], rows)


def _password() -> str:
    """The new password: asked twice at a terminal, else the first line of stdin (`echo "$PW" | fwrepo ...`)."""
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise FwrepoError("the two passwords differ: nothing was changed")
        return password
    return sys.stdin.readline().rstrip("\r\n")


def _tenants(arguments: argparse.Namespace) -> None:
    from repo_service.domain.audit import Audit
    from repo_service.domain.quotas import Quota, Quotas, parse_limit
    from repo_service.domain.sharing import every_share
    from repo_service.domain.tenants import Tenants
    from repo_service.services import open_database

    settings = settings_from(arguments)
    database = open_database(settings)
    tenants = Tenants(database, Audit(database))
    if arguments.tenants_command == "create":
        name = tenants.create(arguments.name, _operator()).name
        print(f"created tenant {name}")
        _first_keys(settings, database, name)
        return
    if arguments.tenants_command == "disable":
        record = tenants.disable(arguments.name, _operator())
        print(f"disabled tenant {record.name} at {moment(record.disabled_at)}: its keys, download URLs and FTPS "
              "logins are refused")
        return
    quotas = Quotas(database, Audit(database))
    if arguments.tenants_command == "quota":
        given = {quota: getattr(arguments, quota.value) for quota in Quota}
        limits = {quota: parse_limit(quota, text, "--" + quota.value.replace("_", "-")) for quota, text in given.items() if text is not None}
        name = tenants.get(arguments.name).name
        _print_usage(quotas.set(name, limits, _operator()) if limits else quotas.usage(name)[0])
        return
    usage = {use.tenant: use for use in quotas.usage()}
    shares: dict[str, list[str]] = {}
    for share in every_share(database):
        shares.setdefault(share.source, []).append(share.target)
    print_table(["NAME", "CREATED", "DISABLED", "STORED BYTES", "BUILDS", "GRANTS/MIN", "SHARES WITH"], [
        [record.name, moment(record.created_at), moment(record.disabled_at) if record.disabled_at else "-",
         *_quota_cells(usage[record.name]), ", ".join(shares.get(record.name, [])) or "-"]
        for record in tenants.list()])


def _quota_cells(use: Usage) -> list[str]:
    """used/limit of each quota, - for no limit."""
    from repo_service.domain.quotas import Quota

    return [f"{use.used(quota)}/{'-' if use.limits[quota] is None else use.limits[quota]}" for quota in Quota]


def _print_usage(use: Usage) -> None:
    print_table(["NAME", "STORED BYTES", "BUILDS", "GRANTS/MIN"], [[use.tenant, *_quota_cells(use)]])


def _first_keys(settings: Settings, database: Database, tenant: str) -> None:
    """A new tenant's signing keys: made here in development, as `fwrepo serve` makes the default tenant's; in
    production the operator brings the ones its chargers' root issued."""
    from repo_service.services import open_keys

    if settings.env == "production":
        print(f"tenant {tenant} has no signing key yet; its publications are refused until one is imported: "
              f"fwrepo keys import --tenant {tenant} --cert CHAIN.pem --key KEY.pem")
        return
    keys, _ = open_keys(settings, database)
    with acting_in(tenant):
        key = keys.init_development(_operator())
        print(f"development signing key {key.id} ({key.algorithm}) active; the root its chargers trust: "
              f"{keys.root_certificate_path}")


def _shares(arguments: argparse.Namespace) -> None:
    from repo_service.services import open_shares

    shares = open_shares(settings_from(arguments))
    if arguments.tenants_command == "share":
        for record in shares.share(arguments.source, arguments.targets, _operator()):
            print(f"tenant {record.source} shares its published builds with {record.target} "
                  f"(since {moment(record.created_at)})")
        return
    for ended in shares.unshare(arguments.source, arguments.targets, _operator()):
        print(f"tenant {arguments.source} no longer shares its builds with {ended.target}: "
              f"{ended.grants_revoked} grants revoked, {len(ended.campaigns_cancelled)} campaigns cancelled")


def _operator() -> Performer:
    """An operator at this machine, as the audit trail names them."""
    from repo_service.domain.audit import Performer

    return Performer(f"cli {getpass.getuser()}@{socket.gethostname()}")


def _audit_list(arguments: argparse.Namespace) -> None:
    from repo_service.domain.audit import Audit, as_document
    from repo_service.domain.clock import parse_moment
    from repo_service.services import open_database

    since = parse_moment(arguments.since, "--since") if arguments.since else None
    with acting_in(arguments.tenant or EVERY_TENANT):
        events, total = Audit(open_database(settings_from(arguments))).list(
            action=arguments.action, actor=arguments.actor, subject=arguments.subject, since=since,
            limit=arguments.limit)
    documents = [as_document(event) for event in events]
    if arguments.json:
        print(json.dumps({"total": total, "items": documents}, indent=2))
        return
    print_table(["TENANT", "SEQ", "AT", "ACTOR", "ACTION", "SUBJECT", "DETAIL"], [
        [document["tenant"], document["seq"], moment(document["at"]), document["actor"], document["action"],
         document["subject"],
         json.dumps(document["detail"], sort_keys=True)[:120]] for document in documents])
    if total > len(documents):
        print(f"{len(documents)} of {total}: narrow with --action, --subject or --since, or raise --limit")


def _audit_command(arguments: argparse.Namespace) -> int:
    from repo_service.domain.audit import Audit
    from repo_service.domain.audit_checkpoints import CheckpointLines, stored_checkpoints, trusted_keys, verify_trail
    from repo_service.domain.clock import rfc3339, utc_now
    from repo_service.domain.tenants import Tenants
    from repo_service.services import open_database

    settings = settings_from(arguments)
    database = open_database(settings)
    audit = Audit(database)
    tenants = [Tenants(database, audit).get(name).name for name in arguments.tenant] or [
        record.name for record in Tenants(database, audit).list()]
    default_log = settings.audit_checkpoint_log_path
    paths = arguments.checkpoints or ([default_log] if default_log.exists() else [])
    with ExitStack() as files:
        try:
            logs = {str(path): CheckpointLines(files.enter_context(open(path, encoding="utf-8", errors="replace")))
                    for path in paths}
        except OSError as error:
            raise FwrepoError(f"--checkpoints {error.filename}: {error.strerror}") from None
        reports = verify_trail(audit, {"the database": stored_checkpoints(database), **logs},
                               lambda: trusted_keys(arguments.public_key, settings.audit_key_path), tenants)
    for path, lines in logs.items():
        if lines.other:
            print(f"note: {path}: {lines.other} lines hold no checkpoint (other log lines, or one torn by a crash)",
                  file=sys.stderr)
    failed = False
    for report in reports:
        # The default tenant's lines read as they did before there were tenants.
        chain = "audit chain" if report.tenant == "default" else f"audit chain of tenant {report.tenant}"
        if report.broken is not None:
            print(f"{chain} BROKEN at row {report.broken.seq}: {report.broken.reason}", file=sys.stderr)
            failed = True
            continue
        print(f"{chain} intact: {report.events} events")
        newest = report.newest
        if newest is None:
            print("no checkpoints yet: a rewrite that recomputes the hashes, or rows cut from the end, would not show")
            continue
        age = (utc_now() - newest.at).total_seconds()
        counts = ", ".join(f"{count} in {source}" for source, count in report.checkpoints.items())
        print(f"checkpoints signed and matching: {counts}; the newest, {rfc3339(newest.at)} ({newest.reason}, "
              f"{age:.0f} s ago), covers rows 1-{newest.seq}")
        print(f"unprotected: the {report.events - newest.seq} rows after it; while a node serves, a truncation can "
              f"hide at most the last {settings.audit_checkpoint_interval} s of events "
              "(FWREPO_AUDIT_CHECKPOINT_INTERVAL)")
        if arguments.max_age is not None and age > arguments.max_age:
            print(f"audit checkpoints STALE: the newest is {age:.0f} s old, more than --max-age "
                  f"{arguments.max_age:g}: no node is writing them (none serving, or the lease held through the "
                  "database)", file=sys.stderr)
            failed = True
    return 1 if failed else 0


def _storage(arguments: argparse.Namespace) -> int | None:
    # Storage is checked whole: every tenant's builds and uploads.
    with acting_in(EVERY_TENANT):
        return _storage_of_every_tenant(arguments)


def _storage_of_every_tenant(arguments: argparse.Namespace) -> int | None:
    from repo_service.services import build_services

    services = build_services(settings_from(arguments))
    if arguments.storage_command == "check":
        from repo_service.domain.scrub import scrub

        findings = 0
        for finding in scrub(services.catalog):
            findings += 1
            print(f"{finding.kind}: {finding.key}: {finding.detail}", flush=True)
        print(f"{findings} problems" if findings else "storage and catalog agree")
        return 1 if findings else None
    if arguments.storage_command == "checksum":
        from repo_service.domain.scrub import Finding, fill_checksums

        filled = problems = 0
        for firmware_id, result in fill_checksums(services.catalog, _operator()):
            if isinstance(result, Finding):
                problems += 1
                print(f"{result.kind}: {result.key}: {result.detail}", flush=True)
            else:
                filled += 1
                print(f"firmware {firmware_id}: MD5 {result.md5}", flush=True)
        print(f"{filled} builds given an MD5" + (f", {problems} problems" if problems else ""))
        return 1 if problems else None
    swept = services.uploads.sweep(timedelta(seconds=arguments.older_than))
    print(f"removed {len(swept)} interrupted uploads")
    return None


def _keys(arguments: argparse.Namespace) -> None:
    from repo_service.domain.tenants import Tenants
    from repo_service.services import open_database, open_keys

    settings = settings_from(arguments)
    database = open_database(settings)
    keys, development = open_keys(settings, database)
    Tenants(database, keys.audit).get(arguments.tenant)
    with acting_in(arguments.tenant):
        _keys_of(keys, development, settings, arguments)


def _keys_of(keys: SigningKeys, development: bool, settings: Settings, arguments: argparse.Namespace) -> None:
    command = arguments.keys_command
    # The option commands it suggests take, so that they act in the same tenant.
    option = "" if arguments.tenant == "default" else f" --tenant {arguments.tenant}"
    if command == "init":
        if settings.env == "production":
            raise FwrepoError(f"keys init makes development keys; in production use `fwrepo keys import{option}`")
        key = keys.init_development(_operator())
        print(f"signing key {key.id} ({key.algorithm}) active; root certificate {keys.root_certificate_path}")
    elif command == "import":
        passphrase = None
        if arguments.passphrase_env:
            if arguments.passphrase_env not in os.environ:
                raise FwrepoError(f"--passphrase-env: {arguments.passphrase_env} is not set")
            passphrase = os.environ[arguments.passphrase_env].encode()
        if arguments.pkcs12:
            key = keys.import_pkcs12(read(arguments.pkcs12), passphrase, _operator(), arguments.scheme, "--scheme")
        elif arguments.cert and arguments.key_file:
            key = keys.import_key(read(arguments.cert), read(arguments.key_file), passphrase, _operator(),
                                  arguments.scheme, "--scheme")
        else:
            raise FwrepoError("give --cert CHAIN.pem and --key KEY.pem, or --pkcs12 FILE.p12")
        print(f"signing key {key.id} ({key.algorithm}) imported and active; expires {moment(key.not_after)}")
    elif command == "rotate":
        key = keys.rotate(_operator(), arguments.algorithm)
        print(f"signing key {key.id} ({key.algorithm}) active; new publications are signed with it")
    elif command == "resign":
        count = keys.resign(_operator())
        print(f"re-signed {count} published firmware with the active key")
    elif command == "revoke":
        key = keys.revoke(arguments.key_id, _operator())
        print(f"revoked {key.id}: firmware signed only by it is not offered until `fwrepo keys resign{option}`")
    else:
        rows = [[key.id, key.algorithm, key.status.value, key.origin, moment(key.not_after), str(key.signed),
                 key.fingerprint[:16]] for key in keys.list()]
        print_table(["ID", "ALGORITHM", "STATUS", "ORIGIN", "EXPIRES", "SIGNED", "FINGERPRINT"], rows)
    if command in ("init", "import", "rotate"):
        from repo_service.domain.audit_checkpoints import open_checkpoint_key

        # Made here too, so a keys directory prepared for read-only replicas holds it (they cannot make it).
        open_checkpoint_key(settings.audit_key_path)
        print(f"audit checkpoint key {settings.audit_key_path}: the same file on every node")
    if development and command != "list":
        print("note: keys are encrypted with the development passphrase; set FWREPO_KEY_PASSPHRASE in production",
              file=sys.stderr)


def _signers(arguments: argparse.Namespace) -> None:
    from repo_service.domain.audit import Audit
    from repo_service.domain.signers import Signers
    from repo_service.domain.tenants import Tenants
    from repo_service.services import open_database

    database = open_database(settings_from(arguments))
    Tenants(database, Audit(database)).get(arguments.tenant)
    with acting_in(arguments.tenant):
        _signers_of(Signers(database, Audit(database)), arguments)


def _signers_of(signers: Signers, arguments: argparse.Namespace) -> None:
    if arguments.signers_command == "add":
        signer = signers.add(arguments.name, read(arguments.key_file), _operator())
        print(f"{signer.id}  {signer.name}  {signer.algorithm}  sha256:{signer.fingerprint}")
    elif arguments.signers_command == "remove":
        signer = signers.remove(arguments.signer, _operator())
        print(f"removed {signer.id}")
    else:
        rows = [[signer.id, signer.name, signer.algorithm, signer.fingerprint[:16], moment(signer.created_at)]
                for signer in signers.list()]
        print_table(["ID", "NAME", "ALGORITHM", "FINGERPRINT", "ADDED"], rows)


def _verify(arguments: argparse.Namespace) -> int:
    from repo_service.domain.manifests import ManifestError, verify_release

    try:
        document = json.loads(read(arguments.manifest))
        root = read(arguments.root) if arguments.root else None
        with open(arguments.image, "rb") as image:
            findings = verify_release(document, image, root)
    except (ManifestError, ValueError, OSError) as error:
        print(f"fwrepo verify: FAILED: {error}", file=sys.stderr)
        return 1
    for finding in findings:
        print(finding)
    return 0
