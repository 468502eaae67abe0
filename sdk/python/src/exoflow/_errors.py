"""The SDK's errors: the proxy's error vocabulary, decoded from its problem+json bodies."""

from __future__ import annotations

import enum
import json
from typing import Any


class Reason(str, enum.Enum):
    """A stable, backend-independent reason for a failed call (``exo.common.v1.ErrorReason``).

    Branch on this, never on the message text.
    """

    ERROR_REASON_UNSPECIFIED = "ERROR_REASON_UNSPECIFIED"
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    INVALID_NAME = "INVALID_NAME"
    INVALID_ATTRIBUTE = "INVALID_ATTRIBUTE"
    INVALID_RECEIPT = "INVALID_RECEIPT"
    MALFORMED_REQUEST = "MALFORMED_REQUEST"
    INVALID_FILTER = "INVALID_FILTER"
    QUEUE_NOT_FOUND = "QUEUE_NOT_FOUND"
    BUCKET_NOT_FOUND = "BUCKET_NOT_FOUND"
    OBJECT_NOT_FOUND = "OBJECT_NOT_FOUND"
    KEY_NOT_FOUND = "KEY_NOT_FOUND"
    TABLE_NOT_FOUND = "TABLE_NOT_FOUND"
    ROUTE_NOT_FOUND = "ROUTE_NOT_FOUND"
    TOPIC_NOT_FOUND = "TOPIC_NOT_FOUND"
    SUBSCRIPTION_NOT_FOUND = "SUBSCRIPTION_NOT_FOUND"
    QUEUE_ALREADY_EXISTS = "QUEUE_ALREADY_EXISTS"
    BUCKET_ALREADY_EXISTS = "BUCKET_ALREADY_EXISTS"
    NOT_EMPTY = "NOT_EMPTY"
    SUBSCRIPTION_ALREADY_EXISTS = "SUBSCRIPTION_ALREADY_EXISTS"
    CONDITION_FAILED = "CONDITION_FAILED"
    RECEIPT_STALE = "RECEIPT_STALE"
    NOT_MODIFIED = "NOT_MODIFIED"
    RANGE_NOT_SATISFIABLE = "RANGE_NOT_SATISFIABLE"
    NOT_A_COUNTER = "NOT_A_COUNTER"
    COUNTER_OVERFLOW = "COUNTER_OVERFLOW"
    MESSAGE_TOO_LARGE = "MESSAGE_TOO_LARGE"
    VALUE_TOO_LARGE = "VALUE_TOO_LARGE"
    REQUEST_TOO_LARGE = "REQUEST_TOO_LARGE"
    THROTTLED = "THROTTLED"
    STORAGE_FULL = "STORAGE_FULL"
    TOO_MANY_SUBSCRIPTIONS = "TOO_MANY_SUBSCRIPTIONS"
    UNSUPPORTED = "UNSUPPORTED"
    BACKEND_UNAVAILABLE = "BACKEND_UNAVAILABLE"
    TIMEOUT = "TIMEOUT"
    SHUTTING_DOWN = "SHUTTING_DOWN"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    INTERNAL = "INTERNAL"

    @classmethod
    def parse(cls, name: str | None) -> Reason:
        """The reason named ``name``; INTERNAL for a name this SDK does not know (a newer proxy)."""
        try:
            return cls(name or "")
        except ValueError:
            return cls.INTERNAL


class ExoError(Exception):
    """A failed call, in the same vocabulary whatever the backend.

    Subclasses group the reasons the way the proxy's status codes do (``NotFoundError`` for every
    ``*_NOT_FOUND``, ...), so ``except exoflow.NotFoundError`` reads naturally; ``reason`` tells
    exactly which.
    """

    def __init__(
        self,
        reason: Reason,
        message: str,
        *,
        retryable: bool = False,
        backend: str = "",
        field: str = "",
        resource: str = "",
        status: int = 0,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(reason, message)
        #: Why; branch on this, never on the message.
        self.reason = reason
        #: Human-readable explanation from the proxy (or the transport).
        self.message = message
        #: Whether the same call may succeed later.
        self.retryable = retryable
        #: The backend that answered; empty if the proxy itself (or the client) refused the call.
        self.backend = backend
        #: The request field at fault, if any.
        self.field = field
        #: The queue, bucket, table or key concerned, if any.
        self.resource = resource
        #: The HTTP status of the answer; 0 when the error arose on the client side.
        self.status = status
        #: Seconds the proxy asked the caller to wait before trying again (an open circuit
        #: breaker, shed load); the retry policy waits at least this long.
        self.retry_after = retry_after

    def __str__(self) -> str:
        text = f"{self.reason.value}: {self.message}"
        if self.backend:
            text += f" (backend {self.backend})"
        return text

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason.value!r}, {self.message!r}, retryable={self.retryable})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild,
            (
                self.reason.value,
                self.message,
                self.retryable,
                self.backend,
                self.field,
                self.resource,
                self.status,
                self.retry_after,
            ),
        )

    @property
    def is_not_found(self) -> bool:
        """Whether this is a not-found error of any kind."""
        return isinstance(self, NotFoundError)


