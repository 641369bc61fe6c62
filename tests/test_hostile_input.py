"""Input an attacker sends on purpose: every one is refused with a problem reply naming what is wrong, never a 500."""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
import secrets
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.routing import Route

import repo_service.http
from repo_service.domain.clock import rfc3339
from tests.support.builds import image, published_build, unique_vendor, upload
from tests.support.fwrepo import Fwrepo
from tests.support.grants import grant_for

# Per database, against one server: about 20 s each on an idle machine (issue 13: about a minute in all). Drawn in
# shards, each of its own test, so that xdist's workers share them rather than one worker ending the run on them.
BODY_EXAMPLES = 3000
BODY_SHARDS = 3


def refused(reply: httpx.Response, status: int, field: str | None = None) -> dict:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"] == "application/problem+json"
    problem = reply.json()
    assert problem["status"] == status
    if field is not None:
        assert problem["field"] == field, problem
    return problem


def test_a_range_with_thousands_of_digits_is_416_or_the_whole_image_never_500(fwrepo: Fwrepo) -> None:
    content = image(10_000)
    _, grant = grant_for(fwrepo, content)
    with fwrepo.client(None) as charger:
        for start in ("99999999999999999999999999999", "9" * 5000):
            reply = charger.get(grant["location"], headers={"Range": f"bytes={start}-"})
            refused(reply, 416)
            assert reply.headers["content-range"] == f"bytes */{len(content)}"
        # An end or a suffix past the image means "to the end" (RFC 9110 §14.1.2).
        for whole in ("bytes=0-" + "9" * 5000, "bytes=-" + "9" * 5000, "bytes=" + "0" * 5000 + "-"):
            reply = charger.get(grant["location"], headers={"Range": whole})
            assert reply.status_code == 206 and reply.content == content, whole[:20]


def test_paging_values_too_large_negative_or_not_numbers_are_422_naming_the_parameter(release: httpx.Client) -> None:
    for query, parameter in [
        (f"offset={10**30}", "offset"),
        (f"offset={2**63}", "offset"),
        ("offset=" + "9" * 5000, "offset"),
        ("offset=%C2%B2", "offset"),
        ("limit=-1", "limit"),
        ("limit=abc", "limit"),
        ("limit=1_0", "limit"),
    ]:
        refused(release.get(f"/api/v1/firmware?{query}"), 422, parameter)
    assert release.get(f"/api/v1/firmware?offset={2**63 - 1}").json()["items"] == []


def test_an_audit_offset_past_a_64_bit_integer_is_422_not_a_database_error(fwrepo: Fwrepo) -> None:
    # Found by schemathesis (tests/test_api_fuzz.py): 2**63 has 19 digits, and the database refused it with a 500.
    with fwrepo.client("admin") as admin:
        refused(admin.get(f"/api/v1/audit?offset={2**63}"), 422, "offset")
        assert admin.get(f"/api/v1/audit?offset={2**63 - 1}").json()["items"] == []


def test_json_nested_deeper_than_the_parser_goes_is_422_malformed_json(
    fwrepo: Fwrepo, release: httpx.Client, csms: httpx.Client
) -> None:
    json_headers = {"Content-Type": "application/json"}
    for client, path, body in [
        (csms, "/api/v1/grants", b"[" * 60_000),
        (csms, "/api/v1/grants/batch", b"[" * 100_000),
        (csms, "/api/v1/grants", b'{"a":' * 10_000),
        (release, "/api/v1/firmware/0123456789abcdef/yank", b"[" * 60_000),
    ]:
        problem = refused(client.post(path, content=body, headers=json_headers), 422, "body")
        assert "malformed JSON" in problem["detail"]
    problem = refused(csms.post("/api/v1/grants", content=b'{"retries": NaN}', headers=json_headers), 422, "body")
    assert "NaN" in problem["detail"]


