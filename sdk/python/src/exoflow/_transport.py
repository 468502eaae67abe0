"""Connections to a proxy: endpoints, TLS, the bearer token, deadlines, trace context, and how
HTTP answers and transport failures become :class:`~exoflow.ExoError`.

Every client talks HTTP/JSON (the proxy serves it on the same port as gRPC) through ``httpx``:
one connection pool per client, HTTP/1.1 unless ``http2=True`` (which needs the ``h2`` package,
``pip install 'exoflow[http2]'``).
"""

from __future__ import annotations

import json
import math
import os
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx

from . import _tracing
from ._errors import ExoError, Reason, error, from_problem, from_status
from ._retry import Deadline, RetryPolicy
from ._version import __version__

#: The bearer token for proxies that require one (``server.auth-token``).
TOKEN_ENV = "EXO_PROXY_TOKEN"
#: Extra certificate authorities (PEM) for ``https://`` endpoints.
CA_FILE_ENV = "EXO_CA_FILE"
#: The client certificate (PEM) for proxies that ask for one (mTLS).
CLIENT_CERT_FILE_ENV = "EXO_CLIENT_CERT_FILE"
#: Its private key (PEM).
CLIENT_KEY_FILE_ENV = "EXO_CLIENT_KEY_FILE"

#: The header a proxy reads a caller's deadline from over HTTP, in milliseconds (gRPC's is
#: ``grpc-timeout``); the proxy starts no backend call once it has passed and bounds each by
#: what is left, and a long poll answers (empty) before it.
TIMEOUT_HEADER = "x-exo-timeout-ms"

#: The longest wait for a connection.
CONNECT_TIMEOUT = 5.0
#: Time the client's own timer allows past a call's deadline, so the proxy's TIMEOUT answer
#: (which names what timed out) arrives before the client gives up on its own.
DEADLINE_SLACK = 0.5
#: Most bytes of an error answer read (a problem document is small).
MAX_ERROR_BODY = 64 * 1024

USER_AGENT = f"exoflow-python/{__version__}"

Content = bytes | Iterable[bytes] | AsyncIterable[bytes] | None


@dataclass(frozen=True)
class Tls:
    """TLS for ``https://`` endpoints: the system's trusted roots plus ``ca_file``, and a client
    certificate when the proxy asks for one. The server's name is checked against the
    endpoint's host, or ``server_name``."""

    #: Extra certificate authorities (PEM bundle), e.g. a private CA that signed the proxy's.
    ca_file: str | None = None
    #: Client certificate chain (PEM), with ``client_key_file``.
    client_cert_file: str | None = None
    #: The client certificate's key (PEM).
    client_key_file: str | None = None
    #: The name the server's certificate must carry (and the SNI sent) when it is not the
    #: endpoint's host: an endpoint given by the address a name was resolved to.
    server_name: str | None = None

    @classmethod
    def from_env(cls) -> Tls:
        """From ``$EXO_CA_FILE``, ``$EXO_CLIENT_CERT_FILE`` and ``$EXO_CLIENT_KEY_FILE`` (each
        optional)."""

        def path(name: str) -> str | None:
            return os.environ.get(name) or None

        return cls(
            ca_file=path(CA_FILE_ENV),
            client_cert_file=path(CLIENT_CERT_FILE_ENV),
            client_key_file=path(CLIENT_KEY_FILE_ENV),
        )

    def ssl_context(self, *, http2: bool = False) -> ssl.SSLContext:
        """The client's TLS settings; INVALID_ARGUMENT naming the file that cannot be read."""
        context = ssl.create_default_context()
        context.set_alpn_protocols(["h2", "http/1.1"] if http2 else ["http/1.1"])
        if self.ca_file:
            try:
                context.load_verify_locations(cafile=self.ca_file)
            except (OSError, ssl.SSLError) as err:
                raise error(
                    Reason.INVALID_ARGUMENT, f"cannot read the CA file {self.ca_file}: {err}", field="ca_file"
                ) from err
        if bool(self.client_cert_file) != bool(self.client_key_file):
            raise error(
                Reason.INVALID_ARGUMENT,
                "a client certificate needs both its file and its key file",
                field="client_cert_file",
            )
        if self.client_cert_file and self.client_key_file:
            try:
                context.load_cert_chain(self.client_cert_file, self.client_key_file)
            except (OSError, ssl.SSLError) as err:
                raise error(
                    Reason.INVALID_ARGUMENT,
                    f"cannot read the client certificate {self.client_cert_file} "
                    f"or its key {self.client_key_file}: {err}",
                    field="client_cert_file",
                ) from err
        return context