class InvalidArgumentError(ExoError):
    """The request itself is wrong (HTTP 400): a field, name, attribute, receipt, filter or body."""


class NotFoundError(ExoError):
    """Something named does not exist (HTTP 404)."""


class AlreadyExistsError(ExoError):
    """Something exists with other settings, or cannot be deleted while it holds data (HTTP 409)."""


class ConditionFailedError(ExoError):
    """A precondition did not hold (HTTP 412): a conditional write lost, or a stale receipt."""


class NotModifiedError(ExoError):
    """A conditional read found the object unchanged (HTTP 304)."""


class RangeNotSatisfiableError(ExoError):
    """A byte range selects nothing of the object (HTTP 416)."""


class NotACounterError(ExoError):
    """An increment found a value that is not a counter (the decimal text of a 64-bit signed
    integer) under its key; nothing was written (HTTP 409, reason NOT_A_COUNTER)."""


class CounterOverflowError(ExoError):
    """An increment would take a counter past the 64-bit signed range; nothing was written
    (HTTP 409, reason COUNTER_OVERFLOW)."""


class TooLargeError(ExoError):
    """A message, value, object or request is over the limit (HTTP 413)."""


class ResourceExhaustedError(ExoError):
    """The proxy sheds load, its disk is full, or a topic has every subscription it may (429/507/409)."""


class UnsupportedError(ExoError):
    """The backend lacks the capability the call needs (HTTP 501)."""


class UnavailableError(ExoError):
    """The backend or proxy cannot serve now (HTTP 503, or the connection failed); retryable."""


class DeadlineExceededError(ExoError):
    """The call did not finish within its deadline (HTTP 504, or the client's own timer)."""


class UnauthenticatedError(ExoError):
    """Credentials are missing or wrong (HTTP 401): see ``EXO_PROXY_TOKEN``."""


class PermissionDeniedError(ExoError):
    """Credentials are valid but not allowed this call (HTTP 403)."""


class InternalError(ExoError):
    """A bug or an unexpected answer (HTTP 500), or a reason this SDK does not know."""


_CLASS_OF: dict[Reason, type[ExoError]] = {}
for _reason in (
    Reason.INVALID_ARGUMENT,
    Reason.INVALID_NAME,
    Reason.INVALID_ATTRIBUTE,
    Reason.INVALID_RECEIPT,
    Reason.MALFORMED_REQUEST,
    Reason.INVALID_FILTER,
):
    _CLASS_OF[_reason] = InvalidArgumentError
for _reason in (
    Reason.QUEUE_NOT_FOUND,
    Reason.BUCKET_NOT_FOUND,
    Reason.OBJECT_NOT_FOUND,
    Reason.KEY_NOT_FOUND,
    Reason.TABLE_NOT_FOUND,
    Reason.ROUTE_NOT_FOUND,
    Reason.TOPIC_NOT_FOUND,
    Reason.SUBSCRIPTION_NOT_FOUND,
):
    _CLASS_OF[_reason] = NotFoundError
for _reason in (
    Reason.QUEUE_ALREADY_EXISTS,
    Reason.BUCKET_ALREADY_EXISTS,
    Reason.NOT_EMPTY,
    Reason.SUBSCRIPTION_ALREADY_EXISTS,
):
    _CLASS_OF[_reason] = AlreadyExistsError
for _reason in (Reason.CONDITION_FAILED, Reason.RECEIPT_STALE):
    _CLASS_OF[_reason] = ConditionFailedError
_CLASS_OF[Reason.NOT_MODIFIED] = NotModifiedError
_CLASS_OF[Reason.RANGE_NOT_SATISFIABLE] = RangeNotSatisfiableError
# 409 is shared with the already-exists reasons: the problem document's reason picks the class.
_CLASS_OF[Reason.NOT_A_COUNTER] = NotACounterError
_CLASS_OF[Reason.COUNTER_OVERFLOW] = CounterOverflowError
for _reason in (Reason.MESSAGE_TOO_LARGE, Reason.VALUE_TOO_LARGE, Reason.REQUEST_TOO_LARGE):
    _CLASS_OF[_reason] = TooLargeError
for _reason in (Reason.THROTTLED, Reason.STORAGE_FULL, Reason.TOO_MANY_SUBSCRIPTIONS):
    _CLASS_OF[_reason] = ResourceExhaustedError
