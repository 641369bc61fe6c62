"""A simulated charger that takes firmware updates over OCPP the way real charger stacks do.

It speaks OCPP 1.6J (UpdateFirmware, and the security extension's
SignedUpdateFirmware) or OCPP 2.0.1 (UpdateFirmware), fetches `location` over
HTTPS (resuming with Range) or FTPS (`ftp://` with AUTH TLS, `ftps://`
implicit), checks what it can (the transport's SHA-256, the signature against
the signingCertificate it was sent), reports every step and reboots into the
new image by reconnecting with a BootNotification. A CSMS that answers a
status notification with a CALLERROR (CitrineOS 1.8.3 does for every OCPP 1.6
FirmwareStatusNotification) is logged and the update goes on: a charger does
not stop installing because its CSMS did not understand a report.

    python charger.py --csms ws://127.0.0.1:9000 --id CP-0001 --version 1.3.0 \\
        --cacert var/tls/ca.pem --firmware-root var/keys/root-ca.pem [--ocpp 2.0.1] [--fail-install] [--offline-for 30]

The image's first line names its version (`SIMFW 1.4.0`): real chargers read
it from the image header too, since UpdateFirmware does not say which version
it delivers.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import ftplib
import hashlib
import logging
import random
import socket
import ssl
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from ocpp.exceptions import OCPPError
from ocpp.routing import after, on
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v16.enums import Action as Action16
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201
from ocpp.v201.enums import Action as Action201
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

LOG = logging.getLogger("charger")
IMAGE_MAGIC = b"SIMFW "
BLOCK = 16 * 1024
# A link that keeps dropping is a failed attempt, not an endless loop of resumes.
MAX_RESUMES = 5
# Reconnecting to a CSMS that is gone: 1, 2, 4, ... seconds up to a minute, each between half and all of
# that (jitter), so that a fleet that lost its CSMS does not come back at the same instant.
RECONNECT_FIRST_SECONDS = 1.0
RECONNECT_CAP_SECONDS = 60.0
# A BootNotification answered Pending or Rejected is sent again after the interval the CSMS asked for
# (OCPP 1.6 4.2, 2.0.1 B02/B03), but never sooner than this nor later than RECONNECT_CAP_SECONDS.
BOOT_RETRY_FLOOR_SECONDS = 1.0
# OCPP 1.6 FirmwareStatusNotification knows only these; the others exist in the security extension and 2.0.1.
PLAIN_16_STATUSES = {"Downloaded", "DownloadFailed", "Downloading", "Idle", "InstallationFailed", "Installing",
                     "Installed"}


def make_image(version: str, size: int) -> bytes:
    """A test image whose header names its version, padded to `size` bytes with data that does not repeat."""
    header = IMAGE_MAGIC + version.encode() + b"\n"
    body = bytearray()
    counter = 0
    while len(header) + len(body) < size:
        body += hashlib.sha256(version.encode() + counter.to_bytes(8, "big")).digest()
        counter += 1
    return (header + bytes(body))[:size]


def image_version(image: bytes) -> str | None:
    first_line = image.split(b"\n", 1)[0]
    if not first_line.startswith(IMAGE_MAGIC):
        return None
    return first_line[len(IMAGE_MAGIC):].decode(errors="replace").strip() or None


def verify_signature(image: bytes, certificate_pem: str, signature_b64: str,
                     root: x509.Certificate | None = None) -> str | None:
    """Why the image's signature does not hold (None when it does): ECDSA, RSA PKCS#1 v1.5 or RSA-PSS over SHA-256."""
    try:
        certificate = x509.load_pem_x509_certificate(certificate_pem.encode())
        signature = base64.b64decode(signature_b64, validate=True)
    except ValueError as error:
        return f"unreadable certificate or signature: {error}"
    if root is not None:
        try:
            certificate.verify_directly_issued_by(root)
        except (ValueError, TypeError, InvalidSignature):
            return "signing certificate not issued by the trusted firmware root"
    key = certificate.public_key()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, image, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, rsa.RSAPublicKey):
            # OCPP's request does not say how an RSA signature is padded: a real charger knows the one its
            # operator chose, this simulator takes PKCS#1 v1.5 or RSA-PSS (fwrepo's 32-byte salt).
            try:
                key.verify(signature, image, padding.PKCS1v15(), hashes.SHA256())
            except InvalidSignature:
                key.verify(signature, image, padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())
        else:
            return f"unsupported key type {type(key).__name__}"
    except InvalidSignature:
        return "signature does not match the image"
    return None


