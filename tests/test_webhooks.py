"""Webhooks: signed pushes of what a CSMS would poll for, retried, cut at a deadline, sent once across nodes."""

from __future__ import annotations

import asyncio
import secrets
import ssl
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from tests.support.builds import image, published_build, unique_vendor
from tests.support.databases import scratch_postgres
from tests.support.examples import ocpp_example
from tests.support.fwrepo import Fwrepo, start_fwrepo, two_nodes
from tests.support.webhooks import REPLAY_WINDOW, Receiver, receiver_tls, running_receiver, verify

# Short waits so that the file runs in seconds: two attempts of at most 2 s, the second 1 s after the first.
FAST_WEBHOOKS = {
    "FWREPO_WEBHOOK_INTERVAL": "1", "FWREPO_WEBHOOK_RETRY_BASE": "1", "FWREPO_WEBHOOK_TIMEOUT": "2",
    "FWREPO_WEBHOOK_MAX_ATTEMPTS": "2", "FWREPO_SHUTDOWN_GRACE": "1",
}
# The receivers run on this machine: only the test harness lets webhooks reach loopback.
LOOPBACK_ALLOWED = {**FAST_WEBHOOKS, "FWREPO_WEBHOOK_ALLOW_PRIVATE": "true"}


@pytest.fixture(scope="module")
def receiver_pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ssl.SSLContext, ssl.SSLContext]:
    return receiver_tls(tmp_path_factory.mktemp("receiver-pki"))


@pytest.fixture(scope="module")
def hooked(tmp_path_factory: pytest.TempPathFactory,
           receiver_pki: tuple[Path, ssl.SSLContext, ssl.SSLContext]) -> Iterator[Fwrepo]:
    """fwrepo of this module alone: its webhooks take due grants, which other tests' polls must keep."""
    server = start_fwrepo(tmp_path_factory.mktemp("webhooks"), **LOOPBACK_ALLOWED,
                          FWREPO_WEBHOOK_CA=str(receiver_pki[0]))
    yield server
    server.stop()


@pytest.fixture
def csms(hooked: Fwrepo) -> Iterator[httpx.Client]:
    with hooked.client("csms") as client:
        yield client
        for webhook in client.get("/api/v1/webhooks").json()["items"]:  # each test starts with none
            client.delete(f"/api/v1/webhooks/{webhook['id']}")


def register(csms: httpx.Client, receiver: Receiver, *events: str, secret: str | None = None) -> dict:
    reply = csms.post("/api/v1/webhooks", json={"url": receiver.url, "events": list(events),
                                                "secret": secret or secrets.token_hex(32)})
    assert reply.status_code == 201, reply.text
    return reply.json()


def campaign(fwrepo: Fwrepo, csms: httpx.Client, chargers: int = 1, **fields: object) -> dict:
    with fwrepo.client("release") as release:
        build = published_build(release, unique_vendor(), "2.0.0", image(5_000))
    reply = csms.post("/api/v1/campaigns", json={
        "firmware_id": build["id"], **fields,
        "chargers": [{"charger_id": f"CP-{n}", "current_version": "1.0.0"} for n in range(chargers)]})
    assert reply.status_code == 201, reply.text
    return reply.json()


def delivery_log(csms: httpx.Client, webhook: dict, until: object = None, seconds: float = 15) -> list[dict]:
    """The webhook's deliveries, once `until(deliveries)` holds."""
    deadline = time.monotonic() + seconds
    while True:
        items = csms.get(f"/api/v1/webhooks/{webhook['id']}/deliveries").json()["items"]
        if until is None or until(items):  # type: ignore[operator]
            return items
        assert time.monotonic() < deadline, items
        time.sleep(0.1)


def test_a_delivery_is_signed_and_a_receiver_refuses_a_tampered_body_or_an_old_timestamp(
    hooked: Fwrepo, csms: httpx.Client,
) -> None:
    secret = secrets.token_urlsafe(32)
    with running_receiver() as receiver:
        webhook = register(csms, receiver, "wave.started", secret=secret)
        started = campaign(hooked, csms)
        delivery = receiver.wait_for(lambda: receiver.events("wave.started"))[0]
    assert delivery.document["event"] == "wave.started"
    assert delivery.document["data"] == {"campaign_id": started["id"], "wave": 1, "waves": 1, "grants": 1}
    assert delivery.headers["fwrepo-delivery"] == str(delivery_log(csms, webhook)[0]["id"])
    assert verify(secret, delivery.headers, delivery.body)
    assert not verify(secret, delivery.headers, delivery.body.replace(b'"wave":1', b'"wave":2'))
    assert not verify(secret, delivery.headers, delivery.body, now=time.time() + REPLAY_WINDOW + 1)
    assert not verify("another secret of the right length", delivery.headers, delivery.body)