def unix_socket_path(endpoint: str) -> str | None:
    """The socket path of a ``unix:`` endpoint: ``unix:/run/exo/eqs.sock`` or
    ``unix:///run/exo/eqs.sock`` (gRPC's spelling, so one value serves clients in every
    language)."""
    if not endpoint.startswith("unix:"):
        return None
    rest = endpoint[len("unix:") :]
    return rest[2:] if rest.startswith("//") else rest


@dataclass(frozen=True)
class Settings:
    """What a client was built with."""

    endpoint: str
    base_url: str
    uds: str | None
    tls: Tls
    authorization: str | None
    retry: RetryPolicy
    timeout: float | None
    http2: bool


def settings(
    endpoint: str,
    *,
    token: str | None,
    tls: Tls | None,
    retry: RetryPolicy | None,
    timeout: float | None,
    http2: bool,
) -> Settings:
    """Checks and resolves a client's settings; INVALID_ARGUMENT for a bad endpoint or token."""
    uds = unix_socket_path(endpoint)
    if uds is not None:
        if not uds or not uds.startswith("/"):
            raise error(
                Reason.INVALID_ARGUMENT,
                f"invalid endpoint {endpoint!r}: a unix: endpoint needs an absolute path, e.g. unix:/run/exo/eqs.sock",
            )
        # The host is only what goes in the Host header; the connection goes to the socket.
        base_url = "http://localhost"
    elif endpoint.startswith(("http://", "https://")):
        try:
            url = httpx.URL(endpoint)
        except httpx.InvalidURL as err:
            raise error(Reason.INVALID_ARGUMENT, f"invalid endpoint {endpoint!r}: {err}") from err
        if not url.host:
            raise error(Reason.INVALID_ARGUMENT, f"invalid endpoint {endpoint!r}: no host")
        base_url = endpoint.rstrip("/")
    else:
        raise error(
            Reason.INVALID_ARGUMENT,
            f"invalid endpoint {endpoint!r}: use http://host:port, https://host:port or unix:/path/to/proxy.sock",
        )
    authorization = None
    if token:
        if not all(" " <= c <= "~" for c in token):
            raise error(Reason.INVALID_ARGUMENT, "the token must be printable ASCII")
        authorization = f"Bearer {token}"
    return Settings(
        endpoint=endpoint,
        base_url=base_url,
        uds=uds,
        tls=tls if tls is not None else Tls(),
        authorization=authorization,
        retry=retry if retry is not None else RetryPolicy(),
        timeout=timeout,
        http2=http2,
    )


@dataclass
class Request:
    """One call to the proxy (or to a presigned URL)."""

    method: str
    path: str
    params: Mapping[str, str] | None = None
    #: A JSON body (sent as ``application/json``); ``None``: no JSON body.
    json: Any = None
    #: A raw body (uploads); bytes, or an iterable of chunks.
    content: Content = None
    headers: Mapping[str, str] | None = None
    #: What a 404 without a problem document means (a HEAD has no body).
    not_found: Reason = Reason.ROUTE_NOT_FOUND
    resource: str = ""
    #: Whether the call may be sent again after a retryable failure (not an upload or a
    #: download: their bodies are streams).
    repeatable: bool = True
    #: When set, the only reasons a retryable failure is retried for: a call that is not
    #: idempotent (an increment) is sent again only when the reason says nothing was written.
    retry_reasons: frozenset[Reason] | None = None
    #: A full URL instead of the proxy's (a presigned URL); sent without the bearer token.
    url: str | None = None


def _retry_if(req: Request) -> Callable[[ExoError], bool] | None:
    """The narrowing of the retry policy a request asks for (``Request.retry_reasons``)."""
    reasons = req.retry_reasons
    if reasons is None:
        return None
    return lambda err: err.reason in reasons


