"""Checking a signed release manifest offline, as a CSMS or an auditor would."""

from __future__ import annotations

import hashlib
from typing import Any, BinaryIO

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from repo_service.domain import pki


class ManifestError(Exception):
    """The manifest or the image does not check out; the message says which part."""


def verify_release(document: dict[str, Any], image: BinaryIO, root_pem: bytes | None) -> list[str]:
    """Check the manifest's signature, its certificate against the root, and the image against both.

    Returns what was checked, one line each; raises ManifestError at the first failure.
    """
    try:
        manifest = document["manifest"]
        certificate = x509.load_pem_x509_certificate(document["signing_certificate"].encode())
        signature = pki.decode_signature(document["signature"])
    except (KeyError, TypeError, ValueError, pki.KeyMaterialError) as error:
        raise ManifestError(f"not a fwrepo manifest document ({error})") from None
    public_key = certificate.public_key()
    try:
        # Manifests from before schemes were a choice carry none: theirs is the one the key's type implies.
        algorithm = manifest.get("signing_algorithm") or pki.algorithm_of(public_key)  # type: ignore[arg-type]
        pki.check_algorithm(public_key, algorithm, "signing_algorithm")  # type: ignore[arg-type]
    except pki.KeyMaterialError as error:
        raise ManifestError(f"the manifest's {error}") from None
    if not pki.verify_digest(public_key, algorithm, hashlib.sha256(pki.canonical_json(manifest)).hexdigest(), signature):  # type: ignore[arg-type]
        raise ManifestError("the manifest's signature does not verify with its signing certificate")
    findings = [f"manifest signature OK (signing key {manifest.get('signing_key_id')}, {algorithm})"]
    if root_pem is not None:
        root = x509.load_pem_x509_certificate(root_pem)
        try:
            certificate.verify_directly_issued_by(root)
        except (ValueError, TypeError, InvalidSignature):
            raise ManifestError("the signing certificate is not issued by the given root") from None
        findings.append(f"signing certificate issued by {root.subject.rfc4514_string()}")
    else:
        findings.append("signing certificate NOT checked against a root (give --root ROOT.pem)")
    digest, size = hashlib.sha256(), 0
    while block := image.read(1024 * 1024):
        digest.update(block)
        size += len(block)
    if size != manifest.get("size"):
        raise ManifestError(f"the image has {size} bytes, the manifest says {manifest.get('size')}")
    if digest.hexdigest() != manifest.get("sha256"):
        raise ManifestError(f"the image's SHA-256 is {digest.hexdigest()}, the manifest says {manifest.get('sha256')}")
    findings.append(f"image size and SHA-256 match ({manifest.get('vendor')} {manifest.get('version')})")
    if document.get("image_signature"):
        image_signature = pki.decode_signature(document["image_signature"], "image_signature")
        if not pki.verify_digest(public_key, algorithm, digest.hexdigest(), image_signature):  # type: ignore[arg-type]
            raise ManifestError("the image signature does not verify with the signing certificate")
        findings.append("image signature OK")
    return findings