def test_a_multipart_boundary_longer_than_rfc_2046_allows_is_422(release: httpx.Client) -> None:
    for boundary in ("b" * 10_000, "b" * 71):
        reply = release.post("/api/v1/firmware", content=b"--" + boundary.encode() + b"\r\n",
                             headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        assert "70 characters" in refused(reply, 422, "Content-Type")["detail"]
    for content_type in (";;;==;boundary", "multipart/form-data", "application/json; boundary=x"):
        reply = release.post("/api/v1/firmware", content=b"x", headers={"Content-Type": content_type})
        refused(reply, 422, "Content-Type")


def test_a_method_the_resource_lacks_is_405_with_allow_listing_all_its_methods(fwrepo: Fwrepo) -> None:
    with fwrepo.client("csms") as csms:
        for method, path, allowed in [
            ("PUT", "/api/v1/grants", {"POST"}),
            ("PATCH", "/api/v1/grants", {"POST"}),
            # GET and POST on one path are two routes: Allow must name both.
            ("PUT", "/api/v1/firmware", {"GET", "HEAD", "POST"}),
            ("PUT", "/api/v1/grants/1", {"GET", "HEAD", "DELETE"}),
            # Also a match for /api/v1/grants/{grant_id}: the batch's own methods only (schemathesis found it).
            ("OPTIONS", "/api/v1/grants/batch", {"POST"}),
            ("GET", "/api/v1/grants/batch", {"POST"}),
        ]:
            reply = csms.request(method, path)
            assert refused(reply, 405)["type"].endswith("method-not-allowed")
            assert set(reply.headers["allow"].split(", ")) == allowed, (method, path)


def test_grant_ids_past_the_id_column_are_404_and_non_numbers_are_422(csms: httpx.Client) -> None:
    for request in (csms.get, csms.delete):
        # On PostgreSQL these overflow the integer column if they reach the query.
        for too_large in ("99999999999999999999", str(2**63), str(2**31), "0"):
            refused(request(f"/api/v1/grants/{too_large}"), 404)
        for not_a_number in ("-1", "abc", "%C2%B2", "1e3"):
            refused(request(f"/api/v1/grants/{not_a_number}"), 422, "grant_id")


def test_nul_in_an_api_url_is_422_not_a_postgresql_error(
    fwrepo: Fwrepo, release: httpx.Client, csms: httpx.Client
) -> None:
    refused(release.get("/api/v1/firmware?vendor=%00"), 422, "vendor")
    refused(csms.get("/api/v1/updates?vendor=ACME&model=AC22&current_version=1.0&channel=st%00able"), 422, "channel")
    for path in ("/api/v1/firmware/%00", "/api/v1/firmware/a%00/manifest", "/api/v1/firmware/a%00/content"):
        refused(release.get(path), 422, "path")
    refused(release.post("/api/v1/firmware/a%00/publish"), 422, "path")
    # A charger's download keeps its one answer for every bad token: 404, audited.
    with fwrepo.client(None) as charger:
        refused(charger.get("/d/1.%00.x/fw.bin"), 404)


def test_nul_or_a_lone_surrogate_in_json_text_is_422_naming_the_field(fwrepo: Fwrepo, csms: httpx.Client) -> None:
    firmware, _ = grant_for(fwrepo, image(1000))
    json_headers = {"Content-Type": "application/json"}
    for text in (b"CP-\\u0000", b"CP-\\ud800"):
        body = b'{"firmware_id": "%s", "charger_id": "%s"}' % (firmware["id"].encode(), text)
        refused(csms.post("/api/v1/grants", content=body, headers=json_headers), 422, "charger_id")
        body = b'{"firmware_id": "%s", "charger_ids": ["CP-1", "%s"]}' % (firmware["id"].encode(), text)
        refused(csms.post("/api/v1/grants/batch", content=body, headers=json_headers), 422, "charger_ids")


def test_nul_in_an_upload_form_field_is_422_naming_the_field(release: httpx.Client, vendor: str) -> None:
    refused(upload(release, vendor, "1.0.0", release_notes="fixes\x00drift"), 422, "release_notes")
    refused(upload(release, vendor + "\x00", "1.0.0"), 422, "vendor")


def test_a_download_whose_image_is_gone_from_storage_answers_as_a_forged_token_does(fwrepo: Fwrepo) -> None:
    firmware, grant = grant_for(fwrepo, image(1000))
    token = grant["location"].split("/")[-2]
    forged = grant["location"].replace(token, token[:-1] + ("A" if token[-1] != "A" else "B"))
    stored = fwrepo.data_dir / "storage" / "firmware" / firmware["id"]
    hidden = stored.with_name(f".{stored.name}.hidden")  # a dot name: no other test's storage check counts it
    stored.rename(hidden)
    try:
        with fwrepo.client(None) as charger:
            replies = [charger.get(location, headers=headers) for location in (grant["location"], forged)
                       for headers in ({}, {"Range": "bytes=10-"})]
    finally:
        hidden.rename(stored)
    # The attack as found: 404 "no stored object firmware/<id>" told anyone the id and that the token was good.
    assert firmware["id"] not in replies[0].text
    assert len({(reply.status_code, reply.headers["content-type"], reply.content) for reply in replies}) == 1
    refused(replies[0], 404)


def test_a_next_link_points_at_the_public_url_whatever_host_the_request_named(fwrepo: Fwrepo, vendor: str) -> None:
    with fwrepo.client("release") as release:
        for version in ("1.0.0", "1.0.1"):
            published_build(release, vendor, version)
        page = release.get("/api/v1/firmware", params={"vendor": vendor, "limit": 1},
                           headers={"Host": "attacker.example", "X-Forwarded-Host": "attacker.example"}).json()
        assert page["next"].startswith(fwrepo.url + "/api/v1/firmware?"), page["next"]
        following = release.get(page["next"].removeprefix(fwrepo.url)).json()
    assert following["offset"] == 1 and following["items"][0]["vendor"] == vendor


# -- generated bodies at every JSON endpoint (hypothesis) ------------------------------------------------------------

# Values a hostile or sloppy client puts where a field belongs: null, the wrong type, numbers past every
# bound (a 64-bit column, a timedelta, a 32-bit grant id), moments out of range, text of any kind.
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([-1, 0, 1, 59, 2**31, 2**53 + 1, 2**63, 2**64, 10**30, -(2**63) - 1]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.5, -0.0, 1e308, 5e-324]),
    st.text(max_size=60),
    st.sampled_from([
        "", " ", "https", "ftps", "explicit", "implicit", "100%", "0%", "1e9%", "01:00", "24:00", "Booted",
        "Downloading", "9999-12-31T23:59:59Z", "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00",
        "2026-02-30T00:00:00Z", "2026-12-01T02:00:00", "Europe/Berlin", "../../etc/passwd", "UTC\n",
    ]),
)
_HOSTILE = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=12), inner, max_size=3), max_leaves=8)