class LinkDropped(Exception):
    """The simulated fault: the connection dies mid-transfer."""


class DownloadError(Exception):
    pass


class ImplicitFTPS(ftplib.FTP_TLS):
    """FTPS with TLS from the first byte (`ftps://`), which ftplib only knows as AUTH TLS."""

    def connect(self, host: str = "", port: int = 0, timeout: float = -999,
                source_address: tuple[str, int] | None = None) -> str:
        if host:
            self.host = host
        if port > 0:
            self.port = port
        if timeout != -999:
            self.timeout = timeout
        if source_address is not None:
            self.source_address = source_address
        raw = socket.create_connection((self.host, self.port), self.timeout, source_address=self.source_address)
        self.af = raw.family
        self.sock = self.context.wrap_socket(raw, server_hostname=self.host)
        self.file = self.sock.makefile("r", encoding=self.encoding)
        self.welcome = self.getresp()
        return self.welcome


@dataclass
class Faults:
    """What goes wrong on this charger; each fault applies to every update it is asked to make."""

    drop_link_at: int | None = None  # the first transfer of each update dies after this many bytes, then resumes
    corrupt_image: bool = False  # a byte flips between the wire and flash
    fail_install: bool = False
    boot_old_version: bool = False  # installs, reboots, and comes back on the old image
    # Every download attempt ends in the TLS handshake (the charger does not trust fwrepo's certificate and
    # aborts it), so fwrepo never sees a request: the charger's own retries are all there is to go by.
    unreachable_download: bool = False


@dataclass
class Conventions:
    """Where OCPP leaves the order of statuses open, which way this charger goes; each is seen in the field."""

    # Installing, InstallRebooting, the reboot and its BootNotification, and only then Installed (the security
    # extension's and 2.0.1's order), instead of Installed before rebooting.
    installed_after_reboot: bool = False
    # One Downloading, and one DownloadFailed after the last of 1 + retries attempts, instead of one per attempt.
    download_failed_once: bool = False


@dataclass
class UpdateRequest:
    location: str
    retrieve_date: datetime
    retries: int
    retry_interval: int
    request_id: int | None = None
    signing_certificate: str | None = None
    signature: str | None = None


@dataclass
class Observed:
    """What the charger did, for whoever checks the CSMS's and fwrepo's account of it."""

    updates: list[UpdateRequest] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    download_attempts: int = 0
    bytes_received: int = 0
    link_drops: int = 0
    downloads_completed: int = 0
    boots: list[str] = field(default_factory=list)  # the version of each accepted BootNotification
    # (action, error code) of each CALLERROR the CSMS answered a call with, in order.
    call_errors: list[tuple[str, str]] = field(default_factory=list)


