"""The FTPS server: explicit (AUTH TLS) and implicit TLS, one-time grant logins, a read-only one-file view.

pyftpdlib does the protocol; this module decides who gets in, what they see,
and what is recorded. Each connection runs in its own thread
(ThreadedFTPServer) because logins ask the database and S3 reads block.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import secrets
import socket
import struct
import termios
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding
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
from repo_service.tls import DATE_ERRORS, ftps_tls_files

log = logging.getLogger("fwrepo.ftps")
PERMISSIONS = "elr"  # change directory (to / only), list, retrieve
CONTROL_IDLE_SECONDS = 120
# Chargers behind one carrier NAT share an address; one address must still not take every slot.
SESSIONS_PER_ADDRESS = 16
BANNED = "421 Too many failed logins from your address; try again later."
DATA_STALL_SECONDS = 60
# After the file's last byte, how long a client may take to close the data connection; clients close it
# as soon as they read the end, so this is only waited out by those that wait for 226 first.
CLOSE_WAIT_SECONDS = 5
# How often a client that closed is checked for having acknowledged every byte: about a round trip.
ACKNOWLEDGED_POLL_SECONDS = 0.02
# Commands that could change or reveal something beyond the one file are not spoken at all.
UNSPOKEN = ("SITE", "SITE CHMOD", "SITE HELP", "SITE MFMT")


class Sessions:
    """Open control connections of both listeners: the shutdown grace period and the metrics count them all,
    and those not logged in yet are bounded per address and in total."""

    def __init__(self, metrics: Metrics, waiting_per_address: int, waiting_total: int) -> None:
        self.metrics = metrics
        self.open = 0
        self.waiting_per_address = waiting_per_address
        self.waiting_total = waiting_total
        self._waiting: Counter[str] = Counter()
        self._lock = threading.Lock()

    def refusal(self, address: str) -> str | None:
        """Why a new connection from address is turned away before it exists, or None to accept it."""
        with self._lock:
            if self._waiting[address] >= self.waiting_per_address:
                return "421 Too many connections from your address waiting to log in; try again later."
            if self._waiting.total() >= self.waiting_total:
                return "421 Too many connections waiting to log in; try again later."
        return None

    def opened(self, address: str) -> None:
        with self._lock:
            self.open += 1
            self._waiting[address] += 1
        self.metrics.ftps_sessions.inc()

    def logged_in(self, address: str) -> None:
        with self._lock:
            self._stop_waiting(address)

    def closed(self, address: str, waiting: bool) -> None:
        with self._lock:
            self.open -= 1
            if waiting:
                self._stop_waiting(address)
        self.metrics.ftps_sessions.dec()

    def _stop_waiting(self, address: str) -> None:
        self._waiting[address] -= 1
        if not self._waiting[address]:
            del self._waiting[address]


class GrantAuthorizer:
    """pyftpdlib's authorizer interface over one-time grant logins."""

    def __init__(self, services: Services) -> None:
        self.downloads = services.downloads

    def validate_authentication(self, username: str, password: str, handler: GrantSession) -> None:
        try:
            handler.permit = self.downloads.login(username, password, peer_certificate(handler.socket))
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
    """A listening port that turns banned addresses, and crowds not logged in, away before a session
    (and its thread) exists."""

    bans: Bans
    sessions: Sessions
    implicit = False
    max_cons_per_ip = SESSIONS_PER_ADDRESS

    def handle_accepted(self, sock: socket.socket, addr: tuple[str, int]) -> GrantSession | None:
        refusal = BANNED if self.bans.banned(addr[0]) else self.sessions.refusal(addr[0])
        if refusal is not None:
            with contextlib.suppress(OSError):
                if not self.implicit:  # the implicit port's client expects TLS: plain text would only confuse it
                    sock.send(refusal.encode() + b"\r\n")
            sock.close()
            return None
        return super().handle_accepted(sock, addr)


