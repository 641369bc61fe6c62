"""Every ``FWREPO_*`` setting, declared once, parsed and checked once, in one place.

Each field of ``Settings`` is one setting: its name, type, default and help
are written in that one line, and everything else follows from it: the
environment variable (``s3_bucket`` is ``FWREPO_S3_BUCKET``), the ``fwrepo
serve`` flag (``--s3-bucket``; a boolean is ``--tls``/``--no-tls``), the help
and ``docs/settings.md`` (``python -m repo_service.settings`` writes it). A
flag wins over the environment. A bad value stops start-up with one line
naming the variable. The frozen ``Settings`` object is passed down; nothing
deeper reads the environment.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from repo_service.domain.pki import ALGORITHMS
from repo_service.errors import SettingsError

PREFIX = "FWREPO_"
KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
DAY = 86400


def _text(value: str) -> str:
    if not value.strip():
        raise ValueError("expected a non-empty value")
    return value.strip()


def _path(value: str) -> Path:
    return Path(_text(value))


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise ValueError(f"expected a port number 1-65535, got {value!r}") from None
    if not 1 <= port <= 65535:
        raise ValueError(f"expected a port number 1-65535, got {value!r}")
    return port


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"expected a positive whole number, got {value!r}") from None
    if number <= 0:
        raise ValueError(f"expected a positive whole number, got {value!r}")
    return number


def _port_range(value: str) -> tuple[int, int]:
    low, dash, high = value.partition("-")
    if not dash:
        raise ValueError(f"expected a port range LOW-HIGH such as 60000-60099, got {value!r}")
    first, last = _port(low.strip()), _port(high.strip())
    if first > last:
        raise ValueError(f"the range {value!r} ends before it starts")
    return first, last


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
    return value.rstrip("/")


def _ocsp(value: str) -> str:
    if value.strip() == "aia":
        return "aia"
    try:
        return _http_url(value)
    except ValueError:
        raise ValueError(f"expected aia or an http:// URL of an OCSP responder, got {value!r}") from None


def _amqp_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
        raise ValueError(f"expected an amqp:// or amqps:// URL, got {value!r}")
    return value


def _database_url(value: str) -> str:
    scheme = value.split(":", 1)[0]
    # Operators write the libpq form; SQLAlchemy needs to be told to use psycopg 3.
    if scheme in ("postgres", "postgresql"):
        return "postgresql+psycopg:" + value.split(":", 1)[1]
    if scheme in ("sqlite", "postgresql+psycopg"):
        return value
    raise ValueError(f"expected a sqlite:/// or postgresql:// URL, got {value!r}")


def _tenant_bucket(value: str) -> str:
    # S3 bucket names are lowercase letters, digits, dots and hyphens; tenant names are DNS labels, so a template
    # of those characters around {tenant} names a valid bucket for every tenant (up to S3's 63 characters).
    template = value.strip()
    if template.count("{tenant}") != 1 or not re.fullmatch(r"[a-z0-9.-]*", template.replace("{tenant}", "")):
        raise ValueError(f"expected a bucket name of lowercase letters, digits, dots and hyphens with {{tenant}} "
                         f"once in it, such as fwrepo-{{tenant}}, got {value!r}")
    return template


def _boolean(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


@dataclass(frozen=True)
class Kind:
    """What a setting's text may be: the name the help and docs give it, and the parser that checks it."""

    name: str
    parse: Callable[[str], Any]
    # "bytes" or "seconds": the default is then also shown in a larger unit when it is a whole number of one.
    unit: str | None = None


TEXT = Kind("text", _text)
PATH = Kind("path", _path)
PORT = Kind("port", _port)
PORT_RANGE = Kind("port range LOW-HIGH", _port_range)
BYTES = Kind("bytes", _positive_int, "bytes")
SECONDS = Kind("seconds", _positive_int, "seconds")
BYTES_PER_SECOND = Kind("bytes per second", _positive_int, "bytes")
COUNT = Kind("count", _positive_int)
BOOLEAN = Kind("boolean", _boolean)
HTTP_URL = Kind("URL", _http_url)
DATABASE_URL = Kind("database URL", _database_url)
AMQP_URL = Kind("AMQP URL", _amqp_url)
OCSP = Kind("aia or URL", _ocsp)
TENANT_BUCKET = Kind("bucket name template", _tenant_bucket)