class Charger:
    """One simulated charger: connects, boots, takes updates and reboots, until stop()."""

    def __init__(self, charger_id: str, csms_url: str, *, version: str, vendor: str = "ACME", model: str = "AC22",
                 ocpp_version: str = "1.6", ca_file: str | None = None, firmware_root: str | None = None,
                 faults: Faults | None = None, conventions: Conventions | None = None, install_seconds: float = 0.05,
                 reboot_seconds: float = 0.1, start_offline: bool = False) -> None:
        if ocpp_version not in ("1.6", "2.0.1"):
            raise ValueError(f"ocpp_version must be 1.6 or 2.0.1, not {ocpp_version!r}")
        self.charger_id = charger_id
        self.csms_url = csms_url.rstrip("/")
        self.version = version
        self.vendor = vendor
        self.model = model
        self.ocpp_version = ocpp_version
        self.tls = ssl.create_default_context(cafile=ca_file)
        self.firmware_root = _load_certificate(firmware_root) if firmware_root else None
        self.faults = faults or Faults()
        self.conventions = conventions or Conventions()
        self.install_seconds = install_seconds
        self.reboot_seconds = reboot_seconds
        self.observed = Observed()
        self.booted = asyncio.Event()
        self._link: _Link16 | _Link201 | None = None
        self._connection: ClientConnection | None = None
        self._reboot = asyncio.Event()
        self._stopping = asyncio.Event()
        # Unset: run() waits for go_online() before its first connection (a charger powered on later).
        self._online = asyncio.Event()
        if not start_offline:
            self._online.set()
        self._update_task: asyncio.Task[None] | None = None
        self._boot_reason = "PowerUp"

    async def run(self) -> None:
        """Stay connected; a reboot closes the connection and boots again with whatever image is installed.

        A CSMS that cannot be reached is tried again after a capped, jittered exponential pause. A charger
        made with start_offline does not connect before go_online().
        """
        powered = asyncio.create_task(self._online.wait())
        stopped = asyncio.create_task(self._stopping.wait())
        await asyncio.wait({powered, stopped}, return_when=asyncio.FIRST_COMPLETED)
        powered.cancel()
        stopped.cancel()
        failures = 0
        while not self._stopping.is_set():
            rebooting = False
            try:
                rebooting = await self._session()
                failures = 0
            except (OSError, WebSocketException) as error:
                LOG.warning("%s: no connection to the CSMS: %s", self.charger_id, error or type(error).__name__)
                failures += 1
            except OCPPError as error:
                # A BootNotification refused with a CALLERROR: as if the CSMS were not there, try again later.
                LOG.warning("%s: CSMS answered BootNotification with CALLERROR %s", self.charger_id, error.code)
                failures += 1
            pause = self.reboot_seconds if rebooting else reconnect_pause(failures)
            try:
                await asyncio.wait_for(self._stopping.wait(), pause)
            except TimeoutError:
                pass

    async def _session(self) -> bool:
        """One connection: BootNotification, then serve the CSMS until the link dies (False) or we reboot (True)."""
        subprotocol = "ocpp1.6" if self.ocpp_version == "1.6" else "ocpp2.0.1"
        async with connect(f"{self.csms_url}/{self.charger_id}", subprotocols=[subprotocol]) as connection:
            self._connection = connection
            link: _Link16 | _Link201 = (_Link16 if self.ocpp_version == "1.6" else _Link201)(self, connection)
            self._link = link
            listener = asyncio.create_task(link.start())
            stopper: asyncio.Task[bool] | None = None
            try:
                await self._boot(link)
                self.observed.boots.append(self.version)
                self._reboot.clear()
                self.booted.set()
                stopper = asyncio.create_task(self._reboot.wait())
                await asyncio.wait({listener, stopper}, return_when=asyncio.FIRST_COMPLETED)
                return self._reboot.is_set()
            finally:
                for task in (listener, stopper):
                    if task is not None:
                        task.cancel()
                await asyncio.gather(listener, return_exceptions=True)
                self._link = None
                self.booted.clear()

    def go_online(self) -> None:
        """Let a charger made with start_offline connect for the first time."""
        self._online.set()

    async def _boot(self, link: _Link16 | _Link201) -> None:
        """BootNotification until the CSMS accepts it; the CSMS may take no other call before (OCPP 1.6 4.2)."""
        while True:
            status, interval = await link.boot()
            if status == "Accepted":
                return
            pause = min(max(float(interval), BOOT_RETRY_FLOOR_SECONDS), RECONNECT_CAP_SECONDS)
            LOG.warning("%s: BootNotification %s, again in %.0f s", self.charger_id, status, pause)
            await asyncio.sleep(pause)

    async def settled(self) -> None:
        """Return once no update is in progress and the charger is connected and booted."""
        if self._update_task is not None:
            await asyncio.gather(self._update_task, return_exceptions=True)
        await self.booted.wait()

    async def stop(self) -> None:
        self._stopping.set()
        if self._update_task is not None:
            self._update_task.cancel()
        self._reboot.set()
        if self._connection is not None:
            await self._connection.close()

    # -- what the links call -------------------------------------------------------------------

    def boot_request(self) -> dict[str, str]:
        return {"vendor": self.vendor, "model": self.model, "version": self.version, "reason": self._boot_reason}

    def accept_update(self, request: UpdateRequest) -> None:
        self.observed.updates.append(request)
        if self._update_task is not None and not self._update_task.done():
            self._update_task.cancel()  # OCPP: a new UpdateFirmware replaces the one in progress
        self._update_task = asyncio.create_task(self._update(request))

    # -- the update itself ---------------------------------------------------------------------

    async def _status(self, status: str, request: UpdateRequest) -> None:
        self.observed.statuses.append(status)
        if self._link is None:
            LOG.warning("%s: offline, %s not reported", self.charger_id, status)
            return
        try:
            await self._link.firmware_status(status, request)
        except OCPPError as error:
            # The CSMS got the report and refused it (CitrineOS 1.8.3: NotSupported for 1.6, citrineos#216);
            # the update itself goes on.
            action = "SignedFirmwareStatusNotification" if self.ocpp_version == "1.6" and request.signature \
                else "FirmwareStatusNotification"
            self.observed.call_errors.append((action, error.code))
            LOG.warning("%s: CSMS answered %s %s with CALLERROR %s: %s", self.charger_id, action, status,
                        error.code, error.description)
        except (ConnectionClosed, asyncio.TimeoutError) as error:
            LOG.warning("%s: %s not reported: %s", self.charger_id, status, error)

    async def _update(self, request: UpdateRequest) -> None:
        delay = (request.retrieve_date - datetime.now(UTC)).total_seconds()
        if delay > 0:
            await asyncio.sleep(delay)
        image = await self._download_with_retries(request)
        if image is None:
            return
        if request.signature is not None and request.signing_certificate is not None:
            problem = verify_signature(image, request.signing_certificate, request.signature, self.firmware_root)
            if problem is not None:
                LOG.warning("%s: %s", self.charger_id, problem)
                await self._status("InvalidSignature", request)
                return
            await self._status("SignatureVerified", request)
        await self._status("Installing", request)
        await asyncio.sleep(self.install_seconds)
        new_version = image_version(image)
        if self.faults.fail_install or new_version is None:
            await self._status("InstallationFailed", request)
            return
        installed_after_reboot = self.conventions.installed_after_reboot
        await self._status("InstallRebooting" if installed_after_reboot else "Installed", request)
        if not self.faults.boot_old_version:
            self.version = new_version
        self._boot_reason = "FirmwareUpdate"
        self.booted.clear()
        self._reboot.set()
        if installed_after_reboot:
            await self.booted.wait()
            await self._status("Installed", request)

    async def _download_with_retries(self, request: UpdateRequest) -> bytes | None:
        """The image, or None after the last of 1 + retries attempts failed.

        Each failed attempt is reported DownloadFailed, or only the last one with download_failed_once.
        """
        once = self.conventions.download_failed_once
        attempts = 1 + max(request.retries, 0)
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(request.retry_interval)
            if not (once and attempt):
                await self._status("Downloading", request)
            self.observed.download_attempts += 1
            try:
                image, digest = await self._fetch(request.location)
            except DownloadError as error:
                LOG.warning("%s: download failed: %s", self.charger_id, error)
            else:
                self.observed.downloads_completed += 1
                if self.faults.corrupt_image:
                    image = bytes([image[0] ^ 0xFF]) + image[1:] if image else image
                if digest is None or hashlib.sha256(image).digest() == digest:
                    await self._status("Downloaded", request)
                    return image
                LOG.warning("%s: image does not match the server's SHA-256", self.charger_id)
            if not once or attempt == attempts - 1:
                await self._status("DownloadFailed", request)
        return None

    def _download_tls(self) -> ssl.SSLContext:
        if self.faults.unreachable_download:
            return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # trusts no CA at all: every handshake is aborted
        return self.tls

    async def _fetch(self, location: str) -> tuple[bytes, bytes | None]:
        scheme = urlsplit(location).scheme
        if scheme == "https":
            return await self._fetch_https(location)
        if scheme in ("ftp", "ftps"):
            return await asyncio.to_thread(self._fetch_ftps, location), None
        raise DownloadError(f"unsupported location scheme {scheme!r}")

    def _keep(self, buffer: bytearray, chunk: bytes, drop_at: int | None) -> bool:
        """Add what arrived; False when the simulated link dies here (bytes past the cut never arrive)."""
        if drop_at is not None and len(buffer) + len(chunk) >= drop_at:
            chunk = chunk[:max(drop_at - len(buffer), 0)]
            buffer += chunk
            self.observed.bytes_received += len(chunk)
            self.observed.link_drops += 1
            return False
        buffer += chunk
        self.observed.bytes_received += len(chunk)
        return True

    async def _fetch_https(self, location: str) -> tuple[bytes, bytes | None]:
        """GET, resuming with Range (and If-Range, so a changed image restarts) when the link drops."""
        buffer = bytearray()
        etag: str | None = None
        digest: bytes | None = None
        drop_at = self.faults.drop_link_at
        async with httpx.AsyncClient(verify=self._download_tls(), timeout=30) as client:
            for _ in range(MAX_RESUMES + 1):
                headers = {"Range": f"bytes={len(buffer)}-", "If-Range": etag} if buffer and etag else {}
                try:
                    async with client.stream("GET", location, headers=headers) as response:
                        if response.status_code == 200:
                            buffer.clear()
                        elif response.status_code != 206:
                            raise DownloadError(f"HTTP {response.status_code} from {urlsplit(location).hostname}")
                        etag = response.headers.get("etag")
                        digest = _repr_digest(response.headers.get("repr-digest"))
                        async for chunk in response.aiter_raw():
                            if not self._keep(buffer, chunk, drop_at):
                                drop_at = None
                                raise LinkDropped
                    return bytes(buffer), digest
                except (LinkDropped, httpx.TransportError) as error:
                    if _certificate_refused(error):
                        raise DownloadError(f"TLS handshake aborted: {error}") from error
                    LOG.info("%s: link lost at byte %d (%s), resuming", self.charger_id, len(buffer),
                             type(error).__name__)
        raise DownloadError(f"link dropped {MAX_RESUMES + 1} times")

    def _fetch_ftps(self, location: str) -> bytes:
        """RETR over FTPS with PROT P, resuming with REST; runs in a thread, as ftplib blocks."""
        parts = urlsplit(location)
        implicit = parts.scheme == "ftps"
        path = unquote(parts.path) or "/"
        buffer = bytearray()
        drop_at = self.faults.drop_link_at
        for _ in range(MAX_RESUMES + 1):
            ftp = (ImplicitFTPS if implicit else ftplib.FTP_TLS)(context=self._download_tls(), timeout=30)
            try:
                ftp.connect(parts.hostname or "", parts.port or (990 if implicit else 21))
                ftp.login(unquote(parts.username or "anonymous"), unquote(parts.password or ""))
                ftp.prot_p()
                ftp.voidcmd("TYPE I")
                with ftp.transfercmd(f"RETR {path}", rest=len(buffer) or None) as data:
                    while chunk := data.recv(BLOCK):
                        if not self._keep(buffer, chunk, drop_at):
                            drop_at = None
                            raise LinkDropped
                    if isinstance(data, ssl.SSLSocket):
                        data.unwrap()
                ftp.voidresp()
                ftp.quit()
                return bytes(buffer)
            except ftplib.error_perm as error:
                ftp.close()
                raise DownloadError(f"FTPS refused: {error}") from error
            except ssl.SSLCertVerificationError as error:
                ftp.close()
                raise DownloadError(f"TLS handshake aborted: {error}") from error
            except (LinkDropped, OSError, EOFError, ftplib.Error) as error:
                # close(), not quit(): a dropped link says no goodbye.
                ftp.close()
                LOG.info("%s: FTPS link lost at byte %d (%s), resuming", self.charger_id, len(buffer),
                         type(error).__name__)
        raise DownloadError(f"FTPS link dropped {MAX_RESUMES + 1} times")


