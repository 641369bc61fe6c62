"""API keys and roles, tried the way an attacker would."""

from __future__ import annotations

import sqlite3

import httpx
import pytest

from tests.support.builds import upload
from tests.support.fwrepo import Fwrepo


def test_no_key_is_401_with_a_bearer_challenge(fwrepo: Fwrepo) -> None:
    reply = fwrepo.client(None).get("/api/v1/firmware")
    assert reply.status_code == 401
    assert reply.headers["www-authenticate"].startswith("Bearer")
    assert reply.json()["status"] == 401


@pytest.mark.parametrize(
    "header",
    ["Bearer fwr_forged0000000000000000000000000000000000000", "Bearer", "Basic dXNlcjpwYXNz", "Bearer " + "x" * 5000],
)
def test_forged_or_malformed_keys_are_401(fwrepo: Fwrepo, header: str) -> None:
    assert fwrepo.client(None).get("/api/v1/firmware", headers={"Authorization": header}).status_code == 401


def test_a_revoked_key_stops_working(fwrepo: Fwrepo) -> None:
    key = fwrepo.cli("clients", "create", "--name", "leaving", "--role", "csms").stdout.strip()
    headers = {"Authorization": f"Bearer {key}"}
    assert fwrepo.client(None).get("/api/v1/firmware", headers=headers).status_code == 200
    client_id = next(line.split()[0] for line in fwrepo.cli("clients", "list").stdout.splitlines() if " leaving " in line)
    fwrepo.cli("clients", "revoke", client_id)
    assert fwrepo.client(None).get("/api/v1/firmware", headers=headers).status_code == 401
    listed = next(line for line in fwrepo.cli("clients", "list").stdout.splitlines() if line.startswith(client_id))
    assert not listed.endswith("active")


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/api/v1/firmware"), ("POST", "/api/v1/firmware/{id}/publish"),
     ("POST", "/api/v1/firmware/{id}/yank"), ("GET", "/api/v1/firmware/{id}/content")],
)
def test_the_csms_role_may_not_change_or_download_firmware(
    fwrepo: Fwrepo, csms: httpx.Client, release: httpx.Client, vendor: str, method: str, path: str
) -> None:
    firmware = upload(release, vendor, "1.0.0").json()
    reply = csms.request(method, path.format(id=firmware["id"]), json={"reason": "x"})
    assert reply.status_code == 403
    assert "csms" in reply.json()["detail"]
    assert release.get(f"/api/v1/firmware/{firmware['id']}").json()["status"] == "uploaded"


def test_the_csms_role_reads_the_catalog_and_asks_for_updates(csms: httpx.Client) -> None:
    assert csms.get("/api/v1/firmware").status_code == 200
    assert csms.get("/api/v1/updates", params={"vendor": "x", "model": "y", "current_version": "1"}).status_code == 200


def test_the_admin_role_may_do_everything(fwrepo: Fwrepo, vendor: str) -> None:
    with fwrepo.client("admin") as admin:
        firmware = upload(admin, vendor, "1.0.0").json()
        assert admin.post(f"/api/v1/firmware/{firmware['id']}/publish").status_code == 200
        assert admin.get(f"/api/v1/firmware/{firmware['id']}/content").status_code == 200


def test_clients_create_prints_the_key_alone_and_stores_only_its_hash(fwrepo: Fwrepo) -> None:
    result = fwrepo.cli("clients", "create", "--name", "ci", "--role", "release")
    key = result.stdout.strip()
    assert result.stdout == key + "\n" and key.startswith("fwr_") and len(key) > 40
    assert key not in fwrepo.cli("clients", "list").stdout
    database = fwrepo.env.get("FWREPO_DATABASE_URL", "")
    if database.startswith("sqlite"):
        dump = "\n".join(sqlite3.connect(database.split("///", 1)[1]).iterdump())
        assert key not in dump


def test_clients_create_refuses_an_unknown_role(fwrepo: Fwrepo) -> None:
    result = fwrepo.cli("clients", "create", "--name", "x", "--role", "root", check=False)
    assert result.returncode == 2
    assert "role" in result.stderr


def test_unknown_routes_and_methods_answer_problem_json(fwrepo: Fwrepo) -> None:
    missing = fwrepo.client(None).get("/nothing/here")
    assert missing.status_code == 404 and missing.json()["status"] == 404
    wrong = fwrepo.client(None).delete("/api/v1/firmware")
    assert wrong.status_code == 405 and wrong.json()["status"] == 405


def test_path_traversal_in_an_id_finds_nothing(release: httpx.Client) -> None:
    for firmware_id in ("..%2F..%2Fetc%2Fpasswd", "%2e%2e", "..", "firmware%2F..%2F"):
        reply = release.get(f"/api/v1/firmware/{firmware_id}/content")
        assert reply.status_code == 404, firmware_id
        assert b"root:" not in reply.content
