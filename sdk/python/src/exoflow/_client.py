"""What every client shares: its settings (from arguments or the ``EXO_*`` environment), its
connection pool, and how a call's answer becomes a value."""

from __future__ import annotations

import os
from collections.abc import Callable
from types import TracebackType
from typing import ClassVar, TypeVar

import httpx

from ._retry import RetryPolicy
from ._transport import TOKEN_ENV, AsyncTransport, Request, Settings, SyncTransport, Tls, settings

T = TypeVar("T")
_S = TypeVar("_S", bound="SyncClient")
_A = TypeVar("_A", bound="AsyncClient")

#: One call: its request, and the decoder of its answer (shared by a sync and an async client).
Call = tuple[Request, Callable[[httpx.Response], T]]


class _Configured:
    """The settings part of a client."""

    #: The environment variable naming the proxy's endpoint.
    ENDPOINT_ENV: ClassVar[str]
    #: Where the sidecar listens unless told otherwise.
    DEFAULT_ENDPOINT: ClassVar[str]

    @classmethod
    def _resolve(
        cls,
        endpoint: str | None,
        token: str | None,
        tls: Tls | None,
        retry: RetryPolicy | None,
        timeout: float | None,
        http2: bool,
    ) -> Settings:
        if endpoint is None:
            endpoint = os.environ.get(cls.ENDPOINT_ENV) or cls.DEFAULT_ENDPOINT
        if token is None:
            token = os.environ.get(TOKEN_ENV) or None
        if tls is None:
            tls = Tls.from_env()
        return settings(endpoint, token=token, tls=tls, retry=retry, timeout=timeout, http2=http2)


class SyncClient(_Configured):
    """A blocking client of one proxy. Thread-safe; one connection pool per client.

    ``endpoint``: ``http://host:port``, ``https://host:port`` or ``unix:/path/to/proxy.sock``;
    ``None`` reads the client's ``EXO_*_ENDPOINT`` variable, else the sidecar default.
    ``token``: the bearer token; ``None`` reads ``$EXO_PROXY_TOKEN`` (``""``: send none).
    ``tls``: ``None`` reads ``$EXO_CA_FILE``, ``$EXO_CLIENT_CERT_FILE``, ``$EXO_CLIENT_KEY_FILE``.
    ``timeout``: the default deadline of each call in seconds (all its attempts), sent to the
    proxy; ``None``: no deadline. Every call also takes its own ``timeout=``.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        token: str | None = None,
        tls: Tls | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        http2: bool = False,
    ) -> None:
        self._transport = SyncTransport(self._resolve(endpoint, token, tls, retry, timeout, http2))

    @classmethod
    def from_env(cls: type[_S], *, retry: RetryPolicy | None = None, timeout: float | None = None) -> _S:
        """A client of the endpoint, token and TLS files the ``EXO_*`` variables name (the
        sidecar default endpoint when unset)."""
        return cls(retry=retry, timeout=timeout)

    @property
    def endpoint(self) -> str:
        """The endpoint this client calls."""
        return self._transport.settings.endpoint

    def close(self) -> None:
        """Closes the client's connections."""
        self._transport.close()

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _call(self, call: Call[T], timeout: float | None) -> T:
        req, decode = call
        return decode(self._transport.call(req, timeout))


class AsyncClient(_Configured):
    """An asyncio client of one proxy; see :class:`SyncClient` for the arguments. Use it from
    one event loop; ``async with`` closes it."""

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        token: str | None = None,
        tls: Tls | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        http2: bool = False,
    ) -> None:
        self._transport = AsyncTransport(self._resolve(endpoint, token, tls, retry, timeout, http2))

    @classmethod
    def from_env(cls: type[_A], *, retry: RetryPolicy | None = None, timeout: float | None = None) -> _A:
        """A client of the endpoint, token and TLS files the ``EXO_*`` variables name."""
        return cls(retry=retry, timeout=timeout)

    @property
    def endpoint(self) -> str:
        """The endpoint this client calls."""
        return self._transport.settings.endpoint

    async def close(self) -> None:
        """Closes the client's connections."""
        await self._transport.close()

    async def __aenter__(self: _A) -> _A:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _call(self, call: Call[T], timeout: float | None) -> T:
        req, decode = call
        return decode(await self._transport.call(req, timeout))


def ignore(_: httpx.Response) -> None:
    """The decoder of calls that answer nothing of interest."""
