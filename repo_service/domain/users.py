"""Console users: people who sign in with a name and a password, and the sessions their browsers hold.

API clients (``clients.py``) are programs with keys; users are people. A user has one of the same roles and
belongs to one tenant, and once signed in acts as an ``Actor`` exactly as a key of that role would, so every
page and action is checked against the same permissions.

Passwords are hashed with scrypt (memory-hard: each guess costs 32 MiB and tens of milliseconds), with the
parameters stored beside the hash so they can be raised later. Failed sign-ins under a name, a user's or
not, slow the next attempt under it down, doubling from the third failure on; the tenth in a row of a user
locks its account until an admin resets its password; every failure, lockout and sign-in is on the tenant's
audit trail.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlmodel import Session, col, select

from repo_service.db.models import ConsoleSession, ConsoleUser, SignInFailure
from repo_service.db.session import Database
from repo_service.db.tenancy import DEFAULT_TENANT, EVERY_TENANT, acting_in
from repo_service.domain.audit import Audit, Performer
from repo_service.domain.clients import Actor, Role, parse_role
from repo_service.domain.clock import Clock, utc_now
from repo_service.domain.tenants import enabled
from repo_service.errors import Conflict, Forbidden, InvalidInput, NotFound, TryLater, Unauthenticated

# 2**15 x 8 x 128 bytes = 32 MiB per hash; about 60 ms on the 2-core machine the benchmarks run on.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
MAX_NAME = 100
MIN_PASSWORD = 12
# Long enough for any pass phrase, short enough that hashing one costs nothing extra.
MAX_PASSWORD = 1024
# Failures before the next attempt must wait; the wait doubles with each further failure, up to MAX_WAIT.
FREE_FAILURES = 2
MAX_WAIT = timedelta(minutes=15)
LOCK_AFTER = 10
# Roles people sign in with; the platform role manages tenants from the console too.
USER_ROLES = (Role.RELEASE, Role.CSMS, Role.ADMIN, Role.PLATFORM)
USER_PREFIX = "user-"


@dataclass(frozen=True)
class UserRecord:
    id: str
    name: str
    role: Role
    tenant: str
    created_at: datetime
    disabled_at: datetime | None
    failed_logins: int
    locked_at: datetime | None
    last_login_at: datetime | None


@dataclass(frozen=True)
class SignedIn:
    """A session just opened: the token goes into the browser's cookie, and is stored nowhere."""

    token: str
    actor: Actor
    expires_at: datetime


def _record(row: ConsoleUser) -> UserRecord:
    return UserRecord(row.id, row.name, Role(row.role), row.tenant, row.created_at, row.disabled_at,
                      row.failed_logins, row.locked_at, row.last_login_at)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=2 * 128 * n * r * p, dklen=32)


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def password_matches(password: str, stored: str) -> bool:
    _, n, r, p, salt, digest = stored.split("$")
    return hmac.compare_digest(_scrypt(password, base64.b64decode(salt), int(n), int(r), int(p)),
                               base64.b64decode(digest))


# Checked against when the name is unknown, so that an unknown name takes as long as a wrong password.
_NOBODY = hash_password(secrets.token_urlsafe(16))


def check_password(password: str) -> str:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise InvalidInput("password", f"must be {MIN_PASSWORD}-{MAX_PASSWORD} characters")
    if not password.isprintable():
        raise InvalidInput("password", "must be printable characters (no newline or control characters)")
    return password


def check_user_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_NAME or not name.isprintable():
        raise InvalidInput("name", f"must be 1-{MAX_NAME} printable characters")
    return name


def parse_user_role(text: str) -> Role:
    role = parse_role(text)
    if role not in USER_ROLES:
        raise InvalidInput("role", f"must be one of {', '.join(USER_ROLES)}, got {text!r}")
    return role


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def wait_after(failures: int) -> timedelta:
    """How long a user must wait after this many failed sign-ins in a row before the next one is checked."""
    if failures <= FREE_FAILURES:
        return timedelta(0)
    return min(timedelta(seconds=2 ** (failures - FREE_FAILURES)), MAX_WAIT)


def actor_of(row: ConsoleUser) -> Actor:
    return Actor(client_id=row.id, name=row.name, role=Role(row.role), tenant=row.tenant, user=True)


