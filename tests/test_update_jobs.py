"""Update jobs: status events from the CSMS and fwrepo's own download records, joined into one state."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import ocpp.v16.enums
import ocpp.v201.enums
import ocpp.v21.enums
import pytest

from hypothesis import given, settings
from hypothesis import strategies as st

from repo_service.domain.update_jobs import (
    BOOTED, FAILURES, OCPP_STATUSES, PUBLISH_NOTIFICATION, PUBLISH_STATUSES, Job, JobState, StatusEvent, Transfer,
    derive_job, parse_event,
)
from repo_service.errors import InvalidInput
from tests.support.builds import image
from tests.support.fwrepo import Fwrepo
from tests.support.grants import grant_for

T0 = datetime(2026, 11, 26, 1, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


RETRY_GRACE = timedelta(minutes=5)


def job_of(*events: StatusEvent, transfers: tuple[Transfer, ...] = (), now: datetime | None = None,
           target: str = "1.4.0") -> JobState:
    return derive(*events, transfers=transfers, now=now, target=target).state


def derive(*events: StatusEvent, transfers: tuple[Transfer, ...] = (), now: datetime | None = None,
           target: str = "1.4.0", retries: int = 0, retry_interval: int = 0) -> Job:
    return derive_job(target_version=target, granted_at=T0, retrieve_date=T0, events=events, transfers=transfers,
                      now=now or at(60), timeout=timedelta(hours=6), retries=retries, retry_interval=retry_interval,
                      retry_grace=RETRY_GRACE)


def test_the_accepted_statuses_are_exactly_ocpps() -> None:
    assert set(OCPP_STATUSES) == {status.value for status in ocpp.v16.enums.FirmwareStatus}
    assert set(OCPP_STATUSES) == {status.value for status in ocpp.v201.enums.FirmwareStatusEnumType}
    assert set(OCPP_STATUSES) == {status.value for status in ocpp.v21.enums.FirmwareStatusEnumType}
    assert set(PUBLISH_STATUSES) == {status.value for status in ocpp.v201.enums.PublishFirmwareStatusEnumType}
    assert set(PUBLISH_STATUSES) == {status.value for status in ocpp.v21.enums.PublishFirmwareStatusEnumType}


# -- deriving the state -------------------------------------------------------------------


def test_a_job_walks_from_granted_to_succeeded() -> None:
    assert job_of() == JobState.GRANTED
    assert job_of(StatusEvent("Downloading", at(1))) == JobState.DOWNLOADING
    assert job_of(StatusEvent("Downloaded", at(2))) == JobState.DOWNLOADED
    assert job_of(StatusEvent("Installing", at(3))) == JobState.INSTALLING
    assert job_of(StatusEvent("Installing", at(3)), StatusEvent(BOOTED, at(4), firmware_version="v1.4")) == \
        JobState.SUCCEEDED


def test_out_of_order_events_are_placed_by_their_timestamps() -> None:
    events = (StatusEvent("Installed", at(5)), StatusEvent("Downloading", at(1)), StatusEvent("Downloaded", at(2)))
    assert job_of(*events) == JobState.INSTALLING
    assert job_of(*reversed(events)) == JobState.INSTALLING


def test_failures_are_named_and_a_retry_after_one_moves_on() -> None:
    assert job_of(StatusEvent("DownloadFailed", at(1))) == JobState.DOWNLOAD_FAILED
    assert job_of(StatusEvent("DownloadFailed", at(1)), StatusEvent("Downloading", at(11))) == JobState.DOWNLOADING
    assert job_of(StatusEvent("InvalidSignature", at(2))) == JobState.INVALID_SIGNATURE
    assert job_of(StatusEvent("InstallVerificationFailed", at(2))) == JobState.INVALID_SIGNATURE
    assert job_of(StatusEvent("InstallationFailed", at(3))) == JobState.INSTALLATION_FAILED


def test_a_failure_reported_after_each_attempt_is_final_after_the_last_one() -> None:
    failures = [StatusEvent("DownloadFailed", at(minute)) for minute in (1, 11, 21)]
    first = derive(*failures[:1], now=at(2), retries=2, retry_interval=600)
    assert (first.state, first.final, first.due_at) == (JobState.DOWNLOAD_FAILED, False, at(1 + 10) + RETRY_GRACE)
    last = derive(*failures, now=at(22), retries=2, retry_interval=600)
    assert (last.state, last.final) == (JobState.DOWNLOAD_FAILED, True)


def test_a_failure_reported_once_after_the_chargers_own_retries_is_final_after_one_interval_and_the_grace() -> None:
    """Issue 11: a charger whose TLS handshake failed tried 1 + 3 times, then said DownloadFailed once."""
    once = (StatusEvent("Downloading", at(1)), StatusEvent("DownloadFailed", at(31)))
    deadline = at(31 + 10) + RETRY_GRACE
    waiting = derive(*once, now=deadline - timedelta(seconds=1), retries=3, retry_interval=600)
    assert (waiting.state, waiting.final) == (JobState.DOWNLOAD_FAILED, False)
    given_up = derive(*once, now=deadline, retries=3, retry_interval=600)
    assert (given_up.state, given_up.final) == (JobState.DOWNLOAD_FAILED, True)
    # never timed_out ("no response") although the charger answered
    assert derive(*once, now=at(24 * 60), retries=3, retry_interval=600).state == JobState.DOWNLOAD_FAILED
    # a later attempt reopens the job, whether the charger says so or fwrepo serves it
    assert job_of(*once, StatusEvent("Downloading", at(45))) == JobState.DOWNLOADING
    assert job_of(*once, transfers=(Transfer(at(50), at(52), 900, True),)) == JobState.DOWNLOADED
    assert job_of(*once, transfers=(Transfer(at(40), at(41), 300, False),)) == JobState.DOWNLOADING
    # ... but one close to the report may be the failed attempt itself: it only moves the deadline
    near = derive(*once, transfers=(Transfer(at(33), at(34), 300, False),), now=at(34), retries=3)
    assert (near.state, near.final, near.due_at) == (JobState.DOWNLOAD_FAILED, False, at(33) + RETRY_GRACE)


def test_only_a_boot_into_the_target_version_succeeds_and_another_after_installing_is_a_rollback() -> None:
    installed = StatusEvent("Installed", at(3))
    assert job_of(installed, StatusEvent(BOOTED, at(4), firmware_version="1.3.9")) == JobState.ROLLED_BACK
    # A reboot before anything was installed says nothing about the update.
    assert job_of(StatusEvent("Downloading", at(1)), StatusEvent(BOOTED, at(2), firmware_version="1.3.9")) == \
        JobState.DOWNLOADING
    assert job_of(installed) == JobState.INSTALLING


def test_a_rollback_stays_a_rollback_when_installed_arrives_after_the_reboot() -> None:
    """Issue 11: SignedUpdateFirmware, reboot into the old version, and only then Installed."""
    story = [StatusEvent(status, at(minute)) for minute, status in enumerate(
        ("Downloading", "Downloaded", "SignatureVerified", "Installing", "InstallRebooting"), start=1)]
    story += [StatusEvent(BOOTED, at(6), firmware_version="1.3.0"), StatusEvent("Installed", at(7)),
              StatusEvent("Installing", at(8))]
    job = derive(*story, now=at(3 * 24 * 60))
    assert (job.state, job.final) == (JobState.ROLLED_BACK, True)
    assert [event.status for event in job.events][-2:] == ["Installed", "Installing"]  # kept in the timeline
    # only a new download starts another attempt
    assert job_of(*story, StatusEvent("Downloading", at(9))) == JobState.DOWNLOADING


def test_a_success_stays_a_success_whatever_follows_but_a_later_boot_into_the_old_version() -> None:
    story = (StatusEvent("Installing", at(1)), StatusEvent(BOOTED, at(2), firmware_version="1.4.0"))
    assert job_of(*story, StatusEvent("Installed", at(3)), StatusEvent("Downloading", at(4))) == JobState.SUCCEEDED
    # an A/B charger falling back to its old partition after a trial boot
    assert job_of(*story, StatusEvent(BOOTED, at(5), firmware_version="1.3.0")) == JobState.ROLLED_BACK


def test_a_failure_the_charger_named_is_kept_when_it_then_boots_its_old_version() -> None:
    assert job_of(StatusEvent("Installing", at(1)), StatusEvent("InstallationFailed", at(2)),
                  StatusEvent(BOOTED, at(3), firmware_version="1.3.0")) == JobState.INSTALLATION_FAILED


def test_fwrepos_download_records_move_a_silent_charger_along() -> None:
    partial = Transfer(at(1), at(2), 1000, completed=False)
    whole = Transfer(at(3), at(4), 5000, completed=True)
    assert job_of(transfers=(partial,)) == JobState.DOWNLOADING
    assert job_of(transfers=(partial, whole)) == JobState.DOWNLOADED
    # ... but never undo what the charger said later.
    assert job_of(StatusEvent("Installing", at(5)), transfers=(whole,)) == JobState.INSTALLING


def test_reports_from_before_the_grant_are_about_something_else() -> None:
    old_boot = StatusEvent(BOOTED, T0 - timedelta(days=300), firmware_version="1.4.0")
    assert job_of(old_boot) == JobState.GRANTED


def test_a_download_served_whole_after_a_failure_moves_the_job_on() -> None:
    assert job_of(StatusEvent("DownloadFailed", at(1)), transfers=(Transfer(at(5), at(6), 900, True),)) == \
        JobState.DOWNLOADED


def test_no_progress_for_longer_than_the_timeout_is_timed_out() -> None:
    assert job_of(now=at(6 * 60 + 1)) == JobState.TIMED_OUT
    assert job_of(StatusEvent("Downloading", at(5 * 60)), now=at(6 * 60 + 1)) == JobState.DOWNLOADING
    assert job_of(StatusEvent(BOOTED, at(1), firmware_version="1.4.0"), now=at(48 * 60)) == JobState.SUCCEEDED


# -- every order a real charger may send (hypothesis) --------------------------------------
# A charger's story is drawn first (its flow, its outcome, its retry plan and how it reports a failed
# download); the statuses that flow sends for that outcome follow, then what the network and the CSMS do
# to them: retransmitted duplicates, Idle answers to TriggerMessage, statuses sent after the reboot, and
# any arrival order. The derived state must be the story's outcome, with or without fwrepo's records.

FLOWS = ("1.6", "1.6-security", "2.0.1")
OUTCOMES = {
    "succeeded": JobState.SUCCEEDED, "rolled_back": JobState.ROLLED_BACK,
    "download_failed_each": JobState.DOWNLOAD_FAILED, "download_failed_once": JobState.DOWNLOAD_FAILED,
    "invalid_signature": JobState.INVALID_SIGNATURE, "installation_failed": JobState.INSTALLATION_FAILED,
}


@st.composite
def charger_stories(draw: st.DrawFn) -> tuple[list[StatusEvent], list[Transfer], int, int, JobState, datetime]:
    flow = draw(st.sampled_from(FLOWS))
    secure = flow != "1.6"  # SignedUpdateFirmware (1.6 security extension) and 2.0.1 share the statuses
    outcome = draw(st.sampled_from([name for name in OUTCOMES if secure or name != "invalid_signature"]))
    retries, interval = draw(st.integers(0, 3)), draw(st.sampled_from([0, 60, 600]))
    served_by_fwrepo = draw(st.booleans())  # False: a handshake that fails, a proxy: fwrepo sees nothing
    events: list[StatusEvent] = []
    transfers: list[Transfer] = []
    clock = [T0 + timedelta(seconds=30)]

    def say(status: str, version: str | None = None) -> None:
        clock[0] += timedelta(seconds=draw(st.integers(1, 90)))
        events.append(StatusEvent(status, clock[0], firmware_version=version))

    if secure and draw(st.booleans()):
        say("DownloadScheduled")
    failing = outcome.startswith("download_failed")
    failed_attempts = 1 + retries if failing else draw(st.integers(0, retries))
    each = outcome == "download_failed_each" or (not failing and draw(st.booleans()))
    for attempt in range(failed_attempts):
        say("Downloading")
        if served_by_fwrepo:
            transfers.append(Transfer(clock[0] + timedelta(seconds=1), clock[0] + timedelta(seconds=5), 1000, False))
        if each or attempt == failed_attempts - 1 and outcome == "download_failed_once":
            say("DownloadFailed")
        if attempt < failed_attempts - 1 or not failing:
            clock[0] += timedelta(seconds=interval)
    if not failing:
        say("Downloading")
        if flow == "2.0.1" and draw(st.booleans()):
            say("DownloadPaused")
            say("Downloading")
        if served_by_fwrepo:
            transfers.append(Transfer(clock[0] + timedelta(seconds=1), clock[0] + timedelta(seconds=20), 5000, True))
            clock[0] += timedelta(seconds=20)
        say("Downloaded")
        if secure:
            say("InvalidSignature" if outcome == "invalid_signature" else "SignatureVerified")
    if outcome not in ("invalid_signature",) and not failing:
        if secure and draw(st.booleans()):
            say("InstallScheduled")
        say("Installing")
        if outcome == "installation_failed":
            say("InstallationFailed")
            if draw(st.booleans()):
                say(BOOTED, "1.3.0")
        else:
            installed_after_reboot = secure and draw(st.booleans())
            if not installed_after_reboot:
                say("Installed")
            if secure:
                say("InstallRebooting")
            say(BOOTED, "1.4.0" if outcome == "succeeded" else "1.3.0")
            if installed_after_reboot:
                say("Installed")
            for late in draw(st.lists(st.sampled_from(["Installed", "Installing", "InstallRebooting"]), max_size=2)):
                say(late)
    for _ in range(draw(st.integers(0, 2))):
        events.insert(draw(st.integers(0, len(events))), StatusEvent("Idle", draw(st.sampled_from(events)).timestamp))
    events += draw(st.lists(st.sampled_from(events), max_size=3))  # retransmissions: same status, same time
    arrival = draw(st.permutations(events))
    # Late enough for both DownloadFailed conventions to be final, well within the timeout.
    now = clock[0] + timedelta(seconds=interval) + RETRY_GRACE + timedelta(seconds=1)
    return list(arrival), transfers, retries, interval, OUTCOMES[outcome], now


@settings(max_examples=400, deadline=None)
@given(charger_stories())
def test_every_order_a_charger_may_send_ends_in_the_state_its_story_implies(
        story: tuple[list[StatusEvent], list[Transfer], int, int, JobState, datetime]) -> None:
    events, transfers, retries, interval, expected, now = story
    job = derive_job(target_version="1.4.0", granted_at=T0, retrieve_date=T0, events=events,
                     transfers=transfers, now=now, timeout=timedelta(days=1), retries=retries,
                     retry_interval=interval, retry_grace=RETRY_GRACE)
    assert (job.state, job.final) == (expected, True), [(event.status, event.timestamp.time()) for event in
                                                        sorted(events, key=lambda event: event.timestamp)]


def test_a_local_controller_that_published_the_build_succeeded_and_a_bad_checksum_or_publish_fails() -> None:
    def publishing(*statuses: str) -> Job:
        return derive(*(StatusEvent(status, at(minute), notification=PUBLISH_NOTIFICATION)
                        for minute, status in enumerate(statuses, 1)))

    assert publishing("DownloadScheduled", "Downloading", "DownloadPaused").state == JobState.DOWNLOADING
    assert publishing("Downloading", "Downloaded", "ChecksumVerified").state == JobState.DOWNLOADED
    published = publishing("Downloading", "Downloaded", "ChecksumVerified", "Published")
    assert (published.state, published.final) == (JobState.SUCCEEDED, True)
    for failure, state in (("InvalidChecksum", JobState.INVALID_CHECKSUM), ("PublishFailed", JobState.PUBLISH_FAILED)):
        failed = publishing("Downloading", "Downloaded", failure)
        assert (failed.state, failed.final, failed.state in FAILURES) == (state, True, True)


# -- over the API ---------------------------------------------------------------------------


def post_event(fwrepo: Fwrepo, grant_id: int, **event: object):  # type: ignore[no-untyped-def]
    with fwrepo.client("csms") as csms:
        return csms.post(f"/api/v1/grants/{grant_id}/events", json=event)


def now_iso(offset: timedelta = timedelta()) -> str:
    return (datetime.now(UTC) + offset).isoformat()


@pytest.mark.parametrize(("event", "field"), [
    ({"status": "Exploded", "timestamp": "2026-01-01T00:00:00Z"}, "status"),
    ({"status": 7, "timestamp": "2026-01-01T00:00:00Z"}, "status"),
    ({"status": "Downloading"}, "timestamp"),
    ({"status": "Downloading", "timestamp": "yesterday"}, "timestamp"),
    ({"status": "Downloading", "timestamp": "2026-01-01T00:00:00"}, "timestamp"),
    ({"status": "Booted", "timestamp": "2026-01-01T00:00:00Z"}, "firmware_version"),
    ({"status": "Downloading", "timestamp": "2026-01-01T00:00:00Z", "firmware_version": "1.0"}, "firmware_version"),
    ({"status": "Downloading", "timestamp": "2026-01-01T00:00:00Z", "info": "x" * 300}, "info"),
    ({"status": "Downloading", "timestamp": "2026-01-01T00:00:00Z", "info": "\u001b[31mred"}, "info"),
    ({"status": "Installing", "timestamp": "0001-01-01T00:30:00+01:00"}, "timestamp"),
])
def test_bad_events_are_refused_422_naming_the_field(fwrepo: Fwrepo, event: dict, field: str) -> None:
    _, grant = grant_for(fwrepo, image(1000))
    reply = post_event(fwrepo, grant["id"], **event)
    assert reply.status_code == 422 and reply.json()["field"] == field, reply.text


def test_an_event_from_the_future_is_refused(fwrepo: Fwrepo) -> None:
    _, grant = grant_for(fwrepo, image(1000))
    reply = post_event(fwrepo, grant["id"], status="Downloading", timestamp=now_iso(timedelta(hours=1)))
    assert reply.status_code == 422 and reply.json()["field"] == "timestamp"


def test_an_event_for_no_grant_is_404_and_in_bulk_422_naming_its_place(fwrepo: Fwrepo) -> None:
    assert post_event(fwrepo, 2**31 - 2, status="Downloading", timestamp=now_iso()).status_code == 404
    _, grant = grant_for(fwrepo, image(1000))
    with fwrepo.client("csms") as csms:
        reply = csms.post("/api/v1/events", json={"events": [
            {"grant_id": grant["id"], "status": "Downloading", "timestamp": now_iso()},
            {"request_id": 2**31 - 2, "status": "Downloading", "timestamp": now_iso()},
        ]})
        assert reply.status_code == 422 and reply.json()["field"] == "events[1].grant_id"
        # all or nothing: the good first event was not kept either
        assert csms.get(f"/api/v1/grants/{grant['id']}/job").json()["events"] == []


def test_a_duplicate_is_accepted_once_and_ignored_after(fwrepo: Fwrepo) -> None:
    _, grant = grant_for(fwrepo, image(1000))
    moment = now_iso()
    first = post_event(fwrepo, grant["id"], status="Downloading", timestamp=moment)
    again = post_event(fwrepo, grant["id"], status="downloading", timestamp=moment)
    assert (first.status_code, first.json()["duplicate"]) == (201, False)
    assert (again.status_code, again.json()["duplicate"]) == (200, True)
    assert len(again.json()["job"]["events"]) == 1
    with fwrepo.client("csms") as csms:
        bulk = csms.post("/api/v1/events", json={"events": [
            {"request_id": grant["id"], "status": "Downloading", "timestamp": moment},
            {"request_id": grant["id"], "status": "Downloaded", "timestamp": moment},
        ]}).json()
    assert bulk == {"accepted": 1, "duplicates": 1}


def post_events(fwrepo: Fwrepo, *events: dict):  # type: ignore[no-untyped-def]
    with fwrepo.client("csms") as csms:
        return csms.post("/api/v1/events", json={"events": list(events)})


def timeline(fwrepo: Fwrepo, grant_id: int) -> dict:
    with fwrepo.client("csms") as csms:
        return csms.get(f"/api/v1/grants/{grant_id}/job").json()


@pytest.mark.parametrize("enums", [ocpp.v201.enums, ocpp.v21.enums], ids=["2.0.1", "2.1"])
def test_every_firmware_status_of_ocpp_2_is_accepted_and_shows_in_the_timeline_with_its_status_info(
        fwrepo: Fwrepo, enums: object) -> None:
    _, grant = grant_for(fwrepo, image(1000))
    start = datetime.now(UTC) - timedelta(minutes=1)
    statuses = [status.value for status in enums.FirmwareStatusEnumType]  # type: ignore[attr-defined]
    reply = post_events(fwrepo, *(
        {"request_id": grant["id"], "status": status, "timestamp": (start + timedelta(seconds=n)).isoformat(),
         "status_info": {"reason_code": f"Code{n}", "additional_info": f"{status} as the charger said it"}}
        for n, status in enumerate(statuses)))
    assert reply.json() == {"accepted": len(statuses), "duplicates": 0}, reply.text
    job = timeline(fwrepo, grant["id"])
    assert [event["status"] for event in job["events"]] == statuses
    shown = {event["status"]: event for event in job["events"]}
    for status in ("InstallScheduled", "InstallRebooting", "DownloadPaused"):
        assert shown[status]["status_info"]["additional_info"] == f"{status} as the charger said it"
        assert shown[status]["notification"] is None
    assert job["state"] == "downloaded"  # the last of them: SignatureVerified


@pytest.mark.parametrize(("status", "state"), [
    ("InstallScheduled", "installing"), ("InstallRebooting", "installing"), ("DownloadPaused", "downloading"),
    ("InstallVerificationFailed", "invalid_signature"), ("Idle", "granted"),
])
def test_each_2_0_1_status_moves_the_job_to_its_state(fwrepo: Fwrepo, status: str, state: str) -> None:
    _, grant = grant_for(fwrepo, image(1000))
    job = post_event(fwrepo, grant["id"], status=status, timestamp=now_iso(),
                     status_info={"reason_code": "NoReason"}).json()["job"]
    assert job["state"] == state
    assert job["events"][0]["status_info"] == {"reason_code": "NoReason", "additional_info": None}


def test_a_local_controllers_publish_statuses_are_accepted_named_by_their_notification(fwrepo: Fwrepo) -> None:
    _, grant = grant_for(fwrepo, image(1000))
    start = datetime.now(UTC) - timedelta(minutes=1)
    statuses = [status.value for status in ocpp.v201.enums.PublishFirmwareStatusEnumType
                if status.value not in ("Published", "InvalidChecksum", "PublishFailed")] + ["Published"]
    reply = post_events(fwrepo, *(
        {"grant_id": grant["id"], "status": status, "notification": PUBLISH_NOTIFICATION,
         "timestamp": (start + timedelta(seconds=n)).isoformat()} for n, status in enumerate(statuses)))
    assert reply.json() == {"accepted": len(statuses), "duplicates": 0}, reply.text
    job = timeline(fwrepo, grant["id"])
    assert (job["state"], job["final"]) == ("succeeded", True)
    assert {event["notification"] for event in job["events"]} == {PUBLISH_NOTIFICATION}
    for failure, state in (("InvalidChecksum", "invalid_checksum"), ("PublishFailed", "publish_failed")):
        _, grant = grant_for(fwrepo, image(1000))
        failed = post_event(fwrepo, grant["id"], status=failure, timestamp=now_iso(), notification=PUBLISH_NOTIFICATION,
                            status_info={"reason_code": "MD5Mismatch"}).json()["job"]
        assert (failed["state"], failed["final"]) == (state, True)


BAD_NOTIFICATIONS_AND_STATUS_INFO = [
    ({"status": "Published"}, "status"),  # a publish status needs its notification: it is not the charger's firmware
    ({"status": "Installing", "notification": PUBLISH_NOTIFICATION}, "status"),
    ({"status": "Booted", "firmware_version": "1.0", "notification": "FirmwareStatusNotification"}, "status"),
    ({"status": "Downloading", "notification": "BootNotification"}, "notification"),
    ({"status": "Downloading", "notification": [PUBLISH_NOTIFICATION]}, "notification"),
    ({"status": "Downloading", "status_info": "Busy"}, "status_info"),
    ({"status": "Downloading", "status_info": {}}, "status_info.reason_code"),
    ({"status": "Downloading", "status_info": {"reason_code": "x" * 21}}, "status_info.reason_code"),
    ({"status": "Downloading", "status_info": {"reason_code": "Busy", "additional_info": "x" * 1025}},
     "status_info.additional_info"),
    ({"status": "Downloading", "status_info": {"reason_code": "Busy", "additional_info": "a\nb"}},
     "status_info.additional_info"),
    ({"status": "Downloading", "status_info": {"reason_code": "Busy", "reasonCode": "Busy"}}, "status_info.reasonCode"),
]


@pytest.mark.parametrize(("event", "field"), BAD_NOTIFICATIONS_AND_STATUS_INFO)
def test_bad_notifications_and_status_info_are_refused_422_naming_the_field(fwrepo: Fwrepo, event: dict,
                                                                           field: str) -> None:
    _, grant = grant_for(fwrepo, image(1000))
    reply = post_event(fwrepo, grant["id"], timestamp="2026-01-01T00:00:00Z", **event)
    assert reply.status_code == 422 and reply.json()["field"] == field, reply.text


@pytest.mark.parametrize(("event", "field"), BAD_NOTIFICATIONS_AND_STATUS_INFO)
def test_the_domain_refuses_them_too_as_the_dispatcher_records_without_http(event: dict, field: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_event({"timestamp": "2026-01-01T00:00:00Z", **event}, now=T0, field_prefix="events[3].",
                    keys=("grant_id",))
    assert refused.value.field == f"events[3].{field}"


def test_bulk_takes_at_most_10000_events(fwrepo: Fwrepo) -> None:
    event = {"grant_id": 1, "status": "Idle", "timestamp": "2026-01-01T00:00:00Z"}
    with fwrepo.client("csms") as csms:
        reply = csms.post("/api/v1/events", json={"events": [event] * 10_001})
    assert reply.status_code == 422 and reply.json()["field"] == "events"


def test_a_real_download_and_the_chargers_reports_make_one_timeline(fwrepo: Fwrepo, tmp_path: Path) -> None:
    firmware, grant = grant_for(fwrepo, image(300_000))
    result = subprocess.run(["curl", "-sS", "--cacert", fwrepo.ca, "-o", str(tmp_path / "fw.bin"), grant["location"]],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    with fwrepo.client("csms") as csms:
        job = csms.get(f"/api/v1/grants/{grant['id']}/job").json()
        assert job["state"] == "downloaded" and job["timeline"]["first_byte"] and job["timeline"]["last_byte"]
        assert job["download_seconds"] >= 0
        for status in ("Downloaded", "Installing", "Installed"):
            assert post_event(fwrepo, grant["id"], status=status, timestamp=now_iso()).status_code == 201
        booted = post_event(fwrepo, grant["id"], status="Booted", timestamp=now_iso(timedelta(seconds=1)),
                            firmware_version=firmware["version"]).json()["job"]
    assert booted["state"] == "succeeded" and booted["timeline"]["boot_confirmed"]
    assert booted["completion_seconds"] >= 0
