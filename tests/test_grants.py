"""Grants: what the CSMS asks for, and the OCPP requests it gets back ready to send."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import httpx
import jsonschema
import ocpp
import pytest

from repo_service.domain.clock import rfc3339 as iso
from repo_service.domain.ftp_logins import FtpsEndpoint
from repo_service.domain.grants import Grants
from repo_service.domain.ocpp import location_fits
from repo_service.domain.tokens import TokenSigner
from repo_service.errors import SettingsError
from tests.support.builds import image, published_build, upload
from tests.support.fwrepo import Fwrepo

SCHEMAS = Path(ocpp.__file__).parent
OCPP_SCHEMAS = {
    "update_firmware": SCHEMAS / "v16" / "schemas" / "UpdateFirmware.json",
    "signed_update_firmware": SCHEMAS / "v16" / "schemas" / "SignedUpdateFirmware.json",
    "update_firmware_v201": SCHEMAS / "v201" / "schemas" / "UpdateFirmwareRequest.json",
    "publish_firmware_v201": SCHEMAS / "v201" / "schemas" / "PublishFirmwareRequest.json",
}


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_a_grant_carries_four_ocpp_requests_that_validate_against_the_ocpp_schemas(
    release: httpx.Client, csms: httpx.Client, vendor: str
) -> None:
    content = image(70_000)
    firmware = published_build(release, vendor, content=content)
    retrieve = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    install = retrieve + timedelta(hours=1)
    reply = csms.post("/api/v1/grants", json={
        "firmware_id": firmware["id"], "charger_id": "CP-0001", "retrieve_date": retrieve.isoformat(),
        "retries": 5, "retry_interval": 900, "install_date": install.isoformat(),
    })
    assert reply.status_code == 201, reply.text
    grant = reply.json()
    for name, schema_path in OCPP_SCHEMAS.items():
        schema = json.loads(schema_path.read_text())
        jsonschema.validate(grant["ocpp"][name], schema, format_checker=jsonschema.FormatChecker())
    update = grant["ocpp"]["update_firmware"]
    assert update == {"location": grant["location"], "retrieveDate": iso(retrieve), "retries": 5, "retryInterval": 900}
    signed = grant["ocpp"]["signed_update_firmware"]
    assert signed["requestId"] == grant["request_id"] == grant["id"]
    assert signed["firmware"]["signature"] == firmware["signature"]
    assert signed["firmware"]["signingCertificate"] == firmware["signing_certificate"]
    assert signed["firmware"]["installDateTime"] == iso(install)
    assert grant["ocpp"]["update_firmware_v201"]["firmware"] == signed["firmware"]
    assert grant["location_fits"] == {"1.6": True, "2.0.1": True, "2.1": True}
    assert grant["ocpp"]["publish_firmware_v201"] == {
        "location": grant["location"], "checksum": hashlib.md5(content).hexdigest(), "requestId": grant["id"],
        "retries": 5, "retryInterval": 900,
    }
    # stable: the same requestId when the grant is read back
    again = csms.get(f"/api/v1/grants/{grant['id']}").json()
    assert again["ocpp"] == grant["ocpp"]


def test_request_ids_are_unique_per_grant(release: httpx.Client, csms: httpx.Client, vendor: str) -> None:
    firmware = published_build(release, vendor)
    ids = {csms.post("/api/v1/grants", json={"firmware_id": firmware["id"], "charger_id": f"CP-{n}"}).json()["request_id"]
           for n in range(5)}
    assert len(ids) == 5


def test_a_grant_outlives_the_chargers_whole_retry_plan(release: httpx.Client, csms: httpx.Client, vendor: str) -> None:
    firmware = published_build(release, vendor)
    retrieve = datetime.now(UTC) + timedelta(days=2)
    grant = csms.post("/api/v1/grants", json={
        "firmware_id": firmware["id"], "charger_id": "CP-1", "retrieve_date": retrieve.isoformat(),
        "retries": 10, "retry_interval": 3600,
    }).json()
    assert when(grant["expires_at"]) >= retrieve + timedelta(hours=10) + timedelta(hours=1) - timedelta(seconds=1)
    short = csms.post("/api/v1/grants", json={
        "firmware_id": firmware["id"], "charger_id": "CP-1", "retries": 10, "retry_interval": 3600, "expires_in": 3600,
    })
    assert short.status_code == 422
    assert short.json()["field"] == "expires_in" and "retry plan" in short.json()["detail"]


def test_a_default_grant_lives_24_hours(release: httpx.Client, csms: httpx.Client, vendor: str) -> None:
    firmware = published_build(release, vendor)
    grant = csms.post("/api/v1/grants", json={"firmware_id": firmware["id"], "charger_id": "CP-1"}).json()
    lifetime = when(grant["expires_at"]) - when(grant["created_at"])
    assert timedelta(hours=23, minutes=59) < lifetime <= timedelta(hours=24, seconds=1)


def test_only_published_firmware_can_be_granted(release: httpx.Client, csms: httpx.Client, vendor: str) -> None:
    uploaded = upload(release, vendor, "1.0.0").json()
    assert csms.post("/api/v1/grants", json={"firmware_id": uploaded["id"], "charger_id": "CP-1"}).status_code == 409
    yanked = published_build(release, vendor, "1.1.0")
    release.post(f"/api/v1/firmware/{yanked['id']}/yank", json={"reason": "bad"})
    assert csms.post("/api/v1/grants", json={"firmware_id": yanked["id"], "charger_id": "CP-1"}).status_code == 409
    unknown = csms.post("/api/v1/grants", json={"firmware_id": "nope", "charger_id": "CP-1"})
    assert unknown.status_code == 422 and unknown.json()["field"] == "firmware_id"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"charger_id": ""}, "charger_id"),
        ({"charger_id": "CP 1\n"}, "charger_id"),
        ({"charger_id": "x" * 65}, "charger_id"),
        ({"protocol": "gopher"}, "protocol"),
        ({"expires_in": "soon"}, "expires_in"),
        ({"expires_in": 10}, "expires_in"),
        ({"expires_in": 10**9}, "expires_in"),
        ({"retrieve_date": "tomorrow"}, "retrieve_date"),
        ({"retrieve_date": "2030-01-01T02:00:00"}, "retrieve_date"),
        ({"retrieve_date": "2001-01-01T00:00:00Z"}, "retrieve_date"),
        ({"retrieve_date": "2099-01-01T00:00:00Z"}, "retrieve_date"),
        ({"retrieve_date": "9999-12-31T23:59:59Z"}, "retrieve_date"),
        ({"install_date": "0001-01-01T00:00:00Z"}, "install_date"),
        ({"install_date": "9999-12-31T23:59:59Z"}, "install_date"),
        ({"ftps_mode": "implicit"}, "ftps_mode"),
        ({"protocol": "ftps", "ftps_mode": "sideways"}, "ftps_mode"),
        ({"retries": -1}, "retries"),
        ({"retries": True}, "retries"),
        ({"max_downloads": 0}, "max_downloads"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_grant_requests_are_refused_422_naming_the_field(
    release: httpx.Client, csms: httpx.Client, vendor: str, body: dict, field: str
) -> None:
    firmware = published_build(release, vendor)
    reply = csms.post("/api/v1/grants", json={"firmware_id": firmware["id"], "charger_id": "CP-1", **body})
    assert reply.status_code == 422, reply.text
    assert reply.json()["field"] == field


def test_grants_are_for_the_csms_not_for_release_engineers(fwrepo: Fwrepo, release: httpx.Client, vendor: str) -> None:
    firmware = published_build(release, vendor)
    assert release.post("/api/v1/grants", json={"firmware_id": firmware["id"], "charger_id": "CP-1"}).status_code == 403
    with fwrepo.client(None) as anonymous:
        assert anonymous.post("/api/v1/grants", json={"firmware_id": firmware["id"], "charger_id": "CP-1"}).status_code == 401


def test_a_batch_gives_each_charger_its_own_grant(release: httpx.Client, csms: httpx.Client, vendor: str) -> None:
    firmware = published_build(release, vendor)
    chargers = [f"CP-{n:05d}" for n in range(2500)]
    reply = csms.post("/api/v1/grants/batch", json={"firmware_id": firmware["id"], "charger_ids": chargers})
    assert reply.status_code == 201, reply.text
    batch = reply.json()
    assert batch["count"] == 2500
    assert [grant["charger_id"] for grant in batch["grants"]] == chargers
    assert len({grant["location"] for grant in batch["grants"]}) == 2500
    assert len({grant["request_id"] for grant in batch["grants"]}) == 2500
    sample = batch["grants"][1234]
    assert csms.get(f"/api/v1/grants/{sample['id']}").json()["charger_id"] == "CP-01234"


@pytest.mark.parametrize(
    ("charger_ids", "message"),
    [([], "non-empty"), (["A", "B", "A"], "'A' appears more than once"), ([f"C{n}" for n in range(10_001)], "at most 10000")],
)
def test_bad_batches_are_refused_whole(release: httpx.Client, csms: httpx.Client, vendor: str, charger_ids: list, message: str) -> None:
    firmware = published_build(release, vendor)
    reply = csms.post("/api/v1/grants/batch", json={"firmware_id": firmware["id"], "charger_ids": charger_ids})
    assert reply.status_code == 422 and message in reply.json()["detail"]


def test_unknown_grants_are_404_and_bad_ids_422(csms: httpx.Client) -> None:
    assert csms.get("/api/v1/grants/999999999").status_code == 404
    assert csms.delete("/api/v1/grants/999999999").status_code == 404
    assert csms.get("/api/v1/grants/abc").status_code == 422


def test_a_location_with_a_40_character_host_stays_within_255_printable_ascii_characters() -> None:
    host = "firmware-downloads.charging-network.eu"  # 38
    host = host + "x" * (40 - len(host))
    grants = Grants(None, None, TokenSigner(b"k" * 32), None, None, None, f"https://{host}", timedelta(days=30))  # type: ignore[arg-type]
    far_future = datetime(2099, 12, 31, tzinfo=UTC)
    for filename in ("fw.bin", "A" * 100 + ".bin", "x" * 200, "vendor-model_1.2.3-rc1+build.5.tar.gz"):
        location = grants.location(2**31 - 1, far_future, filename)
        assert len(location) <= 255, (len(location), location)
        assert location.startswith(f"https://{host}/d/")
        assert location.isascii() and location.isprintable() and " " not in location
    assert grants.location(7, far_future, "A" * 300 + ".bin").endswith(".bin")


def test_an_ftps_host_too_long_for_a_file_name_within_255_stops_start_up_naming_it() -> None:
    def grants(host: str) -> Grants:
        return Grants(None, None, TokenSigner(b"k" * 32), None, None, None, "https://" + "p" * 300,  # type: ignore[arg-type]
                      timedelta(days=30), ftps=FtpsEndpoint(host, 2121, 9990))

    assert grants("h" * 150).location_limit == 512  # long HTTPS locations, FTPS ones within 255
    with pytest.raises(SettingsError) as refused:
        grants("h" * 200)
    assert refused.value.name == "FWREPO_FTPS_PUBLIC_HOST"


@pytest.mark.parametrize(("length", "limit"), [(120, 255), (199, 255), (200, 512), (400, 512)])
def test_a_long_public_url_gives_locations_within_512_that_say_they_do_not_fit_ocpp_1_6(length: int,
                                                                                         limit: int) -> None:
    public_url = "https://fw.example.net/" + "p" * (length - len("https://fw.example.net/"))
    grants = Grants(None, None, TokenSigner(b"k" * 32), None, None, None, public_url, timedelta(days=30))  # type: ignore[arg-type]
    assert grants.location_limit == limit
    far_future = datetime(2099, 12, 31, tzinfo=UTC)
    location = grants.location(2**31 - 1, far_future, "vendor-model_1.2.3-rc1+build.5-" + "x" * 600 + ".bin")
    assert len(location) == limit and location.endswith(".bin") and location.startswith(public_url + "/d/")
    assert location_fits(location) == {"1.6": limit == 255, "2.0.1": True, "2.1": True}
    # what a grant reply says is of its own location: a short one still fits 1.6 on a server whose longest do not
    assert location_fits("https://fw.example.net/d/7.x.y/fw.bin") == {"1.6": True, "2.0.1": True, "2.1": True}
    assert location_fits("x" * 513) == {"1.6": False, "2.0.1": False, "2.1": True}


def test_a_retrieve_date_with_another_offset_is_converted_to_utc(release: httpx.Client, csms: httpx.Client, vendor: str) -> None:
    firmware = published_build(release, vendor)
    local = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0).astimezone(timezone(timedelta(hours=5)))
    grant = csms.post("/api/v1/grants", json={"firmware_id": firmware["id"], "charger_id": "CP-1",
                                              "retrieve_date": local.isoformat()}).json()
    assert grant["ocpp"]["update_firmware"]["retrieveDate"] == iso(local.astimezone(UTC))
    assert csms.get(f"/api/v1/grants/{grant['id']}").json()["ocpp"] == grant["ocpp"]
