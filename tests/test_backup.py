"""A backup (database dump, bucket copy, keys, token secret) restored into fresh places serves old grants."""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.builds import image
from tests.support.databases import scratch_postgres
from tests.support.fwrepo import Fwrepo, s3_environment
from tests.support.grants import grant_for
from tests.support.s3servers import S3Server


def copy_bucket(ceph: S3Server, source: str, target: str) -> int:
    """What bucket versioning or replication gives an operator: the same objects elsewhere."""
    client = ceph.client()
    try:
        client.create_bucket(Bucket=target)
    except client.exceptions.BucketAlreadyOwnedByYou:
        pass
    copied = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=source):
        for item in page.get("Contents", []):
            client.copy_object(Bucket=target, Key=item["Key"], CopySource={"Bucket": source, "Key": item["Key"]})
            copied += 1
    return copied


def empty_bucket(ceph: S3Server, bucket: str) -> None:
    client = ceph.client()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=bucket, Key=item["Key"])


# As docs/operations.md says: fwrepo's role is held to one tenant by row-level security unless the session
# names every tenant, which a dump and a restore of the whole database must.
EVERY_TENANT_ENV = {**os.environ, "PGOPTIONS": "-c fwrepo.tenant=*"}


def test_a_restored_backup_serves_a_grant_made_before_the_disaster(
    postgres_server_url: str, ceph: S3Server, tmp_path: Path
) -> None:
    if not shutil.which("pg_dump"):
        pytest.skip("pg_dump is not installed")
    secrets_env = {"FWREPO_KEY_PASSPHRASE": secrets.token_urlsafe(24), "FWREPO_TOKEN_SECRET": secrets.token_urlsafe(32)}
    bucket, backup_bucket, restored_bucket = (f"{name}-{secrets.token_hex(4)}" for name in ("live", "backup", "restored"))
    content = image(400_000)
    databases = scratch_postgres(postgres_server_url)
    restored_databases = scratch_postgres(postgres_server_url)
    live_url = next(databases)
    restored_url = next(restored_databases)
    try:
        (tmp_path / "live").mkdir()
        live = Fwrepo(data_dir=tmp_path / "live", environment={
            **s3_environment(ceph, bucket), **secrets_env, "FWREPO_DATABASE_URL": live_url,
            "FWREPO_KEYS_DIR": str(tmp_path / "live-keys")}).start()
        try:
            record, grant = grant_for(live, content)
            # The backup, as the README says: dump, bucket copy, keys directory (the token secret is in the vault).
            subprocess.run(["pg_dump", "--enable-row-security", "--format=custom", "--file",
                            str(tmp_path / "fwrepo.dump"), live_url], check=True, env=EVERY_TENANT_ENV)
            assert copy_bucket(ceph, bucket, backup_bucket) == 1
            shutil.copytree(tmp_path / "live-keys", tmp_path / "backup-keys")
        finally:
            live.stop()
        # The disaster: the database, the bucket's contents and the keys are gone.
        next(databases, None)
        empty_bucket(ceph, bucket)
        shutil.rmtree(tmp_path / "live-keys")
        # The restore, into fresh places.
        subprocess.run(["pg_restore", "--no-owner", "--dbname", restored_url, str(tmp_path / "fwrepo.dump")],
                       check=True, env=EVERY_TENANT_ENV)
        copy_bucket(ceph, backup_bucket, restored_bucket)
        shutil.copytree(tmp_path / "backup-keys", tmp_path / "restored-keys")
        (tmp_path / "restored").mkdir()
        restored = Fwrepo(data_dir=tmp_path / "restored", environment={
            **s3_environment(ceph, restored_bucket), **secrets_env, "FWREPO_DATABASE_URL": restored_url,
            "FWREPO_KEYS_DIR": str(tmp_path / "restored-keys")}).start()
        try:
            with httpx.Client(verify=restored.tls(), timeout=30) as charger:
                reply = charger.get(restored.url + urlsplit(grant["location"]).path)
            assert reply.status_code == 200 and hashlib.sha256(reply.content).hexdigest() == record["sha256"]
            assert restored.cli("storage", "check").stdout.strip() == "storage and catalog agree"
            assert restored.cli("audit", "verify").stdout.startswith("audit chain intact")
        finally:
            restored.stop()
    finally:
        next(restored_databases, None)
