"""Push delivery: what the proxy POSTs to the app for a push subscription, and small ASGI and
WSGI apps that receive it.

For a subscription with ``push:`` in the eqs config, the proxy reads the subscription's queue
and POSTs each message to the app's endpoint as an ``exo.queue.v1.PushedMessage`` in JSON (plus
an ``x-exo-publish-id`` header). A 2xx answer acknowledges the message; any other answer, or
none within the subscription's timeout, has it delivered again after a back-off (its dequeue
count grows, and the queue's dead-letter settings apply). Delivery is at-least-once: drop
duplicates by :attr:`~exoflow.PushedMessage.publish_id`.

In any framework, decode the request body with :func:`decode_pushed` and answer 2xx::

    @app.post("/events/orders")                      # FastAPI / Starlette
    async def on_order(request: Request) -> Response:
        pushed = exoflow.decode_pushed(await request.body())
        ...
        return Response(status_code=204)

    @app.post("/events/orders")                      # Flask
    def on_order():
        pushed = exoflow.decode_pushed(flask.request.get_data())
        ...
        return "", 204

or mount :func:`asgi_app` / :func:`wsgi_app` around a handler, which answer for you: 204 once
the handler returns, 503 (deliver again later) when it returns ``False`` or raises, 400 for a
body that is not a pushed message.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from ._errors import ExoError, Reason, error
from ._models import PushedMessage

_log = logging.getLogger("exoflow.push")

#: The status that acknowledges a pushed message.
ACK_STATUS = 204
#: The status that asks for the message again later.
RETRY_STATUS = 503
#: The largest pushed request the apps here read (a large message, base64 in JSON).
MAX_PUSH_BYTES = 64 * 1024 * 1024

#: A handler of pushed messages: returns normally to acknowledge, ``False`` (or raises) to have
#: the message delivered again later. May be a coroutine function (ASGI runs a plain function in
#: a worker thread).
Handler = Callable[[PushedMessage], object | Awaitable[object]]


def decode_pushed(body: bytes | bytearray | str) -> PushedMessage:
    """Decodes the body of a push POST; MALFORMED_REQUEST (an
    :class:`~exoflow.InvalidArgumentError`) if it is not a pushed message."""
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise error(Reason.MALFORMED_REQUEST, f"not a pushed message: {err}") from err
    if not isinstance(value, dict) or not isinstance(value.get("message"), dict):
        raise error(Reason.MALFORMED_REQUEST, "not a pushed message: no message object")
    try:
        return PushedMessage.from_json(value)
    except ExoError as err:
        raise error(Reason.MALFORMED_REQUEST, f"not a pushed message: {err.message}") from err


def _outcome(result: object) -> int:
    return RETRY_STATUS if result is False else ACK_STATUS


Scope = MutableMapping[str, Any]
AsgiMessage = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[AsgiMessage]]
Send = Callable[[AsgiMessage], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def asgi_app(handler: Handler) -> AsgiApp:
    """An ASGI app receiving pushed messages at any path it is mounted on (e.g. FastAPI's
    ``app.mount("/events/orders", exoflow.push.asgi_app(on_order))``), or served on its own."""
    is_coroutine = inspect.iscoroutinefunction(handler)

    async def respond(send: Send, status: int, text: str = "") -> None:
        body = text.encode()
        headers = [(b"content-type", b"text/plain; charset=utf-8")] if body else []
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if scope.get("method") != "POST":
            await respond(send, 405, "pushed messages are POSTed")
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > MAX_PUSH_BYTES:
                await respond(send, 413, "pushed message too large")
                return
            if not message.get("more_body", False):
                break
        try:
            pushed = decode_pushed(bytes(body))
        except ExoError as err:
            await respond(send, 400, err.message)
            return
        try:
            if is_coroutine:
                result = await handler(pushed)  # type: ignore[misc]
            else:
                result = await asyncio.to_thread(handler, pushed)
                if inspect.isawaitable(result):
                    result = await result
        except Exception:
            _log.exception("push handler failed for %s; the message will be delivered again", pushed.publish_id)
            await respond(send, RETRY_STATUS, "the handler failed")
            return
        await respond(send, _outcome(result))

    return app


Environ = dict[str, Any]
StartResponse = Callable[[str, list[tuple[str, str]]], Any]
WsgiApp = Callable[[Environ, StartResponse], Iterable[bytes]]

_REASONS = {
    204: "204 No Content",
    400: "400 Bad Request",
    405: "405 Method Not Allowed",
    413: "413 Content Too Large",
    503: "503 Service Unavailable",
}


def wsgi_app(handler: Callable[[PushedMessage], object]) -> WsgiApp:
    """A WSGI app receiving pushed messages (e.g. with Werkzeug's ``DispatcherMiddleware``
    beside a Flask app, or served on its own)."""

    def respond(start_response: StartResponse, status: int, text: str = "") -> list[bytes]:
        body = text.encode()
        headers = [("content-type", "text/plain; charset=utf-8")] if body else []
        headers.append(("content-length", str(len(body))))
        start_response(_REASONS[status], headers)
        return [body]

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "POST":
            return respond(start_response, 405, "pushed messages are POSTed")
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > MAX_PUSH_BYTES:
            return respond(start_response, 413, "pushed message too large")
        body = environ["wsgi.input"].read(length) if length else b""
        try:
            pushed = decode_pushed(body)
        except ExoError as err:
            return respond(start_response, 400, err.message)
        try:
            result = handler(pushed)
        except Exception:
            _log.exception("push handler failed for %s; the message will be delivered again", pushed.publish_id)
            return respond(start_response, RETRY_STATUS, "the handler failed")
        return respond(start_response, _outcome(result))

    return app


__all__ = [
    "ACK_STATUS",
    "RETRY_STATUS",
    "Handler",
    "PushedMessage",
    "asgi_app",
    "decode_pushed",
    "wsgi_app",
]
