"""Backend-neutral object-store contract, key rules and the publish protocol.

Both backends share the key validation and everything that can be expressed
in terms of the primitive operations (verify, JSON, publish), so the two
cannot drift apart in the parts that matter for data integrity.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

from .errors import IntegrityError, InvalidKey, ObjectNotFound, StorageError

log = logging.getLogger(__name__)

CHUNK_SIZE = 8 * 1024 * 1024
MAX_KEY_BYTES = 1024
# Top-level names the backends use for temp files and sidecars; refusing them
# as keys keeps internal files out of the key space on every backend.
RESERVED_SEGMENTS = frozenset({".tmp", ".meta"})

Source = bytes | bytearray | memoryview | BinaryIO | os.PathLike


@dataclass(frozen=True)
class ObjectInfo:
    """What a store knows about one object without reading it."""

    key: str
    size: int
    sha256: str | None  # hex; None in S3 listings and for objects not written by us
    modified: datetime  # tz-aware UTC


def _key_problem(key: str) -> str | None:
    """Why `key` is unusable as an object key, or None if it is fine."""
    if not key:
        return "empty"
    try:
        encoded = key.encode("utf-8")
    except UnicodeEncodeError:
        return "not encodable as UTF-8"
    if len(encoded) > MAX_KEY_BYTES:
        return f"longer than {MAX_KEY_BYTES} bytes"
    if "\\" in key:
        return "contains a backslash"
    if any(unicodedata.category(c) == "Cc" for c in key):
        return "contains NUL or control characters"
    if key.startswith("/"):
        return "absolute path"
    segments = key.split("/")
    if "" in segments:
        return "empty path segment"
    if "." in segments or ".." in segments:
        return "'.' or '..' segment"
    if segments[0] in RESERVED_SEGMENTS:
        return f"{segments[0]!r} is reserved for internal use"
    return None


def validate_key(key: str) -> str:
    """Return `key` unchanged, or raise InvalidKey saying what is wrong with it."""
    if not isinstance(key, str):
        raise InvalidKey(repr(key), "not a str")
    problem = _key_problem(key)
    if problem:
        raise InvalidKey(key, problem)
    return key


def validate_prefix(prefix: str, *, allow_empty: bool) -> str:
    """Validate a listing prefix: a key, optionally ending in one '/'."""
    if prefix == "" and allow_empty:
        return prefix
    if not isinstance(prefix, str):
        raise InvalidKey(repr(prefix), "not a str")
    problem = _key_problem(prefix[:-1] if prefix.endswith("/") else prefix)
    if problem:
        raise InvalidKey(prefix, problem)
    return prefix


def is_valid_key(key: str) -> bool:
    """Listing filter: backend bookkeeping paths and foreign names are no objects."""
    return _key_problem(key) is None


def join_key(prefix: str, name: str) -> str:
    """Join a directory-like prefix and a relative name into a validated key."""
    return validate_key(f"{prefix.rstrip('/')}/{name}")


class HashingReader:
    """Binary reader that hashes and counts every byte passed through it.

    Lets backends compute sha256 in the same pass as the upload.
    """

    def __init__(self, raw: BinaryIO):
        self._raw = raw
        self._hash = hashlib.sha256()
        self.size = 0
        self.failed = False  # set when the source raised: the caller's error, not the store's

    def read(self, n: int = -1) -> bytes:
        try:
            chunk = self._raw.read(n)
        except BaseException:
            self.failed = True
            raise
        self._hash.update(chunk)
        self.size += len(chunk)
        return chunk

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()


@contextmanager
def open_source(data: Source) -> Iterator[BinaryIO]:
    """Present any accepted put() source as a readable binary stream.

    Paths are opened (and closed) here; caller-owned streams are left open.
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        yield io.BytesIO(data)
    elif isinstance(data, os.PathLike):
        with open(data, "rb") as f:
            yield f
    elif callable(getattr(data, "read", None)):
        yield data
    else:
        raise TypeError(
            f"put() takes bytes, a binary stream or an os.PathLike, not {type(data).__name__}"
        )


def utc_from_timestamp(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc)


def check_range(start: int, end: int | None) -> None:
    """Reject negative offsets: ranges here are plain [start, end) slices."""
    if start < 0 or (end is not None and end < 0):
        raise ValueError(f"byte range must not be negative: start={start}, end={end}")