class Users:
    def __init__(self, database: Database, audit: Audit, session_lifetime: timedelta,
                 clock: Clock = utc_now) -> None:
        self.database = database
        self.audit = audit
        self.session_lifetime = session_lifetime
        self.clock = clock

    # -- the admin's acts ---------------------------------------------------------------------------------

    def create(self, name: str, role: Role, password: str, by: Performer,
               tenant: str = DEFAULT_TENANT) -> UserRecord:
        name = check_user_name(name)
        if role not in USER_ROLES:
            raise InvalidInput("role", f"must be one of {', '.join(USER_ROLES)}")
        if role is Role.PLATFORM and tenant != DEFAULT_TENANT:
            raise InvalidInput("role", f"platform users belong to the {DEFAULT_TENANT} tenant: they act across "
                               "tenants")
        row = ConsoleUser(id=USER_PREFIX + secrets.token_hex(6), name=name, role=role.value,
                          password_hash=hash_password(check_password(password)), created_at=self.clock(),
                          tenant=tenant)
        # Names are unique across tenants, so the lookup looks in every tenant's rows; the row itself is the
        # tenant's. Exclusive: it reads, then writes (see Clients.create).
        with acting_in(EVERY_TENANT), self.database.session(exclusive=True) as session:
            if not enabled(session, tenant):
                raise NotFound(f"no enabled tenant named {tenant[:70]}: `fwrepo tenants list` shows them")
            if session.exec(select(ConsoleUser.id).where(ConsoleUser.name == name)).first() is not None:
                raise Conflict(f"a user named {name} exists")
            session.add(row)
            session.flush()
            with acting_in(tenant):
                self.audit.record(by, "user_create", f"user {row.id}", session, name=name, role=role.value)
        return _record(row)

    def list(self, tenant: str | None = None) -> list[UserRecord]:
        """Every tenant's users (in the every-tenant scope), or the scope's, or tenant's."""
        with acting_in(tenant) if tenant else nullcontext(), self.database.session() as session:
            rows = session.exec(select(ConsoleUser).order_by(col(ConsoleUser.created_at), col(ConsoleUser.id))).all()
            return [_record(row) for row in rows]

    def disable(self, name: str, by: Performer, by_role: Role | None = None) -> UserRecord:
        """Disable the user named name, in the caller's scope, and end its sessions. by_role: the console user's
        role doing it (None: the operator at the machine)."""
        with self.database.session(exclusive=True) as session:
            row = self._named(session, name, by_role)
            if row.disabled_at is None:
                row.disabled_at = self.clock()
                session.add(row)
                self._end_sessions(session, row.id)
                with acting_in(row.tenant):
                    self.audit.record(by, "user_disable", f"user {row.id}", session, name=row.name)
            return _record(row)

    def reset_password(self, name: str, password: str, by: Performer, by_role: Role | None = None) -> UserRecord:
        """Set a new password, unlock the account, lift its backoff and end its sessions (whoever held the old
        one is out)."""
        digest = hash_password(check_password(password))
        with self.database.session(exclusive=True) as session:
            row = self._named(session, name, by_role)
            row.password_hash, row.failed_logins, row.locked_at = digest, 0, None
            session.add(row)
            # And its name's backoff: the user may sign in with the new password at once.
            session.execute(delete(SignInFailure).where(col(SignInFailure.name_hash) == _token_hash(row.name)))
            self._end_sessions(session, row.id)
            with acting_in(row.tenant):
                self.audit.record(by, "user_reset_password", f"user {row.id}", session, name=row.name)
            return _record(row)

    # -- signing in and out --------------------------------------------------------------------------------

    def sign_in(self, name: str, password: str, address: str | None) -> SignedIn:
        """Open a session for name if password is its password; Unauthenticated (the same for an unknown name,
        a wrong password, a disabled user and a locked account), or TryLater while the backoff lasts."""
        now = self.clock()
        where = {"address": address[:64]} if address else {}
        tried_as = _token_hash(name)
        with acting_in(EVERY_TENANT), self.database.session(exclusive=True) as session:
            tried = session.get(SignInFailure, tried_as)
            if tried is not None and now < tried.last_failed_at + wait_after(tried.failures):
                # Refused before the password is looked at: guessing faster than the backoff gains nothing, and
                # costs the server no scrypt. The same for every name tried, a user's or not.
                wait = max(1, int((tried.last_failed_at + wait_after(tried.failures) - now).total_seconds() + 0.999))
                raise TryLater(wait, f"too many failed sign-ins: try again in {wait} s")
            # A name no user can have (too long, or with a NUL, which PostgreSQL refuses) is unknown unasked.
            row = session.exec(select(ConsoleUser).where(ConsoleUser.name == name)).first() \
                if len(name) <= MAX_NAME and "\x00" not in name else None
            if row is None:
                password_matches(password, _NOBODY)
                self._failed(session, tried_as, tried, now)
                shown = name[:MAX_NAME] if name[:MAX_NAME].isprintable() else repr(name[:MAX_NAME])
                with acting_in(DEFAULT_TENANT):
                    self.audit.record(Performer("console"), "login_failed", f"user name {shown}", session,
                                      reason="no such user", **where)
                # Commit the count and the trail, then refuse: the failure is what must be remembered.
                session.commit()
                raise Unauthenticated("wrong name or password")
            performer = Performer.user(row.id, row.name)
            with acting_in(row.tenant):
                good = password_matches(password, row.password_hash)
                usable = row.disabled_at is None and row.locked_at is None and enabled(session, row.tenant)
                if not good or not usable:
                    reason = ("wrong password" if not good else "disabled" if row.disabled_at is not None
                              else "locked" if row.locked_at is not None else "tenant disabled")
                    self._failed(session, tried_as, tried, now)
                    if not good and row.locked_at is None:
                        row.failed_logins += 1
                        if row.failed_logins >= LOCK_AFTER:
                            row.locked_at = now
                            self.audit.record(performer, "user_locked", f"user {row.id}", session,
                                              failures=row.failed_logins, **where)
                        session.add(row)
                    self.audit.record(performer, "login_failed", f"user {row.id}", session, reason=reason,
                                      failures=row.failed_logins, **where)
                    session.commit()
                    raise Unauthenticated("wrong name or password")
                if tried is not None:
                    session.delete(tried)
                token = secrets.token_urlsafe(32)
                expires = now + self.session_lifetime
                row.failed_logins, row.last_login_at = 0, now
                session.add(row)
                session.add(ConsoleSession(token_hash=_token_hash(token), user_id=row.id, created_at=now,
                                           expires_at=expires, tenant=row.tenant))
                self.audit.record(performer, "login", f"user {row.id}", session, **where)
                return SignedIn(token, actor_of(row), expires)

    @staticmethod
    def _failed(session: Session, tried_as: str, tried: SignInFailure | None, now: datetime) -> None:
        """One more failure under the name tried (its hash); the counts of names not tried for longer than the
        longest wait go, so names an attacker sprays do not pile up."""
        session.execute(delete(SignInFailure).where(col(SignInFailure.last_failed_at) < now - 2 * MAX_WAIT,
                                                    col(SignInFailure.name_hash) != tried_as))
        if tried is None:
            session.add(SignInFailure(name_hash=tried_as, failures=1, last_failed_at=now))
        else:
            tried.failures += 1
            tried.last_failed_at = now
            session.add(tried)

    def authenticate(self, token: str) -> Actor:
        """The user a session token belongs to, while the session lasts and the user and tenant are enabled."""
        now = self.clock()
        with acting_in(EVERY_TENANT), self.database.session() as session:
            found = session.exec(select(ConsoleSession, ConsoleUser).join(
                ConsoleUser, col(ConsoleUser.id) == col(ConsoleSession.user_id)).where(
                ConsoleSession.token_hash == _token_hash(token))).first()
            if found is None:
                raise Unauthenticated("not signed in")
            held, row = found
            if (held.ended_at is not None or held.expires_at <= now or row.disabled_at is not None
                    or row.locked_at is not None or not enabled(session, row.tenant)):
                raise Unauthenticated("the session has ended: sign in again")
            return actor_of(row)

    def sign_out(self, token: str) -> None:
        with acting_in(EVERY_TENANT), self.database.session(exclusive=True) as session:
            held = session.get(ConsoleSession, _token_hash(token))
            if held is None or held.ended_at is not None:
                return
            held.ended_at = self.clock()
            session.add(held)
            with acting_in(held.tenant):
                row = session.get(ConsoleUser, held.user_id)
                assert row is not None
                self.audit.record(Performer.user(row.id, row.name), "logout", f"user {row.id}", session)

    # -- helpers ---------------------------------------------------------------------------------------------

    @staticmethod
    def _named(session: Session, name: str, by_role: Role | None) -> ConsoleUser:
        """The user named name in the scope, that a console user of by_role may change: a platform user acts
        across tenants, so only the platform (or the operator at the machine) changes one, never a tenant's
        admin, who would otherwise take its account over with a new password."""
        row = session.exec(select(ConsoleUser).where(ConsoleUser.name == name)).first()
        if row is None:
            raise NotFound(f"no user named {name[:100]}")
        if by_role is not None and by_role is not Role.PLATFORM and row.role == Role.PLATFORM.value:
            raise Forbidden(f"{row.name} is a platform user: only the platform changes it")
        return row

    def _end_sessions(self, session: Session, user_id: str) -> None:
        for held in session.exec(select(ConsoleSession).where(ConsoleSession.user_id == user_id,
                                                              col(ConsoleSession.ended_at).is_(None))).all():
            held.ended_at = self.clock()
            session.add(held)