def test_an_https_receiver_gets_its_delivery_only_with_a_certificate_fwrepo_trusts(
    hooked: Fwrepo, csms: httpx.Client, receiver_pki: tuple[Path, ssl.SSLContext, ssl.SSLContext],
) -> None:
    _, trusted, untrusted = receiver_pki
    with running_receiver(tls=trusted) as genuine, running_receiver(tls=untrusted) as impostor:
        register(csms, genuine, "wave.started")
        refused = register(csms, impostor, "wave.started")
        campaign(hooked, csms)
        genuine.wait_for(lambda: genuine.events("wave.started"))
        [delivery] = delivery_log(csms, refused, lambda items: items and items[0]["attempts"] >= 1)
    assert impostor.received == []
    assert "CERTIFICATE_VERIFY_FAILED" in delivery["log"][0]["error"]


def test_the_secret_is_never_shown_back_nor_logged(hooked: Fwrepo, csms: httpx.Client) -> None:
    secret = secrets.token_hex(32)
    with running_receiver() as receiver:
        webhook = register(csms, receiver, "campaign.cancelled", secret=secret)
        shown = [webhook, csms.get(f"/api/v1/webhooks/{webhook['id']}").json(),
                 *csms.get("/api/v1/webhooks").json()["items"], csms.delete(f"/api/v1/webhooks/{webhook['id']}").json()]
    assert set(webhook) == {"id", "url", "events", "created_at", "deleted_at"}
    assert all(secret not in str(document) for document in shown)
    assert secret not in (hooked.data_dir / "serve.log").read_text()
    with hooked.client("admin") as admin:
        assert secret not in admin.get("/api/v1/audit", params={"limit": 1000}).text


def test_a_failing_receiver_is_retried_until_it_answers_and_each_attempt_is_in_the_log(
    hooked: Fwrepo, csms: httpx.Client,
) -> None:
    with running_receiver(answers=[503]) as receiver:
        webhook = register(csms, receiver, "wave.started")
        campaign(hooked, csms)
        [delivery] = delivery_log(csms, webhook, lambda items: items and items[0]["status"] == "delivered")
    assert delivery["attempts"] == 2 and [attempt["status_code"] for attempt in delivery["log"]] == [503, 200]
    assert delivery["log"][0]["error"] is None and delivery["next_attempt_at"] is None
    assert len(receiver.events("wave.started")) == 2  # the same delivery, sent again


def test_a_receiver_that_never_answers_is_cut_at_the_deadline_and_others_still_get_theirs(
    hooked: Fwrepo, csms: httpx.Client,
) -> None:
    with running_receiver(answers=["hang"] * 4) as silent, running_receiver() as listening:
        stuck = register(csms, silent, "wave.started")
        register(csms, listening, "wave.started")
        campaign(hooked, csms)
        [heard] = listening.wait_for(lambda: listening.events("wave.started"), seconds=5)
        # Both are sent at once: which of the two requests reaches its receiver first is the scheduler's choice.
        [hung] = silent.wait_for(lambda: silent.events("wave.started"), seconds=5)
        assert heard.at - hung.at < 2  # sent beside the silent one, not behind its 2 s deadline
        campaign(hooked, csms)  # while the silent receiver still holds its first attempt
        listening.wait_for(lambda: len(listening.events("wave.started")) == 2, seconds=5)
        failed = delivery_log(csms, stuck, lambda items: len(items) == 2 and items[1]["status"] == "failed",
                              seconds=20)[1]
    assert failed["attempts"] == 2
    assert [attempt["error"] for attempt in failed["log"]] == ["no answer within 2 s"] * 2
    assert all(1900 <= attempt["duration_ms"] < 4000 for attempt in failed["log"])


