"""Client-named server paths and store URIs, confined to configured roots.

A request may name something on the server side: an ingest source, a
weights file. It is accepted only when it lies under one of the
deployment's allowed roots (CTSYNTH_IMPORT_ROOTS; by default the object
store and the import directory), so no request can make a service read an
arbitrary server path. A reference outside every root is refused before the
file system is consulted, with the same answer whether it exists or not, so
a refusal tells a client nothing about the server's files either.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit
from urllib.request import url2pathname

from ctsynth.errors import InvalidArgument

REMOTE_SCHEMES = ("s3",)


def _local(text: str) -> Path | None:
    """The path a plain path or file:// URI names (None for a remote URI);
    ValueError when the text is neither."""
    if "\x00" in text:
        raise ValueError("contains a NUL character")
    if "://" not in text:
        return Path(text)
    parts = urlsplit(text)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path:
            raise ValueError("file URIs must be file:///absolute/path")
        return Path(url2pathname(parts.path))
    if parts.scheme in REMOTE_SCHEMES:
        return None
    raise ValueError(f"unsupported scheme {parts.scheme!r}; use a path, file:///path or s3://bucket/prefix")


def _remote(text: str) -> tuple[str, str, PurePosixPath]:
    """(scheme, bucket, key prefix) of a remote URI; ValueError for '.', '..' or empty segments."""
    parts = urlsplit(text)
    if not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"{parts.scheme} URIs are {parts.scheme}://bucket[/prefix]")
    segments = parts.path.strip("/").split("/") if parts.path.strip("/") else []
    if any(s in ("", ".", "..") for s in segments):
        raise ValueError("'.', '..' or empty path segment")
    return parts.scheme, parts.netloc, PurePosixPath(*segments)


@dataclass(frozen=True)
class AllowedRoots:
    """The local folders (or files) and object-store prefixes a request may name."""

    roots: tuple[str, ...]

    def __post_init__(self) -> None:
        for root in self.roots:
            try:
                local = _local(root)
                if local is None:
                    _remote(root)
                elif not local.is_absolute():
                    raise ValueError("must be absolute")
            except ValueError as exc:
                raise ValueError(f"allowed root {root!r}: {exc}") from None

    def including(self, *references: str) -> AllowedRoots:
        """These roots and the non-empty `references` (e.g. files the operator configured)."""
        return AllowedRoots((*self.roots, *(r for r in references if r)))

    def resolve(self, reference: str, field: str) -> Path | str:
        """The local path (absolute, symbolic links resolved) or the remote URI
        that `reference` names, when it lies under a root; InvalidArgument
        naming `field` otherwise. Nothing outside the roots is looked at."""
        try:
            local = _local(reference)
            remote = None if local is not None else _remote(reference)
        except ValueError as exc:
            raise InvalidArgument(field, f"{reference!r}: {exc}") from None
        if local is not None:
            if not local.is_absolute():
                raise InvalidArgument(field, f"{reference!r} must be an absolute path on the server or a store URI")
            found = self._local_match(Path(os.path.normpath(local)))
        else:
            found = reference if self._remote_match(remote) else None
        if found is None:
            listed = ", ".join(self.roots) or "none"
            raise InvalidArgument(field, f"{reference} is outside the allowed roots ({listed}); put it under one "
                                         "of them, or have the operator add its folder to CTSYNTH_IMPORT_ROOTS")
        return found

    def _local_match(self, path: Path) -> Path | None:
        """`path` resolved, if it is under a root both as written and once resolved.

        The written form is checked first, so the file system is consulted
        only inside a root; the resolved form then catches links out of it.
        """
        roots = [Path(os.path.normpath(local)) for r in self.roots if (local := _local(r)) is not None]
        real = [Path(os.path.realpath(r)) for r in roots]
        if not any(path.is_relative_to(r) for r in (*roots, *real)):
            return None
        resolved = Path(os.path.realpath(path))
        return resolved if any(resolved.is_relative_to(r) for r in real) else None

    def _remote_match(self, remote: tuple[str, str, PurePosixPath]) -> bool:
        scheme, bucket, prefix = remote
        return any(scheme == s and bucket == b and prefix.is_relative_to(p)
                   for s, b, p in (_remote(r) for r in self.roots if _local(r) is None))
