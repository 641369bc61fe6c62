"""The audit trail: every security-relevant act once, hash-chained, and tampering named by `fwrepo audit verify`."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import delete, update
from sqlmodel import col, select

from repo_service.db.migrate import upgrade
from repo_service.db.models import AuditEvent
from repo_service.db.session import Database
from repo_service.domain.audit import Audit, Performer
from tests.support.builds import image
from tests.support.fwrepo import FWREPO, Fwrepo
from tests.support.grants import grant_for


@pytest.fixture
def audit(fresh_database_url: str) -> Iterator[Audit]:
    database = Database(fresh_database_url.replace("postgresql://", "postgresql+psycopg://"))
    upgrade(database)
    yield Audit(database)
    database.dispose()


def written(audit: Audit, count: int) -> None:
    for n in range(count):
        audit.record(Performer("cli tester@host"), "key_rotate", f"signing key k{n}", n=n)


def test_an_untouched_chain_verifies(audit: Audit) -> None:
    written(audit, 12)
    assert audit.verify() == (12, None)


def test_an_edited_row_is_named(audit: Audit) -> None:
    written(audit, 10)
    with audit.database.session() as session:
        session.execute(update(AuditEvent).where(AuditEvent.seq == 4).values(detail='{"n": 400}'))
    _, broken = audit.verify()
    assert broken is not None and broken.seq == 4 and "changed" in broken.reason


def test_a_removed_row_is_named(audit: Audit) -> None:
    written(audit, 10)
    with audit.database.session() as session:
        session.execute(delete(AuditEvent).where(AuditEvent.seq == 6))
    _, broken = audit.verify()
    assert broken is not None and broken.seq == 6 and "missing" in broken.reason


def test_reordered_rows_are_named(audit: Audit) -> None:
    written(audit, 10)
    with audit.database.session() as session:
        rows = {row.seq: row for row in session.exec(select(AuditEvent).where(col(AuditEvent.seq).in_([3, 7]))).all()}
        fields = ("at", "actor", "action", "subject", "detail", "prev_hash", "hash")
        third, seventh = ({name: getattr(rows[seq], name) for name in fields} for seq in (3, 7))
        session.execute(update(AuditEvent).where(AuditEvent.seq == 3).values(**seventh))
        session.execute(update(AuditEvent).where(AuditEvent.seq == 7).values(**third))
    _, broken = audit.verify()
    assert broken is not None and broken.seq == 3


def test_concurrent_writers_on_two_nodes_make_one_chain(audit: Audit) -> None:
    other = Audit(Database(audit.database.url))  # a second node: its own engine and connections

    def write(node: Audit, name: str) -> None:
        for n in range(40):
            node.record(Performer(f"node {name}"), "grant", f"grant {n}")

    threads = [threading.Thread(target=write, args=(node, name)) for node, name in ((audit, "a"), (other, "b"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert audit.verify() == (80, None)
    other.database.dispose()


def test_the_cli_says_whether_the_chain_holds(tmp_path: Path) -> None:
    import subprocess

    url = f"sqlite:///{tmp_path / 'fwrepo.sqlite3'}"
    database = Database(url)
    upgrade(database)
    chain = Audit(database)
    written(chain, 5)
    command = [FWREPO, "audit", "verify", "--data-dir", str(tmp_path), "--database-url", url]
    intact = subprocess.run(command, capture_output=True, text=True)
    assert (intact.returncode, intact.stdout.strip()) == (0, "audit chain intact: 5 events")
    with database.session() as session:
        session.execute(update(AuditEvent).where(AuditEvent.seq == 2).values(actor="someone else"))
    broken = subprocess.run(command, capture_output=True, text=True)
    assert broken.returncode == 1 and "BROKEN at row 2: row 2 was changed" in broken.stderr


def test_security_relevant_acts_land_on_the_trail_and_only_admins_read_it(fwrepo: Fwrepo) -> None:
    firmware, grant = grant_for(fwrepo, image(2000))
    token = grant["location"].rsplit("/", 2)[1]
    with fwrepo.client(None) as charger:
        charger.get(grant["location"]).raise_for_status()
        assert charger.get(grant["location"].replace(token, "y" * 34)).status_code == 404
    with fwrepo.client("csms") as csms:
        csms.delete(f"/api/v1/grants/{grant['id']}").raise_for_status()
        assert csms.get("/api/v1/audit").status_code == 403
    with fwrepo.client("admin") as admin:
        def acts(**filters: str) -> list[dict]:
            return admin.get("/api/v1/audit", params={"limit": 1000, **filters}).json()["items"]

        # each act once, written by the domain act itself (adapters write none: see test_architecture)
        assert [event["action"] for event in acts(subject=f"firmware {firmware['id']}")] == ["publish", "upload"]
        assert [event["action"] for event in acts(subject=f"grant {grant['id']}")
                if event["action"] in ("grant", "revoke")] == ["revoke", "grant"]
        assert any(event["action"] == "client_create" for event in acts())
        downloads = [event for event in acts(subject=f"grant {grant['id']}") if event["action"] == "download"]
        assert downloads and downloads[0]["detail"]["completed"] is True
        assert any(event["detail"]["reason"] == "forged" for event in acts(action="refusal"))
        assert token not in str(acts())


def test_yanks_campaigns_and_signers_are_each_audited_once_and_a_repeated_revoke_adds_nothing(fwrepo: Fwrepo) -> None:
    firmware, grant = grant_for(fwrepo, image(2000))
    signer_key = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    with fwrepo.client("csms") as csms, fwrepo.client("release") as release, fwrepo.client("admin") as admin:
        campaign = csms.post("/api/v1/campaigns", json={"firmware_id": firmware["id"], "chargers": [
            {"charger_id": "CP-A1", "current_version": "0.9"}]}).json()
        csms.post(f"/api/v1/campaigns/{campaign['id']}/cancel").raise_for_status()
        for _ in range(2):
            csms.delete(f"/api/v1/grants/{grant['id']}").raise_for_status()
        release.post(f"/api/v1/firmware/{firmware['id']}/yank", json={"reason": "bricks rev B"}).raise_for_status()
        signer = admin.post("/api/v1/signers", json={"name": "alice", "public_key": signer_key}).json()
        admin.delete(f"/api/v1/signers/{signer['id']}").raise_for_status()
        events = admin.get("/api/v1/audit", params={"limit": 1000}).json()["items"]
    acts = [(event["action"], event["subject"]) for event in events]
    for act in [("campaign", f"campaign {campaign['id']}"), ("campaign_cancel", f"campaign {campaign['id']}"),
                ("revoke", f"grant {grant['id']}"), ("yank", f"firmware {firmware['id']}"),
                ("signer_add", f"signer {signer['id']}"), ("signer_remove", f"signer {signer['id']}")]:
        assert acts.count(act) == 1, (act, acts)