def reconnect_pause(failures: int) -> float:
    """Seconds to wait before connecting again after this many failed connections in a row (0: the link was up)."""
    ceiling = min(RECONNECT_CAP_SECONDS, RECONNECT_FIRST_SECONDS * 2 ** min(max(failures - 1, 0), 16))
    return random.uniform(ceiling / 2, ceiling)


def _certificate_refused(error: BaseException) -> bool:
    """Whether the charger aborted the TLS handshake over the server's certificate: a failed attempt, not a
    dropped link to resume (httpx wraps the ssl error it came from)."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _repr_digest(header: str | None) -> bytes | None:
    """The SHA-256 of an RFC 9530 Repr-Digest header, `sha-256=:BASE64:`."""
    if not header:
        return None
    for member in header.split(","):
        name, _, value = member.strip().partition("=")
        if name.strip().lower() == "sha-256" and value.startswith(":") and value.endswith(":"):
            return base64.b64decode(value[1:-1])
    return None


def _load_certificate(path: str) -> x509.Certificate:
    with open(path, "rb") as handle:
        return x509.load_pem_x509_certificate(handle.read())


def _parse_time(value: str) -> datetime:
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class _Link16(ChargePoint16):
    """OCPP 1.6J, with the security extension's SignedUpdateFirmware."""

    def __init__(self, charger: Charger, connection: ClientConnection) -> None:
        super().__init__(charger.charger_id, connection)
        self.charger = charger

    async def boot(self) -> tuple[str, int]:
        """The CSMS's answer: status and interval."""
        facts = self.charger.boot_request()
        reply = await self.call(call16.BootNotification(
            charge_point_model=facts["model"], charge_point_vendor=facts["vendor"],
            firmware_version=facts["version"]), suppress=False)
        return reply.status, reply.interval

    async def firmware_status(self, status: str, request: UpdateRequest) -> None:
        """Report a status; raises OCPPError when the CSMS answers with a CALLERROR."""
        if request.signature is not None:
            await self.call(call16.SignedFirmwareStatusNotification(status=status, request_id=request.request_id),
                            suppress=False)
        elif status in PLAIN_16_STATUSES:
            await self.call(call16.FirmwareStatusNotification(status=status), suppress=False)

    @on(Action16.update_firmware)
    def on_update_firmware(self, location: str, retrieve_date: str, retries: int = 0,
                           retry_interval: int = 60) -> result16.UpdateFirmware:
        return result16.UpdateFirmware()

    @after(Action16.update_firmware)
    def after_update_firmware(self, location: str, retrieve_date: str, retries: int = 0,
                              retry_interval: int = 60) -> None:
        self.charger.accept_update(UpdateRequest(location, _parse_time(retrieve_date), retries, retry_interval))

    @on(Action16.signed_update_firmware)
    def on_signed_update_firmware(self, request_id: int, firmware: dict[str, Any], retries: int = 0,
                                  retry_interval: int = 60) -> result16.SignedUpdateFirmware:
        try:
            x509.load_pem_x509_certificate(firmware["signing_certificate"].encode())
        except ValueError:
            return result16.SignedUpdateFirmware(status="InvalidCertificate")
        return result16.SignedUpdateFirmware(status="Accepted")

    @after(Action16.signed_update_firmware)
    def after_signed_update_firmware(self, request_id: int, firmware: dict[str, Any], retries: int = 0,
                                     retry_interval: int = 60) -> None:
        self.charger.accept_update(UpdateRequest(
            firmware["location"], _parse_time(firmware["retrieve_date_time"]), retries, retry_interval, request_id,
            firmware["signing_certificate"], firmware["signature"]))


