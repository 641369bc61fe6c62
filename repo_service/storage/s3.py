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
from repo_service.storage.base import Check, Digest, StoredObject, check_key

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
        connect_timeout: float = 10,
        read_timeout: float = 60,
        max_attempts: int = 4,
    ) -> None:
        self.bucket = bucket
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

    def keys(self, prefix: str) -> Iterator[str]:
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    yield item["Key"]
        except (ClientError, BotoCoreError) as error:
            raise StorageUnavailable(f"S3 listing of {self.bucket}/{prefix} failed: {error}") from error

    def ensure_bucket(self) -> None:
        """Create the bucket when it does not exist yet (development and tests)."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as error:
            if _status(error) != 404:
                raise StorageUnavailable(f"S3 bucket {self.bucket}: {error}") from error
            region = self.client.meta.region_name
            # AWS refuses a LocationConstraint of us-east-1 and needs one everywhere else.
            location = {} if region in (None, "us-east-1") else {"CreateBucketConfiguration": {"LocationConstraint": region}}
            self.client.create_bucket(Bucket=self.bucket, **location)
            log.info("created S3 bucket %s", self.bucket)
        except BotoCoreError as error:
            raise StorageUnavailable(f"S3 unreachable: {error}") from error

    def write(self, key: str, chunks: Iterable[bytes], check: Check | None = None) -> StoredObject:
        check_key(key)
        digest = Digest()
        parts = _Parts(self.part_size)
        stream = digest.observe(chunks)
        try:
            for chunk in stream:
                for first_part in parts.add(chunk):
                    return self._write_multipart(key, first_part, parts, stream, digest, check)
            stored = digest.result(key)
            if check is not None:
                check(stored)
            # Small images are held in memory (below one part) and written in
            # one PUT only after the check passed: nothing to clean up on failure.
            self.client.put_object(Bucket=self.bucket, Key=key, Body=parts.take(), **self._encryption)
            return stored
        except (BotoCoreError, ClientError) as error:
            raise StorageUnavailable(f"S3 write failed: {error}") from error

    def _write_multipart(
        self, key: str, first_part: bytes, parts: _Parts, stream: Iterator[bytes], digest: Digest, check: Check | None
    ) -> StoredObject:
        upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=key, **self._encryption)["UploadId"]
        sent: list[Future[dict[str, Any]]] = []
        with ThreadPoolExecutor(max_workers=PARTS_IN_FLIGHT, thread_name_prefix="s3-part") as pool:
            try:
                self._send_part(pool, sent, key, upload_id, first_part)
                for chunk in stream:
                    for part in parts.add(chunk):
                        self._send_part(pool, sent, key, upload_id, part)
                if parts.length:
                    self._send_part(pool, sent, key, upload_id, parts.take())
                completed = [part.result() for part in sent]
                stored = digest.result(key)
                if check is not None:
                    check(stored)
                # Until this call the object does not exist for any reader.
                self.client.complete_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": completed}
                )
                return stored
            except BaseException:
                # Parts still in flight would land after an abort (S3 then keeps
                # them): let them finish or fail first, then abort.
                pool.shutdown(wait=True, cancel_futures=True)
                self._abort(key, upload_id)
                raise

    def _send_part(
        self, pool: ThreadPoolExecutor, sent: list[Future[dict[str, Any]]], key: str, upload_id: str, body: bytes
    ) -> None:
        # Backpressure: wait for the oldest part before queueing more than
        # PARTS_IN_FLIGHT, so memory stays bounded whatever the image size.
        in_flight = [part for part in sent if not part.done()]
        if len(in_flight) >= PARTS_IN_FLIGHT:
            in_flight[0].result()
        number = len(sent) + 1
        sent.append(pool.submit(self._upload_part, key, upload_id, number, body))

    def _upload_part(self, key: str, upload_id: str, number: int, body: bytes) -> dict[str, Any]:
        reply = self.client.upload_part(Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body)
        return {"PartNumber": number, "ETag": reply["ETag"]}

    def _abort(self, key: str, upload_id: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except (BotoCoreError, ClientError) as error:
            # The caller's pending-write record lets `fwrepo storage sweep` finish this later.
            log.warning("could not abort multipart upload of %s: %s", key, error)

    def read(self, key: str, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        check_key(key)
        arguments: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
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
        check_key(key)
        return self.client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": key,
                    "ResponseContentDisposition": f'attachment; filename="{filename}"'},
            ExpiresIn=int(expires_in.total_seconds()),
        )

    def size(self, key: str) -> int | None:
        check_key(key)
        try:
            return self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"]
        except ClientError as error:
            if _status(error) == 404:
                return None
            raise StorageUnavailable(f"S3 head failed: {error}") from error
        except BotoCoreError as error:
            raise StorageUnavailable(f"S3 head failed: {error}") from error

    def delete(self, key: str) -> None:
        check_key(key)
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
            listing = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=key)
            for upload in listing.get("Uploads", []):
                if upload["Key"] == key:
                    self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload["UploadId"])
        except (BotoCoreError, ClientError) as error:
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
