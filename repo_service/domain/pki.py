"""Firmware-signing cryptography that chargers agree with.

A charger checks firmware the way ``openssl dgst -sha256 -verify pub.pem
-signature sig.der image.bin`` does: a DER signature over the SHA-256 of the
image. fwrepo hashes the image once while it streams in, so signing here works
on that digest (prehashed): signing costs nothing per byte.

The signature scheme is a choice per signing key, named by its algorithm:
``ecdsa-p256`` and ``ecdsa-p384`` (ECDSA-Sig-Value), ``rsa-3072`` and
``rsa-4096`` (RSASSA-PKCS1-v1_5), ``rsa-pss-3072`` and ``rsa-pss-4096``
(RSASSA-PSS, MGF1 with SHA-256, a 32-byte salt: openssl's ``-sigopt
rsa_padding_mode:pss -sigopt rsa_pss_saltlen:32``). Every scheme hashes with
SHA-256, P-384 too: the OCPP 1.6 security white paper (edition 2, use case
L01, secure firmware update) has the charger validate the signature over the
whole file with SHA-256 hashing, and chargers run ``openssl dgst -sha256``.
ECDSA over a digest shorter than the curve order is standard (FIPS 186-5);
P-384 then buys a stronger key, not a stronger hash.

OCPP 1.6 security extension, SignedUpdateFirmware.req: ``signature`` is at most
800 characters of base64 and ``signingCertificate`` at most 5500 of PEM. That
allows ECDSA P-256/P-384 and RSA up to 4096 bits; RSA 8192 (1368 characters)
would overflow it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from repo_service.errors import InvalidInput

MAX_SIGNATURE_CHARS = 800
MAX_CERTIFICATE_CHARS = 5500
ALGORITHMS = ("ecdsa-p256", "ecdsa-p384", "rsa-3072", "rsa-4096", "rsa-pss-3072", "rsa-pss-4096")
# How an RSA key pads its signatures; ECDSA has no such choice. An imported RSA key does not say which
# its chargers expect, so the importer chooses.
RSA_PADDINGS = ("pkcs1v15", "pss")
# RSA-PSS as `openssl dgst -sha256 -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:32` verifies
# it: the white paper names PSS without its parameters, so the usual ones (RFC 8017 section 9.1), the
# salt as long as the digest and MGF1 with the message's hash.
PSS_SALT_LENGTH = 32
_CURVES: dict[str, type[ec.EllipticCurve]] = {"ecdsa-p256": ec.SECP256R1, "ecdsa-p384": ec.SECP384R1}
_RSA_SIZES = (3072, 4096)

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey


class KeyMaterialError(InvalidInput):
    """Key or certificate material that cannot be used for firmware signing."""


def parse_algorithm(algorithm: str, field: str = "algorithm") -> str:
    if algorithm not in ALGORITHMS:
        raise KeyMaterialError(field, f"must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
    return algorithm


def generate_key(algorithm: str) -> PrivateKey:
    parse_algorithm(algorithm)
    if algorithm in _CURVES:
        return ec.generate_private_key(_CURVES[algorithm]())
    return rsa.generate_private_key(public_exponent=65537, key_size=int(algorithm.rsplit("-", 1)[1]))


def algorithm_of(key: PrivateKey | PublicKey, field: str = "key", padding_name: str | None = None,
                 padding_field: str = "scheme") -> str:
    """The algorithm of a key fwrepo can sign or verify with, RSA keys padding as padding_name says
    (default PKCS#1 v1.5); KeyMaterialError naming field (the key) or padding_field (the padding) otherwise."""
    if padding_name is not None and padding_name not in RSA_PADDINGS:
        raise KeyMaterialError(padding_field, f"must be one of {', '.join(RSA_PADDINGS)}, got {padding_name!r}")
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        algorithm = next((name for name, curve in _CURVES.items() if isinstance(key.curve, curve)), None)
        if algorithm is None:
            raise KeyMaterialError(field, f"ECDSA curve {key.curve.name} is not supported: use P-256 (prime256v1) "
                                          "or P-384 (secp384r1)")
        if padding_name is not None:
            raise KeyMaterialError(padding_field, f"{padding_name} is a padding of RSA signatures; this key is "
                                                  f"{algorithm}, which signs with ECDSA (leave the scheme out)")
        return algorithm
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        if key.key_size not in _RSA_SIZES:
            raise KeyMaterialError(
                field,
                f"RSA {key.key_size} bits is not supported: use 3072 or 4096 (smaller is weak; larger overflows "
                "OCPP's 800-character signature field)",
            )
        return f"rsa-pss-{key.key_size}" if padding_name == "pss" else f"rsa-{key.key_size}"
    raise KeyMaterialError(field, "only ECDSA P-256/P-384 and RSA 3072/4096 keys can sign firmware")


def algorithms_of(key: PrivateKey | PublicKey) -> tuple[str, ...]:
    """The algorithms a key can sign with: its one for ECDSA, one per padding for RSA."""
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return tuple(algorithm_of(key, padding_name=name) for name in RSA_PADDINGS)
    return (algorithm_of(key),)


def check_algorithm(key: PrivateKey | PublicKey, algorithm: str, field: str = "algorithm") -> None:
    """KeyMaterialError naming field unless key can sign with algorithm."""
    if parse_algorithm(algorithm, field) not in algorithms_of(key):
        raise KeyMaterialError(field, f"{algorithm} does not fit the key, which signs with "
                                      f"{' or '.join(algorithms_of(key))}")


def _rsa_padding(algorithm: str) -> padding.AsymmetricPadding:
    if algorithm.startswith("rsa-pss-"):
        return padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=PSS_SALT_LENGTH)
    return padding.PKCS1v15()


