"""S3-compatible object storage (AWS S3, Ceph RGW, MinIO, R2) through boto3."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from repo_service.errors import NotFound, StorageUnavailable
from repo_service.storage.base import TENANTS_PREFIX, Check, Digest, StoredObject, check_key

log = logging.getLogger(__name__)

# Parts in flight at once per upload: enough to keep a link to S3 busy while the
# next part is read, few enough that memory stays at a handful of parts.
PARTS_IN_FLIGHT = 4


class S3Storage:
    def __init__(
        self,
        *,
        bucket: str,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        addressing_style: str = "path",
        server_side_encryption: str | None = None,
        kms_key_id: str | None = None,
        part_size: int = 8 * 1024 * 1024,
        tenant_bucket: str | None = None,
        connect_timeout: float = 10,
        read_timeout: float = 60,
        max_attempts: int = 4,
    ) -> None:
        self.bucket = bucket
        # A template with {tenant}: each tenant's keys (tenants/NAME/...) go to a bucket of its own, without the
        # tenants/NAME/ part, so a tenant's objects get their own policy, lifecycle and bill; None: all in bucket.
        self.tenant_bucket = tenant_bucket
        self._buckets_made: set[str] = {bucket}
        self.part_size = part_size
        over_tls = endpoint_url is None or endpoint_url.startswith("https://")
        config = Config(
            # SigV4 hashes every part body once more (SHA-256) to sign it; over TLS the
            # body's integrity is already protected, so that second hash is only cost.
            s3={"addressing_style": addressing_style, "payload_signing_enabled": not over_tls},
            retries={"mode": "standard", "total_max_attempts": max_attempts},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_pool_connections=32,
            # boto3 >= 1.36 adds CRC32 checksums to every PUT by default; Ceph
            # RGW 16 and other S3 look-alikes reject them. We hash SHA-256 ourselves.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self.client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=config,
        )
        self._encryption: dict[str, str] = {}
        if server_side_encryption:
            self._encryption["ServerSideEncryption"] = server_side_encryption
            if kms_key_id:
                self._encryption["SSEKMSKeyId"] = kms_key_id

    def check(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as error:
            raise StorageUnavailable(f"S3 bucket {self.bucket}: {error}") from error

    def place(self, key: str) -> tuple[str, str]:
        """The bucket and object name of key."""
        bucket, name, _ = self._split(check_key(key))
        return bucket, name

    def _split(self, key: str) -> tuple[str, str, str]:
        """The bucket and object name of a key or prefix, and the part of it the name leaves out."""
        if self.tenant_bucket is None or not key.startswith(TENANTS_PREFIX):
            return self.bucket, key, ""
        tenant, _, name = key.removeprefix(TENANTS_PREFIX).partition("/")
        bucket = self.tenant_bucket.replace("{tenant}", tenant)
        if len(bucket) > 63:
            # Tenant names may have 63 characters, buckets no more: the template's own characters leave a long
            # tenant name no room.
            raise StorageUnavailable(f"tenant {tenant}'s bucket name {bucket} is over S3's 63 characters: shorten "
                                     "FWREPO_S3_TENANT_BUCKET")
        return bucket, name, f"{TENANTS_PREFIX}{tenant}/"

    def keys(self, prefix: str) -> Iterator[str]:
        bucket, name_prefix, tenant_part = self._split(prefix)
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=name_prefix):
                for item in page.get("Contents", []):
                    yield tenant_part + item["Key"]
        except ClientError as error:
            if bucket != self.bucket and _status(error) == 404:
                return  # a tenant's bucket is made by its first upload: none yet, no objects
            raise StorageUnavailable(f"S3 listing of {bucket}/{name_prefix} failed: {error}") from error
        except BotoCoreError as error:
            raise StorageUnavailable(f"S3 listing of {bucket}/{name_prefix} failed: {error}") from error

    def ensure_bucket(self, bucket: str | None = None) -> None:
        """Create the bucket (the installation's, or a tenant's) when it does not exist yet."""
        bucket = bucket or self.bucket
        try:
            self.client.head_bucket(Bucket=bucket)
        except ClientError as error:
            if _status(error) != 404:
                raise StorageUnavailable(f"S3 bucket {bucket}: {error}") from error
            region = self.client.meta.region_name
            # AWS refuses a LocationConstraint of us-east-1 and needs one everywhere else.
            location = {} if region in (None, "us-east-1") else {"CreateBucketConfiguration": {"LocationConstraint": region}}
            try:
                self.client.create_bucket(Bucket=bucket, **location)
            except ClientError as created:
                # Another node made it between the two calls: what was wanted.
                if created.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                    raise StorageUnavailable(f"S3 bucket {bucket} cannot be created: {created}") from created
            log.info("created S3 bucket %s", bucket)
        except BotoCoreError as error:
            raise StorageUnavailable(f"S3 unreachable: {error}") from error
        self._buckets_made.add(bucket)

    def write(self, key: str, chunks: Iterable[bytes], check: Check | None = None) -> StoredObject:
        bucket, name = self.place(key)
        if bucket not in self._buckets_made:
            self.ensure_bucket(bucket)
        digest = Digest()
        parts = _Parts(self.part_size)
        stream = digest.observe(chunks)
        try:
            for chunk in stream:
                for first_part in parts.add(chunk):
                    return self._write_multipart(key, bucket, name, first_part, parts, stream, digest, check)
            stored = digest.result(key)
            if check is not None:
                check(stored)
            # Small images are held in memory (below one part) and written in
            # one PUT only after the check passed: nothing to clean up on failure.
            self.client.put_object(Bucket=bucket, Key=name, Body=parts.take(), **self._encryption)
            return stored
        except (BotoCoreError, ClientError) as error:
            raise StorageUnavailable(f"S3 write failed: {error}") from error

    def _write_multipart(
        self, key: str, bucket: str, name: str, first_part: bytes, parts: _Parts, stream: Iterator[bytes],
        digest: Digest, check: Check | None
    ) -> StoredObject:
        upload_id = self.client.create_multipart_upload(Bucket=bucket, Key=name, **self._encryption)["UploadId"]
        sent: list[Future[dict[str, Any]]] = []
        upload = (bucket, name, upload_id)
        with ThreadPoolExecutor(max_workers=PARTS_IN_FLIGHT, thread_name_prefix="s3-part") as pool:
            try:
                self._send_part(pool, sent, upload, first_part)
                for chunk in stream:
                    for part in parts.add(chunk):
                        self._send_part(pool, sent, upload, part)
                if parts.length:
                    self._send_part(pool, sent, upload, parts.take())
                completed = [part.result() for part in sent]
                stored = digest.result(key)
                if check is not None:
                    check(stored)
                # Until this call the object does not exist for any reader.
                self.client.complete_multipart_upload(
                    Bucket=bucket, Key=name, UploadId=upload_id, MultipartUpload={"Parts": completed}
                )
                return stored
            except BaseException:
                # Parts still in flight would land after an abort (S3 then keeps
                # them): let them finish or fail first, then abort.
                pool.shutdown(wait=True, cancel_futures=True)
                self._abort(bucket, name, upload_id)
                raise

    def _send_part(
        self, pool: ThreadPoolExecutor, sent: list[Future[dict[str, Any]]], upload: tuple[str, str, str], body: bytes
    ) -> None:
        # Backpressure: wait for the oldest part before queueing more than
        # PARTS_IN_FLIGHT, so memory stays bounded whatever the image size.
        in_flight = [part for part in sent if not part.done()]
        if len(in_flight) >= PARTS_IN_FLIGHT:
            in_flight[0].result()
        number = len(sent) + 1
        sent.append(pool.submit(self._upload_part, upload, number, body))

    def _upload_part(self, upload: tuple[str, str, str], number: int, body: bytes) -> dict[str, Any]:
        bucket, name, upload_id = upload
        reply = self.client.upload_part(Bucket=bucket, Key=name, UploadId=upload_id, PartNumber=number, Body=body)
        return {"PartNumber": number, "ETag": reply["ETag"]}

    def _abort(self, bucket: str, name: str, upload_id: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=bucket, Key=name, UploadId=upload_id)
        except (BotoCoreError, ClientError) as error:
            # The caller's pending-write record lets `fwrepo storage sweep` finish this later.
            log.warning("could not abort multipart upload of %s/%s: %s", bucket, name, error)

    def read(self, key: str, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        bucket, name = self.place(key)
        arguments: dict[str, Any] = {"Bucket": bucket, "Key": name}
        if length is not None:
            if length == 0:
                return iter(())
            arguments["Range"] = f"bytes={start}-{start + length - 1}"
        elif start:
            arguments["Range"] = f"bytes={start}-"
        try:
            reply = self.client.get_object(**arguments)
        except ClientError as error:
            if _status(error) == 404:
                raise NotFound(f"no stored object {key}") from None
            raise StorageUnavailable(f"S3 read failed: {error}") from error
        except BotoCoreError as error:
            raise StorageUnavailable(f"S3 read failed: {error}") from error
        return _stream_body(reply["Body"])

    def presigned_url(self, key: str, expires_in: timedelta, filename: str) -> str:
        bucket, name = self.place(key)
        return self.client.generate_presigned_url(
            "get_object",
            Params={"Bucket": bucket, "Key": name,
                    "ResponseContentDisposition": f'attachment; filename="{filename}"'},
            ExpiresIn=int(expires_in.total_seconds()),
        )

    def size(self, key: str) -> int | None:
        bucket, name = self.place(key)
        try:
            return self.client.head_object(Bucket=bucket, Key=name)["ContentLength"]
        except ClientError as error:
            if _status(error) == 404:
                return None
            raise StorageUnavailable(f"S3 head failed: {error}") from error
        except BotoCoreError as error:
            raise StorageUnavailable(f"S3 head failed: {error}") from error

    def delete(self, key: str) -> None:
        bucket, name = self.place(key)
        try:
            self.client.delete_object(Bucket=bucket, Key=name)
            listing = self.client.list_multipart_uploads(Bucket=bucket, Prefix=name)
            for upload in listing.get("Uploads", []):
                if upload["Key"] == name:
                    self.client.abort_multipart_upload(Bucket=bucket, Key=name, UploadId=upload["UploadId"])
        except ClientError as error:
            if bucket != self.bucket and _status(error) == 404:
                return  # no bucket of this tenant yet: nothing to delete
            raise StorageUnavailable(f"S3 delete failed: {error}") from error
        except BotoCoreError as error:
            raise StorageUnavailable(f"S3 delete failed: {error}") from error


class _Parts:
    """Incoming blocks gathered into parts of one size, each byte copied once (by the join)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.length = 0
        self._pieces: list[memoryview] = []

    def add(self, chunk: bytes) -> Iterator[bytes]:
        """Take a block; yield every part it completes."""
        view = memoryview(chunk)
        while view:
            piece = view[: self.size - self.length]
            self._pieces.append(piece)
            self.length += len(piece)
            view = view[len(piece) :]
            if self.length == self.size:
                yield self.take()

    def take(self) -> bytes:
        part = b"".join(self._pieces)
        self._pieces, self.length = [], 0
        return part


# Each S3 block crosses a worker thread, so it is larger than a local one: that
# hand-off, not memory, bounds S3 downloads (bench/download.py).
S3_READ_BLOCK = 256 * 1024


def _stream_body(body) -> Iterator[bytes]:
    try:
        yield from body.iter_chunks(S3_READ_BLOCK)
    except (BotoCoreError, ClientError, OSError) as error:
        raise StorageUnavailable(f"S3 read failed mid-stream: {error}") from error
    finally:
        body.close()


def _status(error: ClientError) -> int:
    return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
