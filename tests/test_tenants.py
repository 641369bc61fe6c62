"""Tenants (issue 16): several operators on one service, and nothing crosses between them.

The isolation matrix is generated from the app's route table: every keyed operation is called with another
tenant's key on this tenant's ids (or bodies naming them), and must answer exactly what it answers for ids never
made. A route added later falls into one of the generated groups, or the coverage test names it.
"""

from __future__ import annotations

import ftplib
import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.routing import Route

from repo_service.domain.clients import Role
from repo_service.http.app import ROUTES
from repo_service.http.operations import operation_of
from tests.support.builds import published_build, unique_vendor
from tests.support.fwrepo import Fwrepo

PATH_PARAMETER = re.compile(r"{(\w+)(?::\w+)?}")


@dataclass(frozen=True)
class Holdings:
    """What one tenant made: a published build, a grant with an event, a campaign, a webhook, a signer."""

    tenant: str
    vendor: str
    firmware_id: str
    grant_id: int
    campaign_id: str
    webhook_id: str
    signer_id: str
    signer_name: str

    def ids(self) -> dict[str, str]:
        return {"firmware_id": self.firmware_id, "grant_id": str(self.grant_id), "campaign_id": self.campaign_id,
                "webhook_id": self.webhook_id, "signer_id": self.signer_id}


def _public_key() -> str:
    return ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def _tenant() -> str:
    return f"t-{secrets.token_hex(4)}"


def holdings(fwrepo: Fwrepo, tenant: str) -> Holdings:
    vendor = unique_vendor()
    with fwrepo.client("release", tenant) as release, fwrepo.client("csms", tenant) as csms, \
            fwrepo.client("admin", tenant) as admin:
        firmware = published_build(release, vendor, "1.0.0")
        grant = csms.post("/api/v1/grants", json={"firmware_id": firmware["id"], "charger_id": "CP-1"})
        assert grant.status_code == 201, grant.text
        event = csms.post(f"/api/v1/grants/{grant.json()['id']}/events",
                          json={"status": "Downloading", "timestamp": datetime.now(UTC).isoformat()})
        assert event.status_code == 201, event.text
        campaign = csms.post("/api/v1/campaigns", json={"firmware_id": firmware["id"], "chargers": [
            {"charger_id": "CP-2", "current_version": "0.9"}]})
        assert campaign.status_code == 201, campaign.text
        webhook = csms.post("/api/v1/webhooks", json={"url": "https://fwrepo-tests.invalid/hook",
                                                      "events": ["job.finished"], "secret": "s" * 32})
        assert webhook.status_code == 201, webhook.text
        name = f"signer-{secrets.token_hex(3)}"
        signer = admin.post("/api/v1/signers", json={"name": name, "public_key": _public_key()})
        assert signer.status_code == 201, signer.text
    return Holdings(tenant, vendor, firmware["id"], grant.json()["id"], campaign.json()["id"], webhook.json()["id"],
                    signer.json()["id"], name)