@st.composite
def _mutated(draw: st.DrawFn, value: object, depth: int = 0) -> object:
    """value with some of its parts dropped, replaced by hostile values, or mutated further down; extra keys added."""
    choice = draw(st.integers(0, 9))
    if choice == 0:
        return draw(_HOSTILE)
    if isinstance(value, dict) and depth < 3:
        result = {}
        for key, item in value.items():
            fate = draw(st.integers(0, 9))
            if fate == 0:
                continue
            result[key] = draw(_HOSTILE) if fate == 1 else draw(_mutated(item, depth + 1)) if fate == 2 else item
        if draw(st.integers(0, 9)) == 0:
            result[draw(st.text(max_size=12))] = draw(_HOSTILE)
        return result
    if isinstance(value, list) and depth < 3:
        items = [draw(_mutated(item, depth + 1)) if draw(st.booleans()) else item for item in value]
        return items + draw(st.lists(_HOSTILE, max_size=1))
    return value


def _post_routes() -> set[str]:
    """Every route of the HTTP API that takes a request body, read from each module's route list."""
    paths = set()
    for module_info in pkgutil.iter_modules(repo_service.http.__path__):
        module = importlib.import_module(f"repo_service.http.{module_info.name}")
        for route in getattr(module, "ROUTES", []):
            if isinstance(route, Route) and route.methods and route.methods & {"POST", "PUT", "PATCH"}:
                paths.add(route.path)
    return paths


