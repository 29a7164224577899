"""The errors library code raises for a caller to act on.

Plain exceptions, with no gRPC in sight: each class names the gRPC status it
stands for as a string (`status`), and `ctsynth.rpc.errors.status_for` turns
them into that status at the server edge. Records written by name (a worker's
`error.json`) are rebuilt with `error_from_status`.
"""

from __future__ import annotations

# The names of grpc.StatusCode, spelt out so that nothing here imports grpc
# (tests/test_errors.py checks they match).
STATUS_NAMES = frozenset({
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
    "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
    "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
})


class ServiceError(Exception):
    """An error a client can act on; subclasses fix the status (a gRPC status code name)."""

    status = "INTERNAL"

    def __init__(self, message: str, *, field: str = ""):
        super().__init__(message)
        self.field = field


class InvalidArgument(ServiceError, ValueError):
    """A request value is wrong; `field` names it and the message starts with it."""

    status = "INVALID_ARGUMENT"

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}", field=field)


class NotFound(ServiceError):
    status = "NOT_FOUND"


class AlreadyExists(ServiceError):
    status = "ALREADY_EXISTS"


class FailedPrecondition(ServiceError):
    status = "FAILED_PRECONDITION"


class ResourceExhausted(ServiceError):
    status = "RESOURCE_EXHAUSTED"


class DataLoss(ServiceError):
    status = "DATA_LOSS"


class Unavailable(ServiceError):
    status = "UNAVAILABLE"


class Unauthenticated(ServiceError):
    status = "UNAUTHENTICATED"


ERRORS: tuple[type[ServiceError], ...] = (
    InvalidArgument, NotFound, AlreadyExists, FailedPrecondition, ResourceExhausted, DataLoss, Unavailable,
    Unauthenticated,
)


def error_from_status(code_name: str, message: str, field: str = "") -> ServiceError:
    """Rebuild a ServiceError recorded by status name (e.g. by a worker process);
    `message` is the recorded text as is."""
    for cls in ERRORS:
        if cls.status == code_name:
            error = cls.__new__(cls)
            ServiceError.__init__(error, message, field=field)  # InvalidArgument's text already names the field
            return error
    error = ServiceError(message, field=field)
    error.status = code_name if code_name in STATUS_NAMES else "INTERNAL"
    return error
