"""The FTPS server: explicit (AUTH TLS) and implicit TLS, one-time grant logins, a read-only one-file view.

pyftpdlib does the protocol; this module decides who gets in, what they see,
and what is recorded. Each connection runs in its own thread
(ThreadedFTPServer) because logins ask the database and S3 reads block.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from OpenSSL import SSL
from pyftpdlib.authorizers import AuthenticationFailed
from pyftpdlib.handlers import TLS_DTPHandler, TLS_FTPHandler
from pyftpdlib.ioloop import IOLoop
from pyftpdlib.servers import ThreadedFTPServer

from ftps.bans import Bans
from ftps.view import OneFileView, StoredFile
from repo_service.domain.downloads import DownloadRefused, Permit, Refusal, Transfer
from repo_service.errors import SettingsError
from repo_service.metrics import Metrics
from repo_service.services import Services
from repo_service.settings import Settings
from repo_service.tls import ftps_tls_files

log = logging.getLogger("fwrepo.ftps")
PERMISSIONS = "elr"  # change directory (to / only), list, retrieve
CONTROL_IDLE_SECONDS = 120
LOGIN_SECONDS = 30
# Chargers behind one carrier NAT share an address; one address must still not take every slot.
SESSIONS_PER_ADDRESS = 16
DATA_STALL_SECONDS = 60
# Commands that could change or reveal something beyond the one file are not spoken at all.
UNSPOKEN = ("SITE", "SITE CHMOD", "SITE HELP", "SITE MFMT")


class Sessions:
    """Open control connections of both listeners, for the shutdown grace period and the metrics."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.open = 0
        self._lock = threading.Lock()

    def opened(self) -> None:
        with self._lock:
            self.open += 1
        self.metrics.ftps_sessions.inc()

    def closed(self) -> None:
        with self._lock:
            self.open -= 1
        self.metrics.ftps_sessions.dec()


class GrantAuthorizer:
    """pyftpdlib's authorizer interface over one-time grant logins."""

    def __init__(self, services: Services) -> None:
        self.downloads = services.downloads

    def validate_authentication(self, username: str, password: str, handler: GrantSession) -> None:
        try:
            handler.permit = self.downloads.login(username, password)
        except DownloadRefused as refusal:
            handler.refused(refusal)
            # The same words whatever the reason: a login says nothing about the grant behind it.
            raise AuthenticationFailed("Login incorrect.") from None

    def get_home_dir(self, username: str) -> str:
        return "/"

    def has_user(self, username: str) -> bool:
        return True

    def has_perm(self, username: str, perm: str, path: str | None = None) -> bool:
        return perm in PERMISSIONS

    def get_perms(self, username: str) -> str:
        return PERMISSIONS

    def get_msg_login(self, username: str) -> str:
        return "Logged in: one firmware file, read-only."

    def get_msg_quit(self, username: str) -> str:
        return "Goodbye."

    def impersonate_user(self, username: str, password: str) -> None:
        pass

    def terminate_impersonation(self, username: str) -> None:
        pass


class _Listener(ThreadedFTPServer):
    """A listening port that turns banned addresses away before a session (and its thread) exists."""

    bans: Bans
    implicit = False
    max_cons_per_ip = SESSIONS_PER_ADDRESS

    def handle_accepted(self, sock: socket.socket, addr: tuple[str, int]) -> GrantSession | None:
        if self.bans.banned(addr[0]):
            with contextlib.suppress(OSError):
                if not self.implicit:
                    sock.send(b"421 Too many failed logins from your address; try again later.\r\n")
            sock.close()
            return None
        return super().handle_accepted(sock, addr)


class _DataChannel(TLS_DTPHandler):
    timeout = DATA_STALL_SECONDS


