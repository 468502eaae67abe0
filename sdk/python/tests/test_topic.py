"""TopicClient and AsyncTopicClient against the eqs proxy `exo up` runs."""

from __future__ import annotations

import asyncio

import pytest

import exoflow
from exoflow import PUBLISH_ID_ATTRIBUTE, TOPIC_ATTRIBUTE, QueueOptions, Reason

pytestmark = pytest.mark.proxy


def drain(queues: exoflow.QueueClient, queue: str) -> list[exoflow.Message]:
    out: list[exoflow.Message] = []
    while True:
        batch = queues.receive(queue, max_messages=10, wait_seconds=1)
        if not batch:
            return out
        for message in batch:
            queues.ack(queue, message)
        out += batch


def test_publish_once_every_matching_subscription_gets_a_copy(eqs: str, name: str) -> None:
    topics = exoflow.TopicClient(eqs)
    queues = exoflow.QueueClient(eqs)
    assert topics.create_topic(name)
    assert not topics.create_topic(name), "idempotent"
    every, eu = f"{name}-all", f"{name}-eu"
    made = topics.subscribe(name, "all-orders", every, create_queue=QueueOptions())
    assert made.created
    assert made.subscription.queue == every
    filtered = topics.subscribe(name, "eu-orders", eu, "region = 'eu'", create_queue=QueueOptions())
    assert filtered.subscription.filter
    assert not topics.subscribe(name, "eu-orders", eu, "region = 'eu'", create_queue=QueueOptions()).created

    info = topics.topic_info(name)
    assert info.name == name
    assert [s.name for s in info.subscriptions] == ["all-orders", "eu-orders"]
    assert name in topics.list_topics(prefix=name)
    assert topics.list_topics_page(prefix=name, page_size=1).names == [name]

    body = b"\x00order\xff"
    first = topics.publish(name, body, attributes={"region": "eu"})
    assert first.deliveries == 2
    second = topics.publish(name, b"us order", attributes={"region": "us"})
    assert second.deliveries == 1
    results = topics.publish_batch(
        name, [exoflow.Outgoing(b"b1", {"region": "eu"}), exoflow.Outgoing(b"b2", {"exo.no": "x"})]
    )
    assert isinstance(results[0], exoflow.Published)
    assert results[0].deliveries == 2
    assert isinstance(results[1], exoflow.ExoError)
    assert results[1].reason is Reason.INVALID_ATTRIBUTE

    everything = drain(queues, every)
    assert sorted(m.body for m in everything) == sorted([body, b"us order", b"b1"])
    copy = next(m for m in everything if m.body == body)
    assert copy.attributes[PUBLISH_ID_ATTRIBUTE] == first.publish_id
    assert copy.attributes[TOPIC_ATTRIBUTE] == name
    assert copy.attributes["region"] == "eu"
    assert sorted(m.body for m in drain(queues, eu)) == sorted([body, b"b1"])

    topics.unsubscribe(name, "eu-orders")
    assert [s.name for s in topics.topic_info(name).subscriptions] == ["all-orders"]
    topics.delete_topic(name)
    with pytest.raises(exoflow.NotFoundError) as caught:
        topics.topic_info(name)
    assert caught.value.reason is Reason.TOPIC_NOT_FOUND
    # The subscriptions' queues stay.
    assert queues.queue_info(every).name == every
    queues.delete_queue(every)
    queues.delete_queue(eu)


def test_a_bad_filter_names_where_it_is_wrong(eqs: str, name: str) -> None:
    topics = exoflow.TopicClient(eqs)
    topics.create_topic(name)
    with pytest.raises(exoflow.InvalidArgumentError) as caught:
        topics.subscribe(name, "bad-filter", f"{name}-q", "region = ", create_queue=QueueOptions())
    assert caught.value.reason is Reason.INVALID_FILTER
    assert caught.value.field
    with pytest.raises(exoflow.NotFoundError) as missing:
        topics.publish(f"{name}-none", b"x")
    assert missing.value.reason is Reason.TOPIC_NOT_FOUND
    topics.delete_topic(name)


def test_the_asyncio_client(eqs: str, name: str) -> None:
    async def main() -> None:
        async with exoflow.AsyncTopicClient(eqs) as topics, exoflow.AsyncQueueClient(eqs) as queues:
            assert await topics.create_topic(name)
            await topics.subscribe(name, "all-events", f"{name}-q", create_queue=QueueOptions())
            published = await asyncio.gather(*(topics.publish(name, f"e{i}") for i in range(10)))
            assert all(p.deliveries == 1 for p in published)
            batch = await topics.publish_batch(name, ["x", "y"])
            assert all(isinstance(r, exoflow.Published) for r in batch)
            assert [s.queue for s in (await topics.topic_info(name)).subscriptions] == [f"{name}-q"]
            assert await topics.list_topics(prefix=name) == [name]
            assert (await topics.list_topics_page(prefix=name)).names == [name]
            got: set[str] = set()
            while len(got) < 12:
                messages = await queues.receive(f"{name}-q", max_messages=10, wait_seconds=2)
                assert messages
                for m in messages:
                    got.add(m.attributes[PUBLISH_ID_ATTRIBUTE])
                    await queues.ack(f"{name}-q", m)
            assert got == {p.publish_id for p in published} | {
                r.publish_id for r in batch if isinstance(r, exoflow.Published)
            }
            await topics.unsubscribe(name, "all-events")
            await topics.delete_topic(name)
            await queues.delete_queue(f"{name}-q")

    asyncio.run(main())
