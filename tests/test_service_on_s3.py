"""The whole upload-and-download path with fwrepo on each real S3 implementation."""

from __future__ import annotations

import hashlib
import secrets

from tests.support.builds import image, upload
from tests.support.fwrepo import Fwrepo


def test_multipart_sized_upload_reads_back_whole_and_in_ranges(fwrepo_on_s3: Fwrepo) -> None:
    vendor = f"V{secrets.token_hex(4)}"
    content = image(12 * 1024 * 1024 + 3)
    with fwrepo_on_s3.client("release") as client:
        created = upload(client, vendor, "1.0.0", content, sha256=hashlib.sha256(content).hexdigest())
        assert created.status_code == 201, created.text
        firmware = created.json()
        # computed while the parts streamed to S3, not by reading the object back
        assert firmware["md5"] == hashlib.md5(content).hexdigest()
        url = f"/api/v1/firmware/{firmware['id']}/content"
        assert client.get(url).content == content
        tail = client.get(url, headers={"Range": f"bytes={len(content) - 1000}-"})
        assert tail.status_code == 206 and tail.content == content[-1000:]
        assert upload(client, vendor, "1.0.0", content).status_code == 200
        assert upload(client, vendor, "1.0.0", image(1000)).status_code == 409


def test_digest_mismatch_on_s3_stores_nothing(fwrepo_on_s3: Fwrepo) -> None:
    vendor = f"V{secrets.token_hex(4)}"
    with fwrepo_on_s3.client("release") as client:
        reply = upload(client, vendor, "1.0.0", image(7 * 1024 * 1024), sha256="a" * 64)
        assert reply.status_code == 422
        assert client.get("/api/v1/firmware", params={"vendor": vendor}).json()["total"] == 0
