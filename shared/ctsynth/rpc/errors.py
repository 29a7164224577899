"""Exceptions that carry a gRPC status, and the mapping from library errors.

Library code raises these (or the storage errors) and never touches gRPC;
the server interceptor turns them into a precise status and message.
"""

from __future__ import annotations

import grpc

from ctsynth.storage import errors as storage_errors


class ServiceError(Exception):
    """An error a client can act on; subclasses fix the gRPC status code."""

    code = grpc.StatusCode.INTERNAL

    def __init__(self, message: str, *, field: str = ""):
        super().__init__(message)
        self.field = field


class InvalidArgument(ServiceError):
    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}", field=field)


class NotFound(ServiceError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ServiceError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(ServiceError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(ServiceError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class DataLoss(ServiceError):
    code = grpc.StatusCode.DATA_LOSS


class Unavailable(ServiceError):
    code = grpc.StatusCode.UNAVAILABLE


class Unauthenticated(ServiceError):
    code = grpc.StatusCode.UNAUTHENTICATED


_STORAGE_CODES: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (storage_errors.InvalidKey, grpc.StatusCode.INVALID_ARGUMENT),
    (storage_errors.IntegrityError, grpc.StatusCode.DATA_LOSS),
    (storage_errors.StoreUnavailable, grpc.StatusCode.UNAVAILABLE),
)


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str] | None:
    """The status and message for a known error; None for an unexpected one."""
    if isinstance(exc, ServiceError):
        return exc.code, str(exc)
    if isinstance(exc, storage_errors.ObjectNotFound):
        # Its message names the full URI, a server path on a local store.
        return grpc.StatusCode.NOT_FOUND, f"object not found: {exc.key}"
    for kind, code in _STORAGE_CODES:
        if isinstance(exc, kind):
            return code, str(exc)
    return None


def error_from_status(code_name: str, message: str, field: str = "") -> ServiceError:
    """Rebuild a ServiceError recorded by name (e.g. by a worker process)."""
    for cls in ServiceError.__subclasses__():
        if cls.code.name == code_name and cls is not InvalidArgument:
            return cls(message, field=field)
    error = ServiceError(message, field=field)
    error.code = getattr(grpc.StatusCode, code_name, grpc.StatusCode.INTERNAL)
    return error
