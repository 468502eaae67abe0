"""Queues: :class:`QueueClient` and :class:`AsyncQueueClient`, the app's handles on an eqs proxy.

Delivery is at-least-once: a send retried after a lost answer may enqueue its message twice,
and a message whose visibility runs out before it is acked is delivered again, so consumers
should be idempotent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import httpx

from ._client import AsyncClient, Call, SyncClient, ignore
from ._contract import operation, path
from ._errors import ExoError, Reason, error
from ._models import (
    Body,
    CreatedQueue,
    Message,
    NamePage,
    Outgoing,
    QueueBackend,
    QueueInfo,
    QueueOptions,
    entry_error,
    objects_of,
    str_of,
    strings_of,
    to_bytes,
)
from ._transport import Request, json_body

#: Environment variable naming the eqs endpoint.
EQS_ENDPOINT_ENV = "EXO_EQS_ENDPOINT"
#: Where the eqs sidecar listens unless told otherwise.
DEFAULT_EQS_ENDPOINT = "http://127.0.0.1:7401"

_S = "eqs"

#: A receipt, or the received message it belongs to.
Receipt = str | Message


def _receipt(receipt: Receipt) -> str:
    return receipt.receipt if isinstance(receipt, Message) else receipt


def _seconds(value: float, what: str) -> int:
    """Whole seconds, as the contract counts them (a fraction is dropped)."""
    if value < 0:
        raise error(Reason.INVALID_ARGUMENT, f"{what} cannot be negative", field=what)
    return int(value)


def _outgoing(body: Body, attributes: Mapping[str, str] | None, delay_seconds: float | None) -> Outgoing:
    return Outgoing(
        to_bytes(body),
        dict(attributes or {}),
        None if delay_seconds is None else _seconds(delay_seconds, "delay_seconds"),
    )


# Each call as a request and a decoder of its answer, shared by the sync and async clients.


def _describe() -> Call[QueueBackend]:
    return Request("GET", path(_S, "describe")), lambda r: QueueBackend.from_json(json_body(r))


def _openapi() -> Call[dict[str, Any]]:
    return Request("GET", path(_S, "openapi")), json_body


def _create_queue(name: str, options: QueueOptions | None) -> Call[CreatedQueue]:
    body: dict[str, Any] = {"name": name}
    if options is not None:
        body["options"] = options.to_json()

    def decode(r: httpx.Response) -> CreatedQueue:
        d = json_body(r)
        return CreatedQueue(d.get("created") is True, QueueInfo.from_json(d.get("info")))

    return Request("POST", path(_S, "createQueue"), json=body, resource=name), decode


def _delete_queue(name: str) -> Call[None]:
    return Request("DELETE", path(_S, "deleteQueue", queue=name), resource=name), ignore


def _list_queues(prefix: str, page_size: int, page_token: str) -> Call[NamePage]:
    params = {"prefix": prefix, "pageSize": str(page_size) if page_size else "", "pageToken": page_token}

    def decode(r: httpx.Response) -> NamePage:
        d = json_body(r)
        return NamePage(strings_of(d.get("names")), str_of(d.get("nextPageToken")))

    return Request("GET", path(_S, "listQueues"), params={k: v for k, v in params.items() if v}), decode


def _queue_info(name: str) -> Call[QueueInfo]:
    def decode(r: httpx.Response) -> QueueInfo:
        info = json_body(r).get("info")
        if info is None:
            raise error(Reason.INTERNAL, "the proxy returned no queue info", resource=name)
        return QueueInfo.from_json(info)

    return Request("GET", path(_S, "getQueueInfo", queue=name), resource=name), decode


def _send(queue: str, message: Outgoing) -> Call[str]:
    return (
        Request("POST", path(_S, "send", queue=queue), json={"message": message.to_json()}, resource=queue),
        lambda r: str_of(json_body(r).get("messageId")),
    )


def _send_batch(queue: str, messages: Iterable[Outgoing | Body]) -> Call[list[str | ExoError]]:
    entries = [{"id": str(i), "message": Outgoing.of(m).to_json()} for i, m in enumerate(messages)]

    def decode(r: httpx.Response) -> list[str | ExoError]:
        results = objects_of(json_body(r).get("results"))
        if len(results) != len(entries):
            raise error(Reason.INTERNAL, f"the proxy answered {len(results)} results for {len(entries)} entries")
        out: list[str | ExoError] = []
        for result in results:
            if result.get("error") is not None:
                out.append(entry_error(result.get("error"), queue))
            else:
                out.append(str_of(result.get("messageId")))
        return out

    return Request("POST", path(_S, "sendBatch", queue=queue), json={"entries": entries}, resource=queue), decode


def _receive(
    queue: str, max_messages: int, wait_seconds: float, visibility_seconds: float | None
) -> Call[list[Message]]:
    body: dict[str, Any] = {"maxMessages": max_messages}
    if wait_seconds:
        body["waitSeconds"] = _seconds(wait_seconds, "wait_seconds")
    if visibility_seconds is not None:
        body["visibilityTimeoutSeconds"] = _seconds(visibility_seconds, "visibility_seconds")

    def decode(r: httpx.Response) -> list[Message]:
        return [Message.from_json(m) for m in objects_of(json_body(r).get("messages"))]

    return Request("POST", path(_S, "receive", queue=queue), json=body, resource=queue), decode


def _ack(queue: str, receipt: Receipt) -> Call[None]:
    body = {"receipt": _receipt(receipt)}
    return Request("POST", path(_S, "ack", queue=queue), json=body, resource=queue), ignore


def _change_visibility(queue: str, receipt: Receipt, visibility_seconds: float) -> Call[None]:
    body = {
        "receipt": _receipt(receipt),
        "visibilityTimeoutSeconds": _seconds(visibility_seconds, "visibility_seconds"),
    }
    return Request("POST", path(_S, "changeVisibility", queue=queue), json=body, resource=queue), ignore


def _purge(queue: str) -> Call[None]:
    return Request("POST", path(_S, "purge", queue=queue), resource=queue), ignore


class QueueClient(SyncClient):
    """A blocking client of the eqs queue proxy (``$EXO_EQS_ENDPOINT``, else
    ``http://127.0.0.1:7401``).

    Calls are retried with back-off when the proxy says a retry can help (see
    :class:`~exoflow.RetryPolicy`); every call takes ``timeout=`` seconds, its deadline.

    >>> queues = QueueClient()
    >>> queues.create_queue("orders")
    >>> queues.send("orders", b"order 42", attributes={"customer": "c1"})
    >>> for message in queues.receive("orders", max_messages=10, wait_seconds=5):
    ...     queues.ack("orders", message)
    """

    ENDPOINT_ENV = EQS_ENDPOINT_ENV
    DEFAULT_ENDPOINT = DEFAULT_EQS_ENDPOINT

    @operation(_S, "describe")
    def describe(self, *, timeout: float | None = None) -> QueueBackend:
        """The backend's name, capabilities and limits."""
        return self._call(_describe(), timeout)

    @operation(_S, "openapi")
    def openapi(self, *, timeout: float | None = None) -> dict[str, Any]:
        """The proxy's OpenAPI document, with this backend's limits."""
        return self._call(_openapi(), timeout)

    @operation(_S, "createQueue")
    def create_queue(
        self, name: str, options: QueueOptions | None = None, *, timeout: float | None = None
    ) -> CreatedQueue:
        """Creates a queue (idempotent for identical options): ``(created, info)``."""
        return self._call(_create_queue(name, options), timeout)

    @operation(_S, "deleteQueue")
    def delete_queue(self, name: str, *, timeout: float | None = None) -> None:
        """Deletes a queue and its messages."""
        self._call(_delete_queue(name), timeout)

    @operation(_S, "listQueues")
    def list_queues_page(
        self, prefix: str = "", page_size: int = 0, page_token: str = "", *, timeout: float | None = None
    ) -> NamePage:
        """One page of queue names with ``prefix`` (``page_size`` 0: the proxy's default)."""
        return self._call(_list_queues(prefix, page_size, page_token), timeout)

    def list_queues(self, prefix: str = "", *, timeout: float | None = None) -> list[str]:
        """Every queue name with ``prefix``, following pages (``timeout`` is per page)."""
        names: list[str] = []
        token = ""
        while True:
            page = self.list_queues_page(prefix, 0, token, timeout=timeout)
            names.extend(page.names)
            if not page.next_page_token:
                return names
            token = page.next_page_token

    @operation(_S, "getQueueInfo")
    def queue_info(self, name: str, *, timeout: float | None = None) -> QueueInfo:
        """A queue's options and approximate counts."""
        return self._call(_queue_info(name), timeout)

    @operation(_S, "send")
    def send(
        self,
        queue: str,
        body: Body,
        *,
        attributes: Mapping[str, str] | None = None,
        delay_seconds: float | None = None,
        timeout: float | None = None,
    ) -> str:
        """Sends a message (``str`` bodies as UTF-8); returns its id once it is durable."""
        return self._call(_send(queue, _outgoing(body, attributes, delay_seconds)), timeout)

    @operation(_S, "sendBatch")
    def send_batch(
        self, queue: str, messages: Iterable[Outgoing | Body], *, timeout: float | None = None
    ) -> list[str | ExoError]:
        """Sends many messages; one result per message, in order: its id, or the error that
        entry failed with (entries fail on their own)."""
        return self._call(_send_batch(queue, messages), timeout)

    @operation(_S, "receive")
    def receive(
        self,
        queue: str,
        *,
        max_messages: int = 1,
        wait_seconds: float = 0,
        visibility_seconds: float | None = None,
        timeout: float | None = None,
    ) -> list[Message]:
        """Receives up to ``max_messages``, long-polling up to ``wait_seconds`` (whole seconds,
        at most 20) for a first one; each stays hidden until acked or its visibility (the
        queue's, or ``visibility_seconds``) runs out."""
        return self._call(_receive(queue, max_messages, wait_seconds, visibility_seconds), timeout)

    @operation(_S, "ack")
    def ack(self, queue: str, receipt: Receipt, *, timeout: float | None = None) -> None:
        """Acknowledges (deletes) a received message, given it or its receipt."""
        self._call(_ack(queue, receipt), timeout)

    @operation(_S, "changeVisibility")
    def change_visibility(
        self, queue: str, receipt: Receipt, visibility_seconds: float, *, timeout: float | None = None
    ) -> None:
        """Sets a received message's remaining visibility (0 releases it now)."""
        self._call(_change_visibility(queue, receipt, visibility_seconds), timeout)

    @operation(_S, "purge")
    def purge(self, queue: str, *, timeout: float | None = None) -> None:
        """Deletes every message in a queue; the queue stays."""
        self._call(_purge(queue), timeout)


class AsyncQueueClient(AsyncClient):
    """The asyncio twin of :class:`QueueClient`: the same calls, awaited."""

    ENDPOINT_ENV = EQS_ENDPOINT_ENV
    DEFAULT_ENDPOINT = DEFAULT_EQS_ENDPOINT

    @operation(_S, "describe")
    async def describe(self, *, timeout: float | None = None) -> QueueBackend:
        """The backend's name, capabilities and limits."""
        return await self._call(_describe(), timeout)

    @operation(_S, "openapi")
    async def openapi(self, *, timeout: float | None = None) -> dict[str, Any]:
        """The proxy's OpenAPI document, with this backend's limits."""
        return await self._call(_openapi(), timeout)

    @operation(_S, "createQueue")
    async def create_queue(
        self, name: str, options: QueueOptions | None = None, *, timeout: float | None = None
    ) -> CreatedQueue:
        """Creates a queue (idempotent for identical options): ``(created, info)``."""
        return await self._call(_create_queue(name, options), timeout)

    @operation(_S, "deleteQueue")
    async def delete_queue(self, name: str, *, timeout: float | None = None) -> None:
        """Deletes a queue and its messages."""
        await self._call(_delete_queue(name), timeout)

    @operation(_S, "listQueues")
    async def list_queues_page(
        self, prefix: str = "", page_size: int = 0, page_token: str = "", *, timeout: float | None = None
    ) -> NamePage:
        """One page of queue names with ``prefix``."""
        return await self._call(_list_queues(prefix, page_size, page_token), timeout)

    async def list_queues(self, prefix: str = "", *, timeout: float | None = None) -> list[str]:
        """Every queue name with ``prefix``, following pages."""
        names: list[str] = []
        token = ""
        while True:
            page = await self.list_queues_page(prefix, 0, token, timeout=timeout)
            names.extend(page.names)
            if not page.next_page_token:
                return names
            token = page.next_page_token

    @operation(_S, "getQueueInfo")
    async def queue_info(self, name: str, *, timeout: float | None = None) -> QueueInfo:
        """A queue's options and approximate counts."""
        return await self._call(_queue_info(name), timeout)

    @operation(_S, "send")
    async def send(
        self,
        queue: str,
        body: Body,
        *,
        attributes: Mapping[str, str] | None = None,
        delay_seconds: float | None = None,
        timeout: float | None = None,
    ) -> str:
        """Sends a message; returns its id once it is durable."""
        return await self._call(_send(queue, _outgoing(body, attributes, delay_seconds)), timeout)

    @operation(_S, "sendBatch")
    async def send_batch(
        self, queue: str, messages: Iterable[Outgoing | Body], *, timeout: float | None = None
    ) -> list[str | ExoError]:
        """Sends many messages; one result per message, in order (an id or an error)."""
        return await self._call(_send_batch(queue, messages), timeout)

    @operation(_S, "receive")
    async def receive(
        self,
        queue: str,
        *,
        max_messages: int = 1,
        wait_seconds: float = 0,
        visibility_seconds: float | None = None,
        timeout: float | None = None,
    ) -> list[Message]:
        """Receives up to ``max_messages``, long-polling up to ``wait_seconds``."""
        return await self._call(_receive(queue, max_messages, wait_seconds, visibility_seconds), timeout)

    @operation(_S, "ack")
    async def ack(self, queue: str, receipt: Receipt, *, timeout: float | None = None) -> None:
        """Acknowledges (deletes) a received message, given it or its receipt."""
        await self._call(_ack(queue, receipt), timeout)

    @operation(_S, "changeVisibility")
    async def change_visibility(
        self, queue: str, receipt: Receipt, visibility_seconds: float, *, timeout: float | None = None
    ) -> None:
        """Sets a received message's remaining visibility (0 releases it now)."""
        await self._call(_change_visibility(queue, receipt, visibility_seconds), timeout)

    @operation(_S, "purge")
    async def purge(self, queue: str, *, timeout: float | None = None) -> None:
        """Deletes every message in a queue; the queue stays."""
        await self._call(_purge(queue), timeout)


__all__ = [
    "DEFAULT_EQS_ENDPOINT",
    "EQS_ENDPOINT_ENV",
    "AsyncQueueClient",
    "QueueClient",
    "Receipt",
]