def test_due_grants_are_pushed_once_and_a_poll_gets_none_of_them_nor_a_push_what_a_poll_got(
    hooked: Fwrepo, csms: httpx.Client,
) -> None:
    polled_first = campaign(hooked, csms, chargers=2)
    polled = csms.get(f"/api/v1/campaigns/{polled_first['id']}/grants", params={"due": "now"}).json()["grants"]
    assert len(polled) == 2
    with running_receiver() as receiver:
        register(csms, receiver, "grants.due")
        pushed_campaign = campaign(hooked, csms, chargers=3)

        def pushes(campaign_id: str) -> list[dict]:
            return [delivery.document["data"] for delivery in receiver.events("grants.due")
                    if delivery.document["data"]["campaign_id"] == campaign_id]

        [pushed] = receiver.wait_for(lambda: pushes(pushed_campaign["id"]))
        poll = csms.get(f"/api/v1/campaigns/{pushed_campaign['id']}/grants", params={"due": "now"}).json()
        time.sleep(1.5)  # another round of the worker: nothing more to push
        assert len(pushes(pushed_campaign["id"])) == 1 and pushes(polled_first["id"]) == []
    assert len(pushed["grants"]) == 3
    assert poll["grants"] == []
    grant = pushed["grants"][0]
    assert {"id", "request_id", "location", "retrieve_date", "ocpp"} <= set(grant)
    assert grant["ocpp"]["update_firmware"]["location"] == grant["location"]
    assert set(grant["ocpp"]) == {"update_firmware", "signed_update_firmware", "update_firmware_v201",
                                  "publish_firmware_v201"}
    assert grant["location_fits"] == {"1.6": True, "2.0.1": True, "2.1": True}


def test_a_finished_job_and_a_completed_campaign_are_pushed(hooked: Fwrepo, csms: httpx.Client) -> None:
    with running_receiver() as receiver:
        register(csms, receiver, "job.finished", "campaign.completed")
        rollout = campaign(hooked, csms)
        grant = csms.get(f"/api/v1/campaigns/{rollout['id']}/grants", params={"due": "now"}).json()["grants"][0]
        reply = csms.post("/api/v1/events", json={"events": [
            {"request_id": grant["id"], "status": "Booted", "timestamp": datetime.now(UTC).isoformat(),
             "firmware_version": "2.0.0"}]})
        assert reply.status_code == 200
        finished = receiver.wait_for(lambda: receiver.events("job.finished"))[0].document["data"]
        completed = receiver.wait_for(lambda: receiver.events("campaign.completed"))[0].document["data"]
    assert finished["grant_id"] == grant["id"] and finished["state"] == "succeeded"
    assert finished["campaign_id"] == rollout["id"] and finished["charger_id"] == "CP-0"
    assert completed == {"campaign_id": rollout["id"], "waves": 1}


def test_a_halted_campaign_that_is_then_cancelled_pushes_both(hooked: Fwrepo, csms: httpx.Client) -> None:
    with running_receiver() as receiver:
        register(csms, receiver, "campaign.halted", "campaign.cancelled")
        rollout = campaign(hooked, csms, failure_threshold=0)
        grant = csms.get(f"/api/v1/campaigns/{rollout['id']}/grants", params={"due": "now"}).json()["grants"][0]
        assert csms.post("/api/v1/events", json={"events": [{"request_id": grant["id"], "status": "InstallationFailed",
                                                             "timestamp": datetime.now(UTC).isoformat()}]}).status_code == 200
        halted = receiver.wait_for(lambda: receiver.events("campaign.halted"))[0].document["data"]
        assert csms.post(f"/api/v1/campaigns/{rollout['id']}/cancel").status_code == 200
        cancelled = receiver.wait_for(lambda: receiver.events("campaign.cancelled"))[0].document
    assert halted["campaign_id"] == rollout["id"] and halted["status_reason"].startswith("wave 1: 1 of 1 chargers")
    assert cancelled["data"] == {"campaign_id": rollout["id"]}
    assert cancelled["id"] == f"campaign.cancelled:{rollout['id']}"


@pytest.mark.parametrize(("body", "field"), [
    ({"url": "ftp://example.com/hook", "events": ["job.finished"]}, "url"),
    ({"url": "https://", "events": ["job.finished"]}, "url"),
    ({"url": "http://example.com/hook", "events": ["job.finished"]}, "url"),
    ({"url": "https://user:pw@example.com/hook", "events": ["job.finished"]}, "url"),
    ({"url": "https://example.com:99999/hook", "events": ["job.finished"]}, "url"),
    ({"url": "https://example.com/hook", "events": ["job.started"]}, "events"),
    ({"url": "https://example.com/hook", "events": []}, "events"),
    ({"url": "https://example.com/hook", "events": "job.finished"}, "events"),
    ({"url": "https://example.com/hook", "events": ["job.finished"], "secret": "short"}, "secret"),
    ({"url": "https://example.com/hook", "events": ["job.finished"], "secret": "x" * 129}, "secret"),
    ({"url": "https://example.com/hook", "events": ["job.finished"], "secrets": "x" * 32}, "secrets"),
])
def test_bad_input_is_refused_with_422_naming_the_field(csms: httpx.Client, body: dict, field: str) -> None:
    reply = csms.post("/api/v1/webhooks", json={"secret": secrets.token_hex(16), **body})
    assert reply.status_code == 422 and reply.json()["field"] == field, reply.text
    assert csms.get("/api/v1/webhooks").json()["items"] == []