class _DataChannel(TLS_DTPHandler):
    """A data connection that, once it has handed a file's last byte to the network, waits for the client.

    A client that read the file to its end closes its side cleanly (a FIN, a TLS close_notify) having
    acknowledged every byte; one whose link dropped with the tail still in socket buffers resets the
    connection, or is never heard of again, and one that closed before the end answers the bytes that
    came after with a reset, never acknowledging them. Only the first delivered the file, as far as the
    server can know; so does a client still connected with every byte acknowledged when
    CLOSE_WAIT_SECONDS run out.
    """

    timeout = DATA_STALL_SECONDS

    def __init__(self, sock, cmd_channel) -> None:  # type: ignore[no-untyped-def]
        self.delivered = False
        self._waiting: Any = None  # the deadline of the wait for the client, while it runs
        self._close_notify_pending = False
        super().__init__(sock, cmd_channel)

    def _bound(self) -> bool:
        permit = self.cmd_channel.permit
        return permit is not None and permit.bound

    def initiate_send(self) -> None:
        # pyOpenSSL finishes a handshake inside the first write, and would send a bound grant's file before
        # handle_ssl_established has seen the client's certificate: those bytes wait for it.
        if self._ssl_requested and not self._ssl_established and self._bound():
            return
        super().initiate_send()

    def handle_ssl_established(self) -> None:
        # A grant bound to the charger's certificate is fetched on a data connection of that same
        # certificate: one handed to another client (a proxy, a stolen login) must not carry the file.
        if not self._bound():
            return
        session = self.cmd_channel
        permit = session.permit
        control, data = peer_certificate(session.socket), peer_certificate(self.socket)
        if control is not None and data == control:
            if self.producer_fifo:  # a RETR came before the handshake ended: its file may go now
                self.initiate_send()
            return
        session.services.downloads.refuse(
            DownloadRefused(Refusal.WRONG_CHARGER if data else Refusal.NO_CERTIFICATE,
                            permit.grant_id, permit.charger_id, permit.tenant), "ftps", session.remote_ip)
        if self.file_obj is not None:  # a RETR waits for this connection: it gets the answer
            self._resp = ("425 The data connection must present the control connection's certificate.",
                          logging.getLogger("pyftpdlib").warning)
        self.close()

    def handle_close(self) -> None:
        # pyftpdlib calls this when the file's last byte went into the socket, and when the connection fails.
        if self._waiting is not None:
            self._client_done(delivered=False)
        elif self.file_obj is not None and not self.receive and not self.producer_fifo and not self._closed:
            self._wait_for_client()
        else:
            super().handle_close()

    def _wait_for_client(self) -> None:
        if self._idler is not None:
            self._idler.cancel()
        # Its own call_later: cancelled if the connection is closed first (ABOR, the session ending).
        self._waiting = self.call_later(CLOSE_WAIT_SECONDS, self._client_silent)
        self._half_close()

    def _half_close(self) -> None:
        """Say the file ended (close_notify, then FIN), keeping the connection open to hear the client."""
        try:
            if isinstance(self.socket, SSL.Connection):
                self.socket.shutdown()
                self.socket.sock_shutdown(socket.SHUT_WR)
            else:
                self.socket.shutdown(socket.SHUT_WR)
        except SSL.WantWriteError:
            self._close_notify_pending = True  # the send buffer is full: again when it drains
            self.modify_ioloop_events(self.ioloop.READ | self.ioloop.WRITE)
            return
        except (SSL.Error, OSError):
            self._client_done(delivered=False)
            return
        self._close_notify_pending = False
        self.modify_ioloop_events(self.ioloop.READ)

    def readable(self) -> bool:
        return self._waiting is not None or super().readable()

    def writable(self) -> bool:
        return self._close_notify_pending if self._waiting is not None else super().writable()

    def handle_write_event(self) -> None:
        if self._waiting is None:
            super().handle_write_event()
        elif self._close_notify_pending:
            self._half_close()

    def handle_read_event(self) -> None:
        if self._waiting is None:
            super().handle_read_event()
            return
        try:
            data = self.socket.recv(4096)
        except SSL.WantReadError:
            return
        except SSL.ZeroReturnError:  # its close_notify
            self._client_closed()
            return
        except SSL.SysCallError as error:  # a FIN without close_notify, or a reset
            if error.args[1] == "Unexpected EOF":
                self._client_closed()
            else:
                self._client_done(delivered=False)
            return
        except (SSL.Error, OSError):
            self._client_done(delivered=False)
            return
        if not data:  # a FIN; anything else it sends is ignored
            self._client_closed()

    def _client_closed(self) -> None:
        # Its FIN may have crossed our last bytes: it delivered them only once it acknowledged them all.
        self.del_channel()  # the end of the stream would be reported again and again
        self._check_acknowledged()

    def _check_acknowledged(self) -> None:
        if self._waiting is None:
            return
        if _unacknowledged(self.socket) == 0:
            self._client_done(delivered=True)
        elif self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):  # reset
            self._client_done(delivered=False)
        else:
            self.call_later(ACKNOWLEDGED_POLL_SECONDS, self._check_acknowledged)

    def _client_silent(self) -> None:
        self._client_done(delivered=_unacknowledged(self.socket) == 0)

    def _client_done(self, delivered: bool) -> None:
        if self._waiting is None:
            return
        self._waiting.cancel()
        self._waiting = None
        self.delivered = delivered
        # Every byte was sent: 226 whatever became of them. Our close_notify went out already.
        self.transfer_finished = True
        self._resp = ("226 Transfer complete.", logging.getLogger("pyftpdlib").debug)
        self._ssl_established = False
        self.close()