def choice(*allowed: str) -> Kind:
    def parse(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}, got {value!r}")
        return value

    return Kind("one of " + ", ".join(allowed), parse)


def optional(kind: Kind) -> Kind:
    """The kind, or unset when the text is empty (so an empty variable means "the default")."""

    def parse_optional(value: str) -> Any:
        return kind.parse(value) if value.strip() else None

    return Kind(kind.name, parse_optional)


def seconds_within(low: int, high: int) -> Kind:
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise ValueError(f"expected a whole number of seconds {low}-{high}, got {value!r}") from None
        if not low <= number <= high:
            raise ValueError(f"expected a whole number of seconds {low}-{high}, got {value!r}")
        return number

    return Kind(f"seconds, {low}-{high}", parse, "seconds")


def setting(default: Any, kind: Kind, help: str, derived: str | None = None) -> Any:
    """Declare one setting: its default, its kind and what it is for.

    ``derived`` says, for the docs and the help, what an unset setting
    becomes when that depends on other settings (``load_settings`` works it out).
    """
    return dataclasses.field(default=default, metadata={"kind": kind, "help": help, "derived": derived})


# Locations are the public URL, a token of up to 36 characters, and a file name: 400 leaves a file name 72
# characters within OCPP 2.0.1's 512. Up to 199 they also fit 1.6's 255 (repo_service.domain.grants).
MAX_PUBLIC_URL = 400


