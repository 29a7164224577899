"""The mapping from library errors to a gRPC status.

Library code raises the plain errors of `ctsynth.errors` (or the storage
errors) and never touches gRPC; the server interceptor and the job manager
turn them into a precise status and message here.
"""

from __future__ import annotations

import grpc

from ctsynth.errors import ServiceError
from ctsynth.storage import errors as storage_errors

_STORAGE_CODES: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (storage_errors.InvalidKey, grpc.StatusCode.INVALID_ARGUMENT),
    (storage_errors.IntegrityError, grpc.StatusCode.DATA_LOSS),
    (storage_errors.StoreUnavailable, grpc.StatusCode.UNAVAILABLE),
)


def status_code(name: str) -> grpc.StatusCode:
    """The grpc.StatusCode of a status name; INTERNAL for an unknown one."""
    try:
        return grpc.StatusCode[name]
    except KeyError:
        return grpc.StatusCode.INTERNAL


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str] | None:
    """The status and message for a known error; None for an unexpected one."""
    if isinstance(exc, ServiceError):
        return status_code(exc.status), str(exc)
    if isinstance(exc, storage_errors.ObjectNotFound):
        # Its message names the full URI, a server path on a local store.
        return grpc.StatusCode.NOT_FOUND, f"object not found: {exc.key}"
    for kind, code in _STORAGE_CODES:
        if isinstance(exc, kind):
            return code, str(exc)
    return None