def test_more_webhooks_than_allowed_are_refused_with_422(csms: httpx.Client) -> None:
    body = {"url": "https://example.com/hook", "events": ["job.finished"], "secret": secrets.token_hex(16)}
    assert all(csms.post("/api/v1/webhooks", json=body).status_code == 201 for _ in range(20))
    reply = csms.post("/api/v1/webhooks", json=body)
    assert reply.status_code == 422 and reply.json()["field"] == "url" and "at most 20" in reply.text


def test_only_csms_and_admin_keys_manage_webhooks(hooked: Fwrepo) -> None:
    body = {"url": "https://example.com/hook", "events": ["job.finished"], "secret": secrets.token_hex(16)}
    with hooked.client("release") as release, hooked.client("admin") as admin, hooked.client(None) as anonymous:
        assert release.post("/api/v1/webhooks", json=body).status_code == 403
        assert release.get("/api/v1/webhooks").status_code == 403
        assert anonymous.get("/api/v1/webhooks").status_code == 401
        created = admin.post("/api/v1/webhooks", json=body).json()
        assert release.get(f"/api/v1/webhooks/{created['id']}/deliveries").status_code == 403
        assert release.delete(f"/api/v1/webhooks/{created['id']}").status_code == 403
        assert admin.delete(f"/api/v1/webhooks/{created['id']}").status_code == 200
        assert admin.get(f"/api/v1/webhooks/{'0' * 16}").status_code == 404
        trail = admin.get("/api/v1/audit", params={"limit": 1000}).json()["items"]
    acts = [(event["action"], event["subject"]) for event in trail]
    assert ("webhook_create", f"webhook {created['id']}") in acts and ("webhook_delete", f"webhook {created['id']}") in acts


def test_without_the_harness_setting_loopback_and_private_destinations_are_refused_and_a_webhook_sealed_under_an_old_token_secret_fails(
    tmp_path: Path,
) -> None:
    guarded = start_fwrepo(tmp_path, **FAST_WEBHOOKS, FWREPO_TOKEN_SECRET=secrets.token_urlsafe(32))
    try:
        with guarded.client("csms") as csms, running_receiver() as receiver:
            for address in ("127.0.0.1", "10.1.2.3", "169.254.169.254", "[::1]", "[::ffff:127.0.0.1]"):
                reply = csms.post("/api/v1/webhooks", json={
                    "url": f"https://{address}/hook", "events": ["wave.started"], "secret": secrets.token_hex(16)})
                assert reply.status_code == 422 and reply.json()["field"] == "url", (address, reply.text)
            # A name is judged when it is resolved, at delivery: localhost is loopback, so nothing is sent.
            by_name = {"url": f"http://localhost:{receiver.port}/hook", "events": ["wave.started"],
                       "secret": secrets.token_hex(16)}
            sealed_before = csms.post("/api/v1/webhooks", json=by_name).json()
            guarded.stop()
            guarded.environment["FWREPO_TOKEN_SECRET"] = secrets.token_urlsafe(32)  # rotated
            guarded.start()
            webhook = csms.post("/api/v1/webhooks", json=by_name).json()
            campaign(guarded, csms)
            [refused] = delivery_log(csms, webhook, lambda items: items and items[0]["attempts"] >= 1)
            # Its secret cannot be unsealed any more: it fails at once, and holds up no other delivery.
            [unreadable] = delivery_log(csms, sealed_before, lambda items: items and items[0]["status"] == "failed")
            assert receiver.received == []
        assert refused["log"][0]["error"].startswith("refused: localhost resolves to")
        assert "loopback" in refused["log"][0]["error"]
        assert unreadable["log"][0]["error"].startswith("unreadable: sealed with another FWREPO_TOKEN_SECRET")
    finally:
        guarded.stop()


