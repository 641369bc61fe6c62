"""Shared catalogs (issue 16, point 4): a maker's tenant shares its published builds with its customers' tenants.

The receiver sees them in its catalog and update checks, grants and campaigns them for its own chargers, and
changes nothing of them; a yank at the source withdraws them everywhere; an unshared tenant sees nothing, as
before; ending a share takes back what it gave. Each as an attacker would try it, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.admin import share
from tests.support.builds import published_build, unique_vendor, upload
from tests.support.databases import scratch_postgres
from tests.support.fwrepo import Fwrepo, two_nodes


@dataclass(frozen=True)
class Shared:
    """A maker sharing with a customer, and a tenant it does not share with."""

    maker: str
    customer: str
    stranger: str
    vendor: str
    build: dict
    draft: dict


def _tenant(role: str) -> str:
    return f"{role}-{secrets.token_hex(3)}"


def _shared(fwrepo: Fwrepo, by_cli: bool = False) -> Shared:
    """A share made by `fwrepo tenants share` (by_cli), or in-process as the command makes it."""
    maker, customer, stranger = _tenant("maker"), _tenant("cpo"), _tenant("other")
    vendor = unique_vendor()
    with fwrepo.client("release", maker) as release:
        build = published_build(release, vendor, "2.0.0")
        draft = upload(release, vendor, "2.1.0-rc1")
        assert draft.status_code == 201, draft.text
    for tenant in (customer, stranger):
        fwrepo.key("csms", tenant)  # makes the tenant
    if by_cli:
        shared = fwrepo.cli("tenants", "share", maker, "--with", customer)
        assert f"tenant {maker} shares its published builds with {customer}" in shared.stdout
    else:
        share(fwrepo.env, maker, customer)
    return Shared(maker, customer, stranger, vendor, build, draft.json())


@pytest.fixture
def shared(fwrepo: Fwrepo) -> Shared:
    return _shared(fwrepo)


@pytest.fixture(scope="module")
def shared_by_cli(fwrepo: Fwrepo) -> Shared:
    """One share per database, made with the command, for the tests that only try commands that are refused."""
    return _shared(fwrepo, by_cli=True)


def _grant(client: httpx.Client, firmware_id: str, charger: str = "CP-1") -> dict:
    reply = client.post("/api/v1/grants", json={"firmware_id": firmware_id, "charger_id": charger})
    assert reply.status_code == 201, reply.text
    return reply.json()


def _update_check(client: httpx.Client, vendor: str) -> dict | None:
    reply = client.get("/api/v1/updates", params={"vendor": vendor, "model": "AC22", "current_version": "1.0.0"})
    assert reply.status_code == 200, reply.text
    return reply.json()["update"]


def test_the_receiver_sees_grants_and_campaigns_the_shared_build_as_its_own_chargers_need(
        fwrepo: Fwrepo, shared: Shared) -> None:
    build_id = shared.build["id"]
    with fwrepo.client("csms", shared.customer) as csms:
        listed = csms.get("/api/v1/firmware", params={"vendor": shared.vendor}).json()
        assert [(item["id"], item["tenant"]) for item in listed["items"]] == [(build_id, shared.maker)]
        assert listed["total"] == 1
        assert csms.get(f"/api/v1/firmware/{build_id}").json()["tenant"] == shared.maker
        manifest = csms.get(f"/api/v1/firmware/{build_id}/manifest")
        assert manifest.status_code == 200 and manifest.json()["manifest"]["id"] == build_id
        assert _update_check(csms, shared.vendor)["id"] == build_id
        grant = _grant(csms, build_id)
        batch = csms.post("/api/v1/grants/batch", json={"firmware_id": build_id, "charger_ids": ["CP-2", "CP-3"]})
        assert batch.status_code == 201, batch.text
        campaign = csms.post("/api/v1/campaigns", json={"firmware_id": build_id, "chargers": [
            {"charger_id": "CP-4", "current_version": "1.0.0"}]})
        assert campaign.status_code == 201, campaign.text
    with fwrepo.client("admin", shared.customer) as admin:
        content = admin.get(f"/api/v1/firmware/{build_id}/content")
        assert content.status_code == 200 and len(content.content) == shared.build["size"]
    with httpx.Client(verify=fwrepo.tls()) as charger:
        assert charger.get(grant["location"]).content == content.content
    # The grants and the campaign are the receiver's: the maker's keys know nothing of them.
    with fwrepo.client("admin", shared.maker) as maker:
        assert maker.get(f"/api/v1/grants/{grant['id']}").status_code == 404
        assert maker.get(f"/api/v1/campaigns/{campaign.json()['id']}").status_code == 404
    trail = json.loads(fwrepo.cli("audit", "list", "--tenant", shared.customer, "--action", "grant", "--json").stdout)
    assert {event["detail"]["firmware"] for event in trail["items"]} == {build_id}


def test_a_tenant_not_shared_with_sees_nothing_and_drafts_are_never_shared(fwrepo: Fwrepo, shared: Shared) -> None:
    build_id, draft_id = shared.build["id"], shared.draft["id"]
    never_made = secrets.token_hex(len(build_id) // 2)
    for tenant, hidden in ((shared.stranger, [build_id, draft_id]), (shared.customer, [draft_id])):
        with fwrepo.client("admin", tenant) as client:
            unknown = client.get(f"/api/v1/firmware/{never_made}")
            for firmware_id in hidden:
                for suffix in ("", "/manifest", "/content"):
                    reply = client.get(f"/api/v1/firmware/{firmware_id}{suffix}")
                    twin = client.get(f"/api/v1/firmware/{never_made}{suffix}")
                    assert (reply.status_code, reply.text.replace(firmware_id, "ID")) == (
                        twin.status_code, twin.text.replace(never_made, "ID")), (tenant, suffix)
                granted = client.post("/api/v1/grants", json={"firmware_id": firmware_id, "charger_id": "CP-1"})
                assert granted.status_code == 422 and f"no firmware with id {firmware_id}" in granted.text
            assert unknown.status_code == 404
            listed = client.get("/api/v1/firmware", params={"vendor": shared.vendor, "status": "uploaded"}).json()
            assert listed["items"] == []
    with fwrepo.client("csms", shared.stranger) as stranger:
        assert stranger.get("/api/v1/firmware", params={"vendor": shared.vendor}).json()["items"] == []
        assert _update_check(stranger, shared.vendor) is None


def test_the_receiver_cannot_publish_yank_or_take_the_makers_version(fwrepo: Fwrepo, shared: Shared) -> None:
    build_id = shared.build["id"]
    with fwrepo.client("admin", shared.customer) as admin:
        for act, body in (("publish", None), ("yank", {"reason": "not ours to yank"})):
            refused = admin.post(f"/api/v1/firmware/{build_id}/{act}", json=body)
            assert refused.status_code == 403, refused.text
            assert (f"firmware {build_id} belongs to tenant {shared.maker}, which shares it with this tenant: only "
                    f"{shared.maker} may {act} it") in refused.json()["detail"]
        # A draft it cannot see is unknown, as ever.
        assert admin.post(f"/api/v1/firmware/{shared.draft['id']}/publish").status_code == 404
        # Versions are per tenant: the maker's 2.0.0 shared here is no clash with the customer's own 2.0.0.
        own = upload(admin, shared.vendor, "2.0.0")
        assert own.status_code == 201, own.text
        assert own.json()["id"] != build_id and own.json()["tenant"] == shared.customer
        # Published, its own build of that version is what its chargers are offered.
        assert admin.post(f"/api/v1/firmware/{own.json()['id']}/publish").status_code == 200
        assert _update_check(admin, shared.vendor)["id"] == own.json()["id"]
    with fwrepo.client("admin", shared.maker) as maker:
        build = maker.get(f"/api/v1/firmware/{build_id}").json()
        assert (build["status"], build["yanked_at"]) == ("published", None)
        assert maker.get(f"/api/v1/firmware/{shared.draft['id']}").json()["status"] == "uploaded"


def test_a_yank_at_the_source_withdraws_the_build_from_every_tenant_it_was_shared_with(fwrepo: Fwrepo,
                                                                                     shared: Shared) -> None:
    build_id = shared.build["id"]
    with fwrepo.client("csms", shared.customer) as csms:
        grant = _grant(csms, build_id)
    with fwrepo.client("csms", shared.maker) as maker_csms:
        own = _grant(maker_csms, build_id)
    with httpx.Client(verify=fwrepo.tls()) as charger:
        assert charger.get(grant["location"]).status_code == 200
        with fwrepo.client("release", shared.maker) as release:
            yanked = release.post(f"/api/v1/firmware/{build_id}/yank", json={"reason": "bricks AC22 rev B"})
            assert yanked.status_code == 200, yanked.text
        # The yank and the revocations are one transaction, and this node forgets the grants it cached at once.
        assert charger.get(grant["location"]).status_code == 410
        assert charger.get(own["location"]).status_code == 410
    with fwrepo.client("csms", shared.customer) as csms:
        revoked = csms.get(f"/api/v1/grants/{grant['id']}").json()
        assert revoked["revoked_at"] is not None and revoked["revoke_reason"] == "firmware yanked: bricks AC22 rev B"
        assert csms.get(f"/api/v1/firmware/{build_id}").json()["status"] == "yanked"
        again = csms.post("/api/v1/grants", json={"firmware_id": build_id, "charger_id": "CP-9"})
        assert again.status_code == 409 and "yanked" in again.text
        assert _update_check(csms, shared.vendor) is None
    trail = json.loads(fwrepo.cli("audit", "list", "--tenant", shared.customer, "--action", "shared_yank",
                                  "--json").stdout)["items"]
    assert [(event["subject"], event["detail"]) for event in trail] == [
        (f"firmware {build_id}", {"source": shared.maker, "reason": "bricks AC22 rev B", "grants_revoked": 1})]
    # The maker's trail has its yank; the customer's tenant's acts stay off it.
    maker_trail = json.loads(fwrepo.cli("audit", "list", "--tenant", shared.maker, "--json").stdout)["items"]
    assert "yank" in {event["action"] for event in maker_trail}
    assert "shared_yank" not in {event["action"] for event in maker_trail}


@pytest.fixture
def nodes(postgres_server_url: str, tmp_path: Path) -> Iterator[tuple[Fwrepo, Fwrepo]]:
    """Two nodes on one PostgreSQL database, sharing keys, secrets and a storage directory."""
    shared = {"FWREPO_KEYS_DIR": str(tmp_path / "keys"), "FWREPO_KEY_PASSPHRASE": secrets.token_urlsafe(24),
              "FWREPO_TOKEN_SECRET": secrets.token_urlsafe(32), "FWREPO_STORAGE_DIR": str(tmp_path / "storage"),
              "FWREPO_SHUTDOWN_GRACE": "1"}
    for database_url in scratch_postgres(postgres_server_url):
        yield from two_nodes(database_url, tmp_path, shared)


def test_on_two_nodes_a_yank_at_the_source_on_one_stops_the_receivers_download_on_the_other(
        nodes: tuple[Fwrepo, Fwrepo]) -> None:
    a, b = nodes
    shared = _shared(a)
    with b.client("csms", shared.customer) as csms:
        grant = _grant(csms, shared.build["id"])
    on_a = a.url + urlsplit(grant["location"]).path
    with httpx.Client(verify=a.tls(), timeout=30) as charger:
        assert charger.get(on_a).status_code == 200  # A has the grant cached now
        with b.client("release", shared.maker) as release:
            assert release.post(f"/api/v1/firmware/{shared.build['id']}/yank",
                                json={"reason": "recalled"}).status_code == 200
        yanked_at = time.monotonic()
        while charger.get(on_a).status_code != 410:
            assert time.monotonic() - yanked_at < 5, "a yank on B did not stop the receiver's grant on A within 5 s"
            time.sleep(0.2)


def test_ending_a_share_hides_the_builds_and_takes_back_grants_and_campaigns(fwrepo: Fwrepo, shared: Shared) -> None:
    build_id = shared.build["id"]
    with fwrepo.client("csms", shared.customer) as csms:
        grant = _grant(csms, build_id)
        campaign = csms.post("/api/v1/campaigns", json={"firmware_id": build_id, "chargers": [
            {"charger_id": "CP-4", "current_version": "1.0.0"}]}).json()
    listed = fwrepo.cli("tenants", "list").stdout
    assert re.search(rf"^{shared.maker}\s.*\s{shared.customer}\s*$", listed, re.MULTILINE), listed
    ended = fwrepo.cli("tenants", "unshare", shared.maker, "--with", shared.customer)
    assert (f"tenant {shared.maker} no longer shares its builds with {shared.customer}: 2 grants revoked, "
            "1 campaigns cancelled") in ended.stdout
    with httpx.Client(verify=fwrepo.tls()) as charger:
        deadline = datetime.now(UTC).timestamp() + 10
        # The CLI is another process: the server's cached grant state lives at most its 2 seconds.
        while charger.get(grant["location"]).status_code != 410:
            assert datetime.now(UTC).timestamp() < deadline, "the grant still downloads after the share ended"
    with fwrepo.client("csms", shared.customer) as csms:
        assert csms.get(f"/api/v1/firmware/{build_id}").status_code == 404
        assert csms.get("/api/v1/firmware", params={"vendor": shared.vendor}).json()["items"] == []
        # What it did with the build stays readable: its grant, its job and its campaign.
        revoked = csms.get(f"/api/v1/grants/{grant['id']}")
        assert revoked.status_code == 200, revoked.text
        assert revoked.json()["revoke_reason"] == (f"tenant {shared.maker} stopped sharing its builds with tenant "
                                                   f"{shared.customer}")
        assert csms.get(f"/api/v1/grants/{grant['id']}/job").status_code == 200
        report = csms.get(f"/api/v1/campaigns/{campaign['id']}")
        assert report.status_code == 200 and report.json()["status"] == "cancelled", report.text
        # A charger still reporting on its old grant is heard.
        event = csms.post(f"/api/v1/grants/{grant['id']}/events",
                          json={"status": "DownloadFailed", "timestamp": datetime.now(UTC).isoformat()})
        assert event.status_code == 201, event.text
    assert not re.search(rf"^{shared.maker}\s.*\s{shared.customer}\s*$", fwrepo.cli("tenants", "list").stdout,
                         re.MULTILINE)
    # The one act on the trails of both tenants.
    for tenant in (shared.maker, shared.customer):
        trail = json.loads(fwrepo.cli("audit", "list", "--tenant", tenant, "--action", "tenant_unshare",
                                      "--json").stdout)["items"]
        assert [(event["subject"], event["detail"]) for event in trail] == [(f"tenant {shared.maker}", {
            "target": shared.customer, "grants_revoked": 2, "campaigns_cancelled": [campaign["id"]]})], tenant


def test_sharing_again_changes_nothing_and_one_command_shares_with_several(fwrepo: Fwrepo, shared: Shared) -> None:
    again = fwrepo.cli("tenants", "share", shared.maker, "--with", shared.customer, "--with", shared.stranger)
    assert f"shares its published builds with {shared.customer}" in again.stdout
    assert f"shares its published builds with {shared.stranger}" in again.stdout
    with fwrepo.client("csms", shared.stranger) as stranger:
        assert _update_check(stranger, shared.vendor)["id"] == shared.build["id"]
    trail = json.loads(fwrepo.cli("audit", "list", "--tenant", shared.customer, "--action", "tenant_share",
                                  "--json").stdout)["items"]
    assert len(trail) == 1


@pytest.mark.parametrize(("arguments", "message"), [
    (["share", "{maker}", "--with", "never-made"], "no tenant named never-made"),
    (["share", "never-made", "--with", "{customer}"], "no tenant named never-made"),
    (["share", "{maker}", "--with", "{maker}"], "with: tenant {maker} cannot share with itself"),
    (["share", "{maker}", "--with", "Not_A-Label"], "tenant: must be 1-63 lowercase letters"),
    (["share", "{maker}"], "the following arguments are required: --with"),
    (["unshare", "{maker}", "--with", "{stranger}"], "tenant {maker} does not share its builds with {stranger}"),
    (["unshare", "{maker}", "--with", "never-made"], "tenant {maker} does not share its builds with never-made"),
])
def test_share_commands_refuse_bad_input_by_name(fwrepo: Fwrepo, shared_by_cli: Shared, arguments: list[str],
                                                 message: str) -> None:
    shared = shared_by_cli
    names = {"maker": shared.maker, "customer": shared.customer, "stranger": shared.stranger}
    result = fwrepo.cli("tenants", *(argument.format(**names) for argument in arguments), check=False)
    assert result.returncode != 0 and message.format(**names) in result.stderr, (result.stdout, result.stderr)


def test_a_disabled_tenant_neither_shares_nor_is_shared_with(fwrepo: Fwrepo, shared: Shared) -> None:
    fwrepo.cli("tenants", "disable", shared.stranger)
    refused = fwrepo.cli("tenants", "share", shared.maker, "--with", shared.stranger, check=False)
    assert refused.returncode != 0
    assert f"tenant {shared.stranger} is disabled: it neither shares nor is shared with" in refused.stderr


def test_on_postgresql_a_receivers_session_reads_the_shared_build_and_cannot_change_it(fwrepo: Fwrepo,
                                                                                     shared: Shared) -> None:
    """Below the application: fwrepo's own database role, naming the receiver, sees the shared published build,
    its models and signature, never the draft, and can neither update nor re-sign it."""
    url = fwrepo.env.get("FWREPO_DATABASE_URL", "")
    if not url.startswith("postgresql"):
        pytest.skip("row-level security is PostgreSQL's; on SQLite the application's filter alone holds")
    import psycopg

    build_id, draft_id = shared.build["id"], shared.draft["id"]
    with psycopg.connect(url) as connection:
        connection.execute("SELECT set_config('fwrepo.tenant', %s, true)", (shared.customer,))
        assert connection.execute("SELECT tenant, status FROM firmware WHERE id IN (%s, %s)", (build_id, draft_id)
                                  ).fetchall() == [(shared.maker, "published")]
        assert connection.execute("SELECT count(*) FROM firmware_model WHERE firmware_id = %s",
                                  (build_id,)).fetchone() == (1,)
        key_id, signature = connection.execute("SELECT key_id, signature FROM firmware_signature WHERE firmware_id = %s",
                                               (build_id,)).fetchone()
        assert connection.execute("UPDATE firmware SET status = 'yanked' WHERE id = %s", (build_id,)).rowcount == 0
        assert connection.execute("DELETE FROM firmware_model WHERE firmware_id = %s", (build_id,)).rowcount == 0
        assert connection.execute("SELECT id FROM firmware WHERE id = %s FOR UPDATE", (build_id,)).fetchall() == []
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            connection.execute("INSERT INTO firmware_signature (firmware_id, key_id, signature, created_at) "
                               "VALUES (%s, %s, %s, now())", (build_id, key_id, signature))
    with psycopg.connect(url) as connection:
        connection.execute("SELECT set_config('fwrepo.tenant', %s, true)", (shared.stranger,))
        assert connection.execute("SELECT count(*) FROM firmware WHERE id = %s", (build_id,)).fetchone() == (0,)
        assert connection.execute("SELECT count(*) FROM firmware_signature WHERE firmware_id = %s",
                                  (build_id,)).fetchone() == (0,)
        # Who shares with whom is for the two tenants of a share (and the platform) alone.
        assert connection.execute("SELECT count(*) FROM tenant_share WHERE source = %s",
                                  (shared.maker,)).fetchone() == (0,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            connection.execute("INSERT INTO tenant_share (source, target, created_at) VALUES (%s, %s, now())",
                               (shared.maker, shared.stranger))
    with psycopg.connect(url) as connection:
        connection.execute("SELECT set_config('fwrepo.tenant', %s, true)", (shared.maker,))
        assert connection.execute("SELECT status FROM firmware WHERE id = %s", (build_id,)).fetchone() == (
            "published",)
