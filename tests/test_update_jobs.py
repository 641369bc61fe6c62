"""Update jobs: status events from the CSMS and fwrepo's own download records, joined into one state."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import ocpp.v16.enums
import ocpp.v201.enums
import pytest

from repo_service.domain.update_jobs import (
    BOOTED, OCPP_STATUSES, JobState, StatusEvent, Transfer, derive_job,
)
from tests.support.builds import image
from tests.support.fwrepo import Fwrepo
from tests.support.grants import grant_for

T0 = datetime(2026, 11, 26, 1, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def job_of(*events: StatusEvent, transfers: tuple[Transfer, ...] = (), now: datetime | None = None,
           target: str = "1.4.0") -> JobState:
    return derive_job(target_version=target, granted_at=T0, retrieve_date=T0, events=events, transfers=transfers,
                      now=now or at(60), timeout=timedelta(hours=6)).state


def test_the_accepted_statuses_are_exactly_ocpps() -> None:
    assert set(OCPP_STATUSES) == {status.value for status in ocpp.v16.enums.FirmwareStatus}
    assert set(OCPP_STATUSES) == {status.value for status in ocpp.v201.enums.FirmwareStatusEnumType}


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


def test_a_failed_download_is_final_only_when_the_charger_has_no_retries_left() -> None:
    def job(*events: StatusEvent, now: datetime = at(60)):  # type: ignore[no-untyped-def]
        return derive_job(target_version="1.4.0", granted_at=T0, retrieve_date=T0, events=events, transfers=(),
                          now=now, timeout=timedelta(hours=6), retries=2)

    failures = [StatusEvent("DownloadFailed", at(minute)) for minute in (1, 11, 21)]
    assert (job(*failures[:1]).state, job(*failures[:1]).final) == (JobState.DOWNLOAD_FAILED, False)
    assert (job(*failures).state, job(*failures).final) == (JobState.DOWNLOAD_FAILED, True)
    # a charger that gave up early is timed out in the end
    assert job(*failures[:1], now=at(8 * 60)).state == JobState.TIMED_OUT


def test_only_a_boot_into_the_target_version_succeeds_and_another_after_installing_is_a_rollback() -> None:
    installed = StatusEvent("Installed", at(3))
    assert job_of(installed, StatusEvent(BOOTED, at(4), firmware_version="1.3.9")) == JobState.ROLLED_BACK
    # A reboot before anything was installed says nothing about the update.
    assert job_of(StatusEvent("Downloading", at(1)), StatusEvent(BOOTED, at(2), firmware_version="1.3.9")) == \
        JobState.DOWNLOADING
    assert job_of(installed) == JobState.INSTALLING


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
