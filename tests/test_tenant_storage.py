"""Each tenant's builds are stored apart: under tenants/NAME/ (the default tenant where it always was), or in a
bucket of the tenant's own on S3; the storage commands cover every tenant's objects."""

from __future__ import annotations

import secrets
from pathlib import Path

import boto3
import httpx
import pytest

from tests.support.builds import image, published_build, unique_vendor, upload
from tests.support.fwrepo import Fwrepo, s3_environment, start_fwrepo
from tests.support.s3servers import S3Server


def _tenant() -> str:
    return f"t-{secrets.token_hex(4)}"


def test_another_tenants_build_is_stored_under_its_prefix_and_the_default_tenants_where_it_was(
    fwrepo: Fwrepo,
) -> None:
    tenant, content = _tenant(), image(60_000)
    with fwrepo.client("release", tenant) as release, fwrepo.client("release") as default_release:
        build = published_build(release, unique_vendor(), content=content)
        default_build = published_build(default_release, unique_vendor())
        assert release.get(f"/api/v1/firmware/{build['id']}/content").content == content
    storage = fwrepo.data_dir / "storage"
    assert (storage / "tenants" / tenant / "firmware" / build["id"]).read_bytes() == content
    assert (storage / "firmware" / default_build["id"]).is_file()
    assert not (storage / "firmware" / build["id"]).exists()


def test_storage_check_sweep_and_checksum_cover_every_tenants_objects(tmp_path: Path) -> None:
    import sqlalchemy

    server = start_fwrepo(tmp_path)
    try:
        tenant = _tenant()
        with server.client("release", tenant) as release:
            ids = [upload(release, "Vscrub", f"1.0.{n}", image(50_000)).json()["id"] for n in range(3)]
        assert server.cli("storage", "check").stdout.strip() == "storage and catalog agree"
        stored = tmp_path / "storage" / "tenants" / tenant / "firmware"
        (stored / ids[0]).unlink()
        corrupted = bytearray((stored / ids[1]).read_bytes())
        corrupted[1000] ^= 0xFF
        (stored / ids[1]).write_bytes(bytes(corrupted))
        (stored / "0000000000000000").write_bytes(b"stray")
        result = server.cli("storage", "check", check=False)
        assert result.returncode == 1
        lines = result.stdout.splitlines()
        prefix = f"tenants/{tenant}/firmware"
        assert any(line.startswith(f"missing: {prefix}/{ids[0]}") for line in lines)
        assert any(line.startswith(f"corrupted: {prefix}/{ids[1]}") for line in lines)
        assert any(line.startswith(f"extra: {prefix}/0000000000000000") for line in lines)
        assert lines[-1] == "3 problems"

        # As migration 0015 leaves builds stored before it: the MD5 is read from the tenant's object.
        engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'fwrepo.sqlite3'}")
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text("UPDATE firmware SET md5 = NULL WHERE id = :id"), {"id": ids[2]})
            # An upload that died after its first bytes: a pending write under the tenant's prefix.
            connection.execute(sqlalchemy.text(
                "INSERT INTO pending_write (storage_key, started_at) VALUES (:key, '2020-01-01 00:00:00.000000')"),
                {"key": f"{prefix}/1111111111111111"})
        engine.dispose()
        (stored / "1111111111111111").write_bytes(b"half an upload")
        checksum = server.cli("storage", "checksum", check=False).stdout.splitlines()
        assert any(line.startswith(f"firmware {ids[2]}: MD5 ") for line in checksum), checksum
        assert server.cli("storage", "sweep", "--older-than", "0").stdout.strip() == "removed 1 interrupted uploads"
        assert not (stored / "1111111111111111").exists()
    finally:
        server.stop()


def _objects(server: S3Server, bucket: str) -> list[str]:
    client = boto3.client("s3", endpoint_url=server.endpoint_url, region_name=server.region,
                          aws_access_key_id=server.access_key_id, aws_secret_access_key=server.secret_access_key)
    try:
        return [item["Key"] for item in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    except client.exceptions.NoSuchBucket:
        return []


def test_on_s3_another_tenants_build_lands_under_its_prefix(fwrepo_on_s3: Fwrepo, s3: S3Server) -> None:
    tenant, content = _tenant(), image(70_000)
    with fwrepo_on_s3.client("release", tenant) as release:
        build = published_build(release, unique_vendor(), content=content)
        assert release.get(f"/api/v1/firmware/{build['id']}/content").content == content
    bucket = fwrepo_on_s3.environment["FWREPO_S3_BUCKET"]
    assert f"tenants/{tenant}/firmware/{build['id']}" in _objects(s3, bucket)
    assert fwrepo_on_s3.cli("storage", "check").stdout.strip() == "storage and catalog agree"


@pytest.mark.parametrize("download_mode", ["stream", "redirect"])
def test_on_s3_a_bucket_per_tenant_holds_its_builds_and_the_default_tenant_keeps_the_bucket(
    ceph: S3Server, tmp_path: Path, download_mode: str
) -> None:
    shared, template = f"fw-{secrets.token_hex(4)}", f"fw-{secrets.token_hex(3)}-{{tenant}}"
    server = start_fwrepo(tmp_path, **s3_environment(ceph, shared), FWREPO_S3_TENANT_BUCKET=template,
                          FWREPO_DOWNLOAD_MODE=download_mode)
    try:
        tenant, content = _tenant(), image(6 * 1024 * 1024 + 5)  # over one part: the multipart path too
        with server.client("release", tenant) as release, server.client("release") as default_release:
            build = published_build(release, unique_vendor(), content=content)
            default_build = published_build(default_release, unique_vendor())
        with server.client("csms", tenant) as csms:
            grant = csms.post("/api/v1/grants", json={"firmware_id": build["id"], "charger_id": "CP-1"}).json()
        downloaded = httpx.get(grant["location"], verify=server.tls(), follow_redirects=True, timeout=60)
        assert downloaded.content == content
        own_bucket = template.replace("{tenant}", tenant)
        assert _objects(ceph, own_bucket) == [f"firmware/{build['id']}"]
        assert _objects(ceph, shared) == [f"firmware/{default_build['id']}"]
        assert server.cli("storage", "check").stdout.strip() == "storage and catalog agree"
    finally:
        server.stop()


def test_a_tenant_bucket_template_is_checked_at_start(tmp_path: Path) -> None:
    server = Fwrepo(data_dir=tmp_path, environment={"FWREPO_STORAGE": "s3", "FWREPO_S3_BUCKET": "fw",
                                                     "FWREPO_S3_TENANT_BUCKET": "Fw_{name}"})
    result = server.cli("storage", "check", check=False)
    assert result.returncode != 0
    assert "FWREPO_S3_TENANT_BUCKET" in result.stderr and "{tenant} once" in result.stderr
    local = Fwrepo(data_dir=tmp_path, environment={"FWREPO_S3_TENANT_BUCKET": "fw-{tenant}"})
    result = local.cli("storage", "check", check=False)
    assert "FWREPO_S3_TENANT_BUCKET: needs FWREPO_STORAGE=s3" in result.stderr