@dataclass(frozen=True)
class Settings:
    data_dir: Path = setting(Path("var"), PATH, "directory for the SQLite file and local storage")
    host: str = setting("127.0.0.1", TEXT, "address the API listens on")
    port: int = setting(8443, PORT, "API and download port")
    public_url: str = setting("", HTTP_URL, "base URL that goes into download locations (at most 400 characters; "
                              "over 199, locations exceed OCPP 1.6's 255)",
                              "https://HOST:PORT (http:// with --no-tls); required with a wildcard host")
    database_url: str = setting("", DATABASE_URL, "sqlite:///PATH or postgresql://...",
                                "sqlite:///DATA_DIR/fwrepo.sqlite3")
    storage: str = setting("local", choice("local", "s3"), "storage backend")
    storage_dir: Path | None = setting(None, optional(PATH), "directory of the local backend", "DATA_DIR/storage")
    s3_endpoint_url: str | None = setting(None, optional(HTTP_URL), "S3 endpoint URL (empty for AWS itself)",
                                          "AWS S3 itself")
    s3_bucket: str = setting("", TEXT, "S3 bucket (required with FWREPO_STORAGE=s3)")
    s3_tenant_bucket: str | None = setting(None, optional(TENANT_BUCKET),
                                           "a bucket per tenant: the name of each tenant's but default's, {tenant} "
                                           "standing for its name (e.g. fwrepo-{tenant}); made at its first upload "
                                           "unless it exists",
                                           "every tenant in FWREPO_S3_BUCKET, the default's under firmware/, "
                                           "others' under tenants/NAME/firmware/")
    s3_region: str = setting("us-east-1", TEXT, "S3 region")
    s3_access_key_id: str | None = setting(None, optional(TEXT), "S3 access key", "boto3's usual credential chain")
    s3_secret_access_key: str | None = setting(None, optional(TEXT), "S3 secret key",
                                               "boto3's usual credential chain")
    s3_addressing_style: str = setting("path", choice("path", "virtual", "auto"), "S3 addressing style")
    s3_sse: str = setting("none", choice("none", "AES256", "aws:kms"), "S3 server-side encryption")
    s3_sse_kms_key_id: str | None = setting(None, optional(TEXT), "KMS key id with FWREPO_S3_SSE=aws:kms")
    s3_part_size: int = setting(5 * MiB, BYTES, "bytes per S3 multipart part; smaller writes are one PUT "
                                "(the default is the S3 minimum: least memory)")
    max_upload_bytes: int = setting(4 * GiB, BYTES, "largest firmware image accepted")
    upload_min_rate: int = setting(16 * KiB, BYTES_PER_SECOND, "slowest an upload may arrive: each "
                                   "FWREPO_UPLOAD_RATE_WINDOW spent waiting for the client must bring this many bytes "
                                   "a second of it, or the upload is abandoned (422) and nothing stored")
    upload_rate_window: int = setting(10, SECONDS, "the time over which FWREPO_UPLOAD_MIN_RATE is measured: a stalled "
                                      "upload is abandoned after this long")
    http_max_header_bytes: int = setting(16 * KiB, BYTES, "largest request line plus headers; more is refused with 431")
    http_max_header_fields: int = setting(100, COUNT, "most header fields a request may have; more is refused with 431")
    http_header_timeout: int = setting(10, SECONDS, "time a connection gets to send a request's line and headers, "
                                       "counted from the TLS handshake or, on a kept-alive connection, from the "
                                       "request's first byte; then it is closed (408)")
    http_keep_alive_timeout: int = setting(5, SECONDS,
                                           "how long a kept-alive connection may stay idle between requests")
    http_max_connections_per_address: int = setting(2048, COUNT, "open HTTPS connections one client address (an "
                                                    "IPv6 /64) may hold; more are answered 503 and closed. Chargers "
                                                    "behind carrier NAT share one address: leave room for a wave of "
                                                    "them; behind a proxy that terminates TLS every connection is the "
                                                    "proxy's")
    log_level: str = setting("info", choice("debug", "info", "warning", "error"), "log level")
    env: str = setting("development", choice("development", "production"),
                       "production refuses development keys and secrets")
    keys_dir: Path | None = setting(None, optional(PATH), "signing keys and certificates", "DATA_DIR/keys")
    key_passphrase: str | None = setting(None, optional(TEXT), "passphrase that encrypts the signing keys at rest "
                                         "(required in production)", "a generated one in KEYS_DIR/dev-passphrase")
    signing_algorithm: str = setting("ecdsa-p256", choice(*ALGORITHMS),
                                     "algorithm and signature scheme of keys made by keys init/rotate "
                                     "(docs/signing.md shows openssl verifying each)")
    audit_key: Path | None = setting(None, optional(PATH), "Ed25519 private key (PEM) that signs audit checkpoints: "
                                     "outside the database, the same file on every node",
                                     "KEYS_DIR/audit_key.pem, made on first start")
    audit_checkpoint_log: Path | None = setting(None, optional(PATH), "append-only file this node writes its signed "
                                                "audit checkpoints to (keep a copy the database's owner cannot "
                                                "rewrite)", "DATA_DIR/audit_checkpoints.log")
    audit_checkpoint_interval: int = setting(60, SECONDS, "how often one node signs a checkpoint of the audit "
                                             "chain: at most this much of the trail's end can be cut unseen")
    require_uploader_signature: bool = setting(False, BOOLEAN,
                                               "refuse uploads without a valid release engineer's signature")
    token_secret: str | None = setting(None, optional(TEXT), "secret that signs download tokens; the same on every "
                                       "node (required in production)", "a generated one in DATA_DIR/token-secret")
    grant_max_lifetime: int = setting(30 * DAY, SECONDS, "longest a grant may live")
    console_session_lifetime: int = setting(8 * 3600, seconds_within(60, 7 * DAY), "how long a sign-in to the "
                                            "console lasts; signing out, disabling the user or resetting its "
                                            "password ends it sooner")
    tls: bool = setting(True, BOOLEAN, "serve HTTPS; --no-tls only behind a proxy that terminates TLS")
    tls_cert: Path | None = setting(None, optional(PATH), "PEM certificate chain for HTTPS",
                                    "a development certificate in DATA_DIR/tls")
    tls_key: Path | None = setting(None, optional(PATH), "PEM private key for HTTPS",
                                   "the development certificate's key")
    charger_ca: Path | None = setting(None, optional(PATH), "PEM bundle of the CA (and intermediate) certificates "
                                      "that issue chargers' TLS client certificates; grants with \"bind\": "
                                      "\"client_certificate\" need it", "none: such grants are refused")
    charger_crl: Path | None = setting(None, optional(PATH), "CRL file (PEM, several allowed, or DER) of the charger "
                                       "CA, read again when it changes; a stale one refuses bound downloads",
                                       "no CRL check")
    charger_ocsp: str | None = setting(None, optional(OCSP), "ask an OCSP responder about each charger certificate: "
                                       "its URL, or aia for the one the certificate names; no answer refuses",
                                       "no OCSP check")
    download_mode: str = setting("stream", choice("stream", "redirect"),
                                 "stream the bytes, or redirect to a short-lived S3 presigned URL")
    ftps: bool = setting(True, BOOLEAN, "run the FTPS server inside fwrepo serve")
    ftps_host: str = setting("", TEXT, "address the FTPS server listens on", "FWREPO_HOST")
    ftps_port: int = setting(0, PORT, "explicit FTPS port, AUTH TLS", "2121; 21 with FWREPO_ENV=production")
    ftps_implicit_port: int = setting(0, PORT, "implicit FTPS port, TLS from the first byte",
                                      "9990; 990 with FWREPO_ENV=production")
    ftps_tls_cert: Path | None = setting(None, optional(PATH), "PEM certificate chain for FTPS",
                                         "the HTTPS certificate")
    ftps_tls_key: Path | None = setting(None, optional(PATH), "PEM private key for FTPS", "the HTTPS key")
    ftps_public_host: str | None = setting(None, optional(TEXT), "host that goes into FTPS locations",
                                           "FWREPO_PUBLIC_URL's host")
    ftps_location: str = setting("explicit", choice("explicit", "implicit"),
                                 "FTPS location form: explicit ftp:// with AUTH TLS, or implicit ftps://")
    ftps_passive_ports: tuple[int, int] | None = setting(None, optional(PORT_RANGE), "passive data ports",
                                                         "any free port")
    ftps_masquerade_address: str | None = setting(None, optional(TEXT),
                                                  "address sent in PASV replies, for a server behind NAT")
    ftp_allow_plain: bool = setting(False, BOOLEAN, "accept FTP without TLS for legacy chargers (logged as a warning)")
    ftps_active_mode: bool = setting(False, BOOLEAN, "accept active mode (PORT/EPRT), where the server connects to "
                                     "the charger; off, since it lets any client make the server probe its own ports")
    ftps_login_timeout: int = setting(30, SECONDS, "how long an FTPS connection may take to log in, TLS handshake "
                                      "included")
    ftps_unauthenticated_per_address: int = setting(8, COUNT, "FTPS connections one address may hold open before "
                                                    "they log in (chargers behind one carrier NAT share an address)")
    ftps_unauthenticated: int = setting(128, COUNT, "FTPS connections all addresses together may hold open before "
                                        "they log in, so that idle ones cannot take every session")
    shutdown_grace: int = setting(30, SECONDS, "how long running downloads get to finish after SIGTERM")
    log_format: str = setting("", choice("text", "json"), "text, or json: one object per line with a request id",
                              "text; json with FWREPO_ENV=production")
    job_timeout: int = setting(DAY, SECONDS, "how long after retrieve_date (or the last progress) an update job "
                               "is timed_out")
    retry_grace: int = setting(300, seconds_within(0, DAY), "how long after a charger's DownloadFailed, beyond the "
                               "grant's retry interval, fwrepo waits for its next attempt before calling the "
                               "download failed for good")
    webhook_timeout: int = setting(10, seconds_within(1, 60), "hard deadline of one webhook delivery attempt, "
                                   "connecting and the receiver's answer included: a receiver that never answers "
                                   "costs one attempt this long, then the delivery is retried")
    webhook_max_attempts: int = setting(8, COUNT, "attempts a webhook delivery gets before it is marked failed")
    webhook_retry_base: int = setting(10, SECONDS, "wait before a failed webhook delivery's second attempt; each "
                                      "further wait doubles, up to an hour")
    webhook_interval: int = setting(2, SECONDS, "how often each node looks for due grants to push and webhook "
                                    "deliveries to send (an event this node decides is sent at once)")
    webhook_allow_http: bool = setting(False, BOOLEAN, "accept http:// webhook URLs to any host; without it "
                                       "http:// is accepted only for loopback addresses, for development")
    webhook_ca: Path | None = setting(None, optional(PATH), "PEM bundle of the CA certificates webhook receivers' "
                                      "HTTPS certificates are checked against", "the system's CA certificates")
    webhook_allow_private: bool = setting(False, BOOLEAN, "deliver webhooks to loopback, private and link-local "
                                          "addresses; off, so that a webhook cannot make fwrepo probe its own "
                                          "network (SSRF)")

    citrineos_url: str | None = setting(None, optional(HTTP_URL), "REST API of the CitrineOS that campaigns "
                                        "created with \"dispatch\": \"citrineos\" send UpdateFirmware through",
                                        "none: such campaigns are refused")
    citrineos_tenant: int = setting(1, COUNT, "CitrineOS tenant id the chargers of those campaigns belong to")
    citrineos_amqp_url: str = setting("amqp://guest:guest@127.0.0.1:5672/", AMQP_URL, "CitrineOS's RabbitMQ "
                                      "(with its vhost as the path): fwrepo learns what chargers said from there")
    citrineos_amqp_exchange: str = setting("citrineos", TEXT, "CitrineOS's headers exchange on that broker")
    citrineos_queue: str = setting("fwrepo", TEXT, "durable queue fwrepo binds to that exchange; every node "
                                   "consumes it, so that each frame is handled once and none is lost while "
                                   "fwrepo restarts")
    citrineos_timeout: int = setting(10, seconds_within(1, 60), "deadline of one UpdateFirmware request to "
                                     "CitrineOS's REST API")
    citrineos_retry_base: int = setting(30, SECONDS, "wait before sending again to a charger CitrineOS could "
                                        "not reach, or while CitrineOS is down; each further wait doubles, up to "
                                        "an hour (a charger heard from again is tried at once)")
    citrineos_connect_tries: int = setting(6, COUNT, "times fwrepo sends to a charger CitrineOS has no "
                                           "connection to before its job is not_connected")

    @property
    def local_storage_dir(self) -> Path:
        return self.storage_dir or self.data_dir / "storage"

    @property
    def signing_keys_dir(self) -> Path:
        return self.keys_dir or self.data_dir / "keys"

    @property
    def audit_key_path(self) -> Path:
        # Beside the signing keys: the keys directory is already shared by every node and backed up.
        return self.audit_key or self.signing_keys_dir / "audit_key.pem"

    @property
    def audit_checkpoint_log_path(self) -> Path:
        return self.audit_checkpoint_log or self.data_dir / "audit_checkpoints.log"

    def __repr__(self) -> str:
        # Settings get logged; secrets must not be.
        shown = {
            field.name: ("***" if field.name in SECRET_FIELDS and getattr(self, field.name) else getattr(self, field.name))
            for field in dataclasses.fields(self)
        }
        shown["database_url"] = _without_password(self.database_url)
        return f"Settings({shown})"