def sign_digest(key: PrivateKey, algorithm: str, sha256_hex: str) -> str:
    """Single-line base64 of the DER signature openssl dgst -sha256 -sign would make over the image with
    algorithm's scheme (for RSA-PSS, with the -sigopt options of the module docstring)."""
    check_algorithm(key, algorithm)
    digest = bytes.fromhex(sha256_hex)
    prehashed = utils.Prehashed(hashes.SHA256())
    if isinstance(key, ec.EllipticCurvePrivateKey):
        raw = key.sign(digest, ec.ECDSA(prehashed))
    else:
        raw = key.sign(digest, _rsa_padding(algorithm), prehashed)
    signature = base64.b64encode(raw).decode()
    if len(signature) > MAX_SIGNATURE_CHARS:
        raise KeyMaterialError("key", f"signature of {len(signature)} characters exceeds OCPP's {MAX_SIGNATURE_CHARS}")
    return signature


def sign_bytes(key: PrivateKey, algorithm: str, data: bytes) -> str:
    return sign_digest(key, algorithm, hashlib.sha256(data).hexdigest())


def decode_signature(signature: str, field: str = "signature") -> bytes:
    text = "".join(signature.split())
    if not text:
        raise InvalidInput(field, "must not be empty")
    if len(text) > MAX_SIGNATURE_CHARS:
        raise InvalidInput(field, f"must be at most {MAX_SIGNATURE_CHARS} base64 characters")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        raise InvalidInput(field, "is not valid base64") from None


def verify_digest(public_key: PublicKey, algorithm: str, sha256_hex: str, signature: bytes) -> bool:
    """Whether signature is algorithm's over the digest, by public_key's private half (PSS: salt of 32 exactly)."""
    return _verifies(public_key, sha256_hex, signature, [_rsa_padding(algorithm)])


def verify_digest_any_scheme(public_key: PublicKey, sha256_hex: str, signature: bytes) -> bool:
    """Whether signature is public_key's over the digest in any scheme it may sign with: an uploader's key
    is registered without one. RSA-PSS of any salt length is accepted: `openssl dgst -sigopt
    rsa_padding_mode:pss` on the engineer's machine salts as long as the key allows unless told
    otherwise, and the salt length does not weaken the check."""
    pss_any_salt = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO)
    return _verifies(public_key, sha256_hex, signature, [padding.PKCS1v15(), pss_any_salt])


def _verifies(public_key: PublicKey, sha256_hex: str, signature: bytes,
              rsa_paddings: Sequence[padding.AsymmetricPadding]) -> bool:
    digest = bytes.fromhex(sha256_hex)
    prehashed = utils.Prehashed(hashes.SHA256())
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return _holds(lambda: public_key.verify(signature, digest, ec.ECDSA(prehashed)))
    return any(_holds(lambda pad=pad: public_key.verify(signature, digest, pad, prehashed)) for pad in rsa_paddings)


def _holds(check: Callable[[], None]) -> bool:
    try:
        check()
    except (InvalidSignature, ValueError):
        return False
    return True