def _signer_key(curve: ec.EllipticCurve | None = None) -> str:
    key = ec.generate_private_key(curve or ec.SECP256R1()).public_key()
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def _bodies(admin: httpx.Client, fuzzed_tenant: str) -> dict[str, tuple[str, list[dict]]]:
    """Each route that takes a body (its template) with a URL to post to and valid bodies holding every field it
    takes: mutations of them reach the checks behind the first one, and a valid draw reaches the database."""
    now = datetime.now(UTC)
    soon, later = rfc3339(now + timedelta(minutes=5)), rfc3339(now + timedelta(hours=2))
    vendor = unique_vendor()
    firmware = published_build(admin, vendor, "2.0.0")
    doomed = published_build(admin, vendor, "2.0.1")  # yanked by the first valid yank body
    grant = admin.post("/api/v1/grants", json={"firmware_id": firmware["id"], "charger_id": "CP-1"}).json()
    campaign = admin.post("/api/v1/campaigns", json={
        "firmware_id": firmware["id"], "chargers": [{"charger_id": "CP-2", "current_version": "1.0.0"}],
    }).json()
    grant_body = {"firmware_id": firmware["id"], "protocol": "https", "retrieve_date": soon, "install_date": later,
                  "retries": 3, "retry_interval": 60, "expires_in": 86400, "max_downloads": 2}
    downloading = {"status": "Downloading", "timestamp": rfc3339(now), "info": "started",
                   "status_info": {"reason_code": "Started", "additional_info": "at 1 Mbit/s"},
                   "notification": "FirmwareStatusNotification"}
    booted = {"status": "Booted", "timestamp": rfc3339(now), "firmware_version": "2.0.0"}
    published = {"status": "Published", "timestamp": rfc3339(now), "notification": "PublishFirmwareStatusNotification"}
    return {
        "/api/v1/grants": ("/api/v1/grants", [
            {**grant_body, "charger_id": "CP-3"},
            {**grant_body, "charger_id": "CP-4", "protocol": "ftps", "ftps_mode": "implicit"},
        ]),
        "/api/v1/grants/batch": ("/api/v1/grants/batch", [{**grant_body, "charger_ids": ["CP-5", "CP-6"]}]),
        "/api/v1/grants/{grant_id}/events": (f"/api/v1/grants/{grant['id']}/events", [downloading, booted, published]),
        "/api/v1/events": ("/api/v1/events", [{"events": [{**downloading, "grant_id": grant["id"]},
                                                          {**booted, "request_id": grant["id"]},
                                                          {**published, "grant_id": grant["id"]}]}]),
        "/api/v1/campaigns": ("/api/v1/campaigns", [{
            "firmware_id": firmware["id"], "protocol": "https", "waves": ["50%", 2], "failure_threshold": [0.1, 0.5],
            "window": {"start": "01:00", "end": "05:00"}, "retries": 3, "retry_interval": 60,
            "chargers": [{"charger_id": "CP-8", "current_version": "1.0.0", "model": "AC22",
                          "hardware_revision": "B", "time_zone": "Europe/Berlin"}],
        }]),
        # Steering and publishing take no body: whatever is sent is ignored, never a 5xx.
        **{f"/api/v1/campaigns/{{campaign_id}}/{action}": (f"/api/v1/campaigns/{campaign['id']}/{action}", [{}])
           for action in ("pause", "resume", "cancel")},
        "/api/v1/firmware/{firmware_id}/publish": (f"/api/v1/firmware/{firmware['id']}/publish", [{}]),
        "/api/v1/firmware/{firmware_id}/yank": (f"/api/v1/firmware/{doomed['id']}/yank", [{"reason": "bad"}]),
        "/api/v1/signers": ("/api/v1/signers", [{"name": "generated", "public_key": _signer_key()}]),
        # Never grants.due: a webhook taking it would hand out the due grants other tests poll for. A .invalid
        # host never resolves (RFC 2606), so nothing leaves the machine.
        "/api/v1/webhooks": ("/api/v1/webhooks", [{"url": "https://fwrepo-tests.invalid/hook",
                                                   "events": ["job.finished"], "secret": "s" * 32}]),
        # A multipart upload: a JSON body is refused by its Content-Type, as any other body it cannot read.
        "/api/v1/firmware": ("/api/v1/firmware", [{"vendor": vendor, "version": "3.0.0", "models": "AC22"}]),
        # The platform's (posted with a platform key, see PLATFORM_ROUTES): a tenant made for the fuzz, disabled by
        # its first valid draw; disabling takes no body.
        "/api/v1/tenants": ("/api/v1/tenants", [{"name": f"fuzz-{secrets.token_hex(4)}"}]),
        "/api/v1/tenants/{tenant}/disable": (f"/api/v1/tenants/{fuzzed_tenant}/disable", [{}]),
    }


