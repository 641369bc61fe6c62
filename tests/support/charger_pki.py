"""A charger CA made with `openssl ca`, by the very commands docs/charger-certificates.md gives operators."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.support.documented import documented_block
from tests.support.fwrepo import free_port


def documented_commands() -> str:
    """The shell block between docs/charger-certificates.md's charger-ca markers."""
    return documented_block("charger-certificates.md", "charger-ca commands", "sh")


def _run(*command: str, cwd: Path) -> str:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"{' '.join(command)}: {result.stderr}"
    return result.stdout


@dataclass(frozen=True)
class ChargerCa:
    directory: Path

    @property
    def certificate(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def crl(self) -> Path:
        return self.directory / "ca.crl"

    def issue(self, name: str, *, start: str | None = None, end: str | None = None,
              extensions: str = "charger") -> tuple[Path, Path]:
        """A certificate (CN=name) and its key, as the docs issue one; start/end as YYYYMMDDHHMMSSZ."""
        key, request, certificate = (self.directory / f"{name}.{suffix}" for suffix in ("key", "csr", "pem"))
        _run("openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", str(key), "-out", str(request), "-subj", f"/O=Example CPO/CN={name}", cwd=self.directory)
        dates = [*(["-startdate", start] if start else []), *(["-enddate", end] if end else [])]
        _run("openssl", "ca", "-batch", "-config", "ca.cnf", "-extensions", extensions, "-in", str(request),
             "-out", str(certificate), *dates, cwd=self.directory)
        return certificate, key

    def revoke(self, certificate: Path) -> None:
        """Revoke and publish the CRL again, replacing the file the way the docs say (write beside, rename)."""
        _run("openssl", "ca", "-config", "ca.cnf", "-revoke", str(certificate), cwd=self.directory)
        _run("openssl", "ca", "-config", "ca.cnf", "-gencrl", "-out", "ca.crl.new", cwd=self.directory)
        (self.directory / "ca.crl.new").rename(self.crl)


def make_charger_ca(directory: Path) -> ChargerCa:
    directory.mkdir(parents=True, exist_ok=True)
    _run("bash", "-euc", documented_commands(), cwd=directory)
    ca = ChargerCa(directory / "charger-ca")
    # A server certificate of the same CA: it must not stand in for a charger's.
    with (ca.directory / "ca.cnf").open("a") as config:
        config.write("[server]\nbasicConstraints = critical,CA:FALSE\nextendedKeyUsage = serverAuth\n")
    return ca


class OcspResponder:
    """`openssl ocsp` answering for a charger CA from its index.txt, on a free port."""

    def __init__(self, ca: ChargerCa) -> None:
        self.ca = ca
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.restart()

    def restart(self) -> None:
        """(Re)start on the same port, reading index.txt as it is now."""
        self.stop()
        self.process = subprocess.Popen(
            ["openssl", "ocsp", "-index", "index.txt", "-CA", "ca.pem", "-rsigner", "ca.pem", "-rkey", "ca.key",
             "-port", str(self.port), "-nmin", "5"],
            cwd=self.ca.directory, stdout=subprocess.PIPE, stderr=open(self.ca.directory / "ocsp.log", "ab"))
        # It serves one connection at a time and waits for a request on each, so a
        # connect-and-close probe would hang it; it prints ACCEPT once it listens.
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith(b"ACCEPT"):
            raise RuntimeError(f"openssl ocsp did not listen: {line!r}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
