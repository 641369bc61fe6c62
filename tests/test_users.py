"""Console users as an attacker meets them in the domain: hashed passwords, backoff and lockout, sessions that
end, and nothing that tells a known name from an unknown one; and the `fwrepo users` command.

The domain tests share one database of each kind per module (every test makes users of its own names) and
move an injected clock instead of sleeping through the backoff.
"""

from __future__ import annotations

import io
import os
import re
import secrets
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlmodel import select

from repo_service.cli import main
from repo_service.db.migrate import upgrade
from repo_service.db.models import ConsoleSession, ConsoleUser
from repo_service.db.session import Database
from repo_service.db.tenancy import DEFAULT_TENANT, EVERY_TENANT, acting_in
from repo_service.domain import users as users_module
from repo_service.domain.audit import Audit, Performer
from repo_service.domain.clients import Role
from repo_service.domain.tenants import Tenants
from repo_service.domain.users import LOCK_AFTER, Users
from repo_service.errors import Conflict, InvalidInput, TryLater, Unauthenticated
from tests.support.databases import scratch_postgres
from tests.support.fwrepo import Fwrepo

ADMIN = Performer("cli tester@host")
LIFETIME = timedelta(hours=8)


@dataclass
class FakeClock:
    now: datetime = field(default_factory=lambda: datetime(2026, 12, 1, 2, 0, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    """One migrated database of each kind for the module's domain tests."""
    if request.param == "sqlite":
        urls: Iterator[str] = iter([f"sqlite:///{tmp_path_factory.mktemp('users') / 'users.sqlite3'}"])
    else:
        urls = scratch_postgres(request.getfixturevalue("postgres_server_url"))
    for url in urls:
        database = Database(url.replace("postgresql://", "postgresql+psycopg://"))
        upgrade(database)
        yield database
        database.dispose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def users(database: Database, clock: FakeClock) -> Users:
    return Users(database, Audit(database), LIFETIME, clock)


@pytest.fixture
def cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hashes made from now on cost little: for tests of what many failed sign-ins do, not of what one costs
    (each hash names its own parameters, so checking one costs what making it did)."""
    monkeypatch.setattr(users_module, "SCRYPT_N", 2**10)


def name() -> str:
    return f"user-{secrets.token_hex(4)}"


def password() -> str:
    return secrets.token_urlsafe(18)


def tenant(database: Database) -> str:
    made = f"t{secrets.token_hex(4)}"
    Tenants(database, Audit(database)).create(made, ADMIN)
    return made


def made(users: Users, role: Role = Role.RELEASE, tenant: str = DEFAULT_TENANT) -> tuple[str, str]:
    """A new user of role in tenant: its name and password."""
    who, secret = name(), password()
    users.create(who, role, secret, ADMIN, tenant)
    return who, secret


def row_of(database: Database, who: str) -> ConsoleUser:
    with acting_in(EVERY_TENANT), database.session() as session:
        row = session.exec(select(ConsoleUser).where(ConsoleUser.name == who)).one()
        session.expunge(row)
        return row


def trail(users: Users, tenant: str, subject: str) -> list[str]:
    """The actions on tenant's audit trail about subject, oldest first."""
    with acting_in(tenant):
        events, _ = users.audit.list(subject=subject, limit=500)
    return [event.action for event in sorted(events, key=lambda event: event.seq)]


def fail(users: Users, who: str, clock: FakeClock, times: int) -> None:
    """times wrong passwords, each after its backoff has passed."""
    for _ in range(times):
        with pytest.raises(Unauthenticated):
            users.sign_in(who, "wrong password!", "192.0.2.7")
        clock.advance(16 * 60)


# -- passwords ------------------------------------------------------------------------------------------


def test_a_password_is_stored_only_as_a_salted_scrypt_hash_with_its_parameters(users: Users, database: Database) -> None:
    secret = password()
    first, second = name(), name()
    users.create(first, Role.RELEASE, secret, ADMIN)
    users.create(second, Role.RELEASE, secret, ADMIN)
    stored = [row_of(database, who).password_hash for who in (first, second)]
    for digest in stored:
        assert secret not in digest
        kind, n, r, p, salt, key = digest.split("$")
        assert (kind, n, r, p) == ("scrypt", str(2**15), "8", "1")
        assert len(salt) >= 22 and len(key) >= 43  # 16-byte salt, 32-byte key, base64
    assert stored[0] != stored[1], "the same password of two users must hash differently (salt)"
    assert users_module.password_matches(secret, stored[0])
    assert not users_module.password_matches(secret + "x", stored[0])


@pytest.mark.parametrize("bad", ["short pw", "x" * 1025, "twelve chars\nmore", "nul in\x00 the middle",
                                 "\x1b[31mescape sequence", "tab\tseparated password", "delete\x7f password"],
                         ids=["too short", "too long", "newline", "NUL", "ESC", "tab", "DEL"])
def test_a_bad_password_is_refused_naming_the_field(users: Users, bad: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        users.create(name(), Role.RELEASE, bad, ADMIN)
    assert refused.value.field == "password"
    who, _ = made(users)
    with pytest.raises(InvalidInput) as refused:
        users.reset_password(who, bad, ADMIN)
    assert refused.value.field == "password"


def test_a_password_of_exactly_the_limits_is_accepted(cheap_hashes: None, users: Users) -> None:
    for secret in ("x" * 12, "y" * 1024):
        who = name()
        users.create(who, Role.RELEASE, secret, ADMIN)
        assert users.sign_in(who, secret, None).actor.name == who


# -- names, roles, tenants ------------------------------------------------------------------------------


def test_a_duplicate_name_is_refused_in_the_same_tenant_and_in_another(cheap_hashes: None, users: Users, database: Database) -> None:
    who, _ = made(users)
    other = tenant(database)
    for spelled, in_tenant in ((who, DEFAULT_TENANT), (who, other), (f"  {who} ", other)):
        with pytest.raises(Conflict):
            users.create(spelled, Role.ADMIN, password(), ADMIN, in_tenant)
    assert [record.tenant for record in users.list(EVERY_TENANT) if record.name == who] == [DEFAULT_TENANT]


def test_the_platform_role_belongs_to_the_default_tenant_only(users: Users, database: Database) -> None:
    other = tenant(database)
    with pytest.raises(InvalidInput) as refused:
        users.create(name(), Role.PLATFORM, password(), ADMIN, other)
    assert refused.value.field == "role"
    assert not [record for record in users.list(EVERY_TENANT) if record.tenant == other]
    made(users, Role.PLATFORM)  # in the default tenant it is a role like the others


@pytest.mark.parametrize("bad", ["", "   ", "x" * 101, "line\nbreak", "nul\x00"])
def test_a_bad_user_name_is_refused_naming_the_field(users: Users, bad: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        users.create(bad, Role.RELEASE, password(), ADMIN)
    assert refused.value.field == "name"


# -- sessions that end ----------------------------------------------------------------------------------


def test_a_disabled_user_cannot_sign_in_and_its_sessions_end(cheap_hashes: None, users: Users) -> None:
    who, secret = made(users)
    sessions = [users.sign_in(who, secret, None) for _ in range(2)]
    users.disable(who, ADMIN)
    for held in sessions:
        with pytest.raises(Unauthenticated):
            users.authenticate(held.token)
    with pytest.raises(Unauthenticated) as refused:
        users.sign_in(who, secret, None)
    assert str(refused.value) == "wrong name or password"


def test_reset_password_unlocks_the_account_and_ends_its_sessions(cheap_hashes: None, users: Users, clock: FakeClock,
                                                                   database: Database) -> None:
    who, secret = made(users)
    held = users.sign_in(who, secret, None)
    fail(users, who, clock, LOCK_AFTER)
    assert row_of(database, who).locked_at is not None
    fresh = password()
    users.reset_password(who, fresh, ADMIN)
    with pytest.raises(Unauthenticated):
        users.authenticate(held.token)
    row = row_of(database, who)
    assert (row.locked_at, row.failed_logins) == (None, 0)
    with pytest.raises(Unauthenticated):
        users.sign_in(who, secret, None)  # the old password is gone
    clock.advance(1)
    assert users.authenticate(users.sign_in(who, fresh, None).token).name == who


def test_a_session_ends_when_it_expires_and_when_signed_out(cheap_hashes: None, users: Users, clock: FakeClock) -> None:
    who, secret = made(users)
    lasting, leaving = users.sign_in(who, secret, None), users.sign_in(who, secret, None)
    assert lasting.expires_at == clock.now + LIFETIME
    users.sign_out(leaving.token)
    with pytest.raises(Unauthenticated):
        users.authenticate(leaving.token)
    clock.advance(LIFETIME.total_seconds() - 1)
    assert users.authenticate(lasting.token).name == who
    clock.advance(1)
    with pytest.raises(Unauthenticated):
        users.authenticate(lasting.token)


def test_a_token_never_issued_or_altered_is_refused(cheap_hashes: None, users: Users) -> None:
    who, secret = made(users)
    held = users.sign_in(who, secret, None)
    for token in (secrets.token_urlsafe(32), held.token[:-1], held.token + "A", "", held.token.upper()):
        if token == held.token:
            continue
        with pytest.raises(Unauthenticated):
            users.authenticate(token)


def test_only_the_hash_of_a_session_token_is_stored(cheap_hashes: None, users: Users, database: Database) -> None:
    who, secret = made(users)
    held = users.sign_in(who, secret, None)
    with acting_in(EVERY_TENANT), database.session() as session:
        stored = session.exec(select(ConsoleSession).where(ConsoleSession.user_id == row_of(database, who).id)).all()
    assert [row.token_hash for row in stored] != [held.token]
    assert all(held.token not in row.token_hash for row in stored)


def test_a_disabled_tenants_users_cannot_sign_in_and_their_sessions_end(cheap_hashes: None, users: Users, database: Database) -> None:
    other = tenant(database)
    who, secret = made(users, Role.ADMIN, other)
    held = users.sign_in(who, secret, None)
    Tenants(database, Audit(database)).disable(other, ADMIN)
    with pytest.raises(Unauthenticated):
        users.authenticate(held.token)
    with pytest.raises(Unauthenticated) as refused:
        users.sign_in(who, secret, None)
    assert str(refused.value) == "wrong name or password"


# -- backoff and lockout -------------------------------------------------------------------------------


@pytest.fixture
def scrypt_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every password the domain checks against a hash from now on."""
    calls: list[str] = []
    real = users_module.password_matches

    def counted(password: str, stored: str) -> bool:
        calls.append(password)
        return real(password, stored)

    monkeypatch.setattr(users_module, "password_matches", counted)
    return calls


def test_two_failures_are_free_then_each_attempt_waits_without_the_password_being_checked(cheap_hashes: None, 
        users: Users, clock: FakeClock, scrypt_calls: list[str]) -> None:
    who, secret = made(users)
    for _ in range(3):  # the first two failures cost nothing: the third attempt is checked at once
        with pytest.raises(Unauthenticated):
            users.sign_in(who, "wrong password!", None)
    checked = len(scrypt_calls)
    assert checked == 3
    for attempt in ("wrong password!", secret):  # within the wait, even the right password is refused
        with pytest.raises(TryLater) as refused:
            users.sign_in(who, attempt, None)
        assert refused.value.retry_after == 2
    assert len(scrypt_calls) == checked, "a sign-in during the backoff must not check the password"
    clock.advance(1.5)
    with pytest.raises(TryLater) as refused:
        users.sign_in(who, secret, None)
    assert refused.value.retry_after == 1
    clock.advance(0.5)
    assert users.sign_in(who, secret, None).actor.name == who


def test_the_wait_doubles_with_each_further_failure(cheap_hashes: None, users: Users, clock: FakeClock) -> None:
    who, _ = made(users)
    answers: list[int | str] = []
    while len(answers) < 10:
        try:
            users.sign_in(who, "wrong password!", None)
        except TryLater as refused:
            answers.append(refused.retry_after)
            clock.advance(refused.retry_after)
        except Unauthenticated:
            answers.append("wrong")
    assert answers == ["wrong", "wrong", "wrong", 2, "wrong", 4, "wrong", 8, "wrong", 16]


def test_ten_failures_lock_the_account_against_the_right_password(cheap_hashes: None, users: Users, clock: FakeClock,
                                                                  database: Database) -> None:
    who, secret = made(users)
    fail(users, who, clock, LOCK_AFTER - 1)
    assert row_of(database, who).locked_at is None
    assert users.sign_in(who, secret, None)  # nine failures: still the user's account
    fail(users, who, clock, LOCK_AFTER)
    assert row_of(database, who).locked_at is not None
    for wait in (0, 3600, 30 * 86400):
        clock.advance(wait)
        with pytest.raises(Unauthenticated) as refused:
            users.sign_in(who, secret, None)
        assert str(refused.value) == "wrong name or password"


def test_a_lock_ends_the_sessions_the_account_holds(cheap_hashes: None, users: Users, clock: FakeClock) -> None:
    who, secret = made(users)
    held = users.sign_in(who, secret, None)
    fail(users, who, clock, LOCK_AFTER)
    with pytest.raises(Unauthenticated):
        users.authenticate(held.token)


def test_every_failure_lock_sign_in_and_sign_out_is_on_the_tenants_trail(cheap_hashes: None, users: Users, clock: FakeClock,
                                                                        database: Database) -> None:
    other = tenant(database)
    who, secret = made(users, Role.RELEASE, other)
    subject = f"user {row_of(database, who).id}"
    held = users.sign_in(who, secret, "192.0.2.1")
    users.sign_out(held.token)
    users.sign_out(held.token)  # a second sign-out of the same session is no act
    fail(users, who, clock, LOCK_AFTER)
    with pytest.raises(Unauthenticated):
        users.sign_in(who, secret, None)  # locked: refused, and on the trail
    assert trail(users, other, subject) == (["user_create", "login", "logout"] + ["login_failed"] * (LOCK_AFTER - 1)
                                            + ["user_locked", "login_failed", "login_failed"])
    assert trail(users, DEFAULT_TENANT, subject) == [], "a tenant's users' acts belong on its own trail"
    with acting_in(other):
        events, _ = users.audit.list(subject=subject, action="login_failed", limit=100)
    assert {event.actor for event in events} == {f"user {row_of(database, who).id} ({who})"}


def test_an_unknown_name_is_refused_as_a_wrong_password_and_audited(users: Users, scrypt_calls: list[str]) -> None:
    who, _ = made(users)
    ghost = name()
    refusals = []
    for attempt in (who, ghost):
        with pytest.raises(Unauthenticated) as refused:
            users.sign_in(attempt, "wrong password!", "192.0.2.9")
        refusals.append((type(refused.value), str(refused.value)))
    assert refusals[0] == refusals[1]
    assert len(scrypt_calls) == 2, "an unknown name must cost a hash check as a known one does"
    assert trail(users, DEFAULT_TENANT, f"user name {ghost}") == ["login_failed"]


def test_an_unknown_name_takes_about_as_long_as_a_wrong_password(users: Users, clock: FakeClock) -> None:
    who, _ = made(users)
    ghost = name()

    def seconds(attempt: str) -> float:
        started = time.perf_counter()
        with pytest.raises(Unauthenticated):
            users.sign_in(attempt, "wrong password!", None)
        clock.advance(16 * 60)
        return time.perf_counter() - started

    known, unknown = [], []
    for _ in range(5):
        known.append(seconds(who))
        unknown.append(seconds(ghost))
    ratio = statistics.median(unknown) / statistics.median(known)
    assert 0.6 < ratio < 1.6, (known, unknown)


def test_the_backoff_does_not_tell_a_known_name_from_an_unknown_one(users: Users, clock: FakeClock) -> None:
    """After three failures a known name is made to wait; an unknown name must be answered the same, else
    three guesses tell an attacker which names exist."""
    who, _ = made(users)
    ghost = name()
    answers = []
    for attempt in (who, ghost):
        for _ in range(3):
            with pytest.raises(Unauthenticated):
                users.sign_in(attempt, "wrong password!", None)
        try:
            users.sign_in(attempt, "wrong password!", None)
            answers.append(("refused", None))
        except TryLater as refused:
            answers.append(("try later", refused.retry_after))
        except Unauthenticated:
            answers.append(("refused", None))
    assert answers[0] == answers[1], f"known name: {answers[0]}, unknown name: {answers[1]}"


def test_a_sign_in_as_the_100_character_prefix_of_a_longer_name_is_not_that_user(users: Users) -> None:
    who, secret = "p" * 100, password()
    users.create(who, Role.RELEASE, secret, ADMIN)
    with pytest.raises(Unauthenticated):
        users.sign_in(who + "-and-more", secret, None)


@pytest.mark.parametrize("odd", ["nul\x00name", "x" * 5000, "\u202eright-to-left"])
def test_a_sign_in_with_an_odd_name_is_refused_as_any_wrong_name(users: Users, odd: str) -> None:
    """What a browser may send in the name field: refused as a wrong name, never a database error."""
    with pytest.raises(Unauthenticated) as refused:
        users.sign_in(odd, "wrong password!", "192.0.2.8")
    assert str(refused.value) == "wrong name or password"


# -- the command line ---------------------------------------------------------------------------------
# In this process (each `fwrepo` start costs seconds on a loaded machine), against the module's databases;
# one test runs the real command against a server and signs in over HTTP.


@dataclass
class Ran:
    code: int
    out: str
    err: str


def run_main(capsys: pytest.CaptureFixture[str], *arguments: str) -> Ran:
    capsys.readouterr()
    try:
        code = main(list(arguments))
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else 1
    captured = capsys.readouterr()
    return Ran(code, captured.out, captured.err)


@pytest.fixture
def cli(database: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> Callable[..., Ran]:
    for variable in [name for name in os.environ if name.startswith("FWREPO_")]:
        monkeypatch.delenv(variable)
    url = database.url.replace("postgresql+psycopg://", "postgresql://")

    def run(*arguments: str, stdin: str = "") -> Ran:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        return run_main(capsys, *arguments, "--data-dir", str(tmp_path), "--database-url", url)

    return run


def listed(cli: Callable[..., Ran], who: str) -> list[str]:
    """The row of `fwrepo users list` for who, as its columns."""
    rows = [line.split() for line in cli("users", "list").out.splitlines()]
    return next(row for row in rows if who in row)


def test_users_create_reads_the_password_from_stdin(cheap_hashes: None, cli: Callable[..., Ran], users: Users) -> None:
    who, secret = name(), password()
    made = cli("users", "create", "--name", who, "--role", "release", stdin=f"{secret}\nnext line\n")
    assert (made.code, made.out.strip()) == (0, f"created user {who} (release, tenant default)")
    assert secret not in made.out + made.err
    assert users.sign_in(who, secret, None).actor.role is Role.RELEASE
    refused = cli("users", "create", "--name", name(), "--role", "release", "--password", secret)
    assert refused.code == 2, "a password on the command line is seen by every user of the machine (ps)"


@pytest.mark.parametrize("stdin", ["", "\n", "short\n", "control\x1bchars-here\n", "x" * 1025 + "\n"],
                         ids=["empty", "empty line", "short", "ESC", "too long"])
def test_users_create_with_a_bad_password_on_stdin_is_refused_in_one_line(cli: Callable[..., Ran], stdin: str) -> None:
    who = name()
    result = cli("users", "create", "--name", who, "--role", "release", stdin=stdin)
    assert result.code == 1 and result.err.startswith("fwrepo: password: ") and result.err.count("\n") == 1, result
    assert who not in cli("users", "list").out


def test_users_list_shows_each_user_and_never_a_hash(cheap_hashes: None, cli: Callable[..., Ran], database: Database) -> None:
    who, secret = name(), password()
    cli("users", "create", "--name", who, "--role", "csms", stdin=secret)
    output = cli("users", "list").out
    header = output.splitlines()[0].split()
    assert header[:4] == ["ID", "TENANT", "NAME", "ROLE"] and "STATE" in header
    row = listed(cli, who)
    assert row[1:4] == ["default", who, "csms"] and row[-1] == "active" and "never" in row
    digest = row_of(database, who).password_hash
    assert "scrypt" not in output and digest.split("$")[-1] not in output and secret not in output


def test_users_list_of_one_tenant_shows_only_its_users(cli: Callable[..., Ran], database: Database) -> None:
    other = tenant(database)
    mine, theirs = name(), name()
    cli("users", "create", "--name", mine, "--role", "admin", "--tenant", other, stdin=password())
    cli("users", "create", "--name", theirs, "--role", "admin", stdin=password())
    output = cli("users", "list", "--tenant", other).out
    assert mine in output and theirs not in output


def test_users_disable_stops_sign_ins_and_ends_sessions(cheap_hashes: None, cli: Callable[..., Ran], users: Users) -> None:
    who, secret = name(), password()
    cli("users", "create", "--name", who, "--role", "admin", stdin=secret)
    held = users.sign_in(who, secret, None)
    disabled = cli("users", "disable", who)
    assert (disabled.code, disabled.out.strip()) == (0, f"disabled {who}: its sessions are ended")
    with pytest.raises(Unauthenticated):
        users.authenticate(held.token)
    with pytest.raises(Unauthenticated):
        users.sign_in(who, secret, None)
    assert listed(cli, who)[-1] == "disabled"
    unknown = cli("users", "disable", name())
    assert unknown.code == 1 and unknown.err.startswith("fwrepo: no user named") and unknown.err.count("\n") == 1


def test_users_reset_password_sets_the_new_one_from_stdin_and_unlocks(cheap_hashes: None, cli: Callable[..., Ran], users: Users,
                                                                      clock: FakeClock) -> None:
    who, secret, fresh = name(), password(), password()
    cli("users", "create", "--name", who, "--role", "release", stdin=secret)
    fail(users, who, clock, LOCK_AFTER)
    assert listed(cli, who)[-1] == "locked"
    short = cli("users", "reset-password", who, stdin="short\n")
    assert short.code == 1 and "password" in short.err and listed(cli, who)[-1] == "locked"
    result = cli("users", "reset-password", who, stdin=f"{fresh}\n")
    assert (result.code, result.out.strip()) == (0, f"new password set for {who}: unlocked, its sessions ended")
    assert listed(cli, who)[-1] == "active"
    with pytest.raises(Unauthenticated):
        users.sign_in(who, secret, None)
    assert users.sign_in(who, fresh, None).actor.name == who


@pytest.mark.parametrize("role", ["superuser", "RELEASE ", ""])
def test_users_create_with_a_bad_role_is_refused_with_the_choices(cli: Callable[..., Ran], role: str) -> None:
    who = name()
    result = cli("users", "create", "--name", who, "--role", role, stdin=password())
    assert result.code == 2
    last = result.err.splitlines()[-1]
    assert last.startswith("fwrepo users create: error:") and "--role" in last, last
    assert all(choice in last for choice in ("release", "csms", "admin", "platform")), last
    assert who not in cli("users", "list").out


def test_users_create_of_a_platform_user_outside_the_default_tenant_is_refused(cli: Callable[..., Ran],
                                                                              database: Database) -> None:
    other = tenant(database)
    who = name()
    result = cli("users", "create", "--name", who, "--role", "platform", "--tenant", other, stdin=password())
    assert result.code == 1 and result.err.startswith("fwrepo: role: "), result
    missing = cli("users", "create", "--name", who, "--role", "admin", "--tenant", "no-such-tenant", stdin=password())
    assert missing.code == 1 and "no-such-tenant" in missing.err, missing
    assert who not in cli("users", "list").out


def test_users_create_of_a_taken_name_is_refused(cli: Callable[..., Ran]) -> None:
    who = name()
    cli("users", "create", "--name", who, "--role", "release", stdin=password())
    again = cli("users", "create", "--name", who, "--role", "admin", stdin=password())
    assert again.code == 1 and again.err.strip() == f"fwrepo: a user named {who} exists"


@pytest.mark.parametrize("command,options", [
    ("create", ["--name", "--role", "--tenant", "stdin"]),
    ("list", ["--tenant"]),
    ("disable", ["name"]),
    ("reset-password", ["name", "stdin"]),
])
def test_users_help_of_each_command_names_its_options_and_the_database_settings_only(
        capsys: pytest.CaptureFixture[str], command: str, options: list[str]) -> None:
    """The password comes from stdin: the command's own --help must say so, or nobody finds out how to give it."""
    result = run_main(capsys, "users", command, "--help")
    assert result.code == 0 and result.err == ""
    help_text = " ".join(result.out.split())
    for option in (*options, "--data-dir", "--database-url"):
        assert option in help_text, (option, result.out)
    for server_flag in ("--port", "--s3-bucket", "--ftps-port", "--tls", "--password"):
        assert server_flag not in help_text
    assert len(result.out.splitlines()) < 25, result.out


def test_users_help_lists_its_commands(capsys: pytest.CaptureFixture[str]) -> None:
    help_text = run_main(capsys, "users", "--help").out
    for command in ("create", "list", "disable", "reset-password"):
        assert command in help_text
    bare = run_main(capsys, "users")
    assert bare.code == 2 and "COMMAND" in bare.err


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_real_command_reads_a_piped_password_and_the_user_signs_in_to_the_console(fwrepo: Fwrepo) -> None:
    who, secret = name(), password()
    made = fwrepo.cli("users", "create", "--name", who, "--role", "release", stdin=f"{secret}\n".encode())
    assert made.stdout.strip() == f"created user {who} (release, tenant default)"
    with httpx.Client(base_url=fwrepo.url, verify=fwrepo.tls(), timeout=30) as browser:
        form = browser.get("/console/login")
        token = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert token, form.text
        signed = browser.post("/console/login", data={"csrf": token[1], "name": who, "password": secret})
        assert signed.status_code == 303 and signed.headers["location"] == "/console/"
        assert who in browser.get("/console/").text
