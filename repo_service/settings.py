"""Every ``FWREPO_*`` setting, parsed and checked once, in one place.

Each setting is an environment variable and a matching ``fwrepo serve`` flag
(``FWREPO_S3_BUCKET`` is ``--s3-bucket``); a flag wins over the environment.
A bad value stops start-up with one line naming the variable. The frozen
``Settings`` object is passed down; nothing deeper reads the environment.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from repo_service.errors import SettingsError

PREFIX = "FWREPO_"


def _text(value: str) -> str:
    if not value.strip():
        raise ValueError("expected a non-empty value")
    return value.strip()


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


def _database_url(value: str) -> str:
    scheme = value.split(":", 1)[0]
    # Operators write the libpq form; SQLAlchemy needs to be told to use psycopg 3.
    if scheme in ("postgres", "postgresql"):
        return "postgresql+psycopg:" + value.split(":", 1)[1]
    if scheme in ("sqlite", "postgresql+psycopg"):
        return value
    raise ValueError(f"expected a sqlite:/// or postgresql:// URL, got {value!r}")


def _boolean(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}, got {value!r}")
        return value

    return parse


def _optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse_optional(value: str) -> Any:
        return parse(value) if value.strip() else None

    return parse_optional


@dataclass(frozen=True)
class Setting:
    """One knob: its field name, how to parse it, what it is for."""

    field: str
    parse: Callable[[str], Any]
    help: str

    @property
    def env(self) -> str:
        return PREFIX + self.field.upper()

    @property
    def flag(self) -> str:
        return "--" + self.field.replace("_", "-")


MiB = 1024 * 1024

SETTINGS: tuple[Setting, ...] = (
    Setting("data_dir", lambda value: Path(_text(value)), "directory for the SQLite file and local storage (default ./var)"),
    Setting("host", _text, "address the API listens on (default 127.0.0.1)"),
    Setting("port", _port, "API and download port (default 8443)"),
    Setting("public_url", _http_url, "base URL that goes into download locations (default http://HOST:PORT)"),
    Setting("database_url", _database_url, "sqlite:///PATH or postgresql://... (default sqlite in the data directory)"),
    Setting("storage", _choice("local", "s3"), "storage backend: local or s3 (default local)"),
    Setting("storage_dir", lambda value: Path(_text(value)), "directory of the local backend (default DATA_DIR/storage)"),
    Setting("s3_endpoint_url", _optional(_http_url), "S3 endpoint URL (empty for AWS itself)"),
    Setting("s3_bucket", _text, "S3 bucket (required with FWREPO_STORAGE=s3)"),
    Setting("s3_region", _text, "S3 region (default us-east-1)"),
    Setting("s3_access_key_id", _optional(_text), "S3 access key (default: boto3's usual credential chain)"),
    Setting("s3_secret_access_key", _optional(_text), "S3 secret key (default: boto3's usual credential chain)"),
    Setting("s3_addressing_style", _choice("path", "virtual", "auto"), "S3 addressing style (default path)"),
    Setting("s3_sse", _choice("none", "AES256", "aws:kms"), "S3 server-side encryption (default none)"),
    Setting("s3_sse_kms_key_id", _optional(_text), "KMS key id with FWREPO_S3_SSE=aws:kms"),
    Setting("s3_part_size", _positive_int, "bytes per S3 multipart part; smaller writes are one PUT (default 5 MiB, the S3 minimum: least memory)"),
    Setting("max_upload_bytes", _positive_int, "largest firmware image accepted (default 4 GiB)"),
    Setting("log_level", _choice("debug", "info", "warning", "error"), "log level (default info)"),
    Setting("env", _choice("development", "production"), "development (default) or production: production refuses development keys"),
    Setting("keys_dir", lambda value: Path(_text(value)), "signing keys and certificates (default DATA_DIR/keys)"),
    Setting("key_passphrase", _optional(_text), "passphrase that encrypts the signing keys at rest (required in production)"),
    Setting("signing_algorithm", _choice("ecdsa-p256", "rsa-3072", "rsa-4096"), "algorithm of keys made by keys init/rotate (default ecdsa-p256)"),
    Setting("require_uploader_signature", _boolean, "refuse uploads without a valid release engineer's signature (default false)"),
    Setting("token_secret", _optional(_text), "secret that signs download tokens; the same on every node (required in production)"),
    Setting("grant_max_lifetime", _positive_int, "longest a grant may live, in seconds (default 30 days)"),
    Setting("tls", _boolean, "serve HTTPS (default true); false only behind a proxy that terminates TLS"),
    Setting("tls_cert", _optional(lambda value: Path(_text(value))), "PEM certificate chain for HTTPS (default: a development certificate)"),
    Setting("tls_key", _optional(lambda value: Path(_text(value))), "PEM private key for HTTPS"),
    Setting("download_mode", _choice("stream", "redirect"), "stream (default) or redirect to a short-lived S3 presigned URL"),
    Setting("ftps", _boolean, "run the FTPS server inside fwrepo serve (default true)"),
    Setting("ftps_host", _text, "address the FTPS server listens on (default: FWREPO_HOST)"),
    Setting("ftps_port", _port, "explicit FTPS port, AUTH TLS (default 2121; 21 in production)"),
    Setting("ftps_implicit_port", _port, "implicit FTPS port, TLS from the first byte (default 9990; 990 in production)"),
    Setting("ftps_tls_cert", _optional(lambda value: Path(_text(value))), "PEM certificate chain for FTPS (default: the HTTPS one)"),
    Setting("ftps_tls_key", _optional(lambda value: Path(_text(value))), "PEM private key for FTPS"),
    Setting("ftps_public_host", _optional(_text), "host that goes into FTPS locations (default: FWREPO_PUBLIC_URL's host)"),
    Setting("ftps_location", _choice("explicit", "implicit"), "FTPS location form: explicit ftp:// with AUTH TLS (default) or implicit ftps://"),
    Setting("ftps_passive_ports", _optional(_port_range), "passive data ports LOW-HIGH (default: any free port)"),
    Setting("ftps_masquerade_address", _optional(_text), "address sent in PASV replies, for a server behind NAT"),
    Setting("shutdown_grace", _positive_int, "seconds running downloads get to finish after SIGTERM (default 30)"),
    Setting("log_format", _choice("text", "json"), "text, or json (one object per line with a request id; default in production)"),
    Setting("job_timeout", _positive_int, "seconds after retrieve_date (or the last progress) before an update job is timed_out (default 1 day)"),
    Setting("retry_grace", _positive_int, "seconds after a charger's DownloadFailed, beyond the grant's retry interval, before fwrepo calls the download failed for good (default 300)"),
    Setting("ftp_allow_plain", _boolean, "accept FTP without TLS for legacy chargers (default false; logged as a warning)"),
)

SECRET_FIELDS = frozenset({"s3_secret_access_key", "key_passphrase", "token_secret"})
WILDCARD_HOSTS = ("0.0.0.0", "::")
MIN_TOKEN_SECRET = 32


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("./var")
    host: str = "127.0.0.1"
    port: int = 8443
    public_url: str = ""
    database_url: str = ""
    storage: str = "local"
    storage_dir: Path | None = None
    s3_endpoint_url: str | None = None
    s3_bucket: str = ""
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    s3_addressing_style: str = "path"
    s3_sse: str = "none"
    s3_sse_kms_key_id: str | None = None
    s3_part_size: int = 5 * MiB
    max_upload_bytes: int = 4 * 1024 * MiB
    log_level: str = "info"
    env: str = "development"
    keys_dir: Path | None = None
    key_passphrase: str | None = None
    signing_algorithm: str = "ecdsa-p256"
    require_uploader_signature: bool = False
    token_secret: str | None = None
    grant_max_lifetime: int = 30 * 86400
    tls: bool = True
    tls_cert: Path | None = None
    tls_key: Path | None = None
    download_mode: str = "stream"
    ftps: bool = True
    ftps_host: str = ""
    ftps_port: int = 0
    ftps_implicit_port: int = 0
    ftps_tls_cert: Path | None = None
    ftps_tls_key: Path | None = None
    ftps_public_host: str | None = None
    ftps_location: str = "explicit"
    ftps_passive_ports: tuple[int, int] | None = None
    ftps_masquerade_address: str | None = None
    ftp_allow_plain: bool = False
    job_timeout: int = 86400
    retry_grace: int = 300
    shutdown_grace: int = 30
    log_format: str = ""

    @property
    def local_storage_dir(self) -> Path:
        return self.storage_dir or self.data_dir / "storage"

    @property
    def signing_keys_dir(self) -> Path:
        return self.keys_dir or self.data_dir / "keys"

    def __repr__(self) -> str:
        # Settings get logged; secrets must not be.
        shown = {
            field.name: ("***" if field.name in SECRET_FIELDS and getattr(self, field.name) else getattr(self, field.name))
            for field in dataclasses.fields(self)
        }
        shown["database_url"] = _without_password(self.database_url)
        return f"Settings({shown})"


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


def load_settings(environ: Mapping[str, str] | None = None, flags: Mapping[str, str | None] | None = None) -> Settings:
    """Build the settings from the environment, then flags (by field name), then derived defaults."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = (flags or {}).get(setting.field)
        name = setting.flag if raw is not None else setting.env
        if raw is None:
            raw = environ.get(setting.env)
        if raw is None:
            continue
        try:
            values[setting.field] = setting.parse(raw)
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
    if settings.download_mode == "redirect" and settings.storage != "s3":
        raise SettingsError("FWREPO_DOWNLOAD_MODE", "redirect needs FWREPO_STORAGE=s3 (it redirects to S3 presigned URLs)")
    if len(settings.public_url) > 120:
        raise SettingsError("FWREPO_PUBLIC_URL", "must be at most 120 characters: download locations must stay under 255")
    if (settings.ftps_tls_cert is None) != (settings.ftps_tls_key is None):
        raise SettingsError("FWREPO_FTPS_TLS_KEY", "FWREPO_FTPS_TLS_CERT and FWREPO_FTPS_TLS_KEY go together")
    if settings.ftps and settings.ftps_port == settings.ftps_implicit_port:
        raise SettingsError("FWREPO_FTPS_IMPLICIT_PORT", "must differ from FWREPO_FTPS_PORT")
    if (settings.s3_access_key_id is None) != (settings.s3_secret_access_key is None):
        raise SettingsError("FWREPO_S3_SECRET_ACCESS_KEY", "FWREPO_S3_ACCESS_KEY_ID and FWREPO_S3_SECRET_ACCESS_KEY go together")