_CLASS_OF[Reason.UNSUPPORTED] = UnsupportedError
for _reason in (Reason.BACKEND_UNAVAILABLE, Reason.SHUTTING_DOWN):
    _CLASS_OF[_reason] = UnavailableError
_CLASS_OF[Reason.TIMEOUT] = DeadlineExceededError
_CLASS_OF[Reason.UNAUTHENTICATED] = UnauthenticatedError
_CLASS_OF[Reason.PERMISSION_DENIED] = PermissionDeniedError
_CLASS_OF[Reason.INTERNAL] = InternalError
_CLASS_OF[Reason.ERROR_REASON_UNSPECIFIED] = InternalError


def error(
    reason: Reason,
    message: str,
    *,
    retryable: bool = False,
    backend: str = "",
    field: str = "",
    resource: str = "",
    status: int = 0,
    retry_after: float | None = None,
) -> ExoError:
    """An error of the class that groups ``reason``."""
    cls = _CLASS_OF.get(reason, InternalError)
    return cls(
        reason,
        message,
        retryable=retryable,
        backend=backend,
        field=field,
        resource=resource,
        status=status,
        retry_after=retry_after,
    )


def _rebuild(
    reason: str,
    message: str,
    retryable: bool,
    backend: str,
    field: str,
    resource: str,
    status: int,
    retry_after: float | None,
) -> ExoError:
    return error(
        Reason.parse(reason),
        message,
        retryable=retryable,
        backend=backend,
        field=field,
        resource=resource,
        status=status,
        retry_after=retry_after,
    )


# What an answer without a problem document means (a HEAD has no body; a 304 none either; a
# server that is not an ExoFlow proxy answers in its own way): the reason its status stands for,
# and whether a retry can help, as the proxy's own mapping (proxies/core/src/error.rs) has it.
_STATUS_REASONS: dict[int, tuple[Reason, bool]] = {
    304: (Reason.NOT_MODIFIED, False),
    400: (Reason.INVALID_ARGUMENT, False),
    401: (Reason.UNAUTHENTICATED, False),
    403: (Reason.PERMISSION_DENIED, False),
    404: (Reason.ROUTE_NOT_FOUND, False),
    412: (Reason.CONDITION_FAILED, False),
    413: (Reason.REQUEST_TOO_LARGE, False),
    416: (Reason.RANGE_NOT_SATISFIABLE, False),
    429: (Reason.THROTTLED, True),
    501: (Reason.UNSUPPORTED, False),
    502: (Reason.BACKEND_UNAVAILABLE, True),
    503: (Reason.BACKEND_UNAVAILABLE, True),
    504: (Reason.TIMEOUT, True),
    507: (Reason.STORAGE_FULL, False),
}


def from_status(
    status: int,
    message: str,
    *,
    not_found: Reason = Reason.ROUTE_NOT_FOUND,
    resource: str = "",
    retry_after: float | None = None,
) -> ExoError:
    """An error for an answer that carries no problem document, from its status alone.

    ``not_found`` is what a 404 means for the call (a HEAD of an object: OBJECT_NOT_FOUND).
    """
    reason, retryable = _STATUS_REASONS.get(status, (Reason.INTERNAL, status >= 500))
    if status == 404:
        reason = not_found
    return error(
        reason,
        message,
        retryable=retryable,
        resource=resource,
        status=status,
        retry_after=retry_after,
    )


def from_problem(
    status: int, body: bytes, *, retry_after_header: str | None = None, not_found: Reason = Reason.ROUTE_NOT_FOUND
) -> ExoError:
    """Decodes an RFC 9457 problem document (``application/problem+json``) into an error.

    A body that is not one (a server in front of the proxy, a truncated answer) still gives an
    error, from the status alone, with the body's text in the message.
    """
    retry_after = _retry_after_seconds(retry_after_header)
    try:
        problem = json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError):
        problem = None
    if not isinstance(problem, dict) or not isinstance(problem.get("reason"), str):
        text = body[:512].decode("utf-8", "replace").strip() if body else ""
        message = f"HTTP {status}" + (f": {text}" if text else "")
        return from_status(status, message, not_found=not_found, retry_after=retry_after)
    hint_ms = problem.get("retryAfterMs")
    if isinstance(hint_ms, (int, float)) and not isinstance(hint_ms, bool) and hint_ms > 0:
        retry_after = hint_ms / 1000.0
    return error(
        Reason.parse(problem.get("reason")),
        _text(problem.get("detail")) or _text(problem.get("title")) or f"HTTP {status}",
        retryable=problem.get("retryable") is True,
        backend=_text(problem.get("backend")),
        field=_text(problem.get("field")),
        resource=_text(problem.get("resource")),
        status=status,
        retry_after=retry_after,
    )


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` in seconds (RFC 9110 allows a date too; a date is ignored here)."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds > 0 else None