@dataclass(frozen=True)
class Setting:
    """One knob, as declared on ``Settings``."""

    field: str
    kind: Kind
    default: Any
    help: str
    derived: str | None

    @property
    def env(self) -> str:
        return PREFIX + self.field.upper()

    @property
    def flag(self) -> str:
        return "--" + self.field.replace("_", "-")

    @property
    def flags(self) -> tuple[str, ...]:
        """The flag, and for a boolean its negation."""
        return (self.flag, "--no-" + self.flag[2:]) if self.kind is BOOLEAN else (self.flag,)

    @property
    def default_text(self) -> str:
        """The default as a person reads it: what an unset setting really becomes."""
        if self.derived is not None:
            return self.derived
        return _shown(self.default, self.kind)


def _shown(value: Any, kind: Kind) -> str:
    if value is None or value == "":
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    units = {"bytes": ((GiB, "GiB"), (MiB, "MiB"), (KiB, "KiB")),
             "seconds": ((DAY, "day"), (3600, "hour"), (60, "minute"))}
    for size, unit in units.get(kind.unit or "", ()):
        if value % size == 0:
            count = value // size
            plural = "s" if count != 1 and kind.unit == "seconds" else ""
            return f"{value} ({count} {unit}{plural})"
    return str(value)


SETTINGS: tuple[Setting, ...] = tuple(
    Setting(field.name, field.metadata["kind"], field.default, field.metadata["help"], field.metadata["derived"])
    for field in dataclasses.fields(Settings)
)
BY_FIELD: Mapping[str, Setting] = {setting.field: setting for setting in SETTINGS}
SECRET_FIELDS = frozenset({"s3_secret_access_key", "key_passphrase", "token_secret"})
WILDCARD_HOSTS = ("0.0.0.0", "::")
MIN_TOKEN_SECRET = 32


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


