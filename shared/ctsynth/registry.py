"""Versioned artifacts in the object store: `<root>/<name>/<version>/`.

Datasets and models share this scheme. A version exists once its manifest
exists (it is written last), so readers never see half of one. References
read `name`, `name:latest` or `name:<version>`; versions are 1, 2, 3, ...
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ctsynth.errors import DataLoss, InvalidArgument, NotFound
from ctsynth.storage import ObjectStore
from ctsynth.storage.errors import ObjectNotFound

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
MANIFEST = "manifest.json"


def check_name(name: str, field: str = "name") -> str:
    if not NAME_PATTERN.match(name or ""):
        raise InvalidArgument(field, f"{name!r} is not a valid name: lower-case letters, digits, '.', '_' and '-', "
                                     "starting with a letter or digit, at most 64 characters")
    return name


@dataclass(frozen=True)
class Ref:
    name: str
    version: str | None  # None: the latest

    def __str__(self) -> str:
        return f"{self.name}:{self.version or 'latest'}"


def parse_ref(text: str, field: str) -> Ref:
    """`name`, `name:latest` or `name:<version>` -> Ref (INVALID_ARGUMENT otherwise)."""
    name, _, version = (text or "").strip().partition(":")
    check_name(name, field)
    if version in ("", "latest"):
        return Ref(name, None)
    if not version.isdigit() or int(version) < 1:
        raise InvalidArgument(field, f"version {version!r} of {text!r} is not a positive integer or 'latest'")
    return Ref(name, str(int(version)))


class Registry:
    """The versions of one kind of artifact (datasets, models) in a store."""

    def __init__(self, store: ObjectStore, root: str, kind: str):
        self.store = store
        self.root = root
        self.kind = kind

    def prefix(self, name: str, version: str) -> str:
        return f"{self.root}/{name}/{version}"

    def _version_dirs(self, name: str) -> set[int]:
        """Every version folder with any object in it, published or not."""
        found = set()
        for info in self.store.list(f"{self.root}/{name}/"):
            part = info.key[len(self.root) + len(name) + 2:].split("/", 1)[0]
            if part.isdigit():
                found.add(int(part))
        return found

    def versions(self, name: str) -> list[str]:
        """Published versions of `name`, oldest first."""
        return [str(v) for v in sorted(self._version_dirs(name))
                if self.store.exists(f"{self.prefix(name, str(v))}/{MANIFEST}")]

    def names(self) -> list[str]:
        names = set()
        for info in self.store.list(f"{self.root}/"):
            parts = info.key.split("/")
            if len(parts) >= 4 and parts[-1] == MANIFEST:
                names.add(parts[1])
        return sorted(names)

    def resolve(self, ref: Ref) -> tuple[str, str]:
        """(name, version) of a published version; NOT_FOUND naming what is missing."""
        versions = self.versions(ref.name)
        if not versions:
            raise NotFound(f"no {self.kind} named {ref.name!r}")
        if ref.version is None:
            return ref.name, versions[-1]
        if ref.version not in versions:
            raise NotFound(f"{self.kind} {ref.name!r} has no version {ref.version} (versions: {', '.join(versions)})")
        return ref.name, ref.version

    def manifest(self, name: str, version: str) -> dict:
        return self.store.read_manifest(self.prefix(name, version))

    def intact_manifest(self, name: str, version: str) -> dict:
        """The manifest of a version whose listed files are all there at their
        listed sizes. A version is published whole, so anything less is lost
        data: DATA_LOSS naming the file by its store key (never a server path)."""
        manifest = self.manifest(name, version)
        for file, entry in manifest["files"].items():
            key = f"{self.prefix(name, version)}/{file}"
            try:
                size = self.store.stat(key).size
            except ObjectNotFound:
                raise DataLoss(f"{self.kind} {name}:{version} is broken: {key} is listed in its manifest "
                               "but missing") from None
            if "size" in entry and size != entry["size"]:
                raise DataLoss(f"{self.kind} {name}:{version} is broken: {key} has {size} bytes, its manifest "
                               f"lists {entry['size']}")
        return manifest

    def allocate(self, name: str) -> str:
        """A version number no earlier run has used, published or not."""
        return str(max(self._version_dirs(name), default=0) + 1)
