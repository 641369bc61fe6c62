"""The console at /console/ as an attacker meets it over HTTPS: sessions that cannot be forged, replayed or
outlived, CSRF on every form, no open redirect, roles and tenants as the API has them, the headers every
response carries, and hostile input.

Every route comes from ``repo_service.console.app.ROUTES`` with the action its ``console_page`` requires, so
a new page is attacked as soon as it lands. The module shares one signed-in browser per role and the objects
the routes act on; a test that ends a session makes a user of its own. "Nothing changed" is checked on the
database: every tenant's users, keys, tenants, builds, signers, campaigns and sessions, and the attacker's
acts on the audit trail.
"""

from __future__ import annotations

import inspect
import posixpath
import re
import secrets
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from itsdangerous import Signer as CookieSigner
from sqlalchemy import update
from sqlmodel import select
from starlette.routing import Mount, Route

from repo_service.console.app import ROUTES
from repo_service.db.models import (
    ApiClient,
    AuditEvent,
    Campaign,
    ConsoleSession,
    ConsoleUser,
    Firmware,
    Signer,
    Tenant,
)
from repo_service.db.session import Database
from repo_service.db.tenancy import DEFAULT_TENANT, EVERY_TENANT, acting_in
from repo_service.domain import users as users_module
from repo_service.domain.audit import Audit, Performer
from repo_service.domain.clients import PERMISSIONS, Action, Clients, Role
from repo_service.domain.tenants import Tenants
from repo_service.domain.users import Users
from repo_service.services import token_secret
from repo_service.settings import load_settings
from tests.support.builds import image, published_build, unique_vendor, upload
from tests.support.fwrepo import Fwrepo

ADMIN = Performer("cli tester@host")
SESSION_COOKIE, SIGN_IN_COOKIE, SALT = "fwrepo_session", "fwrepo_sign_in", "fwrepo-console-session"
CSRF = re.compile(r'name="csrf" value="([^"]*)"')
LIFETIME = 8 * 3600  # FWREPO_CONSOLE_SESSION_LIFETIME's default, which the session server runs with


# -- the routes, as the console declares them ---------------------------------------------------------------


@dataclass(frozen=True)
class ConsoleRoute:
    method: str
    path: str  # with its {parameters}
    endpoint: Callable[..., Any]

    @property
    def action(self) -> Action | None:
        """What the route's console_page requires (None: only a session)."""
        return inspect.getclosurevars(self.endpoint).nonlocals["action"]

    @property
    def signed_in_only(self) -> bool:
        return hasattr(self.endpoint, "__wrapped__") and "action" in inspect.getclosurevars(self.endpoint).nonlocals

    @property
    def parameters(self) -> list[str]:
        return re.findall(r"{(\w+)}", self.path)

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def _walk(routes: list[Any], prefix: str) -> Iterator[ConsoleRoute]:
    for route in routes:
        if isinstance(route, Mount):
            if route.name != "static":
                yield from _walk(route.routes, prefix + route.path)
        elif isinstance(route, Route):
            for method in sorted((route.methods or set()) - {"HEAD"}):
                yield ConsoleRoute(method, prefix + route.path, route.endpoint)


EVERY_ROUTE = list(_walk(ROUTES, ""))
PROTECTED = [route for route in EVERY_ROUTE if route.signed_in_only]
PUBLIC = {"GET /console", "GET /console/login", "POST /console/login"}
GETS = [route for route in PROTECTED if route.method == "GET"]
POSTS = [route for route in PROTECTED if route.method == "POST"]
ROLES = [Role.RELEASE, Role.CSMS, Role.ADMIN, Role.PLATFORM]
FORBIDDEN = [(role, route) for role in ROLES for route in PROTECTED
             if route.action is not None and route.action not in PERMISSIONS[role]]
WITH_IDS = [route for route in PROTECTED if route.parameters and "tenant" not in route.parameters]


def test_every_console_route_but_signing_in_needs_a_session() -> None:
    assert {str(route) for route in EVERY_ROUTE if not route.signed_in_only} == PUBLIC
    assert len(POSTS) >= 4 and len(GETS) >= 4  # the enumeration found the pages


# -- browsers and the objects routes act on --------------------------------------------------------------


@dataclass
class Browser:
    """A browser signed in as a user: its client (cookies kept), the user, and its session's CSRF token."""

    client: httpx.Client
    name: str
    user_id: str
    csrf: str

    @property
    def cookie(self) -> str:
        return self.client.cookies[SESSION_COOKIE]

    @property
    def label(self) -> str:
        return f"user {self.user_id} ({self.name})"

    def post(self, path: str, data: dict[str, str] | None = None, csrf: str | None = "", **kwargs: Any) -> httpx.Response:
        body = dict(data or {})
        if csrf is not None:
            body["csrf"] = self.csrf if csrf == "" else csrf
        return self.client.post(path, data=body, **kwargs)


def browser(fwrepo: Fwrepo) -> httpx.Client:
    return httpx.Client(base_url=fwrepo.url, verify=fwrepo.tls(), timeout=30)


def sign_in_form(client: httpx.Client) -> str:
    form = client.get("/console/login")
    assert form.status_code == 200, form.text
    found = CSRF.search(form.text)
    assert found and found[1] == client.cookies[SIGN_IN_COOKIE]
    return found[1]


def sign_in(client: httpx.Client, name: str, password: str, **fields: str) -> httpx.Response:
    return client.post("/console/login", data={"csrf": sign_in_form(client), "name": name, "password": password,
                                               **fields})


