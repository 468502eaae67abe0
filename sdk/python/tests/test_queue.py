"""QueueClient and AsyncQueueClient against the eqs proxy `exo up` runs."""

from __future__ import annotations

import asyncio
import time

import pytest

import exoflow
from exoflow import Outgoing, QueueOptions, Reason

pytestmark = pytest.mark.proxy

BINARY = bytes(range(256)) * 3


def test_describe_and_the_served_document(eqs: str) -> None:
    with exoflow.QueueClient(eqs) as queues:
        backend = queues.describe()
        document = queues.openapi()
    assert backend.backend
    assert "LONG_POLL" in backend.capabilities
    assert backend.limits.max_receive_messages >= 1
    assert backend.limits.max_message_bytes > 0
    assert document["info"]["title"] == "ExoFlow eqs API"


def test_a_queue_from_creation_to_deletion(eqs: str, name: str) -> None:
    queues = exoflow.QueueClient(eqs)
    dead = f"{name}-dead"
    assert queues.create_queue(dead).created
    created = queues.create_queue(
        name, QueueOptions(visibility_timeout_seconds=45, max_receives=3, dead_letter_queue=dead)
    )
    assert created.created
    assert created.info.name == name
    assert created.info.options.visibility_timeout_seconds == 45
    assert created.info.options.dead_letter_queue == dead
    again = queues.create_queue(
        name, QueueOptions(visibility_timeout_seconds=45, max_receives=3, dead_letter_queue=dead)
    )
    assert not again.created, "identical options: idempotent"
    with pytest.raises(exoflow.AlreadyExistsError) as caught:
        queues.create_queue(name, QueueOptions(visibility_timeout_seconds=10))
    assert caught.value.reason is Reason.QUEUE_ALREADY_EXISTS

    assert queues.list_queues(prefix=name) == [name, dead]
    first = queues.list_queues_page(prefix=name, page_size=1)
    assert first.names == [name]
    assert first.next_page_token
    second = queues.list_queues_page(prefix=name, page_size=1, page_token=first.next_page_token)
    assert second.names == [dead]

    message_id = queues.send(name, BINARY, attributes={"customer": "c-1", "kind": "order"})
    assert message_id
    [message] = queues.receive(name, max_messages=10, wait_seconds=5)
    assert message.body == BINARY, "bytes travel exact (base64 in JSON)"
    assert message.message_id == message_id
    assert message.attributes["customer"] == "c-1"
    assert message.dequeue_count == 1
    assert message.enqueued_at_ms > 1_700_000_000_000
    assert queues.queue_info(name).in_flight_messages == 1

    queues.change_visibility(name, message, 0)
    [again_message] = queues.receive(name, wait_seconds=5)
    assert again_message.message_id == message_id
    assert again_message.dequeue_count == 2
    queues.ack(name, again_message)
    assert queues.receive(name) == []

    info = queues.queue_info(name)
    assert (info.visible_messages, info.in_flight_messages) == (0, 0)
    assert info.created_at_ms > 0

    queues.delete_queue(name)
    queues.delete_queue(dead)
    with pytest.raises(exoflow.NotFoundError) as missing:
        queues.queue_info(name)
    assert missing.value.reason is Reason.QUEUE_NOT_FOUND
    assert missing.value.resource == name
    assert not missing.value.retryable


def test_batches_fail_entry_by_entry(eqs: str, name: str) -> None:
    queues = exoflow.QueueClient(eqs)
    queues.create_queue(name)
    results = queues.send_batch(
        name,
        [b"one", Outgoing(b"two", {"exo.reserved": "x"}), "three", Outgoing(b"four", {"k": "v"}, delay_seconds=0)],
    )
    assert isinstance(results[0], str)
    assert isinstance(results[2], str)
    assert isinstance(results[3], str)
    assert isinstance(results[1], exoflow.ExoError)
    assert results[1].reason is Reason.INVALID_ATTRIBUTE
    got: list[exoflow.Message] = []
    while len(got) < 3:
        batch = queues.receive(name, max_messages=10, wait_seconds=2)
        assert batch, f"only {got} arrived"
        got += batch
    assert sorted(m.body for m in got) == [b"four", b"one", b"three"]
    queues.purge(name)
    assert queues.queue_info(name).visible_messages == 0
    queues.delete_queue(name)


def test_the_callers_deadline_shortens_a_long_poll(eqs: str, name: str) -> None:
    queues = exoflow.QueueClient(eqs)
    queues.create_queue(name)
    started = time.monotonic()
    assert queues.receive(name, wait_seconds=10, timeout=1.0) == []
    elapsed = time.monotonic() - started
    # The proxy ends the poll before the deadline it was sent: an empty answer, not an error.
    assert 0.5 < elapsed < 1.5, elapsed
    queues.delete_queue(name)


def test_invalid_requests_name_their_field(eqs: str) -> None:
    queues = exoflow.QueueClient(eqs)
    with pytest.raises(exoflow.InvalidArgumentError) as caught:
        queues.create_queue("Not_A_Valid_Name")
    assert caught.value.reason is Reason.INVALID_NAME
    assert not caught.value.retryable
    assert caught.value.status == 400


def test_delayed_messages_wait(eqs: str, name: str) -> None:
    queues = exoflow.QueueClient(eqs)
    queues.create_queue(name)
    queues.send(name, "later", delay_seconds=1)
    assert queues.queue_info(name).delayed_messages == 1
    assert queues.receive(name) == []
    [message] = queues.receive(name, wait_seconds=5)
    assert message.text == "later"
    queues.delete_queue(name)


def test_the_asyncio_client(eqs: str, name: str) -> None:
    async def main() -> None:
        async with exoflow.AsyncQueueClient(eqs) as queues:
            assert (await queues.describe()).backend
            assert (await queues.create_queue(name)).created
            assert name in await queues.list_queues(prefix=name)
            ids = await asyncio.gather(*(queues.send(name, f"m{i}".encode()) for i in range(20)))
            assert len(set(ids)) == 20
            results = await queues.send_batch(name, [b"x", b"y"])
            assert all(isinstance(r, str) for r in results)
            bodies: list[bytes] = []
            while len(bodies) < 22:
                batch = await queues.receive(name, max_messages=10, wait_seconds=2)
                assert batch
                for message in batch:
                    bodies.append(message.body)
                    await queues.ack(name, message.receipt)
            assert sorted(bodies) == sorted([f"m{i}".encode() for i in range(20)] + [b"x", b"y"])
            info = await queues.queue_info(name)
            assert info.visible_messages == 0
            await queues.send(name, b"z")
            [message] = await queues.receive(name, wait_seconds=2, visibility_seconds=30)
            await queues.change_visibility(name, message, 0)
            await queues.purge(name)
            assert (await queues.list_queues_page(prefix=name)).names == [name]
            await queues.delete_queue(name)
            with pytest.raises(exoflow.NotFoundError):
                await queues.queue_info(name)

    asyncio.run(main())


def test_http2_over_plaintext_with_prior_knowledge(eqs: str, name: str) -> None:
    async def main() -> None:
        async with exoflow.AsyncQueueClient(eqs, http2=True) as queues:
            await queues.create_queue(name)
            ids = await asyncio.gather(*(queues.send(name, f"m{i}") for i in range(50)))
            assert len(set(ids)) == 50
            # White box: the answers really came over HTTP/2 (one connection, multiplexed).
            response = await queues._transport.call(exoflow.queue._queue_info(name)[0], None)
            assert response.http_version == "HTTP/2"
            assert (await queues.queue_info(name)).visible_messages == 50
            await queues.delete_queue(name)

    asyncio.run(main())
