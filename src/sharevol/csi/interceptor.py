"""The one place where domain errors become gRPC status codes, plus per-key locks and logs.

A SharevolError maps to its CSI code with its message; NotImplementedError (the generated base
servicer) maps to UNIMPLEMENTED; anything else is INTERNAL, logged with its traceback: a bug.
Status details stay empty, as the CSI spec requires.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc

from sharevol import errors
from sharevol.csi.locking import LOCK_KEYS, KeyLocks
from sharevol.csi.redact import redacted

log = logging.getLogger(__name__)

CODES: dict[type[errors.SharevolError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Aborted: grpc.StatusCode.ABORTED,
    errors.OutOfRange: grpc.StatusCode.OUT_OF_RANGE,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unimplemented: grpc.StatusCode.UNIMPLEMENTED,
    errors.Internal: grpc.StatusCode.INTERNAL,
}

Observer = Callable[[str, grpc.StatusCode, float], None]
"""Called after every RPC with (method, code, seconds): the metrics hook."""


def status_code(error: errors.SharevolError) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        if cls in CODES:
            return CODES[cls]
    return grpc.StatusCode.INTERNAL


if TYPE_CHECKING:
    _ServerInterceptor = grpc.ServerInterceptor[Any, Any]
else:  # the runtime class is not generic; only the stubs are
    _ServerInterceptor = grpc.ServerInterceptor


class ErrorMappingInterceptor(_ServerInterceptor):
    """Wraps every unary handler: lock keys, run, map errors, log, observe."""

    def __init__(self, locks: KeyLocks, observers: list[Observer] | None = None) -> None:
        self.locks = locks
        self.observers = observers or []

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method: str = handler_call_details.method
        inner = handler.unary_unary
        key_function = LOCK_KEYS.get(method)
        service_name, _, method_name = method.lstrip("/").rpartition("/")
        # Structured fields of every log line about this call (JSON logs: sharevol.cli.logs).
        fields = {"rpc_service": service_name, "rpc_method": method_name}

        def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
            started = time.monotonic()
            code = grpc.StatusCode.OK
            message = ""
            try:
                if log.isEnabledFor(logging.DEBUG):
                    text = redacted(request)  # never the request itself: it may carry secrets
                    log.debug("%s request: %s", method, text, extra={**fields, "request": text})
                if key_function is None:
                    return inner(request, context)
                with self.locks.hold(key_function(request)):
                    return inner(request, context)
            except errors.SharevolError as exc:
                code, message = status_code(exc), str(exc)
            except NotImplementedError:
                code, message = grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented"
            except Exception as exc:
                log.exception("%s failed with an unexpected error", method, extra=fields)
                code, message = grpc.StatusCode.INTERNAL, f"internal error: {exc}"
            finally:
                seconds = time.monotonic() - started
                for observe in self.observers:
                    observe(method, code, seconds)
                outcome = {**fields, "grpc_code": code.name, "duration_ms": round(seconds * 1e3, 3)}
                if code is grpc.StatusCode.OK:
                    log.debug("%s -> OK", method, extra=outcome)
            level = logging.ERROR if code is grpc.StatusCode.INTERNAL else logging.INFO
            log.log(level, "%s -> %s: %s", method, code.name, message, extra=outcome)
            context.abort(code, message)

        return grpc.unary_unary_rpc_method_handler(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