@dataclass
class Console:
    fwrepo: Fwrepo
    database: Database
    users: Users
    other_tenant: str
    browsers: dict[str, Browser] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)
    published: dict[str, Any] = field(default_factory=dict)
    spare: tuple[str, str] = ("", "")  # a user whose sign-ins end nothing: (name, password)
    admin_key: str = ""  # an API key of the admin role, default tenant

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.fwrepo.url, verify=self.fwrepo.tls(), timeout=60,
                            headers={"Authorization": f"Bearer {self.admin_key}"})

    def user(self, role: Role = Role.RELEASE, tenant: str = DEFAULT_TENANT, name: str | None = None) -> tuple[str, str]:
        """A new user; its password hashed cheaply (the hash names its parameters, so the server's check of it
        is as cheap): these tests are of what the console lets through, not of what a guess costs."""
        who, password = name or f"u-{secrets.token_hex(4)}", secrets.token_urlsafe(18)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(users_module, "SCRYPT_N", 2**10)
            self.users.create(who, role, password, ADMIN, tenant)
        return who, password

    def signed_in(self, role: Role = Role.RELEASE, tenant: str = DEFAULT_TENANT) -> Browser:
        who, password = self.user(role, tenant)
        client = browser(self.fwrepo)
        reply = sign_in(client, who, password)
        assert reply.status_code == 303, reply.text
        page = client.get("/console/login", follow_redirects=True)
        found = CSRF.search(page.text)
        assert found, page.text
        user_id = next(record.id for record in self.users.list(EVERY_TENANT) if record.name == who)
        return Browser(client, who, user_id, found[1])

    def url(self, route: ConsoleRoute, **ids: str) -> str:
        return route.path.format(**{**self.ids, **ids})

    def state(self, *attackers: Browser) -> dict[str, Any]:
        """What a POST could change: every tenant's objects, the sessions, the attackers' acts on the trail."""
        with acting_in(EVERY_TENANT), self.database.session() as session:
            def rows(model: Any, key: str, *columns: str) -> dict[Any, Any]:
                return {getattr(row, key): tuple(getattr(row, column) for column in columns)
                        for row in session.exec(select(model)).all()}

            return {
                "tenants": rows(Tenant, "name", "disabled_at"),
                "clients": rows(ApiClient, "id", "revoked_at", "role"),
                "users": rows(ConsoleUser, "id", "name", "role", "password_hash", "disabled_at", "locked_at"),
                "sessions": rows(ConsoleSession, "token_hash", "ended_at", "expires_at"),
                "builds": rows(Firmware, "id", "status", "yank_reason"),
                "signers": {row.id: row.model_dump() for row in session.exec(select(Signer)).all()},
                "campaigns": rows(Campaign, "id", "status"),
                "acts": [(event.actor, event.action) for event in session.exec(select(AuditEvent)).all()
                         if event.actor in {attacker.label for attacker in attackers}],
            }


def _signer_pem() -> str:
    return ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


@pytest.fixture(scope="session")
def consoles() -> Iterator[dict[str, Console]]:
    """Each server's Console, kept while the session lasts: pytest tears a module fixture down whenever its
    parametrized server changes, and building one costs sign-ins, uploads and a campaign."""
    made: dict[str, Console] = {}
    yield made
    for console in made.values():
        for held in console.browsers.values():
            held.client.close()
        console.database.dispose()


@pytest.fixture
def console(fwrepo: Fwrepo, consoles: dict[str, Console]) -> Console:
    if fwrepo.url not in consoles:
        consoles[fwrepo.url] = _console(fwrepo)
    return consoles[fwrepo.url]


def _console(fwrepo: Fwrepo) -> Console:
    database = Database(load_settings(fwrepo.env).database_url)
    audit = Audit(database)
    users = Users(database, audit, timedelta(seconds=LIFETIME))
    other = f"t{secrets.token_hex(4)}"
    Tenants(database, audit).create(other, ADMIN)
    made = Console(fwrepo, database, users, other)
    made.spare = made.user()
    for role in ROLES:
        made.browsers[role.value] = made.signed_in(role)
    made.browsers["other admin"] = made.signed_in(Role.ADMIN, other)
    made.browsers["other release"] = made.signed_in(Role.RELEASE, other)
    _, key = Clients(database, audit).create("console-security-admin", Role.ADMIN, ADMIN)
    with httpx.Client(base_url=fwrepo.url, verify=fwrepo.tls(), timeout=60,
                      headers={"Authorization": f"Bearer {key}"}) as admin:
        vendor = unique_vendor()
        uploaded = upload(admin, vendor, "1.0.0", image(1000))
        assert uploaded.status_code == 201, uploaded.text
        made.published = published_build(admin, vendor, "2.0.0", image(1000))
        campaign = admin.post("/api/v1/campaigns", json={"firmware_id": made.published["id"], "chargers": [
            {"charger_id": f"CP-{secrets.token_hex(3)}", "current_version": "0.9.0"}]})
        assert campaign.status_code == 201, campaign.text
        signer = admin.post("/api/v1/signers", json={"name": f"s-{secrets.token_hex(3)}", "public_key": _signer_pem()})
        assert signer.status_code == 201, signer.text
    victim_tenant = f"v{secrets.token_hex(4)}"
    Tenants(database, audit).create(victim_tenant, ADMIN)
    client, _ = Clients(database, audit).create(f"victim-{secrets.token_hex(3)}", Role.CSMS, ADMIN)
    made.admin_key = key
    made.ids = {"firmware_id": uploaded.json()["id"], "campaign_id": campaign.json()["id"],
                "name": made.user(Role.RELEASE)[0], "client_id": client.id, "tenant": victim_tenant,
                "signer_id": signer.json()["id"]}
    return made


