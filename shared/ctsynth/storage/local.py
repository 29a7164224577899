"""Object store on a local directory: the embedded default, no services needed."""

from __future__ import annotations

import os
import stat as stat_mode
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from .base import (
    CHUNK_SIZE,
    RESERVED_SEGMENTS,
    HashingReader,
    ObjectInfo,
    ObjectStore,
    Source,
    check_range,
    open_source,
    utc_from_timestamp,
    validate_key,
    validate_prefix,
)
from .errors import InvalidKey, ObjectNotFound, StorageError


class LocalStore(ObjectStore):
    """Objects are files at root/<key>.

    Writes are staged in root/.tmp and renamed into place, so readers never see
    a partial file. Each object's sha256 lives in root/.meta/<key>.sha256 so
    stat() need not re-read data. Both folders are reserved key names and are
    never listed. `content_type` is accepted for interface parity and not kept.
    Unlike S3, 'a' and 'a/b' cannot both exist: putting one while the other
    exists raises StorageError.
    """

    def __init__(self, root: str | os.PathLike, *, create: bool = True):
        """`create=False` opens an existing folder only (a store a request names must not appear by asking)."""
        self.root = Path(root).expanduser().resolve()
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
        elif not self.root.is_dir():
            raise StorageError(f"no store folder at {self.root.as_uri()}")
        self._tmp = self.root / ".tmp"
        self._meta = self.root / ".meta"
        self.uri = self.root.as_uri()

    def uri_for(self, key: str) -> str:
        return (self.root / validate_key(key)).as_uri()

    def _path(self, key: str) -> Path:
        """Filesystem path of `key`, refusing keys that a symlink leads out of root."""
        path = self.root / validate_key(key)
        if not path.resolve().is_relative_to(self.root):
            raise InvalidKey(key, "resolves outside the store root through a symlink")
        return path

    def _sidecar(self, key: str) -> Path:
        return self._meta / f"{key}.sha256"

    @contextmanager
    def _missing_as_not_found(self, key: str) -> Iterator[None]:
        """A key naming nothing, or a directory, is simply not an object."""
        try:
            yield
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key, self.uri_for(key)) from None

    def put(
        self, key: str, data: Source, *, content_type: str = "application/octet-stream"
    ) -> ObjectInfo:
        path = self._path(key)
        self._tmp.mkdir(exist_ok=True)
        tmp = self._tmp / f"{uuid.uuid4().hex}.part"
        try:
            with open_source(data) as src, open(tmp, "xb") as out:
                reader = HashingReader(src)
                while chunk := reader.read(CHUNK_SIZE):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            self._commit(key, tmp, path, reader.sha256)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return ObjectInfo(key, reader.size, reader.sha256, utc_from_timestamp(path.stat().st_mtime))

    def _commit(self, key: str, tmp: Path, path: Path, sha256: str) -> None:
        """Move a fully written temp file into place and record its hash.

        The old sidecar goes first: briefly unknown is fine, a stale hash is not.
        """
        sidecar = self._sidecar(key)
        sidecar.unlink(missing_ok=True)
        try:
            self._replace(tmp, path)
        except (IsADirectoryError, NotADirectoryError, FileExistsError) as exc:
            raise StorageError(
                f"cannot write {self.uri_for(key)}: a file and a folder would share a path"
            ) from exc
        sidecar_tmp = self._tmp / f"{uuid.uuid4().hex}.sha256"
        sidecar_tmp.write_text(sha256 + "\n")
        self._replace(sidecar_tmp, sidecar)

    @staticmethod
    def _replace(src: Path, dst: Path, attempts: int = 3) -> None:
        """os.replace, re-creating parents that a concurrent delete() pruned."""
        for attempt in range(attempts):
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(src, dst)
                return
            except FileNotFoundError:
                if attempt == attempts - 1 or not src.exists():
                    raise

    def open(self, key: str) -> BinaryIO:
        path = self._path(key)
        with self._missing_as_not_found(key):
            return open(path, "rb")

    def get_bytes(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        check_range(start, end)
        with self.open(key) as f:
            f.seek(start)
            return f.read(-1 if end is None else max(0, end - start))

    def stat(self, key: str) -> ObjectInfo:
        path = self._path(key)
        with self._missing_as_not_found(key):
            st = path.stat()
        if not stat_mode.S_ISREG(st.st_mode):
            raise ObjectNotFound(key, self.uri_for(key))
        return ObjectInfo(key, st.st_size, self._read_sidecar(key), utc_from_timestamp(st.st_mtime))

    def _read_sidecar(self, key: str) -> str | None:
        try:
            return self._sidecar(key).read_text().strip() or None
        except FileNotFoundError:
            return None

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        validate_prefix(prefix, allow_empty=True)  # here, not lazily on first next()
        return self._iter_objects(prefix)

    def _iter_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        folder = prefix.rpartition("/")[0]
        keys = sorted(k for k in self._walk(self.root / folder) if k.startswith(prefix))
        for key in keys:
            try:
                yield self.stat(key)
            except (ObjectNotFound, InvalidKey):
                # Deleted meanwhile, a symlink out of root, or a stray file
                # whose name is no valid key: none of them is an object.
                continue

    def _walk(self, top: Path) -> Iterator[str]:
        """Relative POSIX paths of the files under `top`, skipping internal folders."""
        for dirpath, dirnames, filenames in os.walk(top):
            if Path(dirpath) == self.root:
                dirnames[:] = [d for d in dirnames if d not in RESERVED_SEGMENTS]
            for name in filenames:
                yield Path(os.path.relpath(os.path.join(dirpath, name), self.root)).as_posix()

    def delete(self, key: str) -> None:
        path = self._path(key)
        with self._missing_as_not_found(key):
            path.unlink()
        sidecar = self._sidecar(key)
        sidecar.unlink(missing_ok=True)
        self._prune(path.parent, self.root)
        self._prune(sidecar.parent, self._meta)

    @staticmethod
    def _prune(folder: Path, stop: Path) -> None:
        """Remove now-empty parent folders so a deleted 'a/b' cannot block a new 'a'."""
        while folder != stop and folder.is_relative_to(stop):
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent
