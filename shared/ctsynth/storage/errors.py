"""Storage errors, backend-neutral so callers never see minio or OS specifics."""


class StorageError(Exception):
    """Base class for every error raised by ctsynth.storage."""


class ObjectNotFound(StorageError):
    """The key does not exist in the store."""

    def __init__(self, key: str, where: str | None = None):
        self.key = key
        super().__init__(f"object not found: {where or key}")


class InvalidKey(StorageError, ValueError):
    """A key or prefix is malformed or would escape the store root.

    Also a ValueError because it is a bad argument, not a store failure.
    """

    def __init__(self, key: str, reason: str):
        self.key = key
        self.reason = reason
        super().__init__(f"invalid key {key!r}: {reason}")


class IntegrityError(StorageError):
    """Stored content does not match its expected sha256."""

    def __init__(self, key: str, expected: str, actual: str):
        self.key = key
        self.expected = expected
        self.actual = actual
        super().__init__(f"sha256 mismatch for {key!r}: expected {expected}, got {actual}")


class StoreUnavailable(StorageError):
    """The backend could not be reached (network, DNS, server errors)."""