def test_every_route_parameter_has_an_object_to_act_on(console: Console) -> None:
    """A route whose parameter names nothing real would be attacked only with ids that 404."""
    for route in PROTECTED:
        assert set(route.parameters) <= console.ids.keys(), f"{route}: add an object for {route.parameters}"


# What each form sends when it means it: refused without its CSRF token, each must still change nothing.
def form_for(console: Console, route: ConsoleRoute) -> tuple[dict[str, str], dict[str, Any] | None]:
    password = secrets.token_urlsafe(18)
    fields: dict[str, dict[str, str]] = {
        "/console/firmware/upload": {"vendor": unique_vendor(), "models": "AC22", "version": "1.0.0"},
        "/console/firmware/{firmware_id}/yank": {"reason": "attacker's reason"},
        "/console/users": {"name": f"evil-{secrets.token_hex(3)}", "role": "admin", "password": password,
                           "password_again": password},
        "/console/users/{name}/reset-password": {"password": password},
        "/console/clients": {"name": f"evil-{secrets.token_hex(3)}", "role": "admin"},
        "/console/tenants": {"name": f"evil{secrets.token_hex(3)}"},
        "/console/signers": {"name": f"evil-{secrets.token_hex(3)}", "public_key": _signer_pem()},
        "/console/campaigns/new": {"firmware_id": console.published["id"], "name": "evil"},
    }
    files: dict[str, dict[str, Any]] = {
        "/console/firmware/upload": {"file": ("fw.bin", image(500), "application/octet-stream")},
        "/console/campaigns/new": {"chargers": ("chargers.csv", b"charger_id,current_version\nCP-EVIL,0.9.0\n",
                                                "text/csv")},
    }
    return fields.get(route.path, {}), files.get(route.path)


def actor_for(console: Console, route: ConsoleRoute) -> Browser:
    """A signed-in user whose role may use the route (so that only the CSRF check stands in the way)."""
    if route.path == "/console/logout":
        return console.signed_in(Role.CSMS)  # its own: a logout that went through would end a shared session
    role = next(role for role in (Role.ADMIN, Role.PLATFORM, Role.RELEASE, Role.CSMS)
                if route.action is None or route.action in PERMISSIONS[role])
    return console.browsers[role.value]


# -- without a session -----------------------------------------------------------------------------------


@pytest.mark.parametrize("route", GETS, ids=str)
def test_without_a_session_a_page_sends_to_sign_in_and_back(console: Console, route: ConsoleRoute) -> None:
    path = console.url(route)
    with browser(console.fwrepo) as anonymous:
        reply = anonymous.get(path + "?offset=0")
    assert reply.status_code == 303
    assert reply.headers["location"] == f"/console/login?next={quote(path + '?offset=0')}"


@pytest.mark.parametrize("route", POSTS, ids=str)
def test_without_a_session_a_post_is_refused_with_401_and_changes_nothing(console: Console, route: ConsoleRoute) -> None:
    fields, files = form_for(console, route)
    before = console.state()
    with browser(console.fwrepo) as anonymous:
        reply = anonymous.post(console.url(route), data={**fields, "csrf": "x"}, files=files)
    assert reply.status_code == 401 and reply.headers["content-type"].startswith("text/html")
    assert "location" not in reply.headers
    assert console.state() == before


# -- forged, replayed, ended and expired sessions ---------------------------------------------------------


def forged_cookies(console: Console) -> dict[str, str]:
    real = console.browsers["admin"].cookie
    secret = token_secret(load_settings(console.fwrepo.env))
    token = secrets.token_urlsafe(32)
    value, signature = real.rsplit(".", 1)
    return {
        "random": secrets.token_urlsafe(40),
        "signed with another key": CookieSigner(secrets.token_bytes(32), salt=SALT).sign(token).decode(),
        "signed with the right key but another salt": CookieSigner(secret, salt="fwrepo").sign(token).decode(),
        "a valid signature over a token never issued": CookieSigner(secret, salt=SALT).sign(token).decode(),
        "a real session's token with its signature altered": f"{value}.{signature[::-1]}",
        "a real session's token unsigned": value,
        "a real session's token with another token's signature": f"{token}.{signature}",
        "huge": real + "A" * 5000,
        "empty": "",
    }


def test_a_forged_session_cookie_is_refused(console: Console) -> None:
    for kind, cookie in forged_cookies(console).items():
        with browser(console.fwrepo) as forger:
            forger.cookies.set(SESSION_COOKIE, cookie, domain="127.0.0.1", path="/console")
            page = forger.get("/console/firmware")
            assert page.status_code == 303 and page.headers["location"].startswith("/console/login?"), kind
            post = forger.post("/console/logout", data={"csrf": console.browsers["admin"].csrf})
            assert post.status_code == 401, kind


def test_a_session_cookie_is_replayed_in_vain_after_sign_out(console: Console) -> None:
    held = console.signed_in(Role.ADMIN)
    stolen, csrf = held.cookie, held.csrf
    out = held.post("/console/logout")
    assert out.status_code == 303 and out.headers["location"] == "/console/login"
    deleted = [line for line in out.headers.get_list("set-cookie") if line.startswith(f"{SESSION_COOKIE}=")]
    assert deleted and "max-age=0" in deleted[0].lower() and "path=/console" in deleted[0].lower()
    with browser(console.fwrepo) as thief:
        thief.cookies.set(SESSION_COOKIE, stolen, domain="127.0.0.1", path="/console")
        assert thief.get("/console/").status_code == 303
        assert thief.post("/console/users", data={"csrf": csrf, "name": "evil"}).status_code == 401


