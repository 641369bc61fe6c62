"""Input an attacker sends on purpose: every one is refused with a problem reply naming what is wrong, never a 500."""

from __future__ import annotations

import httpx

from tests.support.builds import image, upload
from tests.support.fwrepo import Fwrepo
from tests.support.grants import grant_for


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