class ObjectStore(ABC):
    """A flat key -> bytes store with atomic puts and an atomic publish protocol.

    Keys are relative POSIX paths (see validate_key). Every write is atomic:
    an object is visible either completely or not at all.
    """

    uri: str

    @abstractmethod
    def uri_for(self, key: str) -> str:
        """Full URI of `key`, for logs and error messages."""

    @abstractmethod
    def put(
        self, key: str, data: Source, *, content_type: str = "application/octet-stream"
    ) -> ObjectInfo:
        """Stream `data` into `key` atomically, recording its sha256."""

    @abstractmethod
    def open(self, key: str) -> BinaryIO:
        """Open `key` for streaming reads; use as a context manager."""

    @abstractmethod
    def get_bytes(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        """Bytes [start, end) of `key`, clipped to the object like a slice."""

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo:
        """Metadata of `key`; ObjectNotFound if missing."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """All objects whose key starts with `prefix` (a plain string prefix,
        as in S3: end it with '/' to stay inside one directory), sorted by key."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove `key`; ObjectNotFound if missing."""

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
        except ObjectNotFound:
            return False
        return True

    def get_file(self, key: str, path: str | os.PathLike) -> Path:
        """Download `key` to `path`; a partial download never appears at `path`."""
        path = Path(path)
        with self.open(key) as src:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK_SIZE)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return path

    def delete_prefix(self, prefix: str) -> int:
        """Delete every key listed under `prefix` (string prefix, like list()).

        Returns how many objects were deleted. An empty prefix is refused so a
        bug cannot wipe the whole store.
        """
        validate_prefix(prefix, allow_empty=False)
        return self._delete_keys([info.key for info in self.list(prefix)])

    def _delete_keys(self, keys: Iterable[str]) -> int:
        """Delete `keys`, tolerating ones already gone; returns the count deleted."""
        deleted = 0
        for key in keys:
            try:
                self.delete(key)
            except ObjectNotFound:
                continue
            deleted += 1
        return deleted

    def verify(self, key: str, sha256: str) -> None:
        """Re-read `key` and raise IntegrityError unless its sha256 matches."""
        digest = hashlib.sha256()
        with self.open(key) as f:
            while chunk := f.read(CHUNK_SIZE):
                digest.update(chunk)
        actual = digest.hexdigest()
        if actual != sha256.lower():
            raise IntegrityError(key, sha256, actual)

    def put_json(self, key: str, obj: Any) -> ObjectInfo:
        data = json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=True, allow_nan=False)
        return self.put(key, data.encode("utf-8"), content_type="application/json")

    def get_json(self, key: str) -> Any:
        raw = self.get_bytes(key)
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise StorageError(f"invalid JSON in {self.uri_for(key)}: {exc}") from exc

    def publish(
        self,
        prefix: str,
        files: Mapping[str, Source],
        manifest: dict,
        *,
        manifest_name: str = "manifest.json",
    ) -> ObjectInfo:
        """Publish `files` under `prefix`, all or nothing.

        Files are uploaded and re-read to verify their sha256; the manifest,
        listing every file's sha256 and size, is written last. Readers treat a
        prefix as existing only once its manifest exists, so a failure at any
        point (after which the uploaded files are removed) is invisible to them.
        Assumes a single publisher per prefix.
        """
        prefix = validate_prefix(prefix, allow_empty=False).rstrip("/")
        manifest_key = join_key(prefix, manifest_name)
        keys = {name: join_key(prefix, name) for name in files}
        if manifest_name in files:
            raise ValueError(f"a file may not be named like the manifest: {manifest_name!r}")
        clashing = {"files", "published_at"} & manifest.keys()
        if clashing:
            raise ValueError(f"manifest keys {sorted(clashing)} are set by publish()")
        if self.exists(manifest_key):
            raise StorageError(f"refusing to publish over {self.uri_for(manifest_key)}")

        written: list[str] = []
        try:
            entries = {}
            for name, source in files.items():
                info = self.put(keys[name], source)
                written.append(keys[name])
                self.verify(keys[name], info.sha256)
                entries[name] = {"sha256": info.sha256, "size": info.size}
            # Listed first in `written` so that if the manifest write reports a
            # failure after all (e.g. a lost response), it is removed before its files.
            written.insert(0, manifest_key)
            published_at = datetime.now(timezone.utc).isoformat()
            return self.put_json(
                manifest_key, {**manifest, "files": entries, "published_at": published_at}
            )
        except BaseException:
            self._discard(written)
            raise

    def _discard(self, keys: list[str]) -> None:
        """Best-effort cleanup after a failed publish; the original error wins."""
        for key in keys:
            try:
                self.delete(key)
            except ObjectNotFound:
                continue
            except Exception:
                log.exception("could not remove %s after a failed publish", self.uri_for(key))

    def read_manifest(
        self, prefix: str, *, manifest_name: str = "manifest.json", verify: bool = False
    ) -> dict:
        """Load the manifest of a published prefix; ObjectNotFound if unpublished.

        With verify=True every listed file is re-read and its sha256 checked.
        """
        prefix = validate_prefix(prefix, allow_empty=False).rstrip("/")
        manifest_key = join_key(prefix, manifest_name)
        manifest = self.get_json(manifest_key)
        files = manifest.get("files") if isinstance(manifest, dict) else None
        if not isinstance(files, dict) or not all(
            isinstance(e, dict) and isinstance(e.get("sha256"), str) for e in files.values()
        ):
            raise StorageError(f"{self.uri_for(manifest_key)} has no valid 'files' mapping")
        if verify:
            for name, entry in files.items():
                self.verify(join_key(prefix, name), entry["sha256"])
        return manifest