def _ssl_failure(exc: BaseException) -> ssl.SSLError | None:
    """A TLS failure that another attempt would meet again (a certificate refused either way),
    found among ``exc``'s causes; a connection cut inside TLS is not one."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ssl.SSLCertVerificationError):
            return cause
        if isinstance(cause, ssl.SSLError) and "ALERT" in str(cause).upper():
            return cause
        cause = cause.__cause__ or cause.__context__
    return None


class _Base:
    """What the sync and async transports share: building requests and reading answers."""

    def __init__(self, s: Settings) -> None:
        self.settings = s
        self._verify: ssl.SSLContext | bool = (
            s.tls.ssl_context(http2=s.http2) if s.base_url.startswith("https://") else True
        )
        # HTTP/2 is agreed by ALPN over TLS; over plaintext (TCP or a Unix socket) the proxy
        # speaks it with prior knowledge (as gRPC does), so HTTP/1.1 is left out.
        self._http1 = not (s.http2 and not s.base_url.startswith("https://"))
        self._extensions: dict[str, Any] = {}
        if s.tls.server_name:
            self._extensions["sni_hostname"] = s.tls.server_name

    def deadline(self, timeout: float | None) -> Deadline:
        """The deadline of a call: ``timeout`` seconds from now, else the client's default."""
        return Deadline(timeout if timeout is not None else self.settings.timeout)

    def build(self, req: Request, deadline: Deadline) -> httpx.Request:
        """The HTTP request of one attempt, carrying what is left of the deadline."""
        headers: dict[str, str] = {"user-agent": USER_AGENT}
        if req.url is None and self.settings.authorization:
            headers["authorization"] = self.settings.authorization
        _tracing.inject(headers)
        left = deadline.remaining()
        if left is not None:
            if left <= 0:
                raise error(
                    Reason.TIMEOUT,
                    f"the call's deadline passed before it was sent to {self.settings.endpoint}",
                    retryable=True,
                )
            headers[TIMEOUT_HEADER] = str(max(1, math.ceil(left * 1000)))
            timeout = httpx.Timeout(left + DEADLINE_SLACK, connect=min(CONNECT_TIMEOUT, left + DEADLINE_SLACK))
        else:
            timeout = httpx.Timeout(None, connect=CONNECT_TIMEOUT)
        content: Content = req.content
        if req.json is not None:
            content = json.dumps(req.json, separators=(",", ":")).encode()
            headers["content-type"] = "application/json"
        if req.headers:
            headers.update(req.headers)
        url = req.url if req.url is not None else self.settings.base_url + req.path
        if req.params:
            url += ("&" if "?" in url else "?") + urlencode(req.params)
        extensions = dict(self._extensions)
        extensions["timeout"] = timeout.as_dict()
        return httpx.Request(req.method, url, content=content, headers=headers, extensions=extensions)

    def failure(self, response: httpx.Response, body: bytes, req: Request) -> ExoError:
        """The error an answer of status >= 300 stands for."""
        retry_after = response.headers.get("retry-after")
        if response.status_code == 304:
            return from_status(304, "the object has not changed (If-None-Match)", resource=req.resource)
        if not body:
            return from_status(
                response.status_code,
                f"HTTP {response.status_code} {response.reason_phrase}".rstrip(),
                not_found=req.not_found,
                resource=req.resource,
                retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None,
            )
        return from_problem(response.status_code, body, retry_after_header=retry_after, not_found=req.not_found)

    def transport_error(self, exc: httpx.HTTPError, req: Request) -> ExoError:
        """What a failure below HTTP (connecting, TLS, a cut connection, a timer) means."""
        where = req.url.split("?", 1)[0] if req.url is not None else self.settings.endpoint
        tls = _ssl_failure(exc)
        if tls is not None:
            return error(Reason.BACKEND_UNAVAILABLE, f"TLS with {where} failed: {tls}", retryable=False)
        if isinstance(exc, httpx.ConnectTimeout):
            return error(Reason.BACKEND_UNAVAILABLE, f"cannot connect to {where}: timed out", retryable=True)
        if isinstance(exc, httpx.TimeoutException):
            return error(Reason.TIMEOUT, f"no answer from {where} within the call's deadline", retryable=True)
        if isinstance(exc, httpx.ConnectError):
            return error(Reason.BACKEND_UNAVAILABLE, f"cannot connect to {where}: {exc}", retryable=True)
        if isinstance(exc, (httpx.NetworkError, httpx.RemoteProtocolError)):
            return error(
                Reason.BACKEND_UNAVAILABLE,
                f"the connection to {where} failed: {exc or type(exc).__name__}",
                retryable=True,
            )
        return error(Reason.INVALID_ARGUMENT, f"cannot call {where}: {exc}", retryable=False)


