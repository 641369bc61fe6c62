"""Where firmware bytes live: one interface, a backend chosen once from settings."""

from __future__ import annotations

from repo_service.settings import Settings
from repo_service.storage.base import ReadsWithoutBlocking, Storage, StoredObject
from repo_service.storage.local import LocalStorage

__all__ = ["ReadsWithoutBlocking", "Storage", "StoredObject", "open_storage"]


def open_storage(settings: Settings) -> Storage:
    if settings.storage == "local":
        return LocalStorage(settings.local_storage_dir)
    # boto3 is imported only when S3 is asked for: it costs start-up time and memory.
    from repo_service.storage.s3 import S3Storage

    storage = S3Storage(
        bucket=settings.s3_bucket,
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
        access_key_id=settings.s3_access_key_id,
        secret_access_key=settings.s3_secret_access_key,
        addressing_style=settings.s3_addressing_style,
        server_side_encryption=None if settings.s3_sse == "none" else settings.s3_sse,
        kms_key_id=settings.s3_sse_kms_key_id,
        part_size=settings.s3_part_size,
        tenant_bucket=settings.s3_tenant_bucket,
    )
    storage.ensure_bucket()
    return storage