class _Link201(ChargePoint201):
    """OCPP 2.0.1: one UpdateFirmware, signed when the CSMS sends a certificate and signature."""

    def __init__(self, charger: Charger, connection: ClientConnection) -> None:
        super().__init__(charger.charger_id, connection)
        self.charger = charger

    async def boot(self) -> tuple[str, int]:
        """The CSMS's answer: status and interval."""
        facts = self.charger.boot_request()
        reply = await self.call(call201.BootNotification(
            charging_station={"vendor_name": facts["vendor"], "model": facts["model"],
                              "firmware_version": facts["version"]},
            reason=facts["reason"]), suppress=False)
        return reply.status, reply.interval

    async def firmware_status(self, status: str, request: UpdateRequest) -> None:
        """Report a status; raises OCPPError when the CSMS answers with a CALLERROR."""
        await self.call(call201.FirmwareStatusNotification(status=status, request_id=request.request_id),
                        suppress=False)

    @on(Action201.update_firmware)
    def on_update_firmware(self, request_id: int, firmware: dict[str, Any], retries: int = 0,
                           retry_interval: int = 60, **_: Any) -> result201.UpdateFirmware:
        certificate = firmware.get("signing_certificate")
        if certificate is not None:
            try:
                x509.load_pem_x509_certificate(certificate.encode())
            except ValueError:
                return result201.UpdateFirmware(status="InvalidCertificate")
        return result201.UpdateFirmware(status="Accepted")

    @after(Action201.update_firmware)
    def after_update_firmware(self, request_id: int, firmware: dict[str, Any], retries: int = 0,
                              retry_interval: int = 60, **_: Any) -> None:
        self.charger.accept_update(UpdateRequest(
            firmware["location"], _parse_time(firmware["retrieve_date_time"]), retries, retry_interval, request_id,
            firmware.get("signing_certificate"), firmware.get("signature")))