def load_settings(environ: Mapping[str, str] | None = None, flags: Mapping[str, str | bool] | None = None) -> Settings:
    """Build the settings from the environment, then flags (by field name), then derived defaults.

    A flag's value is its text, or for a boolean flag already ``True``/``False``.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = (flags or {}).get(setting.field)
        if isinstance(raw, bool):
            values[setting.field] = raw
            continue
        name = setting.flag if raw is not None else setting.env
        if raw is None:
            raw = environ.get(setting.env)
        if raw is None:
            continue
        try:
            values[setting.field] = setting.kind.parse(raw)
        except ValueError as error:
            raise SettingsError(name, str(error)) from None
    settings = Settings(**values)
    derived: dict[str, Any] = {}
    if not settings.public_url:
        if settings.host in WILDCARD_HOSTS:
            raise SettingsError("FWREPO_PUBLIC_URL", f"required when FWREPO_HOST={settings.host}: chargers cannot "
                                "download from a wildcard address; give the name they reach, e.g. https://fw.example.net")
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        derived["public_url"] = f"{'https' if settings.tls else 'http'}://{host}:{settings.port}"
    if not settings.database_url:
        derived["database_url"] = f"sqlite:///{settings.data_dir / 'fwrepo.sqlite3'}"
    production = settings.env == "production"
    if not settings.log_format:
        derived["log_format"] = "json" if production else "text"
    if not settings.ftps_host:
        derived["ftps_host"] = settings.host
    if not settings.ftps_port:
        derived["ftps_port"] = 21 if production else 2121
    if not settings.ftps_implicit_port:
        derived["ftps_implicit_port"] = 990 if production else 9990
    if not settings.ftps_public_host:
        derived["ftps_public_host"] = urlsplit(derived.get("public_url", settings.public_url)).hostname
    settings = dataclasses.replace(settings, **derived)
    _check_consistency(settings)
    return settings


def _check_consistency(settings: Settings) -> None:
    if settings.storage == "s3" and not settings.s3_bucket:
        raise SettingsError("FWREPO_S3_BUCKET", "required when FWREPO_STORAGE=s3")
    if settings.s3_tenant_bucket is not None and settings.storage != "s3":
        raise SettingsError("FWREPO_S3_TENANT_BUCKET", "needs FWREPO_STORAGE=s3 (local storage keeps each tenant "
                            "under tenants/NAME/ in its directory)")
    if settings.s3_sse == "aws:kms" and not settings.s3_sse_kms_key_id:
        raise SettingsError("FWREPO_S3_SSE_KMS_KEY_ID", "required when FWREPO_S3_SSE=aws:kms")
    # S3 refuses parts under 5 MiB (except the last one).
    if settings.s3_part_size < 5 * MiB:
        raise SettingsError("FWREPO_S3_PART_SIZE", f"must be at least {5 * MiB} (5 MiB), the S3 minimum part size")
    if settings.env == "production" and not settings.key_passphrase:
        raise SettingsError("FWREPO_KEY_PASSPHRASE", "required when FWREPO_ENV=production (it encrypts the signing keys)")
    if settings.token_secret is not None and len(settings.token_secret) < MIN_TOKEN_SECRET:
        raise SettingsError("FWREPO_TOKEN_SECRET", f"must be at least {MIN_TOKEN_SECRET} characters "
                            "(e.g. `openssl rand -base64 32`): it is all that stands between a guesser and a download")
    if settings.env == "production" and not settings.token_secret:
        raise SettingsError("FWREPO_TOKEN_SECRET", "required when FWREPO_ENV=production (the same on every node)")
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise SettingsError("FWREPO_TLS_KEY", "FWREPO_TLS_CERT and FWREPO_TLS_KEY go together")
    for name in ("charger_crl", "charger_ocsp"):
        if getattr(settings, name) is not None and settings.charger_ca is None:
            raise SettingsError(f"FWREPO_{name.upper()}", "needs FWREPO_CHARGER_CA (the CA whose certificates it checks)")
    if settings.download_mode == "redirect" and settings.storage != "s3":
        raise SettingsError("FWREPO_DOWNLOAD_MODE", "redirect needs FWREPO_STORAGE=s3 (it redirects to S3 presigned URLs)")
    if len(settings.public_url) > MAX_PUBLIC_URL:
        raise SettingsError("FWREPO_PUBLIC_URL", f"must be at most {MAX_PUBLIC_URL} characters: download locations "
                            "must stay within OCPP 2.0.1's 512 (within 1.6's 255 up to 199)")
    if (settings.ftps_tls_cert is None) != (settings.ftps_tls_key is None):
        raise SettingsError("FWREPO_FTPS_TLS_KEY", "FWREPO_FTPS_TLS_CERT and FWREPO_FTPS_TLS_KEY go together")
    if settings.ftps and settings.ftps_port == settings.ftps_implicit_port:
        raise SettingsError("FWREPO_FTPS_IMPLICIT_PORT", "must differ from FWREPO_FTPS_PORT")
    if (settings.s3_access_key_id is None) != (settings.s3_secret_access_key is None):
        raise SettingsError("FWREPO_S3_SECRET_ACCESS_KEY", "FWREPO_S3_ACCESS_KEY_ID and FWREPO_S3_SECRET_ACCESS_KEY go together")


def settings_page() -> str:
    """docs/settings.md: every setting as the declaration above says it (a test keeps the file equal to this)."""
    lines = [
        "# Settings",
        "",
        "<!-- Generated from repo_service/settings.py by `python -m repo_service.settings > docs/settings.md`;",
        "     tests/test_settings.py fails when this page and the declaration differ. -->",
        "",
        "Every setting is an environment variable and a flag of `fwrepo serve` (and `fwrepo ftps`); a flag wins",
        "over the environment. The local commands (`fwrepo clients`, `keys`, `signers`, `storage`, `audit`,",
        "`db upgrade`) read the same variables and take as flags only the settings they use. A bad value stops",
        "the command with one line naming the variable and what was expected.",
        "",
        "| variable | flag | type | default | what |",
        "| --- | --- | --- | --- | --- |",
    ]
    for setting in SETTINGS:
        cells = [f"`{setting.env}`", ", ".join(f"`{flag}`" for flag in setting.flags), setting.kind.name,
                 setting.default_text, setting.help]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(settings_page(), end="")
