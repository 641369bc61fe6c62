"""Charger certificates: whether the TLS client certificate a download came with is that grant's charger's.

A grant bound to the charger's certificate (``"bind": "client_certificate"``) is no longer a bearer
credential: its location opens the download only for a client holding a certificate from the operator's
charger CA (FWREPO_CHARGER_CA) that names the charger (OCPP security profile 3: the serial number in the
CN), still valid, and not revoked (FWREPO_CHARGER_CRL, FWREPO_CHARGER_OCSP).

The work is split with the TLS layer. The handshake asks every client for a certificate and refuses one
that does not chain to the charger CA or is not for TLS clients (OpenSSL checks the extendedKeyUsage), and
nothing about a grant is known yet, so that refusal is in the log, not in a grant's records. It does not judge validity dates: an expired certificate is let through the
handshake so that its download can be refused here, recorded against the grant with its reason. Dates,
names and revocation are judged here, for HTTPS and FTPS alike.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from repo_service.domain.clock import Clock, utc_now
from repo_service.domain.downloads import Refusal
from repo_service.errors import SettingsError

log = logging.getLogger(__name__)

BIND_CLIENT_CERTIFICATE = "client_certificate"
BINDINGS = (BIND_CLIENT_CERTIFICATE,)
# The OCSP setting's value that means "ask the responder the certificate itself names".
OCSP_FROM_CERTIFICATE = "aia"
OCSP_TIMEOUT = 5.0
# A good answer without nextUpdate is trusted this long; one with nextUpdate at most this long too, so a
# revocation reaches a responder-backed fleet within minutes whatever the responder announces.
OCSP_CACHE_SECONDS = 300.0


@dataclass(frozen=True)
class _Answer:
    refusal: Refusal | None
    until: float


class ChargerCertificates:
    """The charger CA, its revocation sources, and the verdict on one client certificate for one charger."""

    def __init__(self, ca_file: Path, crl_file: Path | None = None, ocsp: str | None = None,
                 clock: Clock = utc_now) -> None:
        self.ca_file = ca_file
        self.crl_file = crl_file
        self.ocsp = ocsp
        self.clock = clock
        try:
            self.authorities = x509.load_pem_x509_certificates(ca_file.read_bytes())
        except (OSError, ValueError) as error:
            raise SettingsError("FWREPO_CHARGER_CA", f"cannot read CA certificates from {ca_file}: {error}") from None
        self._crls: list[x509.CertificateRevocationList] = []
        self._crl_stamp: tuple[float, int] | None = None
        self._lock = threading.Lock()
        self._ocsp_answers: dict[int, _Answer] = {}
        if crl_file is not None:
            self._load_crls()  # a bad file stops start-up rather than refusing every charger later

    def refusal(self, der: bytes | None, name: str) -> Refusal | None:
        """None when ``der`` (the client's certificate) is a valid, unrevoked charger certificate naming ``name``."""
        if der is None:
            return Refusal.NO_CERTIFICATE
        try:
            certificate = x509.load_der_x509_certificate(der)
        except ValueError:
            return Refusal.NO_CERTIFICATE
        issuer = self._issuer(certificate)
        if issuer is None:
            # The handshake checked the chain; a leaf whose issuer is not in the bundle (an intermediate
            # the charger sent) cannot be checked for revocation here.
            return Refusal.CERT_UNVERIFIED
        now = self.clock()
        if not _valid_at(certificate, now) or not _valid_at(issuer, now):
            return Refusal.CERT_EXPIRED
        if name not in names(certificate):
            return Refusal.WRONG_CHARGER
        if self.crl_file is not None:
            revoked = self._crl_verdict(certificate, issuer, now)
            if revoked is not None:
                return revoked
        if self.ocsp is not None:
            return self._ocsp_verdict(certificate, issuer)
        return None

    def _issuer(self, certificate: x509.Certificate) -> x509.Certificate | None:
        for authority in self.authorities:
            if authority.subject == certificate.issuer:
                try:
                    certificate.verify_directly_issued_by(authority)
                except (ValueError, TypeError, InvalidSignature):
                    continue
                return authority
        return None

    # -- certificate revocation lists --------------------------------------------------------

    def _load_crls(self) -> None:
        assert self.crl_file is not None
        try:
            stat = self.crl_file.stat()
            data = self.crl_file.read_bytes()
        except OSError as error:
            raise SettingsError("FWREPO_CHARGER_CRL", f"cannot read {self.crl_file}: {error}") from None
        crls = _parse_crls(data)
        if not crls:
            raise SettingsError("FWREPO_CHARGER_CRL", f"{self.crl_file} holds no PEM or DER CRL")
        for crl in crls:
            signer = next((ca for ca in self.authorities if ca.subject == crl.issuer), None)
            if signer is None or not crl.is_signature_valid(signer.public_key()):  # type: ignore[arg-type]
                raise SettingsError("FWREPO_CHARGER_CRL",
                                    f"the CRL of {crl.issuer.rfc4514_string()} is not signed by a charger CA")
        self._crls, self._crl_stamp = crls, (stat.st_mtime, stat.st_size)

    def _crl_verdict(self, certificate: x509.Certificate, issuer: x509.Certificate, now: datetime) -> Refusal | None:
        assert self.crl_file is not None
        with self._lock:
            # The operator replaces the file when its CA publishes a new CRL: read again when it changed.
            try:
                stat = self.crl_file.stat()
                if (stat.st_mtime, stat.st_size) != self._crl_stamp:
                    self._load_crls()
            except (OSError, SettingsError) as error:
                log.error("charger CRL unusable, bound downloads are refused: %s", error)
                return Refusal.CERT_UNVERIFIED
            crls = self._crls
        crl = next((crl for crl in crls if crl.issuer == issuer.subject), None)
        if crl is None:
            log.error("no CRL from %s in %s: its chargers' bound downloads are refused",
                      issuer.subject.rfc4514_string(), self.crl_file)
            return Refusal.CERT_UNVERIFIED
        if crl.next_update_utc is not None and crl.next_update_utc < now:
            # A stale list cannot say what was revoked since: refuse rather than trust it.
            log.error("the charger CRL of %s expired at %s: replace %s", issuer.subject.rfc4514_string(),
                      crl.next_update_utc.isoformat(), self.crl_file)
            return Refusal.CERT_UNVERIFIED
        if crl.get_revoked_certificate_by_serial_number(certificate.serial_number) is not None:
            return Refusal.CERT_REVOKED
        return None

    # -- OCSP --------------------------------------------------------------------------------

    def _ocsp_verdict(self, certificate: x509.Certificate, issuer: x509.Certificate) -> Refusal | None:
        key = certificate.serial_number
        with self._lock:
            cached = self._ocsp_answers.get(key)
        if cached is not None and cached.until > time.monotonic():
            return cached.refusal
        answer = self._ask_responder(certificate, issuer)
        with self._lock:
            self._ocsp_answers[key] = answer
        return answer.refusal

    def _ask_responder(self, certificate: x509.Certificate, issuer: x509.Certificate) -> _Answer:
        url = self.ocsp if self.ocsp != OCSP_FROM_CERTIFICATE else _responder_of(certificate)
        # An answer that cannot be had is asked again at the next download, not cached.
        unverified = _Answer(Refusal.CERT_UNVERIFIED, 0.0)
        if url is None:
            log.error("charger certificate %x names no OCSP responder (FWREPO_CHARGER_OCSP=aia)",
                      certificate.serial_number)
            return unverified
        request = ocsp.OCSPRequestBuilder().add_certificate(certificate, issuer, hashes.SHA1()).build()
        try:
            with urllib.request.urlopen(urllib.request.Request(  # noqa: S310 - the operator's responder
                url, data=request.public_bytes(serialization.Encoding.DER),
                headers={"Content-Type": "application/ocsp-request"}), timeout=OCSP_TIMEOUT) as reply:
                response = ocsp.load_der_ocsp_response(reply.read(64 * 1024))
        except (OSError, ValueError) as error:
            log.error("OCSP responder %s gave no answer, bound downloads are refused: %s", url, error)
            return unverified
        if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
            log.error("OCSP responder %s answered %s", url, response.response_status.name)
            return unverified
        if not _signed_by_issuer_or_its_delegate(response, issuer) or response.serial_number != certificate.serial_number:
            log.error("OCSP answer from %s is not signed by the charger CA or its responder", url)
            return unverified
        now = self.clock()
        if response.next_update_utc is not None and response.next_update_utc < now:
            log.error("OCSP answer from %s is stale (next update %s)", url, response.next_update_utc.isoformat())
            return unverified
        until = time.monotonic() + OCSP_CACHE_SECONDS
        if response.next_update_utc is not None:
            until = min(until, time.monotonic() + (response.next_update_utc - now).total_seconds())
        if response.certificate_status == ocsp.OCSPCertStatus.REVOKED:
            return _Answer(Refusal.CERT_REVOKED, until)
        if response.certificate_status == ocsp.OCSPCertStatus.UNKNOWN:
            return _Answer(Refusal.CERT_UNVERIFIED, until)
        return _Answer(None, until)


def names(certificate: x509.Certificate) -> set[str]:
    """What a charger certificate calls its charger: the subject's common names and serial numbers."""
    attributes = [*certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME),
                  *certificate.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)]
    return {value for attribute in attributes if isinstance(value := attribute.value, str)}


