"""The checks a charger makes on a signed build, done with openssl itself (as EVerest and open-ocpp do them)."""

from __future__ import annotations

import subprocess
from pathlib import Path


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