class SyncTransport(_Base):
    """Blocking calls, over one ``httpx.HTTPTransport`` (its connection pool).

    Requests go to the transport directly, not through ``httpx.Client``: the client's cookies,
    redirects, auth flows and URL merging are nothing the SDK uses, and skipping them takes
    about a sixth off the client CPU each call costs (``bench.py``).
    """

    def __init__(self, s: Settings) -> None:
        super().__init__(s)
        # trust_env=False: a sidecar is on loopback or a socket; no proxy variable may redirect it.
        self.transport = httpx.HTTPTransport(
            verify=self._verify, http1=self._http1, http2=s.http2, uds=s.uds, trust_env=False
        )

    def close(self) -> None:
        self.transport.close()

    def call(self, req: Request, timeout: float | None) -> httpx.Response:
        """One unary call, retried per the policy when it may be; the answer's body is read."""
        deadline = self.deadline(timeout)
        if not req.repeatable:
            return self._once(req, deadline)
        return self.settings.retry.run(lambda: self._once(req, deadline), deadline=deadline, retry_if=_retry_if(req))

    def _once(self, req: Request, deadline: Deadline) -> httpx.Response:
        response = self.open_once(req, deadline)
        try:
            response.read()
        except httpx.HTTPError as exc:
            raise self.transport_error(exc, req) from exc
        finally:
            response.close()
        return response

    def open_once(self, req: Request, deadline: Deadline) -> httpx.Response:
        """Sends one attempt; the answer with its body unread, or the error it stands for."""
        request = self.build(req, deadline)
        try:
            response = self.transport.handle_request(request)
        except httpx.HTTPError as exc:
            raise self.transport_error(exc, req) from exc
        response.request = request
        if response.status_code >= 300:
            try:
                body = _read_bounded(response.iter_raw())
            except httpx.HTTPError:
                body = b""
            finally:
                response.close()
            raise self.failure(response, body, req)
        return response

    def open(self, req: Request, timeout: float | None) -> httpx.Response:
        """A streamed answer (a download), never retried: the caller reads and closes it."""
        return self.open_once(req, self.deadline(timeout))

    def chunks(self, response: httpx.Response, req: Request) -> Iterator[bytes]:
        """The body of a streamed answer as it arrives, with transport failures as errors."""
        try:
            if _encoded(response):
                yield from response.iter_bytes()
            else:
                # Downloads ask for identity: the raw bytes are the body, without httpx's
                # decoder and re-chunking on the way (a third of the throughput).
                yield from response.iter_raw()
        except httpx.HTTPError as exc:
            raise self.transport_error(exc, req) from exc


class AsyncTransport(_Base):
    """Coroutine calls, over one ``httpx.AsyncHTTPTransport`` (see :class:`SyncTransport`)."""

    def __init__(self, s: Settings) -> None:
        super().__init__(s)
        self.transport = httpx.AsyncHTTPTransport(
            verify=self._verify, http1=self._http1, http2=s.http2, uds=s.uds, trust_env=False
        )

    async def close(self) -> None:
        await self.transport.aclose()

    async def call(self, req: Request, timeout: float | None) -> httpx.Response:
        """One unary call, retried per the policy when it may be; the answer's body is read."""
        deadline = self.deadline(timeout)
        if not req.repeatable:
            return await self._once(req, deadline)
        return await self.settings.retry.run_async(
            lambda: self._once(req, deadline), deadline=deadline, retry_if=_retry_if(req)
        )

    async def _once(self, req: Request, deadline: Deadline) -> httpx.Response:
        response = await self.open_once(req, deadline)
        try:
            await response.aread()
        except httpx.HTTPError as exc:
            raise self.transport_error(exc, req) from exc
        finally:
            await response.aclose()
        return response

    async def open_once(self, req: Request, deadline: Deadline) -> httpx.Response:
        """Sends one attempt; the answer with its body unread, or the error it stands for."""
        request = self.build(req, deadline)
        try:
            response = await self.transport.handle_async_request(request)
        except httpx.HTTPError as exc:
            raise self.transport_error(exc, req) from exc
        response.request = request
        if response.status_code >= 300:
            try:
                body = await _aread_bounded(response.aiter_raw())
            except httpx.HTTPError:
                body = b""
            finally:
                await response.aclose()
            raise self.failure(response, body, req)
        return response

    async def open(self, req: Request, timeout: float | None) -> httpx.Response:
        """A streamed answer (a download), never retried: the caller reads and closes it."""
        return await self.open_once(req, self.deadline(timeout))

    async def chunks(self, response: httpx.Response, req: Request) -> AsyncIterator[bytes]:
        """The body of a streamed answer as it arrives, with transport failures as errors."""
        try:
            parts = response.aiter_bytes() if _encoded(response) else response.aiter_raw()
            async for chunk in parts:
                yield chunk
        except httpx.HTTPError as exc:
            raise self.transport_error(exc, req) from exc


def _encoded(response: httpx.Response) -> bool:
    """Whether an answer's body has a content coding to undo."""
    return response.headers.get("content-encoding", "identity").strip().lower() not in ("", "identity")


def _read_bounded(chunks: Iterable[bytes]) -> bytes:
    body = bytearray()
    for chunk in chunks:
        body += chunk
        if len(body) >= MAX_ERROR_BODY:
            break
    return bytes(body[:MAX_ERROR_BODY])


async def _aread_bounded(chunks: AsyncIterable[bytes]) -> bytes:
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) >= MAX_ERROR_BODY:
            break
    return bytes(body[:MAX_ERROR_BODY])


def json_body(response: httpx.Response) -> dict[str, Any]:
    """An answer's JSON object; INTERNAL if it is not one."""
    try:
        value = json.loads(response.content) if response.content else {}
    except ValueError as err:
        raise error(Reason.INTERNAL, f"the proxy answered {response.status_code} with a body that is not JSON") from err
    if not isinstance(value, dict):
        raise error(Reason.INTERNAL, "the proxy answered with JSON that is not an object")
    return value