def _valid_at(certificate: x509.Certificate, moment: datetime) -> bool:
    return certificate.not_valid_before_utc <= moment <= certificate.not_valid_after_utc


def _responder_of(certificate: x509.Certificate) -> str | None:
    try:
        access = certificate.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return None
    for description in access:
        if description.access_method == AuthorityInformationAccessOID.OCSP and \
                isinstance(description.access_location, x509.UniformResourceIdentifier):
            return description.access_location.value
    return None


def _signed_by_issuer_or_its_delegate(response: ocsp.OCSPResponse, issuer: x509.Certificate) -> bool:
    """RFC 6960 4.2.2.2: the CA itself, or a responder certificate it issued for OCSP signing."""
    signer = issuer
    for candidate in response.certificates:
        if candidate.subject != issuer.subject:
            try:
                candidate.verify_directly_issued_by(issuer)
                usages = candidate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
                continue  # not a responder certificate the CA issued
            if ExtendedKeyUsageOID.OCSP_SIGNING in usages:
                signer = candidate
                break
    try:
        _verify_signature(signer, response.signature, response.tbs_response_bytes, response.signature_hash_algorithm)
    except (TypeError, InvalidSignature):
        return False
    return True


def _verify_signature(signer: x509.Certificate, signature: bytes, data: bytes,
                      algorithm: hashes.HashAlgorithm | None) -> None:
    key = signer.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        assert algorithm is not None
        key.verify(signature, data, padding.PKCS1v15(), algorithm)
    elif isinstance(key, ec.EllipticCurvePublicKey):
        assert algorithm is not None
        key.verify(signature, data, ec.ECDSA(algorithm))
    elif isinstance(key, ed25519.Ed25519PublicKey):
        key.verify(signature, data)
    else:
        raise TypeError(f"unsupported OCSP signing key {type(key).__name__}")


def _parse_crls(data: bytes) -> list[x509.CertificateRevocationList]:
    if b"-----BEGIN X509 CRL-----" in data:
        blocks = data.split(b"-----END X509 CRL-----")
        return [x509.load_pem_x509_crl(block + b"-----END X509 CRL-----\n")
                for block in blocks if b"-----BEGIN X509 CRL-----" in block]
    try:
        return [x509.load_der_x509_crl(data)]
    except ValueError:
        return []