class GrantSession(TLS_FTPHandler):
    """One charger's control connection. Class attributes are set per server by make_handler."""

    services: Services
    bans: Bans
    sessions: Sessions
    implicit = False
    allow_plain = False

    banner = "fwrepo FTPS ready."
    timeout = CONTROL_IDLE_SECONDS
    auth_failed_timeout = 1
    abstracted_fs = OneFileView
    dtp_handler = _DataChannel
    use_sendfile = False
    log_prefix = "%(remote_ip)s:%(remote_port)s"
    proto_cmds = {name: spec for name, spec in TLS_FTPHandler.proto_cmds.items() if name not in UNSPOKEN}

    def __init__(self, conn, server, ioloop=None) -> None:  # type: ignore[no-untyped-def]
        super().__init__(conn, server, ioloop)
        self.permit: Permit | None = None
        self._file: StoredFile | None = None
        self._transfer: Transfer | None = None
        # The session's id on its log lines, as an HTTP request's id is on its lines.
        self.log_extra = {"request_id": f"ftps-{secrets.token_hex(6)}"}
        self._counted = False

    @property
    def file_name(self) -> str:
        assert self.permit is not None
        return self.services.grants.ftp_filename(self.permit.firmware.filename)

    def handle(self) -> None:
        self.sessions.opened()
        self._counted = True
        self._connected_at = time.monotonic()
        if self.implicit:
            # Implicit FTPS: TLS from the first byte; the banner goes out once the handshake is done.
            self.secure_connection(self.ssl_context)
            self._pbsz = self._prot = True
            return
        super().handle()

    def handle_ssl_established(self) -> None:
        if self.implicit:
            super().handle()

    def process_command(self, cmd: str, *args: Any, **kwargs: Any) -> None:
        # NOOP and friends keep an idle session alive; a session that has not logged in
        # soon is someone holding a connection (and a thread) open for nothing.
        if not self.authenticated and time.monotonic() - self._connected_at > LOGIN_SECONDS:
            self.respond(f"421 Log in within {LOGIN_SECONDS} seconds of connecting.")
            self.close_when_done()
            return
        super().process_command(cmd, *args, **kwargs)

    def ftp_PROT(self, line: str) -> None:
        # pyftpdlib checks PROT only at PASV/PORT: PROT C after PASV would send the file in the clear.
        if self.tls_data_required and line.strip().upper() == "C":
            self.respond("534 Clear data connections are refused here: use PROT P.")
            return
        super().ftp_PROT(line)

    def handle_max_cons(self) -> None:
        self._refuse_crowd(super().handle_max_cons)

    def handle_max_cons_per_ip(self) -> None:
        self._refuse_crowd(super().handle_max_cons_per_ip)

    def _refuse_crowd(self, plain_refusal: Callable[[], None]) -> None:
        # On the implicit port the client expects TLS: a plain-text 421 would only confuse it.
        if self.implicit:
            self.close()
        else:
            plain_refusal()

    def on_disconnect(self) -> None:
        # A file opened but never sent (the data connection never came) still ends its transfer.
        self._transfer_ended(confirmed=False)
        if self._counted:
            self._counted = False
            self.sessions.closed()

    def on_login(self, username: str) -> None:
        assert self.permit is not None
        self.bans.succeeded(self.remote_ip)
        secure = self._ssl_established or self.implicit
        log.log(logging.INFO if secure else logging.WARNING, "ftps login to grant %d from %s%s",
                self.permit.grant_id, self.remote_ip, "" if secure else " WITHOUT TLS (FWREPO_FTP_ALLOW_PLAIN)",
                extra=self.log_extra)

    def refused(self, refusal: DownloadRefused) -> None:
        self.services.downloads.refuse(refusal, "ftps", self.remote_ip)
        # Only wrong logins count towards a ban: chargers behind one carrier NAT retrying a
        # grant that died (as OCPP tells them to) must not lock out every charger there.
        if refusal.reason is Refusal.FORGED and self.bans.failed(self.remote_ip):
            self.services.downloads.refuse(DownloadRefused(Refusal.BANNED), "ftps", self.remote_ip)
            log.warning("ftps: banned %s after repeated failed logins", self.remote_ip, extra=self.log_extra)

    def ftp_RETR(self, file: str) -> str | None:
        """RETR, with the grant checked again (a revocation ends what a session can fetch) and the bytes this
        transfer may send taken from the grant's budget before the first one."""
        assert self.permit is not None
        start = self._restart_position
        if start <= self.permit.firmware.size:  # beyond it, pyftpdlib answers 554 and nothing is sent
            try:
                self.permit = self.services.downloads.permit(self.permit.grant_id)
                self._transfer = self.services.downloads.begin(
                    self.permit, "ftps", self.remote_ip, start, self.permit.firmware.size - start)
            except DownloadRefused as refusal:
                self._restart_position = 0
                self.services.downloads.refuse(refusal, "ftps", self.remote_ip)
                self.respond("550 this download is no longer available.")
                return None
        opened: str | None = super().ftp_RETR(file)
        if opened is None:  # refused (another name, a bad REST): nothing will be sent
            self._transfer_ended(confirmed=False)
        return opened

    def open_file(self) -> StoredFile:
        assert self.permit is not None
        firmware = self.permit.firmware
        storage = self.services.catalog.storage
        self._file = StoredFile(
            "/" + self.file_name, firmware.size,
            lambda start: iter(storage.read(firmware.storage_key, start, firmware.size - start)),
        )
        return self._file

    def on_file_sent(self, file: str) -> None:
        # pyftpdlib calls this once the data connection has sent the last byte and closed cleanly.
        self._transfer_ended(confirmed=True)

    def on_incomplete_file_sent(self, file: str) -> None:
        self._transfer_ended(confirmed=False)

    def _transfer_ended(self, confirmed: bool) -> None:
        stored, self._file = self._file, None
        transfer, self._transfer = self._transfer, None
        if transfer is None:
            return
        if stored is None:
            transfer.finish(confirmed=False, bytes_sent=0)
            return
        sent = self.data_channel.get_transmitted_bytes() if self.data_channel is not None else stored.bytes_read
        transfer.finish(confirmed, sent)


