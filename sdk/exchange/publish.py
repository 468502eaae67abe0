"""The exchange's publisher (Python SDK): publishes a corpus of awkward messages to the topic of
`exo up`'s manifest (sdk/rust/examples/topics.yaml, topic ``order-events``) and records what
every receiver must get.

Subcommands:

``count``
    prints how many messages ``publish`` sends (the corpus is fixed), so the receivers can be
    started with their count before anything is published.
``publish --run RUN --queue QUEUE --out EXPECTED.json``
    subscribes QUEUE (made here) to the topic as the pull subscription ``QUEUE``, publishes the
    corpus, each message tagged ``exchange-run: RUN``, and writes EXPECTED.json: every message's
    body (hex) and attributes as a receiver sees them, the proxy's ``exo.topic`` and
    ``exo.publish-id`` included.
``finish --run RUN --queue QUEUE --leftovers PULLED.jsonl``
    what the pull receiver left in QUEUE is appended to PULLED.jsonl (a message it should not
    have had to leave: the comparator reports it), then the subscription and QUEUE are deleted
    and the queues of the topic's other subscriptions (the manifest's ``billing-orders``, which
    got a copy of everything) are purged, so the examples' exact counts still hold against the
    same `exo up` afterwards.

Push subscriptions cannot be made through the API: only the proxy's config (here `exo up`'s
manifest) may name where the proxy sends, so the push side is the manifest's ``mail``
subscription, which POSTs to the app's address (``EXO_EXAMPLE_LISTEN``) at /events/orders.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sys
from collections.abc import Iterator
from typing import Any

import exoflow
from exoflow import PUBLISH_ID_ATTRIBUTE, TOPIC_ATTRIBUTE, Outgoing, QueueOptions

#: The topic the manifest declares, with a push subscription (``mail``) among its subscriptions.
TOPIC = "order-events"
#: The attribute naming the run on every message: what tells the exchange's messages from any
#: other a receiver may see (a push subscription's queue is shared with the examples).
RUN_ATTRIBUTE = "exchange-run"
#: Largest body: below the topic's limit (256 KiB less the delivered copy's own attributes on
#: `exo up`), checked against the proxy's announced limit before anything is sent.
LARGEST_BODY = 200 * 1024
#: Bodies above this are published one by one; smaller ones go in batches.
BATCHED_UP_TO = 16 * 1024
#: Most body bytes in one batch (the proxy takes requests of up to 4 MiB, bodies in base64).
BATCH_BYTES = 256 * 1024

#: Attribute values beyond ASCII: accents, scripts, right-to-left text, combining marks, emoji
#: (astral code points: UTF-16 surrogate pairs in JavaScript), the largest code point, a
#: noncharacter, the allowed control characters, quotes and backslashes, JSON-looking text.
UNICODE_VALUES = [
    "café crème",
    "日本語のテキスト",
    "Ωμέγα",
    "שלום עולם",
    "مرحبا",
    "e\u0301 (combining acute)",
    "🎉🚀 family: 👨\u200d👩\u200d👧",
    "\U0010ffff max code point",
    "\ufffd replacement, \uffff noncharacter",
    "tab\there\nnewline\r\ncrlf",
    'quotes \' " and backslash \\ and {"json": [1, 2]}',
    "\u2028 line separator \u2029 paragraph separator",
    "zero\u200bwidth space",
    "ß→SS ǅ ﬁ",
    " leading and trailing spaces ",
    "x" * 1000,
]

#: Invalid UTF-8 byte sequences (and edge cases of the valid kind).
INVALID_UTF8 = [
    b"\xff",
    b"\xfe\xff",
    b"\xc3\x28",
    b"\xa0\xa1",
    b"\xe2\x28\xa1",
    b"\xe2\x82",
    b"\xf0\x28\x8c\xbc",
    b"\xf8\xa1\xa1\xa1\xa1",
    b"\xc0\xaf",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"valid text, then \x80 a lone continuation byte",
]


def corpus() -> Iterator[tuple[str, bytes]]:
    """Every (label, body) the exchange publishes, always the same ones in the same order."""
    yield "empty body", b""
    for value in range(256):
        yield f"the single byte 0x{value:02x}", bytes([value])
    yield "every byte value, ascending", bytes(range(256))
    yield "every byte value, descending", bytes(range(255, -1, -1))
    yield "every byte value, 4 times", bytes(range(256)) * 4
    for n, sequence in enumerate(INVALID_UTF8):
        yield f"invalid UTF-8 #{n}", sequence
    yield "a NUL byte", b"\x00"
    yield "a NUL byte inside text", b"before\x00after"
    yield "1000 NUL bytes", b"\x00" * 1000
    yield "a UTF-8 byte order mark", b"\xef\xbb\xbf"
    yield "UTF-16LE text with its byte order mark", b"\xff\xfe" + "hé 🎉".encode("utf-16-le")
    yield "CR LF", b"\r\n"
    yield "one space", b" "
    yield "text that looks like base64", b"AAAA===="
    yield "text that looks like a pushed message", b'{"topic":"x","message":{"body":"AA=="}}'
    yield "valid multi-byte UTF-8", "日本語 Ωμέγα שלום 🎉 \U0010ffff".encode()
    rng = random.Random(36)
    for size in (
        1023,
        1024,
        4096,
        BATCHED_UP_TO,
        BATCHED_UP_TO + 1,
        65535,
        65536,
        65537,
        100_000,
        131072,
        LARGEST_BODY - 1,
        LARGEST_BODY,
    ):
        yield f"{size} pseudo-random bytes", rng.randbytes(size)
    yield f"{LARGEST_BODY} bytes of 0xff", b"\xff" * LARGEST_BODY
    yield f"{LARGEST_BODY} NUL bytes", b"\x00" * LARGEST_BODY


def attributes_of(index: int, run: str) -> dict[str, str]:
    """The attributes of message `index`: the run's tag, and up to five unicode values, their
    names in the allowed alphabet (one 128 characters long, the longest a name may be)."""
    attributes = {RUN_ATTRIBUTE: run}
    for k in range(index % 6):
        value = UNICODE_VALUES[(index + 3 * k) % len(UNICODE_VALUES)]
        attributes[f"u{k}.Mixed_Case-{k}"] = value
    if index % 50 == 7:
        attributes["n" * 128] = "the longest attribute name"
    return attributes


def plan(run: str) -> list[dict[str, Any]]:
    """The corpus as messages: label, body and attributes."""
    return [
        {"label": label, "body": body, "attributes": attributes_of(index, run)}
        for index, (label, body) in enumerate(corpus())
    ]


def batches(messages: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Runs of small messages, each run fitting one batch; a large message alone."""
    batch: list[dict[str, Any]] = []
    size = 0
    for message in messages:
        body_size = len(message["body"])
        if body_size > BATCHED_UP_TO:
            if batch:
                yield batch
                batch, size = [], 0
            yield [message]
            continue
        if batch and (len(batch) == 100 or size + body_size > BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(message)
        size += body_size
    if batch:
        yield batch


def check_limits(queues: exoflow.QueueClient, messages: list[dict[str, Any]]) -> None:
    """Fails unless every message is within the proxy's announced topic limits."""
    limits = queues.describe().topic_limits
    if limits is None:
        sys.exit(f"publish.py: the eqs proxy at {queues_endpoint()} has no topics")
    for message in messages:
        size = len(message["body"]) + sum(len(k.encode()) + len(v.encode()) for k, v in message["attributes"].items())
        if size > limits.max_message_bytes or len(message["attributes"]) > limits.max_attributes:
            sys.exit(
                f"publish.py: '{message['label']}' ({size} bytes, {len(message['attributes'])} attributes) is "
                f"over the proxy's topic limits ({limits.max_message_bytes} bytes, {limits.max_attributes} attributes)"
            )


def queues_endpoint() -> str:
    return os.environ.get(exoflow.EQS_ENDPOINT_ENV, exoflow.DEFAULT_EQS_ENDPOINT)


def publish(run: str, queue: str, out: str) -> None:
    topics = exoflow.TopicClient.from_env()
    queues = exoflow.QueueClient.from_env()
    messages = plan(run)
    check_limits(queues, messages)
    subscriptions = {s.name: s for s in topics.topic_info(TOPIC).subscriptions}
    if "mail" not in subscriptions:
        sys.exit(
            f"publish.py: topic '{TOPIC}' has no 'mail' subscription: start exo up with "
            "--manifest sdk/rust/examples/topics.yaml (it declares the push subscription)"
        )
    topics.subscribe(TOPIC, queue, queue, create_queue=QueueOptions())
    expected: list[dict[str, Any]] = []
    for batch in batches(messages):
        if len(batch) == 1:
            only = batch[0]
            results: list[exoflow.Published | exoflow.ExoError] = [
                topics.publish(TOPIC, only["body"], attributes=only["attributes"])
            ]
        else:
            results = topics.publish_batch(TOPIC, [Outgoing(m["body"], m["attributes"]) for m in batch])
        for message, result in zip(batch, results, strict=True):
            if isinstance(result, exoflow.ExoError):
                sys.exit(f"publish.py: publishing '{message['label']}' failed: {result.reason.value}: {result.message}")
            if result.deliveries < 2:
                sys.exit(
                    f"publish.py: '{message['label']}' went to {result.deliveries} subscription(s); "
                    "expected at least the pull subscription and the push one"
                )
            expected.append(
                {
                    "label": message["label"],
                    "body_hex": message["body"].hex(),
                    "attributes": {
                        **message["attributes"],
                        TOPIC_ATTRIBUTE: TOPIC,
                        PUBLISH_ID_ATTRIBUTE: result.publish_id,
                    },
                }
            )
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"run": run, "topic": TOPIC, "queue": queue, "messages": expected}, f, ensure_ascii=False)
    total = sum(len(m["body"]) for m in messages)
    print(f"published {len(expected)} messages ({total} body bytes) to '{TOPIC}'; pull queue '{queue}'")


