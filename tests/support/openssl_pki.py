"""Certificates made by the openssl command line, the way an operator's own PKI would make them."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

LEAF_EXTENSIONS = "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=codeSigning\n"
CA_EXTENSIONS = "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n"


def openssl(*arguments: str, cwd: Path) -> str:
    return subprocess.run(["openssl", *arguments], cwd=cwd, capture_output=True, text=True, check=True).stdout


def new_key(directory: Path, name: str, algorithm: str = "ec") -> Path:
    """A private key: "ec" (P-256), "ec384" (P-384), or "rsa" and its bits ("rsa3072")."""
    path = directory / f"{name}.key.pem"
    if algorithm in ("ec", "ec384"):
        curve = "P-384" if algorithm == "ec384" else "P-256"
        openssl("genpkey", "-algorithm", "EC", "-pkeyopt", f"ec_paramgen_curve:{curve}", "-out", str(path), cwd=directory)
    else:
        bits = algorithm.removeprefix("rsa")
        openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", f"rsa_keygen_bits:{bits}", "-out", str(path), cwd=directory)
    return path


def public_key(directory: Path, key: Path) -> Path:
    path = key.with_name(key.name.replace(".key.pem", ".pub.pem"))
    openssl("pkey", "-in", str(key), "-pubout", "-out", str(path), cwd=directory)
    return path


@dataclass(frozen=True)
class Pki:
    directory: Path
    root: Path
    root_key: Path
    intermediate: Path
    intermediate_key: Path

    def issue(self, name: str, extensions: str = LEAF_EXTENSIONS, algorithm: str = "ec", by_root: bool = False) -> tuple[Path, Path]:
        """A certificate and key issued by the intermediate (or the root)."""
        key = new_key(self.directory, name, algorithm)
        request = self.directory / f"{name}.csr"
        certificate = self.directory / f"{name}.pem"
        extension_file = self.directory / f"{name}.ext"
        extension_file.write_text(extensions)
        issuer, issuer_key = (self.root, self.root_key) if by_root else (self.intermediate, self.intermediate_key)
        openssl("req", "-new", "-key", str(key), "-subj", f"/O=Test Charging/CN={name}", "-out", str(request), cwd=self.directory)
        openssl("x509", "-req", "-in", str(request), "-CA", str(issuer), "-CAkey", str(issuer_key), "-CAcreateserial",
                "-days", "365", "-sha256", "-extfile", str(extension_file), "-out", str(certificate), cwd=self.directory)
        return certificate, key

    def chain(self, leaf: Path, *, with_intermediate: bool = True, with_root: bool = True) -> Path:
        path = leaf.with_name(leaf.stem + "-chain.pem")
        parts = [leaf.read_text()]
        if with_intermediate:
            parts.append(self.intermediate.read_text())
        if with_root:
            parts.append(self.root.read_text())
        path.write_text("".join(parts))
        return path


def make_pki(directory: Path) -> Pki:
    """A root CA and an intermediate CA, as an operator's production PKI would have."""
    directory.mkdir(parents=True, exist_ok=True)
    root_key = new_key(directory, "root")
    root = directory / "root.pem"
    openssl("req", "-x509", "-new", "-key", str(root_key), "-subj", "/O=Test Charging/CN=Test Firmware Root",
            "-days", "3650", "-sha256", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", str(root), cwd=directory)
    pki = Pki(directory, root, root_key, root, root_key)
    intermediate, intermediate_key = pki.issue("intermediate", CA_EXTENSIONS, by_root=True)
    return Pki(directory, root, root_key, intermediate, intermediate_key)
