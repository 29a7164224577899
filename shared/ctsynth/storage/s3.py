"""Object store on S3 (AWS, MinIO, ...) through the minio SDK.

Atomic puts: S3 can only take user metadata up front, but the sha256 is known
only after streaming. So every put streams to <prefix>/.tmp/<uuid> while
hashing, then server-side copies it to the final key with the hash in
x-amz-meta-sha256, then deletes the temp object. The final key only ever holds
complete objects: S3 makes a PUT, a copy and a completed multipart upload
visible at once. minio aborts a failed multipart upload itself, and falls back
from copy_object to a multipart compose for sources over 5 GiB.
"""

from __future__ import annotations

import io
import logging
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

import certifi
import urllib3
from minio import Minio
from minio.commonconfig import REPLACE, CopySource
from minio.deleteobjects import DeleteObject
from minio.error import InvalidResponseError, S3Error, ServerError

from ctsynth.env_values import env_flag, env_float, env_int

from .base import (
    HashingReader,
    ObjectInfo,
    ObjectStore,
    Source,
    check_range,
    is_valid_key,
    open_source,
    validate_key,
    validate_prefix,
)
from .errors import ObjectNotFound, StorageError, StoreUnavailable

log = logging.getLogger(__name__)

PART_SIZE = 16 * 1024 * 1024
SHA256_META = "x-amz-meta-sha256"
_CONNECTION_ERRORS = (urllib3.exceptions.HTTPError, ConnectionError)


def _endpoint_of(client: Minio) -> str:
    """The endpoint URL the client talks to, for error messages."""
    base = client._base_url  # minio keeps no public accessor for it
    return f"{'https' if base.is_https else 'http'}://{base.host}"


class S3Store(ObjectStore):
    """Objects at s3://<bucket>/<prefix>/<key>.

    list() reports sha256=None: S3 listings carry no user metadata, and a
    HEAD per object would make listing slow. stat() has the hash.
    """

    def __init__(self, client: Minio, bucket: str, prefix: str = ""):
        self.client = client
        self.bucket = bucket
        self.prefix = validate_prefix(prefix, allow_empty=True).rstrip("/")
        self.endpoint = _endpoint_of(client)
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"

    def _name(self, key: str) -> str:
        """Object name in the bucket for a store-relative key or prefix."""
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri_for(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._name(validate_key(key))}"

    @contextmanager
    def _translate(self, key: str | None = None, source: HashingReader | None = None):
        """Turn minio/urllib3 errors into storage errors; source errors pass unchanged."""
        where = self.uri if key is None else self.uri_for(key)
        try:
            yield
        except (S3Error, ServerError, InvalidResponseError, *_CONNECTION_ERRORS) as exc:
            if source is not None and source.failed:
                raise
            raise self._translated(exc, key, where) from exc

    def _translated(self, exc: Exception, key: str | None, where: str) -> StorageError:
        if isinstance(exc, S3Error):
            if exc.code == "NoSuchKey" and key is not None:
                return ObjectNotFound(key, where)
            if exc.code == "NoSuchBucket":
                return StorageError(f"bucket {self.bucket!r} does not exist at {self.endpoint}")
            return StorageError(f"{where}: {exc.code}: {exc.message}")
        if isinstance(exc, InvalidResponseError):
            return StorageError(f"{where}: unexpected response from {self.endpoint}: {exc}")
        return StoreUnavailable(f"S3 endpoint {self.endpoint} unavailable ({where}): {exc}")

    def ensure_bucket(self, *, create: bool, region: str | None = None) -> None:
        """Fail early, naming the bucket, unless it exists (or may be created)."""
        with self._translate():
            if self.client.bucket_exists(self.bucket):
                return
            if not create:
                raise StorageError(
                    f"bucket {self.bucket!r} does not exist at {self.endpoint} "
                    "(set CTSYNTH_S3_CREATE_BUCKET=true to create it)"
                )
            try:
                self.client.make_bucket(self.bucket, location=region)
            except S3Error as exc:
                if exc.code != "BucketAlreadyOwnedByYou":  # lost a creation race: fine
                    raise

    def put(
        self, key: str, data: Source, *, content_type: str = "application/octet-stream"
    ) -> ObjectInfo:
        validate_key(key)
        tmp = self._name(f".tmp/{uuid.uuid4().hex}")
        try:
            with open_source(data) as src:
                reader = HashingReader(src)
                with self._translate(key, reader):
                    self.client.put_object(
                        self.bucket,
                        tmp,
                        reader,
                        length=-1,
                        part_size=PART_SIZE,
                        content_type=content_type,
                    )
            with self._translate(key):
                result = self.client.copy_object(
                    self.bucket,
                    self._name(key),
                    CopySource(self.bucket, tmp),
                    metadata={"Content-Type": content_type, SHA256_META: reader.sha256},
                    metadata_directive=REPLACE,
                )
        finally:
            self._remove_temp(tmp)
        modified = result.last_modified or self.stat(key).modified
        return ObjectInfo(key, reader.size, reader.sha256, modified)

    def _remove_temp(self, name: str) -> None:
        """Delete a staging object; a leftover only wastes space, so never raise."""
        try:
            self.client.remove_object(self.bucket, name)
        except Exception:
            log.warning("could not remove temp object s3://%s/%s", self.bucket, name, exc_info=True)

    def open(self, key: str) -> BinaryIO:
        with self._translate(key):
            response = self.client.get_object(self.bucket, self._name(validate_key(key)))
        return io.BufferedReader(_ResponseReader(response, self, key))

    def get_bytes(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        check_range(start, end)
        if end is not None and end <= start:
            self.stat(key)  # an empty range still needs an existing object
            return b""
        length = 0 if end is None else end - start  # minio: 0 means "to the end"
        with self._translate(key):
            try:
                response = self.client.get_object(
                    self.bucket, self._name(validate_key(key)), offset=start, length=length
                )
            except S3Error as exc:
                if exc.code == "InvalidRange":  # start at or past the end
                    return b""
                raise
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

    def stat(self, key: str) -> ObjectInfo:
        with self._translate(key):
            obj = self.client.stat_object(self.bucket, self._name(validate_key(key)))
        return ObjectInfo(key, obj.size, obj.metadata.get(SHA256_META), obj.last_modified)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        validate_prefix(prefix, allow_empty=True)  # here, not lazily on first next()
        return self._iter_objects(prefix)

    def _iter_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        start = len(self.prefix) + 1 if self.prefix else 0
        with self._translate():
            objects = self.client.list_objects(
                self.bucket, prefix=self._name(prefix), recursive=True
            )
            for obj in objects:
                key = obj.object_name[start:]
                if is_valid_key(key):
                    yield ObjectInfo(key, obj.size, None, obj.last_modified)

    def delete(self, key: str) -> None:
        self.stat(key)  # S3 deletes of missing keys succeed silently
        with self._translate(key):
            self.client.remove_object(self.bucket, self._name(key))

    def delete_prefix(self, prefix: str) -> int:
        """Batch delete (up to 1000 keys per request) of everything list(prefix) shows."""
        validate_prefix(prefix, allow_empty=False)
        names = [self._name(info.key) for info in self.list(prefix)]
        with self._translate():
            errors = list(self.client.remove_objects(self.bucket, (DeleteObject(n) for n in names)))
        if errors:
            raise StorageError(
                f"could not delete {len(errors)} of {len(names)} objects under "
                f"{self.uri}/{prefix}, e.g. {errors[0].name}: {errors[0].message}"
            )
        return len(names)


class _ResponseReader(io.RawIOBase):
    """Raw stream over a minio GET response that returns the connection on close."""

    def __init__(self, response: urllib3.BaseHTTPResponse, store: S3Store, key: str):
        self._response = response
        self._store = store
        self._key = key

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        with self._store._translate(self._key):
            return self._response.readinto(buffer)

    def close(self) -> None:
        if not self.closed:
            self._response.close()
            self._response.release_conn()
        super().close()


def _parse_endpoint(raw: str) -> tuple[str, bool | None]:
    """Split CTSYNTH_S3_ENDPOINT into minio's host[:port] and the scheme's TLS hint."""
    if "://" not in raw:
        return raw, None
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path.strip("/"):
        raise ValueError(
            f"CTSYNTH_S3_ENDPOINT must be host:port or http(s)://host:port, got {raw!r}"
        )
    return parts.netloc, parts.scheme == "https"


def _http_client(env: Mapping[str, str]) -> urllib3.PoolManager:
    """Connection pool with configurable timeouts, retries and CA bundle."""
    ca_bundle = env.get("CTSYNTH_S3_CA_BUNDLE", "").strip()
    if ca_bundle and not Path(ca_bundle).is_file():
        raise ValueError(f"CTSYNTH_S3_CA_BUNDLE is not a file: {ca_bundle!r}")
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(
            connect=env_float(env, "CTSYNTH_S3_CONNECT_TIMEOUT", 10.0),
            read=env_float(env, "CTSYNTH_S3_READ_TIMEOUT", 300.0),
        ),
        retries=urllib3.Retry(
            total=env_int(env, "CTSYNTH_S3_RETRIES", 5),
            backoff_factor=0.2,
            status_forcelist=[500, 502, 503, 504],
        ),
        maxsize=10,
        cert_reqs="CERT_REQUIRED",
        ca_certs=ca_bundle or env.get("SSL_CERT_FILE") or certifi.where(),
    )


