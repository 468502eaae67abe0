"""Topics: publish once, every subscription gets its own copy (eqs's topics).

A subscription delivers into an ordinary queue, read with :class:`~exoflow.QueueClient` and
acked as any other, or (a push subscription, declared in the proxy's config) POSTed to the app;
each delivered copy carries the published body and attributes plus :data:`TOPIC_ATTRIBUTE` and
:data:`PUBLISH_ID_ATTRIBUTE` (the same on every copy of one publish, so a consumer can drop
duplicates). A publish retried after a lost answer may be delivered twice, with one publish id.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import httpx

from ._client import AsyncClient, Call, SyncClient, ignore
from ._contract import operation, path
from ._errors import ExoError, Reason, error
from ._models import (
    PUBLISH_ID_ATTRIBUTE,
    TOPIC_ATTRIBUTE,
    Body,
    CreatedSubscription,
    NamePage,
    Outgoing,
    Published,
    QueueOptions,
    Subscription,
    TopicInfo,
    entry_error,
    int_of,
    objects_of,
    str_of,
    strings_of,
    to_bytes,
)
from ._transport import Request, json_body
from .queue import DEFAULT_EQS_ENDPOINT, EQS_ENDPOINT_ENV

_S = "eqs"


def _published(message: Outgoing | Body) -> dict[str, Any]:
    out = Outgoing.of(message)
    if out.delay_seconds is not None:
        raise error(
            Reason.INVALID_ARGUMENT,
            "a published message takes no delay: give the subscription's queue a delay instead",
            field="delay_seconds",
        )
    body: dict[str, Any] = out.to_json()
    return body


def _create_topic(name: str) -> Call[bool]:
    return (
        Request("POST", path(_S, "createTopic"), json={"name": name}, resource=name),
        lambda r: json_body(r).get("created") is True,
    )


def _delete_topic(name: str) -> Call[None]:
    return Request("DELETE", path(_S, "deleteTopic", topic=name), resource=name), ignore


def _list_topics(prefix: str, page_size: int, page_token: str) -> Call[NamePage]:
    params = {"prefix": prefix, "pageSize": str(page_size) if page_size else "", "pageToken": page_token}

    def decode(r: httpx.Response) -> NamePage:
        d = json_body(r)
        return NamePage(strings_of(d.get("names")), str_of(d.get("nextPageToken")))

    return Request("GET", path(_S, "listTopics"), params={k: v for k, v in params.items() if v}), decode


def _topic_info(name: str) -> Call[TopicInfo]:
    def decode(r: httpx.Response) -> TopicInfo:
        info = json_body(r).get("info")
        if info is None:
            raise error(Reason.INTERNAL, "the proxy returned no topic info", resource=name)
        return TopicInfo.from_json(info)

    return Request("GET", path(_S, "getTopicInfo", topic=name), resource=name), decode


def _subscribe(
    topic: str, name: str, queue: str, filter: str, create_queue: QueueOptions | None
) -> Call[CreatedSubscription]:
    body: dict[str, Any] = {"name": name, "queue": queue}
    if filter:
        body["filter"] = filter
    if create_queue is not None:
        body["createQueue"] = create_queue.to_json()

    def decode(r: httpx.Response) -> CreatedSubscription:
        d = json_body(r)
        if d.get("subscription") is None:
            raise error(Reason.INTERNAL, "the proxy returned no subscription", resource=topic)
        return CreatedSubscription(d.get("created") is True, Subscription.from_json(d.get("subscription")))

    return Request("POST", path(_S, "createSubscription", topic=topic), json=body, resource=topic), decode


def _unsubscribe(topic: str, name: str) -> Call[None]:
    return Request("DELETE", path(_S, "deleteSubscription", topic=topic, name=name), resource=topic), ignore


def _publish(topic: str, message: Outgoing | Body) -> Call[Published]:
    def decode(r: httpx.Response) -> Published:
        d = json_body(r)
        return Published(str_of(d.get("publishId")), int_of(d.get("deliveries")))

    body = {"message": _published(message)}
    return Request("POST", path(_S, "publish", topic=topic), json=body, resource=topic), decode


def _publish_batch(topic: str, messages: Iterable[Outgoing | Body]) -> Call[list[Published | ExoError]]:
    entries = [{"id": str(i), "message": _published(m)} for i, m in enumerate(messages)]

    def decode(r: httpx.Response) -> list[Published | ExoError]:
        results = objects_of(json_body(r).get("results"))
        if len(results) != len(entries):
            raise error(Reason.INTERNAL, f"the proxy answered {len(results)} results for {len(entries)} entries")
        out: list[Published | ExoError] = []
        for result in results:
            if result.get("error") is not None:
                out.append(entry_error(result.get("error"), topic))
            else:
                out.append(Published(str_of(result.get("publishId")), int_of(result.get("deliveries"))))
        return out

    body = {"entries": entries}
    return Request("POST", path(_S, "publishBatch", topic=topic), json=body, resource=topic), decode


def _message(body: Body, attributes: Mapping[str, str] | None) -> Outgoing:
    return Outgoing(to_bytes(body), dict(attributes or {}))


class TopicClient(SyncClient):
    """A blocking client of eqs's topics (``$EXO_EQS_ENDPOINT``, else ``http://127.0.0.1:7401``).

    >>> topics = TopicClient()
    >>> topics.create_topic("order-events")
    >>> topics.subscribe("order-events", "billing", "billing-orders", create_queue=QueueOptions())
    >>> topics.publish("order-events", b"order 1", attributes={"region": "eu"})
    """

    ENDPOINT_ENV = EQS_ENDPOINT_ENV
    DEFAULT_ENDPOINT = DEFAULT_EQS_ENDPOINT

    @operation(_S, "createTopic")
    def create_topic(self, name: str, *, timeout: float | None = None) -> bool:
        """Creates a topic (idempotent); whether it was created now."""
        return self._call(_create_topic(name), timeout)

    @operation(_S, "deleteTopic")
    def delete_topic(self, name: str, *, timeout: float | None = None) -> None:
        """Deletes a topic and its subscriptions; their queues and messages stay."""
        self._call(_delete_topic(name), timeout)

    @operation(_S, "listTopics")
    def list_topics_page(
        self, prefix: str = "", page_size: int = 0, page_token: str = "", *, timeout: float | None = None
    ) -> NamePage:
        """One page of topic names with ``prefix``."""
        return self._call(_list_topics(prefix, page_size, page_token), timeout)

    def list_topics(self, prefix: str = "", *, timeout: float | None = None) -> list[str]:
        """Every topic name with ``prefix``, following pages (``timeout`` is per page)."""
        names: list[str] = []
        token = ""
        while True:
            page = self.list_topics_page(prefix, 0, token, timeout=timeout)
            names.extend(page.names)
            if not page.next_page_token:
                return names
            token = page.next_page_token

    @operation(_S, "getTopicInfo")
    def topic_info(self, name: str, *, timeout: float | None = None) -> TopicInfo:
        """A topic and its subscriptions."""
        return self._call(_topic_info(name), timeout)

    @operation(_S, "createSubscription")
    def subscribe(
        self,
        topic: str,
        name: str,
        queue: str,
        filter: str = "",
        *,
        create_queue: QueueOptions | None = None,
        timeout: float | None = None,
    ) -> CreatedSubscription:
        """Subscribes ``queue`` to ``topic`` as ``name``, with a filter (empty: every message;
        e.g. ``region = 'eu' and tier in ('gold', 'silver')``). With ``create_queue`` the queue
        is made with those options if missing. Idempotent for identical settings."""
        return self._call(_subscribe(topic, name, queue, filter, create_queue), timeout)

    @operation(_S, "deleteSubscription")
    def unsubscribe(self, topic: str, name: str, *, timeout: float | None = None) -> None:
        """Deletes a subscription; its queue stays."""
        self._call(_unsubscribe(topic, name), timeout)

    @operation(_S, "publish")
    def publish(
        self,
        topic: str,
        body: Body,
        *,
        attributes: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Published:
        """Publishes a message to every subscription whose filter matches; answered once every
        copy is durable."""
        return self._call(_publish(topic, _message(body, attributes)), timeout)

    @operation(_S, "publishBatch")
    def publish_batch(
        self, topic: str, messages: Iterable[Outgoing | Body], *, timeout: float | None = None
    ) -> list[Published | ExoError]:
        """Publishes many messages; one result per message, in order (entries fail on their own)."""
        return self._call(_publish_batch(topic, messages), timeout)


class AsyncTopicClient(AsyncClient):
    """The asyncio twin of :class:`TopicClient`."""

    ENDPOINT_ENV = EQS_ENDPOINT_ENV
    DEFAULT_ENDPOINT = DEFAULT_EQS_ENDPOINT

    @operation(_S, "createTopic")
    async def create_topic(self, name: str, *, timeout: float | None = None) -> bool:
        """Creates a topic (idempotent); whether it was created now."""
        return await self._call(_create_topic(name), timeout)

    @operation(_S, "deleteTopic")
    async def delete_topic(self, name: str, *, timeout: float | None = None) -> None:
        """Deletes a topic and its subscriptions; their queues and messages stay."""
        await self._call(_delete_topic(name), timeout)

    @operation(_S, "listTopics")
    async def list_topics_page(
        self, prefix: str = "", page_size: int = 0, page_token: str = "", *, timeout: float | None = None
    ) -> NamePage:
        """One page of topic names with ``prefix``."""
        return await self._call(_list_topics(prefix, page_size, page_token), timeout)

    async def list_topics(self, prefix: str = "", *, timeout: float | None = None) -> list[str]:
        """Every topic name with ``prefix``, following pages."""
        names: list[str] = []
        token = ""
        while True:
            page = await self.list_topics_page(prefix, 0, token, timeout=timeout)
            names.extend(page.names)
            if not page.next_page_token:
                return names
            token = page.next_page_token

    @operation(_S, "getTopicInfo")
    async def topic_info(self, name: str, *, timeout: float | None = None) -> TopicInfo:
        """A topic and its subscriptions."""
        return await self._call(_topic_info(name), timeout)

    @operation(_S, "createSubscription")
    async def subscribe(
        self,
        topic: str,
        name: str,
        queue: str,
        filter: str = "",
        *,
        create_queue: QueueOptions | None = None,
        timeout: float | None = None,
    ) -> CreatedSubscription:
        """Subscribes ``queue`` to ``topic`` as ``name``, with a filter."""
        return await self._call(_subscribe(topic, name, queue, filter, create_queue), timeout)

    @operation(_S, "deleteSubscription")
    async def unsubscribe(self, topic: str, name: str, *, timeout: float | None = None) -> None:
        """Deletes a subscription; its queue stays."""
        await self._call(_unsubscribe(topic, name), timeout)

    @operation(_S, "publish")
    async def publish(
        self,
        topic: str,
        body: Body,
        *,
        attributes: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Published:
        """Publishes a message to every subscription whose filter matches."""
        return await self._call(_publish(topic, _message(body, attributes)), timeout)

    @operation(_S, "publishBatch")
    async def publish_batch(
        self, topic: str, messages: Iterable[Outgoing | Body], *, timeout: float | None = None
    ) -> list[Published | ExoError]:
        """Publishes many messages; one result per message, in order."""
        return await self._call(_publish_batch(topic, messages), timeout)


__all__ = [
    "PUBLISH_ID_ATTRIBUTE",
    "TOPIC_ATTRIBUTE",
    "AsyncTopicClient",
    "TopicClient",
]