def unknown_like(holdings: Holdings) -> Holdings:
    """Ids of the same shapes that nobody made."""
    return Holdings("nobody", unique_vendor(), secrets.token_hex(len(holdings.firmware_id) // 2), 2**31 - 7,
                    secrets.token_hex(len(holdings.campaign_id) // 2), secrets.token_hex(len(holdings.webhook_id) // 2),
                    secrets.token_hex(len(holdings.signer_id) // 2), f"signer-{secrets.token_hex(3)}")


# Bodies for the operations that take one, naming the holdings' ids where the operation reads an id from it.
def _event(grant_id: int) -> dict[str, Any]:
    return {"grant_id": grant_id, "status": "Downloaded", "timestamp": datetime.now(UTC).isoformat()}


BODIES: dict[str, Callable[[Holdings], Any]] = {
    "yankFirmware": lambda held: {"reason": "not yours"},
    "reportStatusEvent": lambda held: {"status": "Installed", "timestamp": datetime.now(UTC).isoformat()},
    "reportStatusEvents": lambda held: {"events": [_event(held.grant_id)]},
    "issueGrant": lambda held: {"firmware_id": held.firmware_id, "charger_id": "CP-9"},
    "issueGrants": lambda held: {"firmware_id": held.firmware_id, "charger_ids": ["CP-9"]},
    "createCampaign": lambda held: {"firmware_id": held.firmware_id, "chargers": [
        {"charger_id": "CP-9", "current_version": "0.9"}]},
}
# Query parameters naming a holding, for the listings and the update check.
QUERIES: dict[str, Callable[[Holdings], dict[str, str]]] = {
    "findUpdate": lambda held: {"vendor": held.vendor, "model": "AC22", "current_version": "0.1.0"},
    "listFirmware": lambda held: {"vendor": held.vendor},
    "listAuditEvents": lambda held: {"subject": f"firmware {held.firmware_id}"},
}
# Operations that make something new and name nothing of another tenant's: they must simply work in the caller's
# tenant, even with names and versions another tenant uses (a refusal would tell that the other has them).
MAKING = {"uploadFirmware", "addSigner", "createWebhook"}


def operations() -> list[tuple[str, str, str]]:
    """(operationId, method, path) of every keyed operation in the route table."""
    found = []
    for route in ROUTES:
        assert isinstance(route, Route)
        operation = operation_of(route.endpoint)
        # Keyless operations hold no tenant's data; the platform's own (managing tenants) no tenant key may call.
        if operation is None or operation.action is None or Role.ADMIN not in operation.roles:
            continue
        for method in sorted((route.methods or {"GET"}) - {"HEAD"}):
            found.append((operation.operation_id, method, route.path))
    return found


def _call(client: httpx.Client, method: str, path: str, held: Holdings, operation_id: str) -> httpx.Response:
    url = PATH_PARAMETER.sub(lambda match: held.ids()[match.group(1)], path)
    query = QUERIES[operation_id](held) if operation_id in QUERIES else None
    body = BODIES[operation_id](held) if operation_id in BODIES else None
    return client.request(method, url, params=query, json=body)


def _without(text: str, *held: Holdings) -> str:
    """A reply with the named ids replaced by placeholders, to compare replies about different ids."""
    for one in held:
        for name, value in {**one.ids(), "vendor": one.vendor}.items():
            text = re.sub(rf"(?<![0-9A-Za-z]){re.escape(value)}(?![0-9A-Za-z])", f"<{name}>", text)
    return text


def _keyed_operations_are_all_covered() -> list[str]:
    return [operation_id for operation_id, method, path in operations()
            if operation_id not in MAKING and not PATH_PARAMETER.search(path) and method != "GET"
            and operation_id not in BODIES]


def test_every_keyed_operation_has_an_isolation_case() -> None:
    assert not _keyed_operations_are_all_covered(), (
        "operations that take no id in their path need a body naming another tenant's ids in BODIES, or a place "
        f"in MAKING: {_keyed_operations_are_all_covered()}")


@pytest.fixture(scope="module")
def two_tenants(fwrepo: Fwrepo) -> tuple[Holdings, Holdings]:
    return holdings(fwrepo, _tenant()), holdings(fwrepo, _tenant())


@pytest.mark.parametrize(("operation_id", "method", "path"), operations(), ids=[op[0] for op in operations()])
def test_another_tenants_key_finds_nothing_of_this_tenant(fwrepo: Fwrepo, two_tenants: tuple[Holdings, Holdings],
                                                          operation_id: str, method: str, path: str) -> None:
    mine, theirs = two_tenants
    nobody = unknown_like(mine)
    with fwrepo.client("admin", theirs.tenant) as intruder:
        if operation_id in MAKING:
            return _making_works_beside_the_other_tenant(fwrepo, intruder, mine, operation_id)
        across = _call(intruder, method, path, mine, operation_id)
        unknown = _call(intruder, method, path, nobody, operation_id)
    # The same answer, status and body, as for ids never made: never a 403, never a hint.
    assert across.status_code == unknown.status_code, (across.status_code, across.text, unknown.text)
    assert across.status_code != 403, across.text
    if across.status_code >= 400:
        assert _without(across.text, mine) == _without(unknown.text, nobody)
    else:  # a listing or a report: nothing of this tenant's in it
        # (By id: the other tenant may have made its own build of the same vendor, see MAKING.)
        for value in (mine.firmware_id, mine.campaign_id, mine.webhook_id, mine.signer_id):
            assert value not in across.text, (value, across.text[:500])
    if PATH_PARAMETER.search(path) or operation_id in BODIES:
        assert across.status_code in (404, 422), across.text


def _making_works_beside_the_other_tenant(fwrepo: Fwrepo, intruder: httpx.Client, mine: Holdings,
                                          operation_id: str) -> None:
    if operation_id == "uploadFirmware":
        # The same vendor and version as the other tenant's build: its own build, not a conflict.
        reply = intruder.post("/api/v1/firmware", data={"vendor": mine.vendor, "version": "1.0.0", "models": "AC22"},
                              files={"file": ("fw.bin", secrets.token_bytes(2000))})
        assert reply.status_code == 201, reply.text
        assert reply.json()["id"] != mine.firmware_id
    elif operation_id == "addSigner":
        reply = intruder.post("/api/v1/signers", json={"name": mine.signer_name, "public_key": _public_key()})
        assert reply.status_code == 201, reply.text
    else:
        reply = intruder.post("/api/v1/webhooks", json={"url": "https://fwrepo-tests.invalid/other",
                                                       "events": ["job.finished"], "secret": "t" * 32})
        assert reply.status_code == 201, reply.text
        assert intruder.delete(f"/api/v1/webhooks/{reply.json()['id']}").status_code == 200


def test_the_matrix_changed_nothing_of_the_tenant_it_attacked(fwrepo: Fwrepo,
                                                               two_tenants: tuple[Holdings, Holdings]) -> None:
    mine, theirs = two_tenants
    # Every operation once more with the other's key, then this tenant's view of its own things.
    with fwrepo.client("admin", theirs.tenant) as intruder:
        for operation_id, method, path in operations():
            if operation_id not in MAKING:
                _call(intruder, method, path, mine, operation_id)
    with fwrepo.client("admin", mine.tenant) as owner:
        assert owner.get(f"/api/v1/firmware/{mine.firmware_id}").json()["status"] == "published"
        grant = owner.get(f"/api/v1/grants/{mine.grant_id}").json()
        assert grant["revoked_at"] is None
        assert [event["status"] for event in owner.get(f"/api/v1/grants/{mine.grant_id}/job").json()["events"]] == [
            "Downloading"]
        assert owner.get(f"/api/v1/campaigns/{mine.campaign_id}").json()["status"] == "running"
        assert owner.get(f"/api/v1/webhooks/{mine.webhook_id}").status_code == 200
        assert mine.signer_id in owner.get("/api/v1/signers").text
        # Its trail holds only its own acts, each once.
        actors = {event["actor"] for event in owner.get("/api/v1/audit", params={"limit": 1000}).json()["items"]}
        assert all(theirs.tenant not in actor for actor in actors)


def test_a_platform_key_reads_every_tenant_and_changes_nothing(fwrepo: Fwrepo,
                                                               two_tenants: tuple[Holdings, Holdings]) -> None:
    mine, theirs = two_tenants
    with fwrepo.client("platform") as platform:
        for held in (mine, theirs):
            assert held.firmware_id in platform.get("/api/v1/firmware", params={"vendor": held.vendor}).text
        audit = platform.get("/api/v1/audit", params={"subject": f"firmware {mine.firmware_id}"}).json()["items"]
        assert {event["tenant"] for event in audit} == {mine.tenant}
        refused = platform.post(f"/api/v1/firmware/{mine.firmware_id}/yank", json={"reason": "platform"})
        assert refused.status_code == 403, refused.text
        assert platform.post("/api/v1/grants", json={"firmware_id": mine.firmware_id,
                                                     "charger_id": "CP-9"}).status_code == 403


def test_a_platform_key_belongs_to_the_default_tenant(fwrepo: Fwrepo) -> None:
    tenant = _tenant()
    fwrepo.cli("tenants", "create", tenant)
    refused = fwrepo.cli("clients", "create", "--name", "p", "--role", "platform", "--tenant", tenant, check=False)
    assert refused.returncode != 0
    assert "platform keys belong to the default tenant" in refused.stderr


def test_a_disabled_tenant_keys_urls_and_listing(fwrepo: Fwrepo) -> None:
    tenant = _tenant()
    held = holdings(fwrepo, tenant)
    with fwrepo.client("csms", tenant) as csms:
        location = csms.get(f"/api/v1/grants/{held.grant_id}").json()["location"]
    with httpx.Client(verify=fwrepo.tls()) as charger:
        assert charger.get(location).status_code == 200
        # The answer a dead grant gets, for comparison.
        with fwrepo.client("csms", tenant) as csms:
            dead = csms.post("/api/v1/grants", json={"firmware_id": held.firmware_id, "charger_id": "CP-3"}).json()
            csms.delete(f"/api/v1/grants/{dead['id']}").raise_for_status()
        gone = charger.get(dead["location"])
        with fwrepo.client("csms", tenant) as csms:
            ftps = csms.post("/api/v1/grants", json={"firmware_id": held.firmware_id, "charger_id": "CP-4",
                                                      "protocol": "ftps"}).json()["location"]
        assert _ftps_login(fwrepo, ftps) == "230 logged in"
        disabled = fwrepo.cli("tenants", "disable", tenant)
        assert f"disabled tenant {tenant}" in disabled.stdout
        refused = charger.get(location)
        assert (refused.status_code, refused.text) == (gone.status_code, gone.text)
    # What a dead grant's login gets, and what a wrong password gets: within the 2 s a node trusts what it read
    # of a grant (its login was just read), as for a revocation.
    deadline = time.monotonic() + 5
    while _ftps_login(fwrepo, ftps) != "530 Login incorrect.":
        assert time.monotonic() < deadline, "a disabled tenant's FTPS login still works after 5 s"
        time.sleep(0.2)
    with fwrepo.client("csms", tenant) as csms:
        reply = csms.get(f"/api/v1/grants/{held.grant_id}")
        assert reply.status_code == 401 and "the API key is not valid" in reply.text
    listed = fwrepo.cli("tenants", "list").stdout
    assert re.search(rf"^{tenant}\s+\S.*\s+\d{{4}}-", listed, re.MULTILINE), listed
    # Nothing was deleted: the platform still reads its builds.
    with fwrepo.client("platform") as platform:
        assert platform.get(f"/api/v1/firmware/{held.firmware_id}").status_code == 200
    refusals = fwrepo.cli("audit", "list", "--tenant", tenant, "--action", "refusal", "--json").stdout
    assert "tenant_disabled" in refusals


def _ftps_login(fwrepo: Fwrepo, location: str) -> str:
    parts = urlsplit(location)
    ftp = ftplib.FTP_TLS(context=fwrepo.tls(), timeout=30)
    try:
        ftp.connect(parts.hostname or "", parts.port or 990)
        ftp.login(parts.username or "", parts.password or "")
    except ftplib.error_perm as error:
        return str(error)
    finally:
        ftp.close()
    return "230 logged in"


@pytest.mark.parametrize(("arguments", "message"), [
    (["tenants", "create", "Not_A-Label"], "tenant: must be 1-63 lowercase letters, digits and inner hyphens"),
    (["tenants", "create", "trailing-"], "tenant: must be 1-63 lowercase letters"),
    (["tenants", "create", "default"], "tenant default exists"),
    (["tenants", "disable", "default"], "the default tenant cannot be disabled"),
    (["tenants", "disable", "never-made"], "no tenant named never-made"),
    (["clients", "create", "--name", "x", "--role", "csms", "--tenant", "never-made"], "no enabled tenant named"),
    (["audit", "verify", "--tenant", "never-made"], "no tenant named never-made"),
    (["signers", "list", "--tenant", "never-made"], "no tenant named never-made"),
])
def test_tenant_commands_refuse_bad_input_by_name(fwrepo: Fwrepo, arguments: list[str], message: str) -> None:
    result = fwrepo.cli(*arguments, check=False)
    assert result.returncode != 0 and message in result.stderr, (result.stdout, result.stderr)


def test_each_tenants_audit_chain_verifies_on_its_own(fwrepo: Fwrepo) -> None:
    tenant = _tenant()
    holdings(fwrepo, tenant)
    verified = fwrepo.cli("audit", "verify", "--tenant", tenant)
    assert f"audit chain of tenant {tenant} intact:" in verified.stdout
    listed = json.loads(fwrepo.cli("audit", "list", "--tenant", tenant, "--json", "--limit", "1000").stdout)
    seqs = sorted(event["seq"] for event in listed["items"])
    assert seqs == list(range(1, len(seqs) + 1)) and {event["tenant"] for event in listed["items"]} == {tenant}
    everyone = fwrepo.cli("audit", "verify")
    assert "audit chain intact:" in everyone.stdout and f"audit chain of tenant {tenant} intact" in everyone.stdout


def test_on_postgresql_row_level_security_holds_a_session_to_its_tenant(
        fwrepo: Fwrepo, two_tenants: tuple[Holdings, Holdings]) -> None:
    """Below the application: a query with no tenant filter at all, as fwrepo's own database role, sees only
    the tenant its transaction names, and cannot write another's rows."""
    url = fwrepo.env.get("FWREPO_DATABASE_URL", "")
    if not url.startswith("postgresql"):
        pytest.skip("row-level security is PostgreSQL's; on SQLite the application's filter alone holds")
    import psycopg

    mine, theirs = two_tenants
    every_table = {"api_client": "id", "firmware": "id", "signer": "id", '"grant"': "id", "campaign": "id",
                   "webhook": "id", "audit_event": "seq", "firmware_model": "firmware_id",
                   "firmware_signature": "firmware_id", "grant_event": "grant_id", "download_record": "id",
                   "campaign_charger": "campaign_id", "webhook_delivery": "id", "webhook_attempt": "id",
                   "dispatch": "grant_id", "audit_checkpoint": "id"}
    with psycopg.connect(url) as connection:
        # fwrepo's role owns the tables and is no superuser: the policies apply to it (FORCE).
        assert connection.execute("SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user"
                                  ).fetchone() == (False,)
        for table in every_table:
            assert connection.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), f"{table}, no tenant named"
        connection.execute("SELECT set_config('fwrepo.tenant', %s, true)", (theirs.tenant,))
        assert connection.execute("SELECT count(*) FROM firmware WHERE id = %s", (mine.firmware_id,)).fetchone() == (0,)
        assert connection.execute('SELECT count(*) FROM "grant" WHERE id = %s', (mine.grant_id,)).fetchone() == (0,)
        assert connection.execute("SELECT count(*) FROM grant_event WHERE grant_id = %s",
                                  (mine.grant_id,)).fetchone() == (0,)
        assert connection.execute("SELECT count(*) FROM campaign_charger WHERE campaign_id = %s",
                                  (mine.campaign_id,)).fetchone() == (0,)
        assert connection.execute("SELECT DISTINCT tenant FROM audit_event").fetchall() == [(theirs.tenant,)]
        assert connection.execute("UPDATE firmware SET status = 'yanked' WHERE id = %s",
                                  (mine.firmware_id,)).rowcount == 0
        assert connection.execute("SELECT count(*) FROM firmware WHERE id = %s", (theirs.firmware_id,)
                                  ).fetchone() == (1,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            connection.execute("UPDATE firmware SET tenant = %s WHERE id = %s", (mine.tenant, theirs.firmware_id))
    with psycopg.connect(url) as connection:
        connection.execute("SELECT set_config('fwrepo.tenant', %s, true)", (mine.tenant,))
        assert connection.execute("SELECT status FROM firmware WHERE id = %s", (mine.firmware_id,)).fetchone() == (
            "published",)


def test_a_release_key_limited_to_vendors_changes_and_reads_only_their_builds(fwrepo: Fwrepo) -> None:
    """The operator-hosted case: a charger maker's engineer works in the operator's tenant, on its own builds."""
    tenant, maker, rival = _tenant(), unique_vendor(), unique_vendor()
    with fwrepo.client("release", tenant) as operator:  # the operator's own release key, any vendor
        theirs = published_build(operator, rival, "1.0.0")
        draft = operator.post("/api/v1/firmware", data={"vendor": rival, "version": "2.0.0", "models": "AC22"},
                              files={"file": ("fw.bin", secrets.token_bytes(1000))}).json()
    key = fwrepo.cli("clients", "create", "--tenant", tenant, "--name", "maker engineer", "--role", "release",
                     "--vendor", maker, "--vendor", f"{maker}-labs").stdout.strip()
    listed = next(line for line in fwrepo.cli("clients", "list", "--tenant", tenant).stdout.splitlines()
                  if "maker engineer" in line)
    assert f"{maker},{maker}-labs" in listed
    with httpx.Client(base_url=fwrepo.url, verify=fwrepo.tls(), headers={"Authorization": f"Bearer {key}"}) as engineer:
        own = published_build(engineer, maker, "1.0.0")
        assert own["status"] == "published"
        message = f"this key may act only on builds of {maker}, {maker}-labs, not of {rival}"
        refused = engineer.post("/api/v1/firmware", data={"vendor": rival, "version": "9.0.0", "models": "AC22"},
                                files={"file": ("fw.bin", secrets.token_bytes(1000))})
        assert refused.status_code == 403 and message in refused.text
        for attempt in (engineer.post(f"/api/v1/firmware/{draft['id']}/publish"),
                        engineer.post(f"/api/v1/firmware/{theirs['id']}/yank", json={"reason": "competitor"}),
                        engineer.get(f"/api/v1/firmware/{theirs['id']}/content")):
            assert attempt.status_code == 403 and message in attempt.text, attempt.text
        assert engineer.get(f"/api/v1/firmware/{own['id']}/content").status_code == 200
    with fwrepo.client("release", tenant) as operator:
        assert operator.get(f"/api/v1/firmware/{theirs['id']}").json()["status"] == "published"
        assert operator.get(f"/api/v1/firmware/{draft['id']}").json()["status"] == "uploaded"
        # The refused upload left no build behind.
        assert operator.get("/api/v1/firmware", params={"vendor": rival}).json()["total"] == 2


@pytest.mark.parametrize(("role", "message"), [
    ("csms", "vendor: only release keys are limited to vendors, not csms keys"),
    ("admin", "vendor: only release keys are limited to vendors, not admin keys"),
])
def test_only_release_keys_take_vendors(fwrepo: Fwrepo, role: str, message: str) -> None:
    refused = fwrepo.cli("clients", "create", "--name", "x", "--role", role, "--vendor", "ACME", check=False)
    assert refused.returncode != 0 and message in refused.stderr


def test_two_nodes_on_postgresql_and_ceph_keep_tenants_apart_and_stop_a_disabled_one_on_both(
        nodes: tuple[Fwrepo, Fwrepo]) -> None:
    a, b = nodes
    mine, theirs = holdings(a, _tenant()), holdings(b, _tenant())
    nobody = unknown_like(mine)
    # Made on one node, unknown to the other tenant's key on the other node.
    with b.client("admin", theirs.tenant) as intruder:
        for path in ("/api/v1/firmware/{firmware_id}", "/api/v1/grants/{grant_id}", "/api/v1/campaigns/{campaign_id}",
                     "/api/v1/webhooks/{webhook_id}"):
            across = intruder.get(path.format(**mine.ids()))
            unknown = intruder.get(path.format(**nobody.ids()))
            assert across.status_code == 404 and _without(across.text, mine) == _without(unknown.text, nobody)
        refused = intruder.post("/api/v1/events", json={"events": [_event(mine.grant_id)]})
        assert refused.status_code == 422 and f"no grant with id {mine.grant_id}" in refused.text
    with a.client("csms", mine.tenant) as csms:
        location = urlsplit(csms.get(f"/api/v1/grants/{mine.grant_id}").json()["location"]).path
    # Each node has a TLS certificate of its own here: a charger of each.
    chargers = {node.url: httpx.Client(base_url=node.url, verify=node.tls(), timeout=30) for node in (a, b)}
    try:
        for charger in chargers.values():
            assert charger.get(location).status_code == 200  # cached on both nodes now
        b.cli("tenants", "disable", mine.tenant)
        for node in (a, b):
            with node.client("csms", mine.tenant) as csms:
                assert csms.get(f"/api/v1/grants/{mine.grant_id}").status_code == 401
            deadline = time.monotonic() + 5
            while chargers[node.url].get(location).status_code != 410:
                assert time.monotonic() < deadline, f"the disabled tenant's URL still works on {node.url}"
                time.sleep(0.2)
    finally:
        for charger in chargers.values():
            charger.close()
    # The other tenant goes on as before, on both nodes.
    with a.client("csms", theirs.tenant) as csms:
        assert csms.get(f"/api/v1/grants/{theirs.grant_id}").status_code == 200


def test_two_nodes_on_postgresql_and_ceph_withdraw_a_shared_build_yanked_at_its_source(
        nodes: tuple[Fwrepo, Fwrepo]) -> None:
    a, b = nodes
    maker, customer = holdings(a, _tenant()), _tenant()
    b.key("csms", customer)  # makes the tenant
    a.cli("tenants", "share", maker.tenant, "--with", customer)
    with b.client("csms", customer) as csms:  # the customer's CSMS, on the other node
        grant = csms.post("/api/v1/grants", json={"firmware_id": maker.firmware_id, "charger_id": "CP-7"})
        assert grant.status_code == 201, grant.text
    location = urlsplit(grant.json()["location"]).path
    chargers = {node.url: httpx.Client(base_url=node.url, verify=node.tls(), timeout=30) for node in (a, b)}
    try:
        for charger in chargers.values():
            assert charger.get(location).status_code == 200
        with a.client("release", maker.tenant) as release:
            assert release.post(f"/api/v1/firmware/{maker.firmware_id}/yank",
                                json={"reason": "bricks rev B"}).status_code == 200
        for node in (a, b):
            deadline = time.monotonic() + 5
            while chargers[node.url].get(location).status_code != 410:
                assert time.monotonic() < deadline, f"the yanked shared build still downloads on {node.url}"
                time.sleep(0.2)
    finally:
        for charger in chargers.values():
            charger.close()
    with b.client("csms", customer) as csms:
        assert csms.get(f"/api/v1/grants/{grant.json()['id']}").json()["revoked_at"] is not None
        refused = csms.post("/api/v1/grants", json={"firmware_id": maker.firmware_id, "charger_id": "CP-8"})
        assert refused.status_code == 409, refused.text


def test_the_platform_manages_tenants_over_http_and_no_tenants_key_can(fwrepo: Fwrepo) -> None:
    name = _tenant()
    with fwrepo.client("platform") as platform:
        created = platform.post("/api/v1/tenants", json={"name": name})
        assert created.status_code == 201 and created.headers["location"] == f"/api/v1/tenants/{name}"
        assert platform.post("/api/v1/tenants", json={"name": name}).status_code == 409
        bad = platform.post("/api/v1/tenants", json={"name": "Not A Label"})
        assert bad.status_code == 422 and bad.json()["field"] == "name", bad.text
        assert name in [tenant["name"] for tenant in platform.get("/api/v1/tenants").json()["items"]]
    key = fwrepo.cli("clients", "create", "--tenant", name, "--name", "ops", "--role", "admin").stdout.strip()
    with httpx.Client(base_url=fwrepo.url, verify=fwrepo.tls(), headers={"Authorization": f"Bearer {key}"}) as admin:
        for method, path in (("GET", "/api/v1/tenants"), ("POST", f"/api/v1/tenants/{name}/disable")):
            refused = admin.request(method, path)
            assert refused.status_code == 403 and "role admin may not manage tenants" in refused.text
        assert admin.get("/api/v1/firmware").status_code == 200
    with fwrepo.client("platform") as platform:
        disabled = platform.post(f"/api/v1/tenants/{name}/disable")
        assert disabled.status_code == 200 and disabled.json()["disabled_at"] is not None
        assert platform.post("/api/v1/tenants/never-made/disable").status_code == 404
        assert platform.post("/api/v1/tenants/default/disable").status_code == 422
    with httpx.Client(base_url=fwrepo.url, verify=fwrepo.tls(), headers={"Authorization": f"Bearer {key}"}) as admin:
        assert admin.get("/api/v1/firmware").status_code == 401
    trail = json.loads(fwrepo.cli("audit", "list", "--tenant", name, "--json").stdout)["items"]
    assert [event["action"] for event in reversed(trail)][:2] == ["tenant_create", "client_create"]