def client_from_env(env: Mapping[str, str]) -> Minio:
    """Build a minio client from CTSYNTH_S3_* (falling back to AWS_*) variables."""
    raw = env.get("CTSYNTH_S3_ENDPOINT", "").strip()
    if not raw:
        raise ValueError("s3:// stores need CTSYNTH_S3_ENDPOINT (host:port or http(s)://host:port)")
    host, scheme_secure = _parse_endpoint(raw)
    access_key = env.get("CTSYNTH_S3_ACCESS_KEY") or env.get("AWS_ACCESS_KEY_ID")
    secret_key = env.get("CTSYNTH_S3_SECRET_KEY") or env.get("AWS_SECRET_ACCESS_KEY")
    if bool(access_key) != bool(secret_key):
        raise ValueError(
            "set both CTSYNTH_S3_ACCESS_KEY and CTSYNTH_S3_SECRET_KEY "
            "(or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), or neither"
        )
    return Minio(
        host,
        access_key=access_key or None,
        secret_key=secret_key or None,
        secure=env_flag(env, "CTSYNTH_S3_SECURE", True if scheme_secure is None else scheme_secure),
        region=env.get("CTSYNTH_S3_REGION") or None,
        http_client=_http_client(env),
    )


def open_s3(bucket: str, prefix: str, env: Mapping[str, str], *, create: bool = True) -> S3Store:
    """S3Store for s3://bucket/prefix, configured and checked from `env`; the
    bucket is created only where `create` and CTSYNTH_S3_CREATE_BUCKET allow."""
    if not bucket:
        raise ValueError("s3:// URIs need a bucket: s3://bucket[/prefix]")
    store = S3Store(client_from_env(env), bucket, prefix)
    store.ensure_bucket(
        create=create and env_flag(env, "CTSYNTH_S3_CREATE_BUCKET", False),
        region=env.get("CTSYNTH_S3_REGION") or None,
    )
    return store