async def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--csms", required=True, help="ws://HOST:PORT of the CSMS")
    parser.add_argument("--id", default="CP-0001", help="charger id; with --count, the prefix of CP-ID-0000...")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--ocpp", choices=("1.6", "2.0.1"), default="1.6")
    parser.add_argument("--vendor", default="ACME")
    parser.add_argument("--model", default="AC22")
    parser.add_argument("--version", required=True, help="the firmware version it boots with")
    parser.add_argument("--cacert", help="CA file for HTTPS and FTPS (fwrepo's var/tls/ca.pem)")
    parser.add_argument("--firmware-root", help="root CA the signing certificate must be issued by")
    parser.add_argument("--drop-link-at", type=int, help="fault: cut each update's first transfer after N bytes")
    parser.add_argument("--corrupt", action="store_true", help="fault: flip a byte of each downloaded image")
    parser.add_argument("--fail-install", action="store_true", help="fault: report InstallationFailed")
    parser.add_argument("--boot-old-version", action="store_true", help="fault: reboot into the old image")
    parser.add_argument("--unreachable-download", action="store_true",
                        help="fault: abort every download's TLS handshake (fwrepo sees no request)")
    parser.add_argument("--installed-after-reboot", action="store_true",
                        help="report InstallRebooting, reboot, boot, then Installed (instead of Installed, reboot)")
    parser.add_argument("--offline-for", type=float, default=0.0,
                        help="stay off the network this many seconds before the first connection")
    parser.add_argument("--reboot-seconds", type=float, default=0.1,
                        help="how long a reboot takes (CitrineOS 1.8.3 exits when a station is back within a second)")
    parser.add_argument("--download-failed-once", action="store_true",
                        help="report one DownloadFailed after the last of 1 + retries attempts, not one per attempt")
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    faults = Faults(arguments.drop_link_at, arguments.corrupt, arguments.fail_install, arguments.boot_old_version,
                    arguments.unreachable_download)
    conventions = Conventions(arguments.installed_after_reboot, arguments.download_failed_once)
    ids = [arguments.id] if arguments.count == 1 else [f"{arguments.id}-{n:04d}" for n in range(arguments.count)]
    chargers = [Charger(charger_id, arguments.csms, version=arguments.version, vendor=arguments.vendor,
                        model=arguments.model, ocpp_version=arguments.ocpp, ca_file=arguments.cacert,
                        firmware_root=arguments.firmware_root, faults=faults, conventions=conventions,
                        start_offline=arguments.offline_for > 0, reboot_seconds=arguments.reboot_seconds)
                for charger_id in ids]
    for charger in chargers:
        asyncio.get_running_loop().call_later(arguments.offline_for, charger.go_online)
    await asyncio.gather(*(charger.run() for charger in chargers))


if __name__ == "__main__":
    asyncio.run(_main())
