"""Retries with capped exponential back-off and full jitter, for retryable errors only."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from ._errors import ExoError

T = TypeVar("T")

_log = logging.getLogger("exoflow")
_jitter = random.Random()

#: The longest wait a proxy's retry hint can impose on one retry (a wrong hint cannot stall us).
MAX_HINTED_WAIT = 30.0


@dataclass(frozen=True)
class RetryPolicy:
    """How a client retries failed calls.

    Only errors marked retryable by the proxy (or transport failures before an answer) are
    retried; a rejected request is never resent. Uploads and downloads are never retried (their
    bodies are streams), and an increment only on THROTTLED (anything else may come after it
    counted); every other call is, so delivery is at-least-once: a send or publish retried after
    a lost answer may enqueue its message twice.
    """

    #: Attempts in all, the first included (1 = never retry).
    max_attempts: int = 4
    #: Back-off ceiling before the first retry, in seconds; doubles each time.
    initial_backoff: float = 0.05
    #: The largest back-off ceiling, in seconds.
    max_backoff: float = 2.0

    @classmethod
    def none(cls) -> RetryPolicy:
        """Never retry."""
        return cls(max_attempts=1)

    def run(
        self,
        call: Callable[[], T],
        *,
        deadline: Deadline | None = None,
        retry_if: Callable[[ExoError], bool] | None = None,
    ) -> T:
        """Runs ``call`` until it succeeds, fails with a non-retryable error, attempts run out,
        or the next back-off would outlast ``deadline``. ``retry_if`` narrows which retryable
        errors are retried (a call that must not be repeated once it took effect)."""
        attempts = _Attempts(self, deadline, retry_if)
        while True:
            try:
                return call()
            except ExoError as err:
                pause = attempts.pause_after(err)
                if pause is None:
                    raise
            time.sleep(pause)

    async def run_async(
        self,
        call: Callable[[], Awaitable[T]],
        *,
        deadline: Deadline | None = None,
        retry_if: Callable[[ExoError], bool] | None = None,
    ) -> T:
        """:meth:`run` for coroutines."""
        attempts = _Attempts(self, deadline, retry_if)
        while True:
            try:
                return await call()
            except ExoError as err:
                pause = attempts.pause_after(err)
                if pause is None:
                    raise
            await asyncio.sleep(pause)


class Deadline:
    """When a call (all its attempts) must be over, on the monotonic clock; ``None``: never."""

    __slots__ = ("at",)

    def __init__(self, timeout: float | None) -> None:
        self.at = None if timeout is None else time.monotonic() + max(timeout, 0.0)

    def remaining(self) -> float | None:
        """Seconds left (0 once passed), or ``None`` without a deadline."""
        if self.at is None:
            return None
        return max(self.at - time.monotonic(), 0.0)


class _Attempts:
    """The state of one call's retries."""

    def __init__(
        self, policy: RetryPolicy, deadline: Deadline | None, retry_if: Callable[[ExoError], bool] | None
    ) -> None:
        self.policy = policy
        self.deadline = deadline
        self.retry_if = retry_if
        self.attempt = 1
        self.ceiling = policy.initial_backoff

    def pause_after(self, err: ExoError) -> float | None:
        """How long to wait before the next attempt after ``err``, or ``None`` to give up."""
        if not err.retryable or self.attempt >= self.policy.max_attempts:
            return None
        if self.retry_if is not None and not self.retry_if(err):
            return None
        # Full jitter: spread the retries of many clients over the whole window; never sooner
        # than the proxy asked (bounded, so a wrong hint cannot stall us).
        pause = _jitter.uniform(0.0, self.ceiling)
        if err.retry_after:
            pause = max(pause, min(err.retry_after, MAX_HINTED_WAIT))
        left = self.deadline.remaining() if self.deadline is not None else None
        if left is not None and pause >= left:
            return None
        _log.debug("retrying after %s (attempt %d, pause %.3fs)", err, self.attempt, pause)
        self.ceiling = min(self.ceiling * 2, self.policy.max_backoff)
        self.attempt += 1
        return pause