def finish(run: str, queue: str, leftovers: str) -> None:
    topics = exoflow.TopicClient.from_env()
    queues = exoflow.QueueClient.from_env()
    left = 0
    try:
        with open(leftovers, "a", encoding="utf-8") as f:
            while batch := queues.receive(queue, max_messages=10, wait_seconds=1):
                for message in batch:
                    line = {
                        "body_hex": message.body.hex(),
                        "attributes": message.attributes,
                        "dequeue_count": message.dequeue_count,
                    }
                    f.write(json.dumps(line, ensure_ascii=False) + "\n")
                    queues.ack(queue, message)
                    left += 1
    except exoflow.NotFoundError:
        pass
    if left:
        print(f"{left} message(s) were left in '{queue}' after the pull receiver stopped")
    others = []
    try:
        for subscription in topics.topic_info(TOPIC).subscriptions:
            if subscription.name != queue:
                others.append(subscription.queue)
        topics.unsubscribe(TOPIC, queue)
    except exoflow.NotFoundError:
        pass
    with contextlib.suppress(exoflow.NotFoundError):
        queues.delete_queue(queue)
    for other in others:
        with contextlib.suppress(exoflow.NotFoundError):
            queues.purge(other)
    print(f"run {run}: removed subscription and queue '{queue}', purged {', '.join(others) or 'nothing'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("count")
    for name in ("publish", "finish"):
        command = commands.add_parser(name)
        command.add_argument("--run", required=True)
        command.add_argument("--queue", required=True)
        if name == "publish":
            command.add_argument("--out", required=True)
        else:
            command.add_argument("--leftovers", required=True)
    args = parser.parse_args()
    if args.command == "count":
        print(sum(1 for _ in corpus()))
    elif args.command == "publish":
        publish(args.run, args.queue, args.out)
    else:
        finish(args.run, args.queue, args.leftovers)


if __name__ == "__main__":
    main()