def peer_certificate(connection: object) -> bytes | None:
    """The DER client certificate a TLS connection presented; None for none, or for plain text."""
    if not isinstance(connection, SSL.Connection):
        return None
    certificate = connection.get_peer_certificate(as_cryptography=True)
    return certificate.public_bytes(Encoding.DER) if certificate is not None else None


def _unacknowledged(connection: socket.socket | SSL.Connection) -> int:
    """Bytes sent on the connection that the client's TCP has not acknowledged (Linux's SIOCOUTQ); -1 if unknown."""
    try:
        return struct.unpack("i", fcntl.ioctl(connection.fileno(), termios.TIOCOUTQ, struct.pack("i", 0)))[0]
    except OSError:
        return -1


class GrantSession(TLS_FTPHandler):
    """One charger's control connection. Class attributes are set per server by make_handler."""

    services: Services
    bans: Bans
    sessions: Sessions
    implicit = False
    allow_plain = False
    active_mode: bool
    login_timeout: int

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
        self._waiting_for_login = False
        # On the loop the session was accepted on, where pyftpdlib's own idle timer runs.
        self._login_deadline = self.ioloop.call_later(self.login_timeout, self._login_overdue,
                                                      _errback=self.handle_error)

    @property
    def file_name(self) -> str:
        assert self.permit is not None
        return self.services.grants.ftp_filename(self.permit.firmware.filename)

    def handle(self) -> None:
        self.sessions.opened(self.remote_ip)
        self._counted = self._waiting_for_login = True
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
        if not self.authenticated and time.monotonic() - self._connected_at > self.login_timeout:
            self.respond(self._login_overdue_reply)
            self.close_when_done()
            return
        super().process_command(cmd, *args, **kwargs)

    @property
    def _login_overdue_reply(self) -> str:
        return f"421 Log in within {self.login_timeout} seconds of connecting."

    def _login_overdue(self) -> None:
        """The login deadline passed for a session that said nothing since (or stalled its TLS handshake).

        This runs on the listener's thread, not the session's: it only ends the connection at the socket
        (a last line first when the connection is still plain text), and the session's own loop, seeing it
        end, closes the session there.
        """
        if self.authenticated or self._closed:
            return
        with contextlib.suppress(OSError, SSL.Error):
            if isinstance(self.socket, SSL.Connection):
                self.socket.sock_shutdown(socket.SHUT_RDWR)  # nothing can be said outside TLS
            else:
                self.socket.send(f"{self._login_overdue_reply}\r\n".encode())
                self.socket.shutdown(socket.SHUT_RDWR)

    def ftp_PASS(self, line: str) -> None:
        # A ban also reaches sessions its address opened before it: they get no more password checks.
        if not self.authenticated and self.bans.banned(self.remote_ip):
            self.respond(BANNED)
            self.close_when_done()
            return
        super().ftp_PASS(line)

    def ftp_PORT(self, line: str) -> None:
        if self._active_mode_allowed():
            super().ftp_PORT(line)

    def ftp_EPRT(self, line: str) -> None:
        if self._active_mode_allowed():
            super().ftp_EPRT(line)

    def _active_mode_allowed(self) -> bool:
        # Active mode has the server connect wherever the client says: whether that works or not
        # answers "is this port open?" about the client's own address, a port scan from the server.
        if not self.active_mode:
            self.respond("502 Active mode (PORT/EPRT) is off here: use PASV or EPSV.")
        return self.active_mode

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
        if self._file is not None:
            self._file.close()
        self._login_deadline.cancel()
        if self._counted:
            self._counted = False
            self.sessions.closed(self.remote_ip, waiting=self._waiting_for_login)

    def on_login(self, username: str) -> None:
        assert self.permit is not None
        self._login_deadline.cancel()
        if self._waiting_for_login:  # once: REIN and a second login do not count it again
            self._waiting_for_login = False
            self.sessions.logged_in(self.remote_ip)
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
        if self._file is not None:
            if self.data_channel is not None and self.data_channel.file_obj is self._file:
                self.respond("550 a transfer is already running on the data connection.")
                return None
            # A RETR whose data connection never came: pyftpdlib forgets its file for this one, we end it.
            self._file.close()
        start = self._restart_position
        if start <= self.permit.firmware.size:  # beyond it, pyftpdlib answers 554 and nothing is sent
            try:
                self.permit = self.services.downloads.permit(self.permit.grant_id, peer_certificate(self.socket))
                self._transfer = self.services.downloads.begin(
                    self.permit, "ftps", self.remote_ip, start, self.permit.firmware.size - start)
            except DownloadRefused as refusal:
                self._restart_position = 0
                self.services.downloads.refuse(refusal, "ftps", self.remote_ip)
                self.respond("550 this download is no longer available.")
                return None
        opened: str | None = super().ftp_RETR(file)
        if self._file is None and self._transfer is not None:  # refused before a file was opened: nothing sent
            transfer, self._transfer = self._transfer, None
            transfer.finish(confirmed=False, bytes_sent=0)
        return opened

    def open_file(self) -> StoredFile:
        assert self.permit is not None
        firmware = self.permit.firmware
        storage = self.services.catalog.storage
        self._file = StoredFile(
            "/" + self.file_name, firmware.size,
            lambda start: iter(storage.read(firmware.storage_key, start, firmware.size - start)),
            self._file_closed,
        )
        return self._file

    def _file_closed(self, stored: StoredFile) -> None:
        """The transfer of the file ends: pyftpdlib closed it (sent, aborted, refused) or the session did."""
        if stored is not self._file or self._transfer is None:
            return
        transfer, self._file, self._transfer = self._transfer, None, None
        channel = self.data_channel
        carried = isinstance(channel, _DataChannel) and channel.file_obj is stored
        # The data connection counts what went out on it; a file it never carried sent nothing. The download
        # counts only when the client is known to have taken the file (see _DataChannel).
        sent = channel.get_transmitted_bytes() if carried else 0
        transfer.finish(carried and channel.delivered, sent)


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
    if settings.charger_ca is not None:
        # Asked of every client, required only by bound grants; dates are judged with the grant (repo_service/tls.py).
        context.load_verify_locations(str(settings.charger_ca))
        context.set_verify(SSL.VERIFY_PEER, lambda _connection, _certificate, error, _depth, ok:
                           bool(ok) or error in DATE_ERRORS)
    return context


def make_handler(settings: Settings, services: Services, bans: Bans, sessions: Sessions, context: SSL.Context,
                 implicit: bool) -> type[GrantSession]:
    attributes: dict[str, Any] = {
        "services": services, "bans": bans, "sessions": sessions, "implicit": implicit, "ssl_context": context,
        "authorizer": GrantAuthorizer(services),
        "active_mode": settings.ftps_active_mode, "login_timeout": settings.ftps_login_timeout,
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
    sessions = Sessions(services.metrics, settings.ftps_unauthenticated_per_address, settings.ftps_unauthenticated)
    context, loop = tls_context(settings, services), IOLoop()
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
        listener.bans, listener.sessions, listener.implicit = bans, sessions, implicit
        servers.append(listener)
    return FtpsServers(*servers, sessions=sessions)
