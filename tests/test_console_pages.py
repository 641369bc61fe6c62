"""The console's pages do what they say, over HTTPS as a browser's requests would (the browser itself drives
them in test_console_browser.py; the attacks are in test_console_security.py): a campaign started from a
CSV, its steering, a charger's history, the audit trail and its check, signers, users, API keys, tenants."""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime

import httpx
import pytest

from repo_service.domain.campaigns import chargers_from_csv
from repo_service.console.campaigns import campaign_document
from repo_service.errors import InvalidInput
from tests.support.builds import published_build, unique_vendor
from tests.support.console import PASSWORD, make_user, unique_name
from tests.support.fwrepo import Fwrepo

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class Browser:
    """A signed-in console session: a cookie jar and the CSRF token of the last page read."""

    def __init__(self, fwrepo: Fwrepo, name: str, password: str = PASSWORD) -> None:
        self.http = httpx.Client(base_url=fwrepo.url + "/console", verify=fwrepo.tls(), timeout=60)
        form = self.http.get("/login")
        reply = self.http.post("/login", data={"csrf": _CSRF.search(form.text).group(1), "name": name,
                                               "password": password})
        assert reply.status_code == 303, reply.text
        self.csrf = ""

    def get(self, path: str, **params: str) -> httpx.Response:
        reply = self.http.get(path, params=params)
        found = _CSRF.search(reply.text)
        self.csrf = found.group(1) if found else self.csrf
        return reply

    def post(self, path: str, data: dict[str, str] | None = None, **files: tuple[str, bytes]) -> httpx.Response:
        if not self.csrf:
            self.get("/")
        return self.http.post(path, data={"csrf": self.csrf, **(data or {})}, files=files or None)


def user(fwrepo: Fwrepo, role: str) -> Browser:
    """A new user of role, signed in."""
    return Browser(fwrepo, make_user(fwrepo, unique_name(role), role))