def canonical_json(document: Mapping[str, Any]) -> bytes:
    """One byte string per document: sorted keys, no spaces, UTF-8 (the manifest's signed form)."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# -- certificates -----------------------------------------------------------------------


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fwrepo"), x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    )


def make_root(key: PrivateKey, common_name: str, now: datetime, days: int) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(digital_signature=False, cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def make_signing_certificate(
    key: PrivateKey, issuer_key: PrivateKey, issuer: x509.Certificate, common_name: str, now: datetime, days: int
) -> x509.Certificate:
    not_after = min(now + timedelta(days=days), issuer.not_valid_after_utc)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True, cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
        .sign(issuer_key, hashes.SHA256())
    )


def make_tls_certificate(
    key: PrivateKey, issuer_key: PrivateKey, issuer: x509.Certificate, hosts: Sequence[str], now: datetime, days: int
) -> x509.Certificate:
    """A TLS server certificate for hosts (DNS names or IP addresses), as chargers' TLS clients expect."""
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(min(now + timedelta(days=days), issuer.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=True,
                          data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
        .sign(issuer_key, hashes.SHA256())
    )


def _key_usage(digital_signature: bool, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def fingerprint(certificate: x509.Certificate) -> str:
    return certificate.fingerprint(hashes.SHA256()).hex()


def load_certificates(data: bytes, field: str = "cert") -> list[x509.Certificate]:
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise KeyMaterialError(field, "is not a PEM certificate or chain") from None
    if not certificates:
        raise KeyMaterialError(field, "holds no certificate")
    return certificates


def load_public_key(data: bytes, field: str = "key") -> PublicKey:
    """A public key from PEM: a SubjectPublicKeyInfo or a certificate."""
    if b"CERTIFICATE" in data:
        key = load_certificates(data, field)[0].public_key()
    else:
        try:
            key = serialization.load_pem_public_key(data)
        except ValueError:
            raise KeyMaterialError(field, "is neither a PEM public key nor a PEM certificate") from None
    algorithm_of(key, field)  # refuses what cannot verify firmware
    return key  # type: ignore[return-value]


@dataclass(frozen=True)
class CheckedChain:
    """A signing certificate, the certificates above it, and the root they end in."""

    leaf: x509.Certificate
    intermediates: tuple[x509.Certificate, ...]
    root: x509.Certificate


def check_signing_chain(
    key: PrivateKey, certificates: Sequence[x509.Certificate], now: datetime, field: str = "cert"
) -> CheckedChain:
    """Check what a charger would: the key fits, the chain ends in a root, all valid now, signing allowed."""
    algorithm_of(key)
    leaf = next((cert for cert in certificates if cert.public_key() == key.public_key()), None)
    if leaf is None:
        raise KeyMaterialError("key", "does not match any certificate given (the key and certificate belong to other pairs)")
    chain = [leaf]
    remaining = [cert for cert in certificates if cert is not leaf]
    while chain[-1].issuer != chain[-1].subject:
        issuer = next((cert for cert in remaining if cert.subject == chain[-1].issuer), None)
        if issuer is None:
            raise KeyMaterialError(
                field, f"chain is incomplete: no certificate for issuer {chain[-1].issuer.rfc4514_string()!r} (include it up to the root)"
            )
        try:
            chain[-1].verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            raise KeyMaterialError(field, f"{chain[-1].subject.rfc4514_string()} is not signed by its issuer's key") from None
        remaining.remove(issuer)
        chain.append(issuer)
    root = chain[-1]
    try:
        root.verify_directly_issued_by(root)
    except (ValueError, TypeError, InvalidSignature):
        raise KeyMaterialError(field, "the root certificate's self-signature does not verify") from None
    for cert in chain:
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise KeyMaterialError(
                field,
                f"{cert.subject.rfc4514_string()} is not valid now (valid {cert.not_valid_before_utc:%Y-%m-%d} "
                f"to {cert.not_valid_after_utc:%Y-%m-%d})",
            )
    _check_may_sign_code(leaf, field)
    if len(pem(leaf)) > MAX_CERTIFICATE_CHARS:
        raise KeyMaterialError(field, f"the signing certificate is over OCPP's {MAX_CERTIFICATE_CHARS} PEM characters")
    return CheckedChain(leaf=leaf, intermediates=tuple(chain[1:-1]), root=root)


def _check_may_sign_code(certificate: x509.Certificate, field: str) -> None:
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
        if not usage.digital_signature:
            raise KeyMaterialError(field, "the signing certificate's key usage does not allow digital signatures")
    except x509.ExtensionNotFound:
        pass
    try:
        purposes = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if ExtendedKeyUsageOID.CODE_SIGNING not in purposes and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in purposes:
            raise KeyMaterialError(field, "the signing certificate's extended key usage does not include code signing")
    except x509.ExtensionNotFound:
        pass
    try:
        if certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            raise KeyMaterialError(field, "the signing certificate is a CA certificate; firmware is signed by an end-entity certificate")
    except x509.ExtensionNotFound:
        pass


def encrypt_private_key(key: PrivateKey, passphrase: bytes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    )


def load_private_key(data: bytes, passphrase: bytes | None, field: str = "key") -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=passphrase)
    except TypeError:
        raise KeyMaterialError(field, "is encrypted: give its passphrase" if passphrase is None else "is not encrypted, but a passphrase was given") from None
    except ValueError:
        raise KeyMaterialError(field, "cannot be read: not a PEM private key, or the passphrase is wrong") from None
    algorithm_of(key)  # type: ignore[arg-type]
    return key  # type: ignore[return-value]
