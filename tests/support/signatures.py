"""The checks a charger makes on a signed build, done with openssl itself (as EVerest and open-ocpp do them)."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding

from tests.support.documented import documented_block
from tests.support.fwrepo import Fwrepo

# The docs/signing.md block that checks each algorithm's signatures, after its "published build" block.
VERIFY_BLOCKS = {
    "ecdsa-p256": "verify ecdsa",
    "ecdsa-p384": "verify ecdsa",
    "rsa-3072": "verify rsa-pkcs1v15",
    "rsa-4096": "verify rsa-pkcs1v15",
    "rsa-pss-3072": "verify rsa-pss",
    "rsa-pss-4096": "verify rsa-pss",
}


def openssl_verifies(work: Path, certificate_pem: str, signature_b64: str, content: bytes) -> bool:
    """The charger's check of the image's signature, step by step."""
    (work / "signing.pem").write_text(certificate_pem)
    (work / "image.bin").write_bytes(content)
    (work / "sig.b64").write_text(signature_b64 + "\n")
    subprocess.run(["openssl", "x509", "-in", "signing.pem", "-pubkey", "-noout", "-out", "pub.pem"], cwd=work, check=True)
    subprocess.run(["openssl", "base64", "-d", "-in", "sig.b64", "-out", "sig.der"], cwd=work, check=True)
    result = subprocess.run(
        ["openssl", "dgst", "-sha256", "-verify", "pub.pem", "-signature", "sig.der", "image.bin"],
        cwd=work, capture_output=True, text=True,
    )
    return result.returncode == 0 and "Verified OK" in result.stdout


def openssl_chain_verifies(work: Path, root: Path, certificate_pem: str) -> bool:
    """The charger's check that the signing certificate chains to the firmware-signing root it trusts."""
    (work / "leaf.pem").write_text(certificate_pem)
    result = subprocess.run(["openssl", "verify", "-CAfile", str(root), "leaf.pem"], cwd=work, capture_output=True, text=True)
    return result.returncode == 0


def documented_verification(fwrepo: Fwrepo, work: Path, firmware_id: str, content: bytes, block: str,
                            root: Path | None = None) -> subprocess.CompletedProcess[str]:
    """docs/signing.md's commands as written, by bash in work: its "published build" block against fwrepo,
    then block, over content as the charger's image.bin, trusting root (default the development root)."""
    (work / "image.bin").write_bytes(content)
    shutil.copyfile(root or fwrepo.keys_dir / "root-ca.pem", work / "root-ca.pem")
    script = documented_block("signing.md", "published build", "sh") + documented_block("signing.md", block, "sh")
    environment = {"FWREPO_URL": fwrepo.url, "FWREPO_CA": fwrepo.ca, "CSMS": fwrepo.key("csms"), "ID": firmware_id}
    return subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=work, env={**os.environ, **environment},
                          capture_output=True, text=True, timeout=60, check=False)


def cryptography_verifies(certificate_pem: str, signature_b64: str, content: bytes, algorithm: str) -> bool:
    """The same check by the `cryptography` library, its parameters written out here, not taken from fwrepo."""
    key = x509.load_pem_x509_certificate(certificate_pem.encode()).public_key()
    signature = base64.b64decode(signature_b64)
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            assert algorithm == f"ecdsa-p{key.curve.key_size}", f"{algorithm} for a {key.curve.name} key"
            key.verify(signature, content, ec.ECDSA(hashes.SHA256()))
        elif algorithm.startswith("rsa-pss-"):
            key.verify(signature, content, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),  # type: ignore[union-attr]
                       hashes.SHA256())
        else:
            key.verify(signature, content, padding.PKCS1v15(), hashes.SHA256())  # type: ignore[union-attr]
    except InvalidSignature:
        return False
    return True
