"""The typed client (repo_service.client) against a real fwrepo, and against scripted failures it must survive."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from repo_service.client import (
    Conflict, DigestMismatch, Forbidden, Fwrepo, Gone, InvalidInput, NotFound, ServiceUnavailable, Unauthorized,
    Unreachable,
)
from repo_service.contract import CampaignReport, Grant
from tests.support.builds import image, unique_vendor
from tests.support.checkout import ROOT
from tests.support.documented import documented_block
from tests.support.fwrepo import Fwrepo as FwrepoServer, free_port
from tests.support.scripted_http import Reply, ScriptedServer, answer, hang_up

HEALTH = json.dumps({"status": "ok", "version": "test"}).encode()
# Each operation of the committed OpenAPI description, and the client's method for it (None: why there is none).
METHODS = {
    "getHealth": Fwrepo.health, "getReadiness": Fwrepo.readiness, "getOpenApi": Fwrepo.openapi,
    "getApiDocs": "a page for people, in a browser", "getMetrics": "for Prometheus, which scrapes it itself",
    "uploadFirmware": Fwrepo.upload, "listFirmware": Fwrepo.list_firmware, "getFirmware": Fwrepo.firmware,
    "publishFirmware": Fwrepo.publish, "yankFirmware": Fwrepo.yank, "getFirmwareManifest": Fwrepo.manifest,
    "getFirmwareContent": Fwrepo.download_firmware, "downloadFirmware": Fwrepo.download,
    "getFirmwareStats": Fwrepo.firmware_stats, "findUpdate": Fwrepo.check_updates,
    "issueGrant": Fwrepo.grant, "issueGrants": Fwrepo.grant_batch, "getGrant": Fwrepo.show_grant,
    "revokeGrant": Fwrepo.revoke_grant, "reportStatusEvent": Fwrepo.report_event,
    "reportStatusEvents": Fwrepo.report_events, "getJob": Fwrepo.job,
    "createCampaign": Fwrepo.create_campaign, "listCampaigns": Fwrepo.campaigns, "getCampaign": Fwrepo.campaign,
    "takeDueGrants": Fwrepo.due_grants, "exportCampaignJobs": Fwrepo.campaign_jobs_csv,
    "pauseCampaign": Fwrepo.pause_campaign, "resumeCampaign": Fwrepo.resume_campaign,
    "cancelCampaign": Fwrepo.cancel_campaign,
    "listSigningKeys": Fwrepo.signing_keys, "listSigners": Fwrepo.signers, "addSigner": Fwrepo.add_signer,
    "removeSigner": Fwrepo.remove_signer, "listAuditEvents": Fwrepo.audit,
    "createWebhook": Fwrepo.create_webhook, "listWebhooks": Fwrepo.webhooks, "getWebhook": Fwrepo.webhook,
    "deleteWebhook": Fwrepo.delete_webhook, "listWebhookDeliveries": Fwrepo.webhook_deliveries,
    "listTenants": Fwrepo.tenants, "createTenant": Fwrepo.create_tenant, "disableTenant": Fwrepo.disable_tenant,
}


def client(server: FwrepoServer, role: str) -> Fwrepo:
    return Fwrepo(server.url, server.key(role), ca_file=server.ca)


def now() -> str:
    return datetime.now(UTC).isoformat()


def test_every_operation_of_the_api_has_a_method() -> None:
    description = json.loads((ROOT / "docs" / "openapi.json").read_text())
    operations = {operation["operationId"] for path in description["paths"].values()
                  for operation in path.values() if isinstance(operation, dict) and "operationId" in operation}
    # HEAD is the GET without its body: the GET's method stands for both.
    assert {name for name in operations if not name.endswith("Head")} == set(METHODS)


def test_a_release_engineer_and_a_csms_do_their_whole_job_through_the_client(fwrepo: FwrepoServer,
                                                                             tmp_path: Path) -> None:
    vendor, content = unique_vendor(), image(1024 * 1024 + 17)
    path = tmp_path / "fw.bin"
    path.write_bytes(content)
    seen: list[tuple[int, int]] = []
    with client(fwrepo, "release") as release, client(fwrepo, "csms") as csms, client(fwrepo, "admin") as admin:
        assert release.health().status == "ok" and release.readiness().status == "ready"
        assert release.openapi()["openapi"].startswith("3.1")
        uploaded = release.upload(path, vendor=vendor, models=["AC22"], version="1.4.0", release_notes="fixes",
                                  progress=lambda sent, total: seen.append((sent, total)))
        build = uploaded.firmware
        assert uploaded.created and build.sha256 == hashlib.sha256(content).hexdigest()
        # Read in blocks, never whole: many calls, each further on, the last at the image's end.
        assert len(seen) > 3 and seen[-1] == (len(content), len(content))
        assert [sent for sent, _ in seen] == sorted(sent for sent, _ in seen)
        again = release.upload(path, vendor=vendor, models=["AC22"], version="1.4.0", release_notes="fixes")
        assert (again.created, again.firmware.id) == (False, build.id)

        assert [item.id for item in release.list_firmware(vendor=vendor).items] == [build.id]
        assert release.firmware(build.id).status == "uploaded"
        assert release.publish(build.id).status == "published"
        assert release.manifest(build.id).manifest.sha256 == build.sha256
        offer = csms.check_updates(vendor=vendor, model="AC22", current_version="1.3.0")
        assert offer.update is not None and offer.update.id == build.id
        assert release.signing_keys().items

        # A download that an earlier run left half done goes on from there.
        target = tmp_path / "copy.bin"
        (tmp_path / "copy.bin.part").write_bytes(content[:400_000])
        received: list[int] = []
        release.download_firmware(release.firmware(build.id), target, progress=lambda done, _: received.append(done))
        assert target.read_bytes() == content and not (tmp_path / "copy.bin.part").exists()
        assert received[0] > 400_000

        grant = csms.grant(build.id, "CP-1")
        assert isinstance(grant, Grant) and grant.ocpp.update_firmware.location == grant.location
        assert grant.location_fits.ocpp_1_6 and grant.location_fits.ocpp_2_0_1
        assert grant.ocpp.publish_firmware_v201 is not None
        assert grant.ocpp.publish_firmware_v201.checksum == build.md5 == hashlib.md5(content).hexdigest()
        csms.download(grant.location, tmp_path / "charger.bin", sha256=build.sha256)
        assert (tmp_path / "charger.bin").read_bytes() == content
        recorded = csms.report_event(grant.id, "Downloaded", now(), status_info={"reason_code": "Resumed"})
        assert not recorded.duplicate and recorded.job.state in ("downloaded", "installing", "downloading")
        assert recorded.job.events[-1].status_info.reason_code == "Resumed"
        assert csms.report_events([{"request_id": grant.id, "status": "Installed", "timestamp": now()}]).accepted == 1
        assert [event.status for event in csms.job(grant.id).events][-1] == "Installed"
        assert csms.show_grant(grant.id).downloads[0].completed
        batch = csms.grant_batch(build.id, ["CP-2", "CP-3"])
        assert batch.count == 2 and {item.charger_id for item in batch.grants} == {"CP-2", "CP-3"}
        assert csms.revoke_grant(batch.grants[0].id).revoked_at is not None

        campaign = csms.create_campaign(build.id, [
            {"charger_id": "CP-10", "current_version": "1.3.0", "model": "AC22"},
            {"charger_id": "CP-11", "current_version": "1.3.0", "model": "AC22"},
        ], waves=["50%", "100%"])
        assert isinstance(campaign, CampaignReport) and campaign.chargers == 2
        assert campaign.id in [item.id for item in csms.campaigns().items]
        due = csms.due_grants(campaign.id)
        assert len(due.grants) == 1 and csms.due_grants(campaign.id).grants == []
        rows = list(csv.DictReader(io.StringIO(csms.campaign_jobs_csv(campaign.id))))
        assert {row["charger_id"] for row in rows} == {"CP-10", "CP-11"}
        assert csms.pause_campaign(campaign.id).status == "paused"
        assert csms.resume_campaign(campaign.id).status == "running"
        assert csms.cancel_campaign(campaign.id).status == "cancelled"
        assert csms.campaign(campaign.id).status == "cancelled"
        assert csms.firmware_stats(build.id).campaigns == 1

        public_key = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        signer = admin.add_signer(f"ci-{vendor}", public_key)
        assert signer.id in [item.id for item in admin.signers().items]
        admin.remove_signer(signer.id)
        assert signer.id not in [item.id for item in admin.signers().items]
        assert release.yank(build.id, "bricks AC22 rev B").yank_reason == "bricks AC22 rev B"
        assert admin.audit(subject=f"firmware {build.id}", action="yank").total == 1


def test_a_csms_registers_reads_and_deletes_a_webhook_through_the_client(fwrepo: FwrepoServer) -> None:
    # A .invalid host: registered like any public name, and nothing it takes is ever due in this test.
    url = f"https://{unique_vendor().lower()}.invalid/hooks/fwrepo"
    with client(fwrepo, "csms") as csms:
        webhook = csms.create_webhook(url, ["job.finished"], "s" * 32)
        assert (webhook.url, webhook.events, webhook.deleted_at) == (url, ["job.finished"], None)
        assert webhook.id in {listed.id for listed in csms.webhooks().items}
        assert csms.webhook(webhook.id) == webhook
        assert csms.webhook_deliveries(webhook.id, limit=5).items == []
        assert csms.delete_webhook(webhook.id).deleted_at is not None
        assert webhook.id not in {listed.id for listed in csms.webhooks().items}
        with pytest.raises(InvalidInput) as refused:
            csms.create_webhook(url, ["job.finished"], "short")
        assert refused.value.field == "secret"


def test_the_documented_example_runs_as_written(fwrepo: FwrepoServer, tmp_path: Path) -> None:
    content = image(300_000)
    (tmp_path / "fw.bin").write_bytes(content)
    environment = {**os.environ, "FWREPO_URL": fwrepo.url, "FWREPO_KEY": fwrepo.key("admin"),
                   "FWREPO_CACERT": fwrepo.ca}
    result = subprocess.run([sys.executable, "-c", documented_block("client.md", "client example", "python")],
                            cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"sent all {len(content)} bytes"
    assert lines[1].startswith(f"UpdateFirmware location: {fwrepo.url}/d/")
    assert lines[2].startswith("refused: charger_id: ")
    assert (tmp_path / "fw-copy.bin").read_bytes() == content


def test_refusals_are_raised_as_their_own_exceptions_with_the_problem_document(fwrepo: FwrepoServer,
                                                                              tmp_path: Path) -> None:
    path = tmp_path / "fw.bin"
    path.write_bytes(image(10_000))
    vendor = unique_vendor()
    with client(fwrepo, "release") as release, client(fwrepo, "csms") as csms:
        with pytest.raises(Unauthorized) as unauthorized:
            Fwrepo(fwrepo.url, "fwr_not-a-key", ca_file=fwrepo.ca).list_firmware()
        assert unauthorized.value.status == 401
        with pytest.raises(Forbidden):
            csms.upload(path, vendor=vendor, models=["AC22"], version="1.0.0")
        with pytest.raises(NotFound) as not_found:
            release.firmware("0" * 16)
        assert str(not_found.value).startswith("404 Not found: ")
        build = release.upload(path, vendor=vendor, models=["AC22"], version="1.0.0").firmware
        path.write_bytes(image(10_000))
        with pytest.raises(Conflict):
            release.upload(path, vendor=vendor, models=["AC22"], version="1.0.0")
        with pytest.raises(InvalidInput) as invalid:
            release.list_firmware(status="shipped")
        assert (invalid.value.status, invalid.value.field) == (422, "status")
        release.publish(build.id)
        grant = csms.grant(build.id, "CP-1")
        csms.revoke_grant(grant.id)
        with pytest.raises(Gone):
            csms.download(grant.location, tmp_path / "gone.bin")
        assert not (tmp_path / "gone.bin").exists()


def test_an_idempotent_call_is_retried_after_a_503_waiting_as_long_as_retry_after_says() -> None:
    waits: list[float] = []
    with ScriptedServer(answer(503, b"{}", headers={"Retry-After": "7"}), answer(200, HEALTH)) as server:
        assert Fwrepo(server.url, sleep=waits.append).health().version == "test"
    assert waits == [7.0] and len(server.requests) == 2


def test_an_idempotent_call_is_retried_until_the_server_accepts_connections() -> None:
    port = free_port()
    started: list[ScriptedServer] = []
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 2:  # refused twice; the server listens from now on
            started.append(ScriptedServer(answer(200, HEALTH), port=port).__enter__())

    try:
        with Fwrepo(f"http://127.0.0.1:{port}", sleep=sleep, backoff=1) as fwrepo:
            assert fwrepo.health().status == "ok"
    finally:
        for server in started:
            server.__exit__(None, None, None)
    # Backoff doubles, with jitter of up to half.
    assert len(waits) == 2 and 0.5 <= waits[0] <= 1 and 1 <= waits[1] <= 2


def test_retries_give_up_with_the_last_answer() -> None:
    with ScriptedServer(*[answer(503, b"{}")] * 3) as server:
        with pytest.raises(ServiceUnavailable):
            Fwrepo(server.url, retries=2, sleep=lambda _: None).health()
    assert len(server.requests) == 3


@pytest.mark.parametrize(("failure", "raised"), [(answer(503, b"{}"), ServiceUnavailable), (hang_up, Unreachable)],
                         ids=["503", "hang-up"])
@pytest.mark.parametrize("call", [
    lambda fwrepo: fwrepo.grant("f" * 16, "CP-1"),
    lambda fwrepo: fwrepo.create_campaign("f" * 16, [{"charger_id": "CP-1", "current_version": "1.0"}]),
    # A GET, but each due grant is handed out once: a lost reply must not be asked for again.
    lambda fwrepo: fwrepo.due_grants("c" * 16),
], ids=["grant", "campaign", "due-grants"])
def test_a_call_that_acts_is_never_sent_again_once_it_reached_the_server(
        failure: Reply, raised: type[Exception], call: Callable[[Fwrepo], object]) -> None:
    with ScriptedServer(failure, answer(201, b"{}")) as server, Fwrepo(server.url, "key", sleep=print) as fwrepo:
        with pytest.raises(raised):
            call(fwrepo)
    assert len(server.requests) == 1


def test_status_events_are_resent_after_a_lost_reply_since_fwrepo_keeps_each_once() -> None:
    recorded = json.dumps({"accepted": 1, "duplicates": 0}).encode()
    with ScriptedServer(hang_up, answer(200, recorded)) as server:
        events = [{"request_id": 1, "status": "Downloading", "timestamp": now()}]
        assert Fwrepo(server.url, "key", sleep=lambda _: None).report_events(events).accepted == 1
    assert len(server.requests) == 2


def test_a_download_dropped_mid_image_resumes_with_range_and_if_range(tmp_path: Path) -> None:
    content = image(200_000)
    digest = hashlib.sha256(content).hexdigest()
    etag = {"ETag": f'"{digest}"'}

    def dropped(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(content)))
        handler.send_header("ETag", etag["ETag"])
        handler.end_headers()
        handler.wfile.write(content[:70_000])
        handler.close_connection = True

    def rest(handler: BaseHTTPRequestHandler) -> None:
        start = int(handler.headers["Range"].removeprefix("bytes=").rstrip("-"))
        answer(206, content[start:], "application/octet-stream",
               {"Content-Range": f"bytes {start}-{len(content) - 1}/{len(content)}", **etag})(handler)

    with ScriptedServer(dropped, rest) as server, Fwrepo(server.url, sleep=lambda _: None) as fwrepo:
        fwrepo.download("/d/token/fw.bin", tmp_path / "fw.bin")
    assert (tmp_path / "fw.bin").read_bytes() == content
    resumed = server.requests[1][2]
    # Every byte that arrived before the drop was kept.
    assert (resumed["Range"], resumed["If-Range"]) == ("bytes=70000-", f'"{digest}"')


def test_a_download_sent_on_to_storage_follows_without_the_api_key_or_storage_s_etag(tmp_path: Path) -> None:
    content = image(50_000)
    md5 = {"ETag": f'"{hashlib.md5(content).hexdigest()}"'}  # what S3 calls an ETag: not the SHA-256
    with ScriptedServer(answer(200, content, "application/octet-stream", md5)) as storage:
        redirect = answer(302, headers={"Location": f"{storage.url}/bucket/fw.bin?X-Amz-Signature=x"})
        with ScriptedServer(redirect) as server, Fwrepo(server.url, "key") as fwrepo:
            fwrepo.download("/d/token/fw.bin", tmp_path / "fw.bin")
    assert (tmp_path / "fw.bin").read_bytes() == content
    assert "Authorization" not in storage.requests[0][2]


def test_a_download_whose_bytes_are_not_the_image_is_not_kept(tmp_path: Path) -> None:
    with ScriptedServer(answer(200, b"not the image", "application/octet-stream")) as server:
        with pytest.raises(DigestMismatch):
            Fwrepo(server.url).download("/d/token/fw.bin", tmp_path / "fw.bin", sha256="0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_a_location_on_another_server_never_gets_the_api_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Fwrepo("https://fwrepo.example", "key").download("https://elsewhere.example/d/x/fw.bin", tmp_path / "x")
