"""Is there an update for this charger? Newest compatible published firmware, or null."""

from __future__ import annotations

import httpx
import pytest

from tests.support.builds import published_build, upload


def ask(csms: httpx.Client, vendor: str, current: str, **params: str) -> dict | None:
    reply = csms.get("/api/v1/updates", params={"vendor": vendor, "model": "AC22", "current_version": current, **params})
    assert reply.status_code == 200, reply.text
    return reply.json()["update"]


def test_the_newest_published_firmware_is_offered(release: httpx.Client, csms: httpx.Client, vendor: str) -> None:
    published_build(release, vendor, "1.9.0")
    newest = published_build(release, vendor, "1.10.0")
    upload(release, vendor, "2.0.0")  # uploaded, never published
    assert ask(csms, vendor, "1.2")["id"] == newest["id"]


def test_an_up_to_date_charger_gets_null(release: httpx.Client, csms: httpx.Client, vendor: str) -> None:
    published_build(release, vendor, "1.10.0")
    assert ask(csms, vendor, "V1.10") is None
    assert ask(csms, vendor, "1.11.0-rc1") is None


def test_yanked_firmware_is_never_offered(release: httpx.Client, csms: httpx.Client, vendor: str) -> None:
    older = published_build(release, vendor, "1.1.0")
    bad = published_build(release, vendor, "1.2.0")
    release.post(f"/api/v1/firmware/{bad['id']}/yank", json={"reason": "broken"})
    assert ask(csms, vendor, "1.0.0")["id"] == older["id"]


def test_min_version_makes_an_older_build_the_stepping_stone(release: httpx.Client, csms: httpx.Client, vendor: str) -> None:
    stone = published_build(release, vendor, "2.0.0")
    final = published_build(release, vendor, "3.0.0", min_version="2.0.0")
    assert ask(csms, vendor, "1.5.0")["id"] == stone["id"]
    assert ask(csms, vendor, "2.0.0")["id"] == final["id"]


def test_other_models_channels_and_hardware_revisions_are_not_offered(
    release: httpx.Client, csms: httpx.Client, vendor: str
) -> None:
    published_build(release, vendor, "5.0.0", models="DC50")
    beta = published_build(release, vendor, "4.0.0", channel="beta")
    rev_c = published_build(release, vendor, "3.0.0", hardware_revisions="C")
    assert ask(csms, vendor, "1.0.0") is None
    assert ask(csms, vendor, "1.0.0", channel="beta")["id"] == beta["id"]
    assert ask(csms, vendor, "1.0.0", hardware_revision="C")["id"] == rev_c["id"]
    assert ask(csms, vendor, "1.0.0", hardware_revision="B") is None


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"model": "AC22", "current_version": "1.0"}, "vendor"),
        ({"vendor": "x", "current_version": "1.0"}, "model"),
        ({"vendor": "x", "model": "AC22"}, "current_version"),
        ({"vendor": "x", "model": "AC22", "current_version": "latest"}, "current_version"),
    ],
)
def test_incomplete_questions_are_refused_422(csms: httpx.Client, params: dict[str, str], field: str) -> None:
    reply = csms.get("/api/v1/updates", params=params)
    assert reply.status_code == 422
    assert reply.json()["field"] == field
