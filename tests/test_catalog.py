"""The catalog: listing, filtering, publishing, yanking, and downloading content."""

from __future__ import annotations

import base64
import hashlib
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.support.builds import image, upload
from tests.support.fwrepo import Fwrepo


def test_list_filters_by_vendor_model_status_and_channel(release: httpx.Client, vendor: str) -> None:
    ac = upload(release, vendor, "1.0.0", models="AC22").json()
    dc = upload(release, vendor, "1.1.0", models="DC50", channel="beta").json()
    release.post(f"/api/v1/firmware/{dc['id']}/publish")

    def ids(**params: str) -> list[str]:
        return [item["id"] for item in release.get("/api/v1/firmware", params={"vendor": vendor, **params}).json()["items"]]

    assert ids() == [dc["id"], ac["id"]]
    assert ids(model="AC22") == [ac["id"]]
    assert ids(status="published") == [dc["id"]]
    assert ids(channel="beta") == [dc["id"]]
    assert ids(model="AC22", status="published") == []


def test_list_is_paginated_with_a_next_link(release: httpx.Client, vendor: str) -> None:
    for minor in range(5):
        upload(release, vendor, f"1.{minor}.0")
    first = release.get("/api/v1/firmware", params={"vendor": vendor, "limit": 2}).json()
    assert first["total"] == 5 and len(first["items"]) == 2
    second = release.get(first["next"]).json()
    third = release.get(second["next"]).json()
    assert third["next"] is None
    seen = [item["version"] for page in (first, second, third) for item in page["items"]]
    assert sorted(seen) == [f"1.{minor}.0" for minor in range(5)]


def test_bad_list_parameters_are_refused_422(release: httpx.Client) -> None:
    assert release.get("/api/v1/firmware", params={"status": "live"}).json()["field"] == "status"
    assert release.get("/api/v1/firmware", params={"limit": "0"}).json()["field"] == "limit"
    assert release.get("/api/v1/firmware", params={"limit": "ten"}).json()["field"] == "limit"
    assert release.get("/api/v1/firmware", params={"offset": "-1"}).status_code == 422


def test_unknown_firmware_is_404_problem(release: httpx.Client) -> None:
    reply = release.get("/api/v1/firmware/doesnotexist")
    assert reply.status_code == 404
    assert reply.json()["title"] == "Not found"


def test_publish_then_yank_with_a_reason(release: httpx.Client, vendor: str) -> None:
    firmware = upload(release, vendor, "1.0.0").json()
    published = release.post(f"/api/v1/firmware/{firmware['id']}/publish").json()
    assert published["status"] == "published" and published["published_at"]
    assert release.post(f"/api/v1/firmware/{firmware['id']}/publish").json()["status"] == "published"
    yanked = release.post(f"/api/v1/firmware/{firmware['id']}/yank", json={"reason": "bricks AC22 rev B"}).json()
    assert yanked["status"] == "yanked"
    assert yanked["yank_reason"] == "bricks AC22 rev B"


def test_yank_without_a_reason_is_refused_422(release: httpx.Client, vendor: str) -> None:
    firmware = upload(release, vendor, "1.0.0").json()
    for body in ({}, {"reason": "  "}, {"reason": 5}):
        reply = release.post(f"/api/v1/firmware/{firmware['id']}/yank", json=body)
        assert reply.status_code == 422 and reply.json()["field"] == "reason"
    reply = release.post(f"/api/v1/firmware/{firmware['id']}/yank", content=b"not json")
    assert reply.status_code == 422 and reply.json()["field"] == "body"


def test_yanked_firmware_cannot_be_published_again_409(release: httpx.Client, vendor: str) -> None:
    firmware = upload(release, vendor, "1.0.0").json()
    release.post(f"/api/v1/firmware/{firmware['id']}/yank", json={"reason": "bad build"})
    assert release.post(f"/api/v1/firmware/{firmware['id']}/publish").status_code == 409


def test_publish_and_yank_racing_end_yanked_without_errors(fwrepo: Fwrepo, vendor: str) -> None:
    with fwrepo.client("release") as release:
        ids = [upload(release, vendor, f"1.0.{n}").json()["id"] for n in range(12)]

    def act(firmware_id: str, verb: str) -> int:
        with fwrepo.client("release") as client:
            body = {"reason": "race"} if verb == "yank" else None
            return client.post(f"/api/v1/firmware/{firmware_id}/{verb}", json=body).status_code

    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(act, [i for i in ids for _ in (0, 1)], ["publish", "yank"] * len(ids)))
    assert set(replies) <= {200, 409}, replies
    with fwrepo.client("release") as release:
        for firmware_id in ids:
            assert release.get(f"/api/v1/firmware/{firmware_id}").json()["status"] == "yanked"


def test_content_is_the_uploaded_bytes_with_digest_headers(release: httpx.Client, vendor: str) -> None:
    content = image(2_500_000)
    firmware = upload(release, vendor, "1.0.0", content).json()
    reply = release.get(f"/api/v1/firmware/{firmware['id']}/content")
    assert reply.status_code == 200
    assert reply.content == content
    assert reply.headers["content-length"] == str(len(content))
    assert reply.headers["etag"] == f'"{hashlib.sha256(content).hexdigest()}"'
    digest = base64.b64encode(hashlib.sha256(content).digest()).decode()
    assert reply.headers["repr-digest"] == f"sha-256=:{digest}:"
    assert release.head(f"/api/v1/firmware/{firmware['id']}/content").headers["content-length"] == str(len(content))


def test_content_range_resumes_a_download_with_206(release: httpx.Client, vendor: str) -> None:
    content = image(1_000_000)
    firmware = upload(release, vendor, "1.0.0", content).json()
    url = f"/api/v1/firmware/{firmware['id']}/content"
    partial = release.get(url, headers={"Range": "bytes=999000-"})
    assert partial.status_code == 206
    assert partial.headers["content-range"] == "bytes 999000-999999/1000000"
    assert partial.content == content[999000:]
    assert release.get(url, headers={"Range": "bytes=-10"}).content == content[-10:]
    assert release.get(url, headers={"Range": "bytes=10-19"}).content == content[10:20]
    outside = release.get(url, headers={"Range": "bytes=1000000-"})
    assert outside.status_code == 416
    assert outside.headers["content-range"] == "bytes */1000000"
    stale = release.get(url, headers={"Range": "bytes=0-9", "If-Range": '"other"'})
    assert stale.status_code == 200 and stale.content == content