def test_a_disabled_users_session_is_refused_at_once(console: Console) -> None:
    held = console.signed_in(Role.ADMIN)
    assert held.client.get("/console/").status_code == 200
    console.users.disable(held.name, ADMIN)
    assert held.client.get("/console/").status_code == 303
    assert held.post("/console/logout").status_code == 401


def test_a_reset_password_ends_the_session_at_once(console: Console) -> None:
    held = console.signed_in(Role.RELEASE)
    console.users.reset_password(held.name, secrets.token_urlsafe(18), ADMIN)
    assert held.client.get("/console/").status_code == 303


def test_an_expired_session_is_refused(console: Console) -> None:
    held = console.signed_in(Role.ADMIN)
    assert held.client.get("/console/").status_code == 200
    with acting_in(EVERY_TENANT), console.database.session() as session:
        session.execute(update(ConsoleSession).where(ConsoleSession.user_id == held.user_id)
                        .values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    assert held.client.get("/console/").status_code == 303
    assert held.post("/console/logout").status_code == 401


def test_the_session_cookie_is_httponly_secure_samesite_strict_for_console_paths_only(console: Console) -> None:
    who, password = console.user()
    with browser(console.fwrepo) as client:
        form = client.get("/console/login")
        [sign_in_cookie] = [line for line in form.headers.get_list("set-cookie") if line.startswith(SIGN_IN_COOKIE)]
        signed = sign_in(client, who, password)
    assert signed.status_code == 303
    [session_cookie] = [line for line in signed.headers.get_list("set-cookie") if line.startswith(SESSION_COOKIE)]
    for cookie in (sign_in_cookie, session_cookie):
        attributes = {part.strip().split("=")[0].lower(): part.strip().partition("=")[2]
                      for part in cookie.split(";")[1:]}
        assert "httponly" in attributes and "secure" in attributes, cookie
        assert attributes["samesite"].lower() == "strict" and attributes["path"] == "/console", cookie
        assert "domain" not in attributes, cookie
    max_age = re.search(r"max-age=(\d+)", session_cookie.lower())
    assert max_age and LIFETIME - 5 <= int(max_age[1]) <= LIFETIME, session_cookie
    value = session_cookie.split(";")[0].split("=", 1)[1]
    with acting_in(EVERY_TENANT), console.database.session() as session:
        stored = [row.token_hash for row in session.exec(select(ConsoleSession)).all()]
    assert all(value.rsplit(".", 1)[0] not in token_hash for token_hash in stored)


# -- CSRF --------------------------------------------------------------------------------------------------


CSRF_ATTACKS = ["no token", "empty token", "another session's token", "the sign-in form's token",
                "multipart without a token"]


@pytest.mark.parametrize("attack", CSRF_ATTACKS)
@pytest.mark.parametrize("route", POSTS, ids=str)
def test_a_post_without_its_sessions_csrf_token_is_refused_and_changes_nothing(
        console: Console, route: ConsoleRoute, attack: str) -> None:
    actor = actor_for(console, route)
    fields, files = form_for(console, route)
    with browser(console.fwrepo) as stranger:
        sign_in_token = sign_in_form(stranger)
    token = {"no token": None, "empty token": "-", "another session's token": console.browsers["other admin"].csrf,
             "the sign-in form's token": sign_in_token, "multipart without a token": None}[attack]
    if attack == "the sign-in form's token":
        actor.client.cookies.set(SIGN_IN_COOKIE, sign_in_token, domain="127.0.0.1", path="/console")
    if attack == "empty token":
        fields = {**fields, "csrf": ""}
    elif token is not None:
        fields = {**fields, "csrf": token}
    if attack == "multipart without a token" and files is None:
        files = {"unused": ("x.txt", b"x", "text/plain")}  # makes the body multipart/form-data
    before = console.state(actor)
    try:
        reply = actor.client.post(console.url(route), data=fields, files=files)
    finally:
        actor.client.cookies.delete(SIGN_IN_COOKIE)
    assert reply.status_code == 403, (reply.status_code, reply.headers.get("location"), reply.text[:300])
    assert console.state(actor) == before
    assert actor.client.get("/console/").status_code == 200  # the session itself goes on


def test_the_sign_in_form_needs_its_double_submit_cookie(console: Console) -> None:
    who, password = console.spare
    attempts = {}
    with browser(console.fwrepo) as client:
        token = sign_in_form(client)
        other = browser(console.fwrepo)
        other_token = sign_in_form(other)
        other.close()
        attempts["no cookie"] = ({}, {"csrf": token})
        attempts["no field"] = ({SIGN_IN_COOKIE: token}, {})
        attempts["another form's token"] = ({SIGN_IN_COOKIE: token}, {"csrf": other_token})
        attempts["empty cookie and field"] = ({SIGN_IN_COOKIE: ""}, {"csrf": ""})
        attempts["a session's CSRF token"] = ({SIGN_IN_COOKIE: token}, {"csrf": console.browsers["admin"].csrf})
    for kind, (cookies, fields) in attempts.items():
        with browser(console.fwrepo) as attacker:
            for name, value in cookies.items():
                attacker.cookies.set(name, value, domain="127.0.0.1", path="/console")
            reply = attacker.post("/console/login", data={"name": who, "password": password, **fields})
            assert reply.status_code == 403, kind
            assert SESSION_COOKIE not in reply.headers.get("set-cookie", ""), kind
    with browser(console.fwrepo) as client:
        assert sign_in(client, who, password).status_code == 303


# -- where a sign-in leads -------------------------------------------------------------------------------


def lands(location: str) -> tuple[str, str]:
    """Where a browser goes for a Location header: (host, path), backslashes and %2e as WHATWG URLs read them."""
    target = urljoin("https://fwrepo.example/console/login", location.replace("\\", "/").replace("%5C", "/"))
    parts = urlsplit(target)
    path = parts.path.replace("%2e", ".").replace("%2E", ".")
    return parts.netloc, posixpath.normpath(path) + ("/" if path.endswith("/") and path != "/" else "")


@pytest.mark.parametrize("target", [
    "https://evil.example/", "//evil.example", "///evil.example", "/\\evil.example", "\\\\evil.example",
    "/api/v1/firmware", "javascript:alert(1)", "/console/../api/v1/firmware", "/console/%2e%2e/api/v1/audit",
    "/console/..%2fapi", "/console//evil.example/", "/console/\r\nSet-Cookie: x=y", "https:/evil.example",
    "/console/firmware?x=1#frag",
])
def test_after_signing_in_next_never_leads_outside_the_console(console: Console, target: str) -> None:
    who, password = console.spare
    with browser(console.fwrepo) as client:
        form = client.get("/console/login", params={"next": target})
        assert form.status_code == 200
        reply = sign_in(client, who, password, next=target)
    assert reply.status_code == 303
    location = reply.headers["location"]
    assert "\r" not in location and "\n" not in location
    host, path = lands(location)
    assert host == "fwrepo.example" and path.startswith("/console/"), (target, location, path)


def test_a_sign_in_without_next_or_with_a_console_next_goes_there(console: Console) -> None:
    who, password = console.spare
    with browser(console.fwrepo) as client:
        assert sign_in(client, who, password).headers["location"] == "/console/"
    with browser(console.fwrepo) as client:
        assert sign_in(client, who, password, next="/console/firmware?q=x").headers["location"] == \
            "/console/firmware?q=x"


# -- roles and tenants ----------------------------------------------------------------------------------


@pytest.mark.parametrize("role,route", FORBIDDEN, ids=[f"{role.value} {route}" for role, route in FORBIDDEN])
def test_a_role_is_refused_what_it_may_not_do_and_nothing_changes(console: Console, role: Role,
                                                                   route: ConsoleRoute) -> None:
    actor = console.browsers[role.value]
    before = console.state(actor)
    if route.method == "GET":
        reply = actor.client.get(console.url(route))
    else:
        fields, files = form_for(console, route)
        reply = actor.client.post(console.url(route), data={**fields, "csrf": actor.csrf}, files=files)
    assert reply.status_code == 403, (reply.status_code, reply.text[:300])
    assert console.state(actor) == before


@pytest.mark.parametrize("role", ROLES, ids=str)
def test_a_role_opens_the_pages_it_may(console: Console, role: Role) -> None:
    actor = console.browsers[role.value]
    for route in GETS:
        if route.action is None or route.action in PERMISSIONS[role]:
            ids = {"firmware_id": console.published["id"]}
            reply = actor.client.get(console.url(route, **ids))
            assert reply.status_code in (200, 409), (str(route), reply.status_code, reply.text[:300])


def never_made(real: str) -> str:
    """An id of the same shape as real that names nothing."""
    prefix, separator, tail = real.rpartition("-")
    if re.fullmatch(r"[0-9a-f]+", tail):
        fresh = secrets.token_hex(len(tail) // 2 + 1)[:len(tail)]
    elif tail.isdigit():
        fresh = str(10 ** (len(tail) + 2) + secrets.randbelow(10 ** len(tail)))
    else:
        fresh = secrets.token_urlsafe(len(tail))[:len(tail)]
    return prefix + separator + fresh


@pytest.mark.parametrize("route", WITH_IDS, ids=str)
def test_another_tenants_object_is_as_unknown_as_one_never_made(console: Console, route: ConsoleRoute) -> None:
    attacker = console.browsers["other admin"]
    if route.action is not None and route.action not in PERMISSIONS[Role.ADMIN]:
        pytest.skip(f"{route}: not an admin's; the role test covers it")
    fields, files = form_for(console, route)
    answers = []
    before = console.state(attacker)
    for ids in (console.ids, {name: never_made(console.ids[name]) for name in route.parameters}):
        url = console.url(route, **ids)
        if route.method == "GET":
            reply = attacker.client.get(url)
        else:
            reply = attacker.client.post(url, data={**fields, "csrf": attacker.csrf}, files=files)
        text = reply.text
        for name in route.parameters:
            text = text.replace(ids[name], "ID").replace(quote(ids[name]), "ID")
        answers.append((reply.status_code, reply.headers.get("location"), text))
    assert answers[0][0] == 404, answers[0][:2]
    assert answers[0] == answers[1]
    assert console.state(attacker) == before


def test_another_tenants_builds_are_not_listed_or_searched(console: Console) -> None:
    vendor, build = console.published["vendor"], console.published["id"]
    for path in ("/console/", f"/console/firmware?vendor={vendor}", f"/console/firmware?q={vendor}"):
        page = console.browsers["other release"].client.get(path)
        assert page.status_code == 200 and build not in page.text, path
        assert build in console.browsers["release"].client.get(path).text, path


def test_an_admin_cannot_take_over_a_platform_user_or_make_one(console: Console) -> None:
    """A platform user acts across tenants: a tenant's admin who could reset its password would own them all."""
    platform, _ = console.user(Role.PLATFORM)
    admin = console.browsers["admin"]
    before = console.state(admin)
    assert admin.post(f"/console/users/{platform}/disable").status_code == 403
    assert admin.post(f"/console/users/{platform}/reset-password",
                      {"password": secrets.token_urlsafe(18)}).status_code == 403
    password = secrets.token_urlsafe(18)
    made = admin.post("/console/users", {"name": f"p-{secrets.token_hex(3)}", "role": "platform",
                                         "password": password, "password_again": password})
    assert made.status_code == 422
    assert console.state(admin) == before


def test_a_wrong_password_and_an_unknown_name_get_the_same_page(console: Console) -> None:
    who, _ = console.user()
    ghost = f"u-{secrets.token_hex(4)}"
    pages = []
    for name in (who, ghost):
        with browser(console.fwrepo) as client:
            reply = sign_in(client, name, "wrong password!")
        pages.append((reply.status_code, CSRF.sub("", reply.text.replace(name, "NAME"))))
    assert pages[0] == pages[1] and pages[0][0] == 401


def test_another_tenants_users_keys_and_trail_are_not_listed(console: Console) -> None:
    theirs = console.browsers["other admin"].client
    mine = console.browsers["admin"]
    for path, secret in (("/console/users", console.ids["name"]), ("/console/users", mine.name),
                         ("/console/clients", console.ids["client_id"]), ("/console/audit", mine.user_id),
                         ("/console/campaigns", console.ids["campaign_id"])):
        page = theirs.get(path)
        assert page.status_code == 200 and secret not in page.text, path
        assert secret in mine.client.get(path).text, path


def test_a_disabled_tenants_sessions_end_at_once(console: Console) -> None:
    doomed = f"d{secrets.token_hex(4)}"
    Tenants(console.database, Audit(console.database)).create(doomed, ADMIN)
    held = console.signed_in(Role.ADMIN, doomed)
    assert held.client.get("/console/").status_code == 200
    Tenants(console.database, Audit(console.database)).disable(doomed, ADMIN)
    assert held.client.get("/console/").status_code == 303
    assert held.post("/console/logout").status_code == 401


def test_failed_sign_ins_back_off_with_429_and_retry_after_even_for_the_right_password(console: Console) -> None:
    who, password = console.user()
    with browser(console.fwrepo) as client:
        for _ in range(3):
            assert sign_in(client, who, "wrong password!").status_code == 401
        for attempt in ("wrong password!", password):
            reply = sign_in(client, who, attempt)
            assert reply.status_code == 429 and 1 <= int(reply.headers["retry-after"]) <= 2
            assert SESSION_COOKIE not in reply.headers.get("set-cookie", "")
            check_headers(reply, "backoff")
        time.sleep(2.1)
        assert sign_in(client, who, password).status_code == 303


def test_an_uploads_csrf_token_after_the_file_is_refused_before_anything_is_stored(console: Console) -> None:
    admin = console.browsers["admin"]
    vendor = unique_vendor()
    boundary = secrets.token_hex(8)
    parts = [("vendor", vendor), ("models", "AC22"), ("version", "1.0.0")]
    body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
                    for name, value in parts)
    body += (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="fw.bin"\r\n'
             f"Content-Type: application/octet-stream\r\n\r\n").encode() + image(2000) + b"\r\n"
    body += f'--{boundary}\r\nContent-Disposition: form-data; name="csrf"\r\n\r\n{admin.csrf}\r\n--{boundary}--\r\n'.encode()
    before = console.state(admin)
    reply = admin.client.post("/console/firmware/upload", content=body,
                              headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert reply.status_code == 403, (reply.status_code, reply.text[:300])
    assert console.state(admin) == before


def test_the_console_session_is_no_key_to_the_api(console: Console) -> None:
    """The API takes bearer keys only: a cookie the browser sends by itself would make every API call CSRF-able."""
    admin = console.browsers["admin"]
    with browser(console.fwrepo) as client:
        client.cookies.set(SESSION_COOKIE, admin.cookie, domain="127.0.0.1", path="/")
        for path in ("/api/v1/firmware", "/api/v1/audit", "/api/v1/signing-keys", "/api/v1/campaigns"):
            assert client.get(path).status_code == 401, path
        assert client.post(f"/api/v1/firmware/{console.ids['firmware_id']}/publish",
                           data={"csrf": admin.csrf}).status_code == 401


def test_signing_out_or_acting_by_a_get_does_nothing(console: Console) -> None:
    held = console.signed_in(Role.ADMIN)
    before = console.state(held)
    for route in POSTS:
        if not any(other.path == route.path and other.method == "GET" for other in EVERY_ROUTE):
            reply = held.client.get(console.url(route), params={"csrf": held.csrf})
            assert reply.status_code == 405, (str(route), reply.status_code)
    assert console.state(held) == before
    assert held.client.get("/console/").status_code == 200


def test_no_other_origin_is_let_in(console: Console) -> None:
    admin = console.browsers["admin"]
    evil = {"origin": "https://evil.example"}
    replies = [admin.client.get("/console/", headers=evil),
               admin.client.options("/console/users", headers={**evil, "access-control-request-method": "POST"}),
               admin.client.get(f"/console/firmware/{console.published['id']}/manifest", headers=evil)]
    for reply in replies:
        assert not any(name.startswith("access-control-allow") for name in reply.headers), reply.headers


# -- headers on every response ----------------------------------------------------------------------------


def check_headers(reply: httpx.Response, what: str) -> None:
    policy = reply.headers.get("content-security-policy", "")
    directives = {part.strip().split(" ")[0]: part.strip() for part in policy.split(";") if part.strip()}
    assert policy, f"{what}: no Content-Security-Policy"
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy, (what, policy)
    assert directives.get("frame-ancestors") == "frame-ancestors 'none'", (what, policy)
    assert "default-src" in directives and "*" not in policy, (what, policy)
    assert reply.headers.get("x-content-type-options") == "nosniff", what
    if reply.headers.get("content-type", "").startswith("text/html"):
        assert "no-store" in reply.headers.get("cache-control", ""), f"{what}: cache-control " \
            f"{reply.headers.get('cache-control')!r}"


def test_every_console_response_carries_the_security_headers(console: Console) -> None:
    admin = console.browsers["admin"]
    replies: list[tuple[str, httpx.Response]] = []
    for route in GETS:
        replies.append((f"{route} as admin", admin.client.get(console.url(route))))
        replies.append((f"{route} as platform", console.browsers["platform"].client.get(console.url(route))))
        with browser(console.fwrepo) as anonymous:
            replies.append((f"{route} without a session", anonymous.get(console.url(route))))
    for route in POSTS:
        with browser(console.fwrepo) as anonymous:
            replies.append((f"{route} without a session", anonymous.post(console.url(route))))
        replies.append((f"{route} without CSRF", admin.client.post(console.url(route), data={"x": "y"})))
    with browser(console.fwrepo) as anonymous:
        replies += [
            ("sign-in page", anonymous.get("/console/login")),
            ("sign-in without CSRF", anonymous.post("/console/login", data={"name": "x", "password": "y"})),
            ("/console", anonymous.get("/console")),
            ("a page that is not there", anonymous.get("/console/no-such-page")),
            ("a method not allowed", anonymous.put("/console/firmware")),
            ("a static file", anonymous.get("/console/static/console.css")),
            ("a static file that is not there", anonymous.get("/console/static/nothing.js")),
        ]
    replies.append(("a build never made", admin.client.get(f"/console/firmware/{secrets.token_hex(8)}")))
    replies.append(("a wrong sign-in", sign_in(browser(console.fwrepo), "nobody-" + secrets.token_hex(3), "x" * 12)))
    failed = []
    for what, reply in replies:
        try:
            check_headers(reply, f"{what} ({reply.status_code})")
        except AssertionError as error:
            failed.append(str(error))
    assert not failed, "\n".join(failed)


# -- hostile input ------------------------------------------------------------------------------------------


def test_oversized_sign_in_fields_are_refused_without_a_hash(console: Console) -> None:
    who, password = console.spare
    with browser(console.fwrepo) as client:
        for name, secret in ((who, "p" * 1025), ("n" * 1025, password), ("n" * 100_000, password),
                             (who, "p" * 2_000_000)):
            started = time.monotonic()
            reply = client.post("/console/login", data={"csrf": sign_in_form(client), "name": name, "password": secret})
            assert 400 <= reply.status_code < 500, (len(name), len(secret), reply.status_code)
            assert SESSION_COOKIE not in reply.headers.get("set-cookie", "")
            assert time.monotonic() - started < 5
        many = {f"f{n}": "x" for n in range(50)}
        reply = client.post("/console/login", data={"csrf": sign_in_form(client), "name": who, "password": password,
                                                     **many})
        assert 400 <= reply.status_code < 500
        assert sign_in(client, who, password).status_code == 303


def raw_request(console: Console, head: bytes, body: bytes = b"", wait: float = 10) -> bytes:
    """Send a request's head and some of its body on a TLS connection of its own; what came back within wait."""
    context = ssl.create_default_context(cafile=console.fwrepo.ca)
    with socket.create_connection(("127.0.0.1", console.fwrepo.port), timeout=wait) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(head + body)
        answer = b""
        deadline = time.monotonic() + wait
        try:
            while time.monotonic() < deadline and b"\r\n\r\n" not in answer:
                chunk = tls.recv(65536)
                if not chunk:
                    break
                answer += chunk
        except (TimeoutError, ssl.SSLError, OSError):
            pass
        return answer


def test_a_sign_in_body_declared_huge_is_refused_before_it_arrives(console: Console) -> None:
    """As the API refuses a JSON body by its Content-Length (http/bodies.py), not after waiting for it."""
    with browser(console.fwrepo) as client:
        token = sign_in_form(client)
    head = (f"POST /console/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            f"Cookie: {SIGN_IN_COOKIE}={token}\r\nContent-Length: {500 * 1024 * 1024}\r\n\r\n").encode()
    answer = raw_request(console, head, f"csrf={token}&name=".encode() + b"x" * 100, wait=3)
    status = answer.split(b" ", 2)[1] if answer.startswith(b"HTTP/1.1 ") else b"(none within 3 s)"
    assert status in (b"400", b"413"), status


def test_a_slow_sign_in_body_holds_up_no_one_else(console: Console) -> None:
    who, password = console.spare
    context = ssl.create_default_context(cafile=console.fwrepo.ca)
    with socket.create_connection(("127.0.0.1", console.fwrepo.port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as slow:
        slow.sendall(b"POST /console/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                     b"application/x-www-form-urlencoded\r\nContent-Length: 400\r\n\r\nname=")
        for _ in range(3):
            slow.sendall(b"x")
            started = time.monotonic()
            with browser(console.fwrepo) as client:
                assert sign_in(client, who, password).status_code == 303
            assert time.monotonic() - started < 5
    # cut off half-way: the server is none the worse
    with browser(console.fwrepo) as client:
        assert client.get("/console/login").status_code == 200


@pytest.mark.parametrize("body,content_type", [
    (b"csrf=TOKEN&name=%zz&password=%", "application/x-www-form-urlencoded"),
    (b"csrf=TOKEN&name=%ff%fe%fd&password=%c0%80xxxxxxxxxx", "application/x-www-form-urlencoded"),
    (b"csrf=TOKEN&name=nul%00name&password=xxxxxxxxxxxx", "application/x-www-form-urlencoded"),
    (b"csrf=TOKEN&name=a&name=b&password=xxxxxxxxxxxx&password=yyyyyyyyyyyy", "application/x-www-form-urlencoded"),
    (b"csrf=TOKEN&name=%0d%0aX-Injected:%201&password=xxxxxxxxxxxx", "application/x-www-form-urlencoded"),
    (b'{"csrf": "TOKEN", "name": "a", "password": "b"}', "application/json"),
    (b"csrf=TOKEN&name=a&password=b", "text/plain"),
    (b"--nope\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\nTOKEN\r\n", "multipart/form-data; boundary=x"),
    (b"csrf=TOKEN&name=a&password=b", "multipart/form-data"),
    (b"", "application/x-www-form-urlencoded"),
    (b"&&&===&&&", "application/x-www-form-urlencoded"),
], ids=["bad escapes", "invalid UTF-8", "NUL", "repeated fields", "CRLF", "JSON", "text/plain", "broken multipart",
        "multipart without boundary", "empty", "only separators"])
def test_a_malformed_sign_in_body_is_refused_as_a_page_not_a_crash(console: Console, body: bytes,
                                                                   content_type: str) -> None:
    with browser(console.fwrepo) as client:
        token = sign_in_form(client)
        reply = client.post("/console/login", content=body.replace(b"TOKEN", token.encode()),
                            headers={"content-type": content_type})
    assert 400 <= reply.status_code < 500, (reply.status_code, reply.text[:300])
    assert "x-injected" not in reply.headers
    check_headers(reply, "malformed sign-in")


@pytest.mark.parametrize("path", ["/console/firmware/%00", "/console/firmware?q=%00", "/console/firmware?vendor=a%00b",
                                  "/console/audit?actor=%00", "/console/chargers?id=%00",
                                  "/console/firmware?offset=%00", "/console/campaigns/%00"])
def test_a_nul_in_a_console_url_is_not_a_crash(console: Console, path: str) -> None:
    """PostgreSQL refuses text holding NUL: the API refuses it up front (http/urls.py), the console must not 500."""
    reply = console.browsers["admin"].client.get(path)
    assert reply.status_code < 500, (reply.status_code, reply.text[:200])


HOSTILE = "<script>alert('x')</script>"


def test_html_in_a_builds_fields_is_shown_escaped(console: Console) -> None:
    vendor = f"<b>{secrets.token_hex(3)}"
    with console.api() as admin:
        reply = admin.post("/api/v1/firmware", data={"vendor": vendor, "models": "<img src=x onerror=alert(1)>",
                                                     "version": "1.0.0", "release_notes": f"{HOSTILE}\n<b>bold</b>"},
                           files={"file": (f"{HOSTILE}.bin", image(500))})
    assert reply.status_code == 201, reply.text
    build = reply.json()
    admin_client = console.browsers["admin"].client
    pages = [admin_client.get(f"/console/firmware/{build['id']}"),
             admin_client.get("/console/firmware", params={"q": "<b>"}),
             admin_client.get(f"/console/firmware/{build['id']}/yank")]
    for page in pages:
        assert page.status_code == 200
        for raw in ("<script>", "<img src=x", "<b>"):
            assert raw not in page.text, (page.url, raw)
    assert "&lt;script&gt;alert(" in pages[0].text
    with console.api() as admin:
        admin.post(f"/api/v1/firmware/{build['id']}/yank", json={"reason": HOSTILE}).raise_for_status()
    for path in (f"/console/firmware/{build['id']}", "/console/audit"):
        page = admin_client.get(path)
        assert page.status_code == 200 and "<script>" not in page.text, path


def test_html_in_what_a_visitor_sends_is_shown_escaped(console: Console) -> None:
    with browser(console.fwrepo) as client:
        form = client.get("/console/login", params={"next": '"><script>alert(1)</script>'})
        assert "<script>alert(1)" not in form.text
        refused = client.post("/console/login", data={"csrf": sign_in_form(client), "name": HOSTILE,
                                                      "password": "x" * 12})
        assert refused.status_code == 401 and "<script>alert(" not in refused.text
    admin = console.browsers["admin"].client
    for path in (f"/console/firmware?q={quote(HOSTILE)}", f"/console/chargers?id={quote(HOSTILE)}",
                 f"/console/audit?subject={quote(HOSTILE)}"):
        page = admin.get(path)
        assert page.status_code in (200, 422) and "<script>alert(" not in page.text, path


def test_a_user_named_with_html_is_shown_escaped(console: Console) -> None:
    name, password = console.user(Role.ADMIN, name=f"<img src=x onerror=alert(1)>{secrets.token_hex(3)}")
    with browser(console.fwrepo) as client:
        assert sign_in(client, name, password).status_code == 303
        for path in ("/console/", "/console/users", "/console/audit"):
            page = client.get(path)
            assert page.status_code == 200 and "<img src=x" not in page.text, path
