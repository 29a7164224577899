"""Feature-extractor weights from configuration or a request: a local path
or an object-store URI. Nothing is downloaded from the internet (air-gapped
clusters have none); an object-store file is fetched once into a local
cache, named by its sha256.

A reference is accepted only in the object store or under the allowed roots
(`ctsynth.roots`), so a request can neither have an arbitrary server file
opened nor learn whether one exists. A file is then read once into memory
(`read_copy`): the bytes that are checked are the bytes that are hashed and
loaded, whatever happens to the file meanwhile.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ctsynth.errors import FailedPrecondition
from ctsynth.roots import AllowedRoots
from ctsynth.storage import ObjectNotFound, ObjectStore, StorageError, open_store


def read_copy(path: Path) -> tuple[bytes, str]:
    """The file's bytes and their sha256, read once: a private copy no one else can change."""
    data = Path(path).read_bytes()
    return data, hashlib.sha256(data).hexdigest()


def _object(store: ObjectStore, uri: str) -> tuple[ObjectStore, str]:
    """The store and key of `uri`: a key in `store` when it is under its
    URI, otherwise the last segment of its parent's (existing) store."""
    prefix = store.uri.rstrip("/") + "/"
    if uri.startswith(prefix):
        return store, uri[len(prefix):]
    parent, _, key = uri.rstrip("/").rpartition("/")
    return open_store(parent, create=False), key


def local_weights(store: ObjectStore, reference: str, roots: AllowedRoots, cache_dir: Path, how_to: str,
                  field: str) -> Path:
    """A local file holding the weights `reference` names; INVALID_ARGUMENT
    naming `field` when it lies outside the store and `roots`,
    FAILED_PRECONDITION ending with `how_to` when there is no such file."""
    reference = reference.strip()
    if not reference:
        raise FailedPrecondition(f"no weights file is configured. {how_to}")
    location = roots.including(store.uri).resolve(reference, field)
    if isinstance(location, Path):
        if not location.is_file():
            raise FailedPrecondition(f"weights file {reference} does not exist. {how_to}")
        return location
    try:
        source, key = _object(store, location)
        info = source.stat(key)
        local = Path(cache_dir) / f"{info.sha256 or hashlib.sha256(reference.encode()).hexdigest()}-{Path(key).name}"
        if not local.exists() or local.stat().st_size != info.size:
            source.get_file(key, local)
    except ObjectNotFound:
        raise FailedPrecondition(f"weights object {reference} does not exist. {how_to}") from None
    except (StorageError, ValueError, OSError) as exc:
        raise FailedPrecondition(f"weights object {reference} cannot be read ({exc}). {how_to}") from None
    return local
