"""One object-store interface for datasets, checkpoints and results.

`open_store(uri)` picks the backend from the URI, so code is written once
against ObjectStore and runs on a local folder or on S3 alike.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import urlsplit
from urllib.request import url2pathname

from . import errors
from .base import ObjectInfo, ObjectStore
from .errors import (
    IntegrityError,
    InvalidKey,
    ObjectNotFound,
    StorageError,
    StoreUnavailable,
)
from .local import LocalStore

__all__ = [
    "IntegrityError",
    "InvalidKey",
    "LocalStore",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "StorageError",
    "StoreUnavailable",
    "errors",
    "open_store",
]

_SUPPORTED = "file:///absolute/path, a local path, or s3://bucket[/prefix]"


def open_store(uri: str, env: Mapping[str, str] | None = None, *, create: bool = True) -> ObjectStore:
    """Open the store at `uri`.

    - `file:///abs/path` or a plain local path: LocalStore, created if missing.
    - `s3://bucket[/prefix]`: S3Store configured from CTSYNTH_S3_* variables in
      `env` (default os.environ; tests pass their own to leave it untouched).

    `create=False` (stores a request names) creates no folder or bucket.
    """
    if not uri:
        raise ValueError(f"empty store URI; use {_SUPPORTED}")
    if "://" not in uri:
        return LocalStore(uri, create=create)
    parts = urlsplit(uri)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path:
            raise ValueError(f"file URIs must be file:///absolute/path, got {uri!r}")
        return LocalStore(url2pathname(parts.path), create=create)
    if parts.scheme == "s3":
        from .s3 import open_s3  # minio is only needed for S3 stores

        return open_s3(parts.netloc, parts.path.strip("/"), os.environ if env is None else env, create=create)
    raise ValueError(f"unsupported store URI {uri!r}; use {_SUPPORTED}")
