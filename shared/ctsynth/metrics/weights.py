"""Feature-extractor weights from configuration: a local path or an
object-store URI. Nothing is downloaded from the internet (air-gapped
clusters have none); an object-store file is fetched once into a local
cache, named by its sha256.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

from ctsynth.rpc.errors import FailedPrecondition
from ctsynth.storage import ObjectNotFound, ObjectStore, StorageError, open_store


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def _object(store: ObjectStore, uri: str) -> tuple[ObjectStore, str]:
    """The store and key of `uri`: a key in `store` when it is under its
    URI, otherwise the last segment of its parent's store."""
    prefix = store.uri.rstrip("/") + "/"
    if uri.startswith(prefix):
        return store, uri[len(prefix):]
    parent, _, key = uri.rstrip("/").rpartition("/")
    return open_store(parent), key


def local_weights(store: ObjectStore, reference: str, cache_dir: Path, how_to: str) -> Path:
    """A local file holding the weights `reference` names; FAILED_PRECONDITION
    ending with `how_to` when there is none."""
    reference = reference.strip()
    if not reference:
        raise FailedPrecondition(f"no weights file is configured. {how_to}")
    if "://" not in reference or urlsplit(reference).scheme == "file":
        path = Path(url2pathname(urlsplit(reference).path) if "://" in reference else reference).expanduser()
        if not path.is_file():
            raise FailedPrecondition(f"weights file {reference} does not exist. {how_to}")
        return path
    try:
        source, key = _object(store, reference)
        info = source.stat(key)
        local = Path(cache_dir) / f"{info.sha256 or hashlib.sha256(reference.encode()).hexdigest()}-{Path(key).name}"
        if not local.exists() or local.stat().st_size != info.size:
            source.get_file(key, local)
    except ObjectNotFound:
        raise FailedPrecondition(f"weights object {reference} does not exist. {how_to}") from None
    except (StorageError, ValueError, OSError) as exc:
        raise FailedPrecondition(f"weights object {reference} cannot be read ({exc}). {how_to}") from None
    return local
