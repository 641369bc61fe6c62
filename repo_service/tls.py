"""The HTTPS certificate: the operator's, or a development one made on first start."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from repo_service.domain import pki
from repo_service.domain.clock import utc_now
from repo_service.domain.owner_files import write_private
from repo_service.settings import Settings

DEVELOPMENT_HOSTS = ("localhost", "127.0.0.1", "::1")
# With FWREPO_CHARGER_CA, the handshakes (HTTPS and FTPS) ask for a client certificate and check its chain,
# but not its dates: an expired charger certificate must reach the download, to be refused there with its
# reason in the grant's records (domain/charger_certificates.py). OpenSSL's X509_V_FLAG_NO_CHECK_TIME, which
# Python's ssl passes through though it has no name for it; pyOpenSSL's verify callback forgives these errors:
NO_CHECK_TIME = 0x200000
DATE_ERRORS = (9, 10)  # X509_V_ERR_CERT_NOT_YET_VALID, X509_V_ERR_CERT_HAS_EXPIRED


@dataclass(frozen=True)
class TlsFiles:
    certificate: Path
    key: Path
    key_password: str | None
    # The local CA that signed a development certificate: what a tester gives curl --cacert.
    development_ca: Path | None


def tls_files(settings: Settings, passphrase: bytes) -> TlsFiles:
    if settings.tls_cert is not None and settings.tls_key is not None:
        return TlsFiles(settings.tls_cert, settings.tls_key, None, None)
    directory = settings.data_dir / "tls"
    files = TlsFiles(directory / "server.pem", directory / "server.key", passphrase.decode(), directory / "ca.pem")
    if not files.certificate.exists():
        _make_development_certificate(directory, files, passphrase)
    return files


def ftps_tls_files(settings: Settings, passphrase: bytes) -> TlsFiles:
    """FTPS uses the HTTPS certificate unless the operator gave it one of its own."""
    if settings.ftps_tls_cert is not None and settings.ftps_tls_key is not None:
        return TlsFiles(settings.ftps_tls_cert, settings.ftps_tls_key, None, None)
    return tls_files(settings, passphrase)


def _make_development_certificate(directory: Path, files: TlsFiles, passphrase: bytes) -> None:
    # The CA key signs this one certificate and is then thrown away: nobody can
    # issue another certificate under it, so trusting ca.pem trusts only this server.
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    now = utc_now()
    ca_key, key = pki.generate_key("ecdsa-p256"), pki.generate_key("ecdsa-p256")
    ca = pki.make_root(ca_key, "fwrepo development TLS CA", now, 3650)
    certificate = pki.make_tls_certificate(key, ca_key, ca, DEVELOPMENT_HOSTS, now, 825)
    files.key.unlink(missing_ok=True)
    write_private(files.key, pki.encrypt_private_key(key, passphrase))
    assert files.development_ca is not None
    files.development_ca.write_text(pki.pem(ca))
    files.certificate.write_text(pki.pem(certificate) + pki.pem(ca))
