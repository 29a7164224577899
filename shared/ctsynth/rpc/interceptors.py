"""Server interceptors: bearer-token auth, and one observing wrapper per call
that logs it as JSON, counts it in Prometheus and maps exceptions to a
precise gRPC status.

grpcio has no ready interceptor for these, so the handler wrapping is here,
written once for the four call shapes.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import grpc

from ctsynth.observability.prometheus import IN_FLIGHT, LATENCY, REQUESTS
from ctsynth.rpc.errors import status_for

log = logging.getLogger("ctsynth.rpc")

# Health must answer Kubernetes probes, which send no credentials.
UNAUTHENTICATED_SERVICES = frozenset({"grpc.health.v1.Health"})


def _split_method(full_method: str) -> tuple[str, str]:
    """'/pkg.Service/Method' -> ('pkg.Service', 'Method')."""
    _, service, method = full_method.split("/", 2)
    return service, method


def _rebuild(handler: grpc.RpcMethodHandler, wrap: Callable) -> grpc.RpcMethodHandler:
    """The same handler with its behaviour passed through `wrap(behaviour, streaming)`."""
    if handler.unary_unary:
        factory, behaviour, streaming = grpc.unary_unary_rpc_method_handler, handler.unary_unary, False
    elif handler.unary_stream:
        factory, behaviour, streaming = grpc.unary_stream_rpc_method_handler, handler.unary_stream, True
    elif handler.stream_unary:
        factory, behaviour, streaming = grpc.stream_unary_rpc_method_handler, handler.stream_unary, False
    else:
        factory, behaviour, streaming = grpc.stream_stream_rpc_method_handler, handler.stream_stream, True
    return factory(
        wrap(behaviour, streaming),
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class TokenAuthInterceptor(grpc.ServerInterceptor):
    """Refuses calls whose `authorization` metadata is not `Bearer <token>`,
    the scheme in any case (RFC 6750). Install it inside the observing
    interceptor, so that refused calls are logged and counted too."""

    def __init__(self, token: str):
        self._expected = token.encode()

    def intercept_service(self, continuation, handler_call_details):
        service, _ = _split_method(handler_call_details.method)
        if service in UNAUTHENTICATED_SERVICES:
            return continuation(handler_call_details)
        supplied = dict(handler_call_details.invocation_metadata or ()).get("authorization", "")
        scheme, _, credentials = supplied.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(credentials.lstrip(" ").encode(), self._expected):
            return continuation(handler_call_details)
        handler = continuation(handler_call_details)
        if handler is None:
            return None

        def refuse(behaviour, streaming):
            def deny(request, context):
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")

            return deny

        return _rebuild(handler, refuse)


def _ended_early(context: grpc.ServicerContext) -> grpc.StatusCode:
    """Why a call ended before its handler did: its deadline passed, or the
    client cancelled it."""
    if context.time_remaining() <= 0:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED


class _Outcome:
    """The status a call ended with, filled in by the wrapper."""

    def __init__(self) -> None:
        self.code = grpc.StatusCode.OK


def _finish_error(exc: BaseException, context: grpc.ServicerContext, outcome: _Outcome, request_id: str):
    """Record the error's status; abort with a precise one unless already aborted."""
    already = context.code()
    if already is not None and already != grpc.StatusCode.OK:
        outcome.code = already
        raise exc
    mapped = status_for(exc)
    if mapped is None:
        log.exception("unhandled error", extra={"request_id": request_id})
        mapped = (grpc.StatusCode.INTERNAL, f"internal error (request id {request_id})")
    outcome.code = mapped[0]
    context.abort(*mapped)


class ObservabilityInterceptor(grpc.ServerInterceptor):
    """Logs, counts and times every call; turns exceptions into statuses.

    It also knows how many handlers are still running: gRPC's own stop ends
    a call at the transport (a passed deadline, the grace period) while its
    handler thread may still be finishing, so a graceful stop waits here.
    """

    def __init__(self) -> None:
        self._running = 0
        self._idle = threading.Condition()

    def wait_idle(self, timeout: float) -> bool:
        """Wait up to `timeout` s for every running handler to finish and be logged."""
        with self._idle:
            return self._idle.wait_for(lambda: self._running == 0, timeout)

    def _entered(self) -> None:
        with self._idle:
            self._running += 1

    def _left(self) -> None:
        with self._idle:
            self._running -= 1
            self._idle.notify_all()

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        service, method = _split_method(handler_call_details.method)
        metadata = dict(handler_call_details.invocation_metadata or ())

        def observe(behaviour, streaming):
            def begin():
                request_id = metadata.get("x-request-id") or uuid.uuid4().hex[:16]
                self._entered()
                IN_FLIGHT.labels(service).inc()
                return request_id, time.perf_counter(), _Outcome()

            def end(request_id, started, outcome, context):
                try:
                    if outcome.code == grpc.StatusCode.OK:
                        # A handler may set a status without raising.
                        outcome.code = context.code() or (
                            grpc.StatusCode.OK if context.is_active() else _ended_early(context)
                        )
                    elapsed = time.perf_counter() - started
                    IN_FLIGHT.labels(service).dec()
                    REQUESTS.labels(service, method, outcome.code.name).inc()
                    LATENCY.labels(service, method).observe(elapsed)
                    log.info(
                        "call",
                        extra={
                            "request_id": request_id,
                            "method": f"{service}/{method}",
                            "code": outcome.code.name,
                            "duration_ms": round(elapsed * 1000, 2),
                            "peer": context.peer(),
                        },
                    )
                finally:
                    self._left()

            if streaming:

                def stream(request, context) -> Iterator:
                    request_id, started, outcome = begin()
                    try:
                        yield from behaviour(request, context)
                    except GeneratorExit:
                        outcome.code = _ended_early(context)
                        raise
                    except Exception as exc:  # noqa: BLE001 - mapped to a status
                        _finish_error(exc, context, outcome, request_id)
                    finally:
                        end(request_id, started, outcome, context)

                return stream

            def unary(request, context):
                request_id, started, outcome = begin()
                try:
                    return behaviour(request, context)
                except Exception as exc:  # noqa: BLE001 - mapped to a status
                    _finish_error(exc, context, outcome, request_id)
                finally:
                    end(request_id, started, outcome, context)

            return unary

        return _rebuild(handler, observe)