def _post_json(client: httpx.Client, url: str, body: object) -> httpx.Response:
    # Serialised here, ASCII-escaped: a lone surrogate has no UTF-8 bytes, but JSON spells it "\\ud800".
    return client.post(url, content=json.dumps(body).encode(), headers={"Content-Type": "application/json"})


# Routes only a platform key may call: posted with one, so the fuzz reaches their checks, not the role's 403.
PLATFORM_ROUTES = ("/api/v1/tenants",)


@pytest.mark.parametrize("shard", range(BODY_SHARDS))
def test_generated_bodies_at_every_json_endpoint_get_a_problem_naming_the_field_never_a_5xx(fwrepo: Fwrepo,
                                                                                             shard: int) -> None:
    with fwrepo.client("admin") as admin, fwrepo.client("platform") as platform:
        fuzzed_tenant = f"fuzz-{secrets.token_hex(4)}"
        fwrepo.cli("tenants", "create", fuzzed_tenant)
        bodies = _bodies(admin, fuzzed_tenant)
        assert _post_routes() == set(bodies), "a route that takes a body is missing from this test (or gone)"
        targets = [(url, base) for url, bases in bodies.values() for base in bases]

        @settings(max_examples=BODY_EXAMPLES // BODY_SHARDS, deadline=None, suppress_health_check=list(HealthCheck))
        @given(st.sampled_from(targets).flatmap(lambda target: st.tuples(st.just(target), _mutated(target[1]))))
        def no_body_breaks_the_server(attempt: tuple[tuple[str, dict], object]) -> None:
            (url, base), body = attempt
            reply = _post_json(platform if url.startswith(PLATFORM_ROUTES) else admin, url, body)
            assert reply.status_code < 500, (url, body, reply.text)
            if reply.status_code >= 400:
                problem = reply.json()
                assert reply.headers["content-type"] == "application/problem+json", reply.text
                assert problem["status"] == reply.status_code
            if reply.status_code == 422:
                # The field is one the body holds (chargers[0].model names one inside "chargers"), or the body.
                field = problem.get("field", "?")
                sent = set(body) if isinstance(body, dict) else set()
                named = re.split(r"[.\\[]", field, maxsplit=1)[0]
                assert field in sent or named in set(base) | {"body", "Content-Type"}, (url, body, problem)

        no_body_breaks_the_server()


# Values past each bounded field's limits (the limits are in repo_service/domain/documents.py and the parsers).
_OUT_OF_RANGE: dict[str, list[object]] = {
    "retries": [-1, 101, 2**63], "retry_interval": [-1, 7 * 86400 + 1], "expires_in": [59, 10**12],
    "max_downloads": [0, 1001], "retrieve_date": ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"],
    "install_date": ["2000-01-01T00:00:00Z", "9999-12-31T23:59:59Z"], "charger_id": ["C" * 65, " CP"],
    "charger_ids": ["C" * 65], "failure_threshold": [-0.5, 1.5], "waves": [0, "101%"], "start": ["24:00"],
    "time_zone": ["Mars/Olympus"], "current_version": ["v" * 51], "model": ["m" * 51], "info": ["i" * 256],
    "grant_id": [0, 2**31], "request_id": [0, 2**31], "timestamp": ["2999-01-01T00:00:00Z"],
    "status": ["Exploded"], "reason_code": ["", "r" * 21], "additional_info": ["a" * 1025, "a\tb"],
    "notification": ["BootNotification"], "protocol": ["gopher"], "ftps_mode": ["passive"], "reason": [" ", "r" * 2001],
    "name": [" ", "n" * 101], "public_key": ["-----BEGIN PUBLIC KEY-----", _signer_key(ec.SECP521R1())],
}
_EVERY_TYPE: list[object] = [None, True, 7, 7.5, "seven", [], {}]


def _same_type(value: object, valid: object) -> bool:
    # bool is an int to Python, never to a JSON field; an integer is a valid number where a fraction is.
    if isinstance(valid, bool) or isinstance(value, bool):
        return isinstance(valid, bool) and isinstance(value, bool)
    if isinstance(valid, float):
        return isinstance(value, int | float)
    return type(value) is type(valid)


def _bad_variants(body: dict, prefix: str = "") -> list[tuple[str, dict]]:
    """body with one field at a time (nested ones too) null, of the wrong type or out of range; with the field the
    refusal must name (a list of plain values is named as a whole, its objects by their place)."""
    variants: list[tuple[str, dict]] = []
    for name, valid in body.items():
        field = prefix + name
        out_of_range = [] if isinstance(valid, list) else _OUT_OF_RANGE.get(name, [])  # then its items are
        variants += [(field, {**body, name: bad})
                     for bad in [value for value in _EVERY_TYPE if not _same_type(value, valid)] + out_of_range]
        if isinstance(valid, dict):
            variants += [(nested, {**body, name: changed}) for nested, changed in _bad_variants(valid, field + ".")]
        if isinstance(valid, list):
            for index, item in enumerate(valid):
                if isinstance(item, dict):
                    variants += [(nested, {**body, name: [*valid[:index], changed, *valid[index + 1:]]})
                                 for nested, changed in _bad_variants(item, f"{field}[{index}].")]
                else:
                    variants += [(field, {**body, name: [*valid[:index], bad, *valid[index + 1:]]})
                                 for bad in [None, [], {}, *_OUT_OF_RANGE.get(name, [])]]
    return variants


def test_every_json_field_refuses_null_a_wrong_type_and_out_of_range_values_with_422_naming_it(
    fwrepo: Fwrepo,
) -> None:
    with fwrepo.client("admin") as admin, fwrepo.client("platform") as platform:
        fuzzed_tenant = f"fuzz-{secrets.token_hex(4)}"
        fwrepo.cli("tenants", "create", fuzzed_tenant)
        bodies = _bodies(admin, fuzzed_tenant)
        del bodies["/api/v1/firmware"]  # multipart form fields: tests/test_upload.py
        for url, bases in bodies.values():
            for base in bases:
                for field, body in _bad_variants(base):
                    reply = _post_json(platform if url.startswith(PLATFORM_ROUTES) else admin, url, body)
                    assert reply.status_code == 422, (url, field, body[field.split(".")[0].split("[")[0]], reply.text)
                    assert reply.json()["field"] == field, (url, body, reply.json())
