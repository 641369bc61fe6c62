"""Campaigns: waves, maintenance windows, halting on failures, pause/resume/cancel, reports."""

from __future__ import annotations

import csv
import io
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from repo_service.domain.campaigns import ChargerEntry, retrieve_date, skip_reason, wave_ends
from repo_service.domain.catalog import FirmwareRecord
from tests.support.builds import image, published_build, unique_vendor
from tests.support.campaigns import csv_agrees_with_report
from tests.support.fwrepo import Fwrepo, start_fwrepo

# -- planning, without a server -------------------------------------------------------------------


def test_waves_are_cumulative_shares_or_counts_and_the_last_reaches_everyone() -> None:
    assert wave_ends(["1%", "10%", "100%"], 1000) == [10, 100, 1000]
    assert wave_ends(["1%", "10%", "100%"], 7) == [1, 1, 7]
    assert wave_ends([5, 50, 100], 40) == [5, 40, 40]
    assert wave_ends(["50%"], 9) == [9]


def firmware_record(**overrides: object) -> FirmwareRecord:
    fields = {name: None for name in FirmwareRecord.__dataclass_fields__}
    fields.update(version="1.4.0", models=("AC22",), hardware_revisions=("B",), min_version="1.2.0")
    fields.update(overrides)
    return FirmwareRecord(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(("charger", "reason"), [
    (ChargerEntry("CP1", "1.3.0", "AC22", "B", "UTC"), None),
    (ChargerEntry("CP1", "v1.4", "AC22", "B", "UTC"), "already on 1.4.0"),
    (ChargerEntry("CP1", "1.3.0", "DC50", None, "UTC"), "model DC50 is not among the firmware's models (AC22)"),
    (ChargerEntry("CP1", "1.3.0", "AC22", "A", "UTC"), "hardware revision A is not supported"),
    (ChargerEntry("CP1", "1.1.0", None, None, "UTC"), "on 1.1.0, older than the firmware's min_version 1.2.0"),
])
def test_chargers_that_cannot_or_need_not_take_the_firmware_are_skipped_with_a_reason(
    charger: ChargerEntry, reason: str | None
) -> None:
    assert skip_reason(charger, firmware_record()) == reason


WINDOW = ("01:00", "05:00")


def local(moment: datetime, zone: str) -> datetime:
    return moment.astimezone(ZoneInfo(zone))


@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin", "America/Los_Angeles", "Asia/Kolkata", "Pacific/Auckland"])
def test_retrieve_dates_fall_inside_each_chargers_local_window(zone: str) -> None:
    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    moments = [retrieve_date(f"CP-{n}", zone, WINDOW, now) for n in range(200)]
    for moment in moments:
        assert now <= moment < now + timedelta(days=1)
        assert 1 <= local(moment, zone).hour < 5
    # spread across what is left of the window (in Los Angeles it is 04:00 already), not all at its first minute
    assert max(moments) - min(moments) >= timedelta(minutes=50)


def test_a_window_across_midnight_and_a_charger_already_inside_its_window() -> None:
    late = ("23:00", "02:00")
    inside = datetime(2026, 11, 26, 0, 30, tzinfo=UTC)
    for n in range(100):
        moment = retrieve_date(f"CP-{n}", "UTC", late, inside)
        assert inside <= moment <= datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
    before = datetime(2026, 11, 26, 20, 0, tzinfo=UTC)
    for n in range(100):
        moment = retrieve_date(f"CP-{n}", "UTC", late, before)
        assert datetime(2026, 11, 26, 23, 0, tzinfo=UTC) <= moment <= datetime(2026, 11, 27, 2, 0, tzinfo=UTC)


def test_a_window_on_the_night_clocks_change() -> None:
    # Europe/Berlin leaves summer time at 03:00 on 2026-10-25: the window is an hour longer that night.
    now = datetime(2026, 10, 24, 12, 0, tzinfo=UTC)
    for n in range(100):
        moment = local(retrieve_date(f"CP-{n}", "Europe/Berlin", WINDOW, now), "Europe/Berlin")
        assert moment.date().isoformat() == "2026-10-25" and 1 <= moment.hour < 5


def test_no_window_means_now() -> None:
    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    assert retrieve_date("CP-1", "Asia/Tokyo", None, now) == now


# -- over the API -------------------------------------------------------------------------------


def published(fwrepo: Fwrepo, version: str = "1.4.0", models: str = "AC22") -> dict:
    """A small published build of a vendor of its own: campaigns are about chargers, not bytes."""
    with fwrepo.client("release") as release:
        return published_build(release, unique_vendor(), version, image(20_000), models=models)


def start(csms: httpx.Client, firmware: dict, chargers: int, **options: object) -> dict:
    reply = csms.post("/api/v1/campaigns", json={
        "firmware_id": firmware["id"],
        "chargers": [{"charger_id": f"CP-{n:03d}", "current_version": "1.3.0", "model": "AC22"} for n in range(chargers)],
        **options,
    })
    assert reply.status_code == 201, reply.text
    return reply.json()


def due(csms: httpx.Client, campaign: dict) -> list[dict]:
    reply = csms.get(f"/api/v1/campaigns/{campaign['id']}/grants", params={"due": "now"})
    assert reply.status_code == 200, reply.text
    return reply.json()["grants"]


def report(csms: httpx.Client, campaign: dict) -> dict:
    return csms.get(f"/api/v1/campaigns/{campaign['id']}").json()


def finish(csms: httpx.Client, grants: list[dict], version: str, failing: int = 0) -> None:
    """The chargers of these grants report: the first `failing` fail to install, the rest boot the new version."""
    now = datetime.now(UTC)
    events = []
    for index, grant in enumerate(grants):
        events.append({"request_id": grant["request_id"], "status": "Installing",
                       "timestamp": (now - timedelta(seconds=2)).isoformat()})
        if index < failing:
            events.append({"request_id": grant["request_id"], "status": "InstallationFailed",
                           "timestamp": (now - timedelta(seconds=1)).isoformat()})
        else:
            events.append({"request_id": grant["request_id"], "status": "Booted", "timestamp": now.isoformat(),
                           "firmware_version": version})
    reply = csms.post("/api/v1/events", json={"events": events})
    assert reply.status_code == 200, reply.text


def test_a_three_wave_campaign_runs_to_the_end(fwrepo: Fwrepo, csms: httpx.Client) -> None:
    firmware = published(fwrepo)
    campaign = start(csms, firmware, 20, waves=["10%", "50%", "100%"], failure_threshold=0.2)
    assert campaign["status"] == "running" and campaign["current_wave"] == 1
    assert [wave["chargers"] for wave in campaign["waves"]] == [2, 8, 10]
    first = due(csms, campaign)
    assert len(first) == 2 and {grant["charger_id"] for grant in first} == {"CP-000", "CP-001"}
    assert first[0]["ocpp"]["signed_update_firmware"]["requestId"] == first[0]["id"]
    assert due(csms, campaign) == []  # each grant is handed out once
    finish(csms, first, "1.4.0")
    second = due(csms, campaign)
    assert len(second) == 8 and report(csms, campaign)["current_wave"] == 2
    finish(csms, second, "1.4.0", failing=1)  # 1 of 8 is under the 20 % threshold
    third = due(csms, campaign)
    assert len(third) == 10
    finish(csms, third, "1.4.0")
    final = report(csms, campaign)
    assert final["status"] == "completed"
    assert final["states"] == {"succeeded": 19, "installation_failed": 1}
    assert final["success_rate"] == pytest.approx(19 / 20)
    assert [wave["states"] for wave in final["waves"]] == [
        {"succeeded": 2}, {"succeeded": 7, "installation_failed": 1}, {"succeeded": 10}]
    assert final["completion_seconds"]["median"] is not None
    rows = list(csv.DictReader(io.StringIO(csms.get(f"/api/v1/campaigns/{campaign['id']}/jobs.csv").text)))
    assert len(rows) == 20 and {row["state"] for row in rows} == {"succeeded", "installation_failed"}
    stats = csms.get(f"/api/v1/firmware/{firmware['id']}/stats").json()
    assert (stats["campaigns"], stats["jobs"], stats["states"]) == (1, 20, final["states"])


def test_failures_above_the_threshold_halt_the_campaign_before_the_next_wave(fwrepo: Fwrepo, csms: httpx.Client) -> None:
    firmware = published(fwrepo)
    campaign = start(csms, firmware, 20, waves=["20%", "100%"], failure_threshold=0.25)
    first = due(csms, campaign)
    assert len(first) == 4
    finish(csms, first[:2], "1.4.0", failing=2)  # 2 of 4 failed: 50 % > 25 %, halted before the wave ends
    halted = report(csms, campaign)
    assert halted["status"] == "halted"
    assert "wave 1: 2 of 4 chargers failed (50%)" in halted["status_reason"]
    assert halted["waves"][1]["states"] == {} and due(csms, campaign) == []
    finish(csms, first[2:], "1.4.0")
    halted = report(csms, campaign)
    assert halted["status"] == "halted"  # a halt stays until someone decides
    # Issue 11: the chargers of the wave that never started are pending, in the report and in jobs.csv
    rows = list(csv.DictReader(io.StringIO(csms.get(f"/api/v1/campaigns/{campaign['id']}/jobs.csv").text)))
    assert halted["pending"] == 16 and sum(halted["skipped"].values()) == 0
    assert [(row["state"], row["skip_reason"], row["grant_id"]) for row in rows if row["wave"] == "2"] == \
        [("pending", "", "")] * 16
    refused = csms.post(f"/api/v1/campaigns/{campaign['id']}/resume")
    assert refused.status_code == 409 and "halted" in refused.json()["detail"]


def test_a_download_failed_once_halts_the_wave_by_the_tick_not_by_reading(tmp_path: Path) -> None:
    """No event after the charger's one DownloadFailed: the periodic tick makes it final and halts the wave."""
    server = start_fwrepo(tmp_path, FWREPO_RETRY_GRACE="1")
    try:
        with server.client("csms") as csms:
            campaign = start(csms, published(server), 2, waves=[1, "100%"], failure_threshold=0,
                             retries=3, retry_interval=0)
            [grant] = due(csms, campaign)
            reply = csms.post(f"/api/v1/grants/{grant['id']}/events", json={
                "status": "DownloadFailed", "timestamp": datetime.now(UTC).isoformat()})
            assert reply.json()["job"] == {**reply.json()["job"], "state": "download_failed", "final": False}
            deadline = time.monotonic() + 20
            while report(csms, campaign)["status"] == "running" and time.monotonic() < deadline:
                time.sleep(0.5)
            halted = report(csms, campaign)
            assert halted["status"] == "halted" and halted["states"] == {"download_failed": 1}, halted
            assert csms.get(f"/api/v1/grants/{grant['id']}/job").json()["final"] is True
        csv_agrees_with_report(server)
    finally:
        server.stop()


def test_chargers_already_on_the_target_or_of_other_models_are_skipped(fwrepo: Fwrepo, csms: httpx.Client) -> None:
    firmware = published(fwrepo)
    reply = csms.post("/api/v1/campaigns", json={"firmware_id": firmware["id"], "chargers": [
        {"charger_id": "CP-A", "current_version": "1.3.0", "model": "AC22"},
        {"charger_id": "CP-B", "current_version": "1.4.0"},
        {"charger_id": "CP-C", "current_version": "1.3.0", "model": "DC50"},
    ]})
    assert reply.status_code == 201, reply.text
    body = reply.json()
    assert body["skipped"] == {"already_on_target": 1, "model": 1} and body["waves"][0]["chargers"] == 1
    rows = list(csv.DictReader(io.StringIO(csms.get(f"/api/v1/campaigns/{body['id']}/jobs.csv").text)))
    assert {row["charger_id"]: row["skip_reason"] for row in rows}["CP-B"] == "already on 1.4.0"


def test_pause_holds_due_grants_and_cancel_revokes_every_unused_grant(fwrepo: Fwrepo, csms: httpx.Client) -> None:
    firmware = published(fwrepo)
    campaign = start(csms, firmware, 4)
    assert csms.post(f"/api/v1/campaigns/{campaign['id']}/pause").json()["status"] == "paused"
    assert due(csms, campaign) == []
    assert csms.post(f"/api/v1/campaigns/{campaign['id']}/pause").status_code == 409
    assert csms.post(f"/api/v1/campaigns/{campaign['id']}/resume").json()["status"] == "running"
    grants = due(csms, campaign)
    assert len(grants) == 4
    with fwrepo.client(None) as charger:
        assert charger.get(grants[0]["location"]).status_code == 200
    assert csms.post(f"/api/v1/campaigns/{campaign['id']}/cancel").json()["status"] == "cancelled"
    for grant in grants:
        detail = csms.get(f"/api/v1/grants/{grant['id']}").json()
        assert detail["revoked_at"] is not None and "cancelled" in detail["revoke_reason"]


def test_ftps_campaign_grants_get_their_login_when_handed_out(fwrepo: Fwrepo, csms: httpx.Client) -> None:
    firmware = published(fwrepo)
    campaign = start(csms, firmware, 2, protocol="ftps")
    grants = due(csms, campaign)
    assert len(grants) == 2 and all(grant["location"].startswith("ftp://") for grant in grants)
    assert grants[0]["location"] != grants[1]["location"]


@pytest.mark.parametrize(("change", "field"), [
    ({"firmware_id": None}, "firmware_id"),
    ({"chargers": []}, "chargers"),
    ({"chargers": [{"charger_id": "CP 1\n", "current_version": "1"}]}, "chargers[0].charger_id"),
    ({"chargers": [{"charger_id": "CP1"}]}, "chargers[0].current_version"),
    ({"chargers": [{"charger_id": "CP1", "current_version": "1", "time_zone": "Mars/Olympus"}]},
     "chargers[0].time_zone"),
    ({"chargers": [{"charger_id": "CP1", "current_version": "1"}] * 2}, "chargers[1].charger_id"),
    ({"waves": ["0%"]}, "waves"),
    ({"waves": []}, "waves"),
    ({"failure_threshold": 2}, "failure_threshold"),
    ({"waves": ["10%", "100%"], "failure_threshold": [0.1]}, "failure_threshold"),
    ({"window": {"start": "25:00", "end": "05:00"}}, "window.start"),
    ({"window": {"start": "01:00", "end": "01:00"}}, "window"),
    ({"protocol": "gopher"}, "protocol"),
    ({"colour": "red"}, "colour"),
])
def test_bad_campaigns_are_refused_422_naming_the_field(fwrepo: Fwrepo, csms: httpx.Client, change: dict,
                                                        field: str) -> None:
    firmware = published(fwrepo)
    body = {"firmware_id": firmware["id"], "chargers": [{"charger_id": "CP1", "current_version": "1.3.0"}], **change}
    reply = csms.post("/api/v1/campaigns", json=body)
    assert reply.status_code == 422 and reply.json()["field"] == field, reply.text


def test_with_a_public_url_too_long_for_ocpp_1_6_a_campaign_refuses_1_6_chargers_over_https(tmp_path: Path) -> None:
    public_url = "https://fw.example.net/" + "p" * 250  # behind a proxy that strips the path
    server = start_fwrepo(tmp_path, FWREPO_PUBLIC_URL=public_url)
    try:
        firmware = published(server)
        chargers = [{"charger_id": "CP-201", "current_version": "1.3.0", "ocpp_version": "2.0.1"},
                    {"charger_id": "CP-16", "current_version": "1.3.0", "ocpp_version": "1.6"},
                    {"charger_id": "CP-any", "current_version": "1.3.0"}]
        with server.client("csms") as csms:
            refused = csms.post("/api/v1/campaigns", json={"firmware_id": firmware["id"], "chargers": chargers})
            assert refused.status_code == 422, refused.text
            assert refused.json()["field"] == "chargers[1].ocpp_version"
            assert "512" in refused.json()["detail"] and "255" in refused.json()["detail"]
            # FTPS logins stay within 255: the same chargers are served that way
            over_ftps = csms.post("/api/v1/campaigns", json={"firmware_id": firmware["id"], "chargers": chargers,
                                                             "protocol": "ftps"})
            assert over_ftps.status_code == 201, over_ftps.text
            assert {grant["location_fits"]["1.6"] for grant in due(csms, over_ftps.json())} == {True}
            without_16 = csms.post("/api/v1/campaigns", json={"firmware_id": firmware["id"],
                                                              "chargers": [chargers[0], chargers[2]]})
            assert without_16.status_code == 201, without_16.text
            grants = due(csms, without_16.json())
            assert len(grants) == 2
            for grant in grants:
                assert grant["location"].startswith(public_url + "/d/") and 255 < len(grant["location"]) <= 512
                assert grant["location_fits"] == {"1.6": False, "2.0.1": True, "2.1": True}
    finally:
        server.stop()


def test_a_campaign_nobody_needs_is_refused(fwrepo: Fwrepo, csms: httpx.Client) -> None:
    firmware = published(fwrepo)
    reply = csms.post("/api/v1/campaigns", json={"firmware_id": firmware["id"],
                                                  "chargers": [{"charger_id": "CP1", "current_version": "1.4.0"}]})
    assert reply.status_code == 422 and "already on 1.4.0" in reply.json()["detail"]


def test_release_engineers_cannot_run_campaigns(fwrepo: Fwrepo) -> None:
    with fwrepo.client("release") as release:
        assert release.get("/api/v1/campaigns").status_code == 403


def test_the_cli_lists_shows_follows_and_steers_campaigns(fwrepo: Fwrepo, csms: httpx.Client) -> None:
    firmware = published(fwrepo)
    campaign = start(csms, firmware, 3, waves=[1, "100%"])
    remote = ("--url", fwrepo.url, "--key", fwrepo.key("csms"))
    assert campaign["id"] in fwrepo.cli("campaigns", "list", *remote).stdout
    shown = fwrepo.cli("campaigns", "show", campaign["id"], *remote).stdout
    assert "running" in shown and "0/3 finished" in shown and "THRESHOLD" in shown
    assert "paused" in fwrepo.cli("campaigns", "pause", campaign["id"], *remote).stdout
    assert "running" in fwrepo.cli("campaigns", "resume", campaign["id"], *remote).stdout
    finish(csms, due(csms, campaign), "1.4.0")
    finish(csms, due(csms, campaign), "1.4.0")
    followed = fwrepo.cli("campaigns", "show", campaign["id"], "--follow", *remote)
    assert "completed" in followed.stdout and "3/3 finished" in followed.stdout
    refused = fwrepo.cli("campaigns", "pause", campaign["id"], *remote, check=False)
    assert refused.returncode == 1 and "cannot pause" in refused.stderr


def test_due_grants_come_in_pages_each_handed_out_once(fwrepo: Fwrepo, csms: httpx.Client) -> None:
    firmware = published(fwrepo)
    campaign = start(csms, firmware, 25)
    pages = []
    while page := csms.get(f"/api/v1/campaigns/{campaign['id']}/grants", params={"due": "now", "limit": 10}).json()[
            "grants"]:
        pages.append(len(page))
    assert pages == [10, 10, 5]
    reply = csms.get(f"/api/v1/campaigns/{campaign['id']}/grants", params={"due": "now", "limit": 10_001})
    assert reply.status_code == 422 and reply.json()["field"] == "limit"


def test_a_wave_that_adds_nobody_is_passed_over(fwrepo: Fwrepo, csms: httpx.Client) -> None:
    firmware = published(fwrepo)
    campaign = start(csms, firmware, 3, waves=["1%", "2%", "100%"])  # ends 1, 1, 3: wave 2 is empty
    finish(csms, due(csms, campaign), "1.4.0")
    assert len(due(csms, campaign)) == 2 and report(csms, campaign)["current_wave"] == 3


def test_the_csv_export_keeps_charger_ids_from_becoming_formulas(fwrepo: Fwrepo, csms: httpx.Client) -> None:
    firmware = published(fwrepo)
    reply = csms.post("/api/v1/campaigns", json={"firmware_id": firmware["id"], "chargers": [
        {"charger_id": "=HYPERLINK(\"http://evil\")", "current_version": "1.3.0"}]})
    text = csms.get(f"/api/v1/campaigns/{reply.json()['id']}/jobs.csv").text
    assert "'=HYPERLINK" in text