def test_the_reference_csms_takes_due_grants_and_campaign_ends_as_webhooks(hooked: Fwrepo, csms: httpx.Client) -> None:
    example = ocpp_example("csms")

    async def scenario() -> None:
        fwrepo = example.FwrepoClient(hooked.url, hooked.key("csms"), hooked.ca)
        central = example.Csms(fwrepo)
        receiver = example.WebhookReceiver(central, secrets.token_hex(32).encode())
        port = await receiver.start("127.0.0.1", 0)
        try:
            await example.register_webhook(fwrepo, f"http://127.0.0.1:{port}/fwrepo", receiver.secret)
            rollout = await asyncio.to_thread(campaign, hooked, csms, 2)
            # No charger is connected: the CSMS keeps each pushed grant for its charger's next boot.
            deadline = time.monotonic() + 10
            while sorted(central.parked) != ["CP-0", "CP-1"]:
                assert time.monotonic() < deadline, central.parked
                await asyncio.sleep(0.05)
            async with httpx.AsyncClient() as forger:
                forged = await forger.post(f"http://127.0.0.1:{port}/fwrepo", content=b'{"id": "x"}', headers={
                    "Fwrepo-Timestamp": str(int(time.time())), "Fwrepo-Signature": "v1=" + "0" * 64})
            assert forged.status_code == 401
            cancelled = await asyncio.to_thread(csms.post, f"/api/v1/campaigns/{rollout['id']}/cancel")
            assert cancelled.status_code == 200
            report = await asyncio.wait_for(example.run_campaign_pushed(central, receiver, rollout["id"]), 10)
            assert report["status"] == "cancelled"
        finally:
            await receiver.stop()
            await fwrepo.close()

    asyncio.run(scenario())


@pytest.fixture
def nodes(postgres_server_url: str, tmp_path: Path) -> Iterator[tuple[Fwrepo, Fwrepo]]:
    shared = {**LOOPBACK_ALLOWED, "FWREPO_KEYS_DIR": str(tmp_path / "keys"),
              "FWREPO_KEY_PASSPHRASE": secrets.token_urlsafe(24),
              # Seals the webhooks' secrets: the same on every node, as in production.
              "FWREPO_TOKEN_SECRET": secrets.token_urlsafe(32), "FWREPO_FTPS": "false"}
    for database_url in scratch_postgres(postgres_server_url):
        yield from two_nodes(database_url, tmp_path, shared)


def test_two_nodes_on_one_postgresql_send_each_delivery_exactly_once(nodes: tuple[Fwrepo, Fwrepo]) -> None:
    a, b = nodes
    with a.client("csms") as csms_a, b.client("csms") as csms_b, \
            running_receiver(delay=0.2) as first, running_receiver(delay=0.2) as second:
        # Each answer takes 0.2 s, so one node alone needs 2 s for the 80 deliveries (8 at a time): the other's
        # worker, woken by its own half, has time to claim some even on a loaded machine.
        webhooks = [register(csms_a, receiver, "job.finished") for receiver in (first, second)]
        rollout = campaign(a, csms_a, chargers=40)
        grants = csms_b.get(f"/api/v1/campaigns/{rollout['id']}/grants", params={"due": "now"}).json()["grants"]
        now = datetime.now(UTC).isoformat()
        # Half the chargers' boots reach each node: both write deliveries, both nodes' workers compete for them.
        for node, half in ((csms_a, grants[::2]), (csms_b, grants[1::2])):
            assert node.post("/api/v1/events", json={"events": [
                {"request_id": grant["id"], "status": "Booted", "timestamp": now, "firmware_version": "2.0.0"}
                for grant in half]}).status_code == 200
        logs = [delivery_log(csms_b, webhook, lambda items: len(items) == 40
                             and all(item["status"] == "delivered" for item in items), seconds=30)
                for webhook in webhooks]
        time.sleep(1.5)  # a round more on each node: nothing is sent again
        for receiver, log in zip((first, second), logs, strict=True):
            sent = Counter(delivery.headers["fwrepo-delivery"] for delivery in receiver.received)
            assert set(sent) == {str(item["id"]) for item in log} and set(sent.values()) == {1}
            assert all(item["attempts"] == 1 for item in log)
            granted = sorted(delivery.document["data"]["grant_id"] for delivery in receiver.received)
            assert granted == sorted(grant["id"] for grant in grants)
    # Both nodes sent some: they competed for the same rows, and still no delivery went twice.
    assert all(" delivery " in (node.data_dir / "serve.log").read_text() for node in (a, b))