def tls_context(settings: Settings, services: Services) -> SSL.Context:
    files = ftps_tls_files(settings, services.signing_keys.passphrase)
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.set_min_proto_version(SSL.TLS1_2_VERSION)
    context.set_options(SSL.OP_NO_COMPRESSION)
    context.use_certificate_chain_file(str(files.certificate))
    if files.key_password is not None:
        password = files.key_password.encode()
        context.set_passwd_cb(lambda *_: password)
    context.use_privatekey_file(str(files.key))
    context.check_privatekey()
    # Clients that insist the data connection resume the control connection's TLS session find it cached.
    context.set_session_id(b"fwrepo-ftps")
    context.set_session_cache_mode(SSL.SESS_CACHE_SERVER)
    return context


def make_handler(settings: Settings, services: Services, bans: Bans, sessions: Sessions, context: SSL.Context,
                 implicit: bool) -> type[GrantSession]:
    attributes: dict[str, Any] = {
        "services": services, "bans": bans, "sessions": sessions, "implicit": implicit, "ssl_context": context,
        "authorizer": GrantAuthorizer(services),
        "tls_control_required": not settings.ftp_allow_plain, "tls_data_required": not settings.ftp_allow_plain,
        "masquerade_address": settings.ftps_masquerade_address,
    }
    if settings.ftps_passive_ports is not None:
        low, high = settings.ftps_passive_ports
        attributes["passive_ports"] = list(range(low, high + 1))
    return type("ImplicitGrantSession" if implicit else "ExplicitGrantSession", (GrantSession,), attributes)


@dataclass
class FtpsServers:
    """The explicit and implicit FTPS listeners, accepting on one loop in one thread."""

    explicit: _Listener
    implicit: _Listener
    sessions: Sessions
    thread: threading.Thread | None = None

    def serve_forever(self) -> None:
        self.explicit.serve_forever(handle_exit=False)

    def start(self) -> None:
        self.thread = threading.Thread(target=self.serve_forever, name="ftps", daemon=True)
        self.thread.start()

    def stop(self, until: float = 0.0) -> None:
        """Close both listeners and every session; sessions still transferring get until `until` (monotonic)."""
        while self.sessions.open and time.monotonic() < until:
            time.sleep(0.2)
        for server in (self.implicit, self.explicit):
            server.close_all()
        if self.thread is not None:
            self.thread.join(timeout=5)


def open_servers(settings: Settings, services: Services) -> FtpsServers:
    if settings.ftp_allow_plain:
        log.warning("FWREPO_FTP_ALLOW_PLAIN=true: chargers may log in and download without TLS")
    if settings.log_level != "debug":
        logging.getLogger("pyftpdlib").setLevel(logging.WARNING)  # its command log names users; ours does not
    bans = Bans(failed_elsewhere=services.downloads.failed_logins)
    context, loop, sessions = tls_context(settings, services), IOLoop(), Sessions(services.metrics)
    servers = []
    for port, implicit, name in ((settings.ftps_port, False, "FWREPO_FTPS_PORT"),
                                 (settings.ftps_implicit_port, True, "FWREPO_FTPS_IMPLICIT_PORT")):
        handler = make_handler(settings, services, bans, sessions, context, implicit)
        try:
            listener = _Listener((settings.ftps_host, port), handler, ioloop=loop)
        except OSError as error:
            for server in servers:
                server.close_all()
            raise SettingsError(name, f"cannot listen on {settings.ftps_host}:{port}: {error.strerror or error} "
                                "(another fwrepo? set another port, or FWREPO_FTPS=false)") from None
        listener.bans, listener.implicit = bans, implicit
        servers.append(listener)
    return FtpsServers(*servers, sessions=sessions)
