"""The audit trail: every security-relevant act once, hash-chained, and tampering named by `fwrepo audit verify`.

Someone with write access to the database can rewrite rows and recompute every later hash, or cut rows off
the end; signed checkpoints of the chain's head, kept outside the database, make both show.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import delete, update
from sqlmodel import col, select

from repo_service.db.migrate import upgrade
from repo_service.db.models import AuditCheckpoint, AuditEvent
from repo_service.db.session import Database
from repo_service.domain.audit import Audit, Performer, row_hash
from repo_service.domain.audit_checkpoints import CheckpointWriter, open_checkpoint_key
from repo_service.domain.clock import rfc3339, utc_now
from tests.support.builds import image
from tests.support.cli_process import run_fwrepo
from tests.support.databases import scratch_postgres
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
    url = f"sqlite:///{tmp_path / 'fwrepo.sqlite3'}"
    database = Database(url)
    upgrade(database)
    chain = Audit(database)
    written(chain, 5)
    command = [FWREPO, "audit", "verify", "--data-dir", str(tmp_path), "--database-url", url]
    intact = subprocess.run(command, capture_output=True, text=True)
    assert intact.returncode == 0 and intact.stdout.splitlines() == [
        "audit chain intact: 5 events",
        "no checkpoints yet: a rewrite that recomputes the hashes, or rows cut from the end, would not show"]
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


def test_a_chargers_firmware_security_events_are_audited_once_each_with_charger_grant_and_firmware(
        fwrepo: Fwrepo) -> None:
    firmware, grant = grant_for(fwrepo, image(2000))
    moment = utc_now() - timedelta(seconds=30)

    def event(status: str, seconds: int, **fields: object) -> dict:
        return {"grant_id": grant["id"], "status": status, "timestamp": rfc3339(moment + timedelta(seconds=seconds)),
                **fields}

    alarm = event("InvalidFirmwareSignature", 1, info="signature does not verify")
    with fwrepo.client("csms") as csms, fwrepo.client("admin") as admin:
        one = {key: value for key, value in alarm.items() if key != "grant_id"}
        for _ in range(2):  # the CSMS retrying its forward: one event, one audit record
            csms.post(f"/api/v1/grants/{grant['id']}/events", json=one).raise_for_status()
        bulk = csms.post("/api/v1/events", json={"events": [
            event("Downloading", 0), alarm, event("InvalidFirmwareSigningCertificate", 2), event("Installing", 3),
            event("FirmwareUpdated", 4)]}).json()
        assert bulk == {"accepted": 4, "duplicates": 1}
        csms.post("/api/v1/events", json={"events": [event("FirmwareUpdated", 4)]}).raise_for_status()
        audited = admin.get("/api/v1/audit", params={"action": "security_event",
                                                     "subject": f"grant {grant['id']}"}).json()["items"]
        job = csms.get(f"/api/v1/grants/{grant['id']}/job").json()
    assert sorted(record["detail"]["event"] for record in audited) == [
        "FirmwareUpdated", "InvalidFirmwareSignature", "InvalidFirmwareSigningCertificate"]
    for record in audited:
        assert record["actor"].startswith("client ") and record["actor"].endswith("(test-csms)")  # who reported it
        assert (record["detail"]["charger"], record["detail"]["firmware"]) == ("CP-7", firmware["id"])
    signature = next(record for record in audited if record["detail"]["event"] == "InvalidFirmwareSignature")
    assert signature["detail"]["info"] == "signature does not verify"
    assert signature["detail"]["timestamp"] == alarm["timestamp"]
    assert [entry["status"] for entry in job["events"]] == [
        "Downloading", "InvalidFirmwareSignature", "InvalidFirmwareSigningCertificate", "Installing",
        "FirmwareUpdated"]
    listed = subprocess.run([FWREPO, "audit", "list", "--action", "security_event", "--subject", f"grant {grant['id']}",
                             "--json"], env=fwrepo.env, capture_output=True, text=True, check=False)
    assert listed.returncode == 0, listed.stderr
    assert [record["detail"]["event"] for record in json.loads(listed.stdout)["items"]] == [
        record["detail"]["event"] for record in audited]


# -- signed checkpoints: rewrites and truncations --------------------------------------------


@pytest.fixture
def trail(audit: Audit, tmp_path: Path) -> Iterator[Trail]:
    yield Trail(audit, tmp_path)


class Trail:
    """A chain with a checkpoint writer as a serving node has one, and `fwrepo audit verify` run on it."""

    def __init__(self, audit: Audit, place: Path) -> None:
        self.audit, self.place = audit, place
        self.key_path = place / "keys" / "audit_key.pem"
        self.log = place / "audit_checkpoints.log"
        self.writer = CheckpointWriter(audit.database, open_checkpoint_key(self.key_path), self.log, 60)

    def verify(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        # A process of its own, forked with fwrepo imported (tests/support/cli_process.py); the console script
        # itself runs `audit verify` in test_the_cli_says_whether_the_chain_holds.
        return run_fwrepo(FWREPO, ["audit", "verify", "--data-dir", str(self.place),
                                   "--database-url", self.audit.database.url,
                                   "--keys-dir", str(self.place / "keys"), *arguments], os.environ, timeout=120)

    def rewrite(self, seq: int, detail: str) -> None:
        """The attack as found: change row seq, then recompute its hash and every later one."""
        with self.audit.database.session() as session:
            rows = session.exec(select(AuditEvent).where(col(AuditEvent.seq) >= seq).order_by(col(AuditEvent.seq))).all()
            previous = rows[0].prev_hash
            rows[0].detail = detail
            for row in rows:
                row.prev_hash = previous
                row.hash = row_hash(row.seq, row.at, row.actor, row.action, row.subject, row.detail, previous)
                previous = row.hash
                session.add(row)

    def cut(self, after: int) -> None:
        with self.audit.database.session() as session:
            session.execute(delete(AuditEvent).where(col(AuditEvent.seq) > after))


def test_an_untouched_chain_with_checkpoints_verifies(trail: Trail) -> None:
    written(trail.audit, 5)
    trail.writer.write("periodic")
    written(trail.audit, 5)
    trail.writer.write("periodic")
    written(trail.audit, 2)
    with open(trail.log, "a") as log:
        log.write('{"seq": 12, "hash": "torn by a cr')  # a crash mid-line spoils that line only
    trail.writer.write("shutdown")
    result = trail.verify()
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "audit chain intact: 12 events"
    assert lines[1].startswith(f"checkpoints signed and matching: 3 in the database, 3 in {trail.log}; the newest, ")
    assert "(shutdown, " in lines[1] and lines[1].endswith("covers rows 1-12")
    assert lines[2].startswith("unprotected: the 0 rows after it; ") and "at most the last 60 s of events" in lines[2]
    assert "1 lines hold no checkpoint" in result.stderr


def test_an_edited_row_with_every_later_hash_recomputed_is_detected(trail: Trail) -> None:
    written(trail.audit, 6)
    trail.writer.write("periodic")
    written(trail.audit, 4)
    trail.writer.write("periodic")
    trail.rewrite(8, '{"n": 700}')
    assert trail.audit.verify() == (10, None)  # the chain alone holds: this is what passed before
    result = trail.verify()
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("audit chain BROKEN at row 10: row 10 is not the row the checkpoint of ")
    # the checkpoint of row 6 still matches, so the rewrite is placed after it
    assert result.stderr.strip().endswith("signed: a row of 7-10 was rewritten, and every later hash recomputed")
    # A node still serving signs the rewritten head next: the two checkpoints of row 10 then disagree.
    trail.writer.write("periodic")
    result = trail.verify()
    assert result.returncode == 1 and result.stderr.startswith("audit chain BROKEN at row 10: the checkpoints of ")
    assert result.stderr.strip().endswith("sign different hashes for row 10: the chain was rewritten between them")


def test_deleting_the_newest_rows_after_a_checkpoint_covering_them_is_detected(trail: Trail) -> None:
    written(trail.audit, 10)
    trail.writer.write("periodic")
    trail.cut(after=7)
    assert trail.audit.verify() == (7, None)  # what passed before
    result = trail.verify()
    assert result.returncode == 1
    assert result.stderr.startswith("audit chain BROKEN at row 8: the chain ends at row 7, but the checkpoint of ")
    assert result.stderr.strip().endswith("signed row 10: rows from 8 on were removed from its end")


def test_deleting_the_checkpoints_from_the_database_too_hides_nothing_while_the_log_remains(trail: Trail) -> None:
    written(trail.audit, 10)
    trail.writer.write("periodic")
    trail.cut(after=4)
    with trail.audit.database.session() as session:
        session.execute(delete(AuditCheckpoint))
    result = trail.verify()
    assert result.returncode == 1 and "rows from 5 on were removed from its end" in result.stderr


def test_a_checkpoint_signed_with_another_key_is_forged(trail: Trail, tmp_path: Path) -> None:
    written(trail.audit, 10)
    trail.writer.write("periodic")
    trail.cut(after=7)
    # The attacker covers the cut with a checkpoint of its own, and removes the true one from the database.
    impostor = CheckpointWriter(trail.audit.database, Ed25519PrivateKey.generate(), tmp_path / "impostor.log", 60)
    with trail.audit.database.session() as session:
        session.execute(delete(AuditCheckpoint))
    [forged] = impostor.write("periodic")
    result = trail.verify("--checkpoints", str(tmp_path / "impostor.log"))
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"audit chain BROKEN at row 7: the checkpoint of {rfc3339(forged.at)} for row 7 is signed by "
        f"key {forged.key_id}, not the audit key: it is forged (or give that key's public half with --public-key)")


def test_a_checkpoint_altered_after_signing_is_forged(trail: Trail) -> None:
    written(trail.audit, 10)
    trail.writer.write("periodic")
    trail.cut(after=7)
    with trail.audit.database.session() as session:
        last = session.exec(select(AuditEvent).where(AuditEvent.seq == 7)).one()
        session.execute(update(AuditCheckpoint).values(seq=7, hash=last.hash))  # the true signature, kept
    lines = [json.loads(line) for line in trail.log.read_text().splitlines()]
    trail.log.write_text("".join(json.dumps({**line, "seq": 7, "hash": last.hash}) + "\n" for line in lines))
    result = trail.verify()
    assert result.returncode == 1 and "for row 7 has a bad signature: it is forged" in result.stderr


def test_rows_after_the_newest_checkpoint_are_named_as_unprotected(trail: Trail) -> None:
    # The limit, stated rather than hidden: what came after the newest checkpoint can be cut unseen.
    written(trail.audit, 4)
    trail.writer.write("periodic")
    written(trail.audit, 3)
    result = trail.verify()
    assert result.returncode == 0
    assert result.stdout.splitlines()[2].startswith("unprotected: the 3 rows after it; ")
    trail.cut(after=5)
    assert trail.verify().returncode == 0


def test_verify_needs_only_the_public_key_and_the_log(trail: Trail, tmp_path: Path) -> None:
    written(trail.audit, 6)
    trail.writer.write("periodic")
    offline = tmp_path / "auditor"
    offline.mkdir()
    public = shutil.copy(trail.key_path.with_name("audit_key.pub.pem"), offline / "audit.pub.pem")
    log = shutil.copy(trail.log, offline / "node-a.log")
    trail.key_path.unlink()
    with trail.audit.database.session() as session:
        session.execute(delete(AuditCheckpoint))
    assert trail.verify("--public-key", str(public), "--checkpoints", str(log)).returncode == 0
    trail.cut(after=3)
    result = trail.verify("--public-key", str(public), "--checkpoints", str(log))
    assert result.returncode == 1 and "rows from 4 on were removed" in result.stderr
    # Without a key to check with, verify says so rather than trusting the checkpoints.
    missing = trail.verify("--checkpoints", str(log))
    assert missing.returncode == 1 and "give its public half with --public-key FILE" in missing.stderr


def test_a_stopped_checkpoint_writer_fails_verify_with_max_age(trail: Trail) -> None:
    # A lease held forever through the database stops the writer: the checkpoints' age shows it.
    hour_ago = CheckpointWriter(trail.audit.database, open_checkpoint_key(trail.key_path), trail.log, 60,
                                clock=lambda: utc_now() - timedelta(hours=1))
    written(trail.audit, 3)
    hour_ago.write("periodic")
    assert trail.verify("--max-age", "7200").returncode == 0
    stale = trail.verify("--max-age", "120")
    assert stale.returncode == 1 and re.match(r"audit checkpoints STALE: the newest is 36\d\d s old, more than "
                                              r"--max-age 120: no node is writing them", stale.stderr)


def test_a_node_with_another_key_says_so_at_start(trail: Trail, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    trail.writer.write("periodic")
    stranger = CheckpointWriter(trail.audit.database, Ed25519PrivateKey.generate(), tmp_path / "b.log", 60)
    with caplog.at_level("WARNING"), stranger.writing():
        pass
    assert f"the newest audit checkpoint is signed with key {trail.writer.key_id}, this node's key " in caplog.text
    assert trail.verify().returncode == 1  # and verify calls its shutdown checkpoint forged


@pytest.fixture
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    yield from scratch_postgres(postgres_server_url)


def test_two_serving_nodes_sign_one_checkpoint_per_interval_and_each_one_at_shutdown(
    postgres_url: str, tmp_path: Path,
) -> None:
    shared = {"FWREPO_DATABASE_URL": postgres_url, "FWREPO_KEYS_DIR": str(tmp_path / "keys"),
              "FWREPO_AUDIT_CHECKPOINT_INTERVAL": "1", "FWREPO_SHUTDOWN_GRACE": "1", "FWREPO_LOG_FORMAT": "json"}
    nodes = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        nodes.append(Fwrepo(data_dir=tmp_path / name, environment=shared))
    try:
        for node in nodes:
            node.start()
        nodes[0].key("admin")  # an act on the trail while both serve
        time.sleep(5)
    finally:
        for node in nodes:
            node.stop()
    database = Database(postgres_url.replace("postgresql://", "postgresql+psycopg://"))
    with database.session() as session:
        checkpoints = session.exec(select(AuditCheckpoint).order_by(col(AuditCheckpoint.id))).all()
    database.dispose()
    reasons = [checkpoint.reason for checkpoint in checkpoints]
    periodic = [checkpoint.at for checkpoint in checkpoints if checkpoint.reason == "periodic"]
    # One node per round (a lease): a second apart at least, so never two in one second, as two unleased
    # writers would make every second; and no round missed while both served.
    assert periodic == sorted(set(periodic)), reasons
    assert len(periodic) >= 4, reasons
    assert reasons.count("shutdown") == 2
    logs = [node.data_dir / "audit_checkpoints.log" for node in nodes]
    assert sum(len(log.read_text().splitlines()) for log in logs) == len(reasons)
    # Offline, from each node's own log and then from a copy of its process log (JSON lines).
    public = tmp_path / "keys" / "audit_key.pub.pem"
    for sources in (logs, [node.data_dir / "serve.log" for node in nodes]):
        result = nodes[0].cli("audit", "verify", "--public-key", str(public),
                              *(argument for log in sources for argument in ("--checkpoints", str(log))))
        assert "checkpoints signed and matching: " in result.stdout