def text_of(reply: httpx.Response) -> str:
    """The page's words, without its markup."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", reply.text))


@pytest.fixture
def admin(fwrepo: Fwrepo) -> Browser:
    return user(fwrepo, "admin")


def test_the_csv_of_chargers_is_read_by_its_header_and_its_errors_name_the_line() -> None:
    assert chargers_from_csv("\ufeffcharger_id,current_version,model\nCP-1,1.0.0,AC22\nCP-2,1.0.0,\n") == [
        {"charger_id": "CP-1", "current_version": "1.0.0", "model": "AC22"},
        {"charger_id": "CP-2", "current_version": "1.0.0"}]
    for text, words in (("id,version\nCP-1,1\n", "first line must name its columns"),
                        ("charger_id,current_version\n", "names no charger"),
                        ("charger_id,current_version\nCP-1,1.0,extra\n", "line 2 has more cells")):
        with pytest.raises(InvalidInput, match=words):
            chargers_from_csv(text)


def test_the_campaign_form_becomes_the_apis_campaign_request() -> None:
    document = campaign_document({"firmware_id": "f1", "waves": "10, 50%, 100%", "failure_threshold": "5, 10, 20%",
                                  "window_start": "01:00", "window_end": "05:00", "retries": "3",
                                  "protocol": "ftps", "dispatch": "csms"},
                                 "charger_id,current_version\nCP-1,1.0\n")
    assert document == {"firmware_id": "f1", "chargers": [{"charger_id": "CP-1", "current_version": "1.0"}],
                        "protocol": "ftps", "dispatch": "csms", "waves": [10, "50%", "100%"],
                        "failure_threshold": [0.05, 0.1, 0.2], "window": {"start": "01:00", "end": "05:00"},
                        "retries": 3}
    with pytest.raises(InvalidInput, match="failure_threshold"):
        campaign_document({"failure_threshold": "ten"}, "charger_id,current_version\nCP-1,1.0\n")
    with pytest.raises(InvalidInput, match="retries"):
        campaign_document({"retries": "-1"}, "charger_id,current_version\nCP-1,1.0\n")


def _csv(count: int, zone: str = "UTC") -> bytes:
    lines = ["charger_id,current_version,model,time_zone", *(f"CP-{secrets.token_hex(3)}-{index},1.0.0,AC22,{zone}"
                                                              for index in range(count))]
    return ("\n".join(lines) + "\n").encode()


def test_a_campaign_started_from_the_form_is_followed_and_steered_on_its_page(
        fwrepo: Fwrepo, admin: Browser, release: httpx.Client, csms: httpx.Client) -> None:
    build = published_build(release, unique_vendor(), "2.0.0")
    form = admin.get("/campaigns/new", firmware=build["id"])
    assert form.status_code == 200 and f'value="{build["id"]}" selected' in form.text
    started = admin.post("/campaigns/new", {"firmware_id": build["id"], "waves": "50%, 100%",
                                            "failure_threshold": "50", "protocol": "https", "dispatch": "csms"},
                         chargers=("chargers.csv", _csv(10)))
    assert started.status_code == 303, text_of(started)
    path = started.headers["location"].removeprefix("/console")
    page = admin.get(path)
    assert page.status_code == 200
    words = text_of(page)
    assert "0 of 10 finished" in words and "5 granted" in words and "5 waiting for their wave" in words
    assert 'data-live="/console' + path + '/live' in page.text and "<svg" in page.text
    campaign_id = path.rsplit("/", 1)[1]
    assert csms.get(f"/api/v1/campaigns/{campaign_id}").json()["status"] == "running"

    assert admin.post(path + "/pause").status_code == 303
    assert "Paused: pause by request" in text_of(admin.get(path + "/live"))
    assert admin.post(path + "/resume").status_code == 303
    assert admin.post(path + "/cancel").status_code == 303
    final = admin.get(path + "/live")
    assert "data-final" in final.text and "cancelled" in text_of(final)
    # A cancelled campaign has no buttons left, and a second cancel is refused as the API refuses it.
    assert "/cancel" not in admin.get(path).text
    refused = admin.post(path + "/cancel")
    assert refused.status_code == 409 and "cannot cancel" in text_of(refused)
    pending = admin.get(path, state="pending")
    assert "No charger in this state" not in text_of(pending)
    bad = admin.get(path, state="lost")
    assert bad.status_code == 422 and "state" in text_of(bad)


def test_a_bad_csv_is_refused_naming_its_line_and_column_and_keeps_the_form(admin: Browser,
                                                                            release: httpx.Client) -> None:
    build = published_build(release, unique_vendor(), "2.0.0")
    csv = b"charger_id,current_version,time_zone\nCP-1,1.0.0,UTC\nCP-2,1.0.0,Mars/Olympus\n"
    refused = admin.post("/campaigns/new", {"firmware_id": build["id"], "waves": "3, 100%"},
                         chargers=("chargers.csv", csv))
    assert refused.status_code == 422
    words = text_of(refused)
    assert "chargers CSV, line 3, column time_zone" in words and "Mars/Olympus" in words
    assert 'value="3, 100%"' in refused.text  # what was typed stays
    missing = admin.post("/campaigns/new", {"firmware_id": build["id"]})
    assert missing.status_code == 422 and "choose a CSV file" in text_of(missing)


def test_a_chargers_history_shows_its_grants_and_their_events(fwrepo: Fwrepo, admin: Browser,
                                                              release: httpx.Client, csms: httpx.Client) -> None:
    build = published_build(release, unique_vendor(), "3.1.0")
    charger = f"CP-{secrets.token_hex(4)}"
    grant = csms.post("/api/v1/grants", json={"firmware_id": build["id"], "charger_id": charger}).json()
    event = csms.post(f"/api/v1/grants/{grant['id']}/events",
                      json={"status": "Installing", "timestamp": datetime.now(UTC).isoformat()})
    assert event.status_code in (200, 201), event.text
    words = text_of(admin.get("/chargers", id=charger))
    assert f"Grant {grant['id']}: 3.1.0" in words and "Installing" in words and "granted" in words
    assert "No update was ever granted" in text_of(admin.get("/chargers", id="CP-never-seen"))
    bad = admin.get("/chargers", id="é" * 3)
    assert bad.status_code == 422


def test_the_audit_page_filters_the_trail_and_checks_its_chain(admin: Browser, release: httpx.Client) -> None:
    build = published_build(release, unique_vendor(), "1.0.0")
    words = text_of(admin.get("/audit", subject=f"firmware {build['id']}"))
    assert "2 events" in words and "publish" in words and "upload" in words
    assert "The chain holds" in text_of(admin.get("/audit/verify"))
    assert admin.get("/audit", offset="x").status_code == 422


def test_an_admin_adds_and_removes_a_signer_on_the_keys_page(admin: Browser) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    name = f"engineer-{secrets.token_hex(3)}"
    assert "active" in text_of(admin.get("/keys"))
    assert admin.post("/signers", {"name": name, "public_key": pem}).status_code == 303
    page = admin.get("/keys")
    signer_id = re.search(rf'/signers/(\w+)/remove"><input type="hidden" name="csrf" value="[^"]+"><button '
                          rf'type="submit" class="danger" aria-label="Remove the key of {name}"', page.text).group(1)
    bad = admin.post("/signers", {"name": "x", "public_key": "not a key"})
    assert bad.status_code == 422 and "public_key" in text_of(bad)
    assert admin.post(f"/signers/{signer_id}/remove").status_code == 303
    assert name not in admin.get("/keys").text


def test_an_admin_makes_a_user_who_signs_in_then_resets_and_disables_it(fwrepo: Fwrepo, admin: Browser) -> None:
    name = f"new-{secrets.token_hex(3)}"
    made = admin.post("/users", {"name": name, "role": "release", "password": PASSWORD, "password_again": PASSWORD})
    assert made.status_code == 201 and f"{name} may sign in now" in text_of(made)
    newcomer = Browser(fwrepo, name)
    assert "Upload" in newcomer.get("/").text
    differ = admin.post("/users", {"name": "x" + name, "role": "release", "password": PASSWORD,
                                   "password_again": PASSWORD + "!"})
    assert differ.status_code == 422 and "differ" in text_of(differ)
    platform = admin.post("/users", {"name": "y" + name, "role": "platform", "password": PASSWORD,
                                     "password_again": PASSWORD})
    assert platform.status_code == 422
    assert admin.post(f"/users/{name}/reset-password", {"password": PASSWORD + " 2"}).status_code == 200
    # The old session ended with the old password.
    assert newcomer.http.get("/").status_code == 303
    Browser(fwrepo, name, PASSWORD + " 2")
    assert admin.post(f"/users/{name}/disable").status_code == 303
    assert "disabled" in text_of(admin.get("/users"))


def test_an_admin_makes_an_api_key_shown_once_and_revokes_it(fwrepo: Fwrepo, admin: Browser) -> None:
    made = admin.post("/clients", {"name": "csms.example.net", "role": "csms"})
    assert made.status_code == 201
    key = re.search(r'<pre class="wrap" id="new-key">(fwr_[^<]+)</pre>', made.text).group(1)
    api = httpx.Client(base_url=fwrepo.url, verify=fwrepo.tls(), headers={"Authorization": f"Bearer {key}"})
    assert api.get("/api/v1/campaigns").status_code == 200
    listed = admin.get("/clients")
    assert key not in listed.text
    client_id = re.search(r'/clients/(\w+)/revoke"><input type="hidden" name="csrf" value="[^"]+"><button '
                          r'type="submit" class="danger" aria-label="Revoke the key of csms.example.net"',
                          listed.text).group(1)
    assert admin.post(f"/clients/{client_id}/revoke").status_code == 303
    assert api.get("/api/v1/campaigns").status_code == 401


def test_the_platform_adds_and_disables_a_tenant(fwrepo: Fwrepo) -> None:
    platform = user(fwrepo, "platform")
    name = f"t-{secrets.token_hex(3)}"
    made = platform.post("/tenants", {"name": name})
    assert made.status_code == 201 and f"Tenant {name} made" in text_of(made)
    assert platform.post("/tenants", {"name": "Bad Name"}).status_code == 422
    assert platform.post(f"/tenants/{name}/disable").status_code == 303
    assert "disabled" in text_of(platform.get("/tenants"))


def test_a_form_larger_than_it_may_be_is_refused_before_it_is_read(fwrepo: Fwrepo, admin: Browser) -> None:
    page = admin.get("/firmware")
    assert page.status_code == 200
    refused = admin.http.post("/signers", content=b"name=" + b"x" * 300_000,
                              headers={"content-type": "application/x-www-form-urlencoded"})
    assert refused.status_code == 413 and "256 KiB" in text_of(refused)
    csv = admin.post("/campaigns/new", {}, chargers=("big.csv", b"x" * (18 * 1024 * 1024)))
    assert csv.status_code == 413
