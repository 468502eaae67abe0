"""Publish once, every subscribed service gets its copy: one publisher, three subscribers, two
pulling and one pushed to (the Python twin of sdk/rust/examples/topics.rs).

Start the proxies with this app's manifest, then run it::

    exo up --manifest sdk/rust/examples/topics.yaml
    python sdk/python/examples/topics.py

Billing gets every order; shipping-eu only orders whose ``region`` attribute is ``eu``: each
reads its own queue at its own pace and drops duplicates by publish id. Mail is a push
subscription (declared in the manifest, since only the proxy's config may name where it
sends): the proxy POSTs each order to this app's HTTP endpoint, and a 2xx acknowledges it. The
endpoint is ``exoflow.push.wsgi_app`` on the standard library's WSGI server; in a FastAPI or
Flask app, ``exoflow.decode_pushed(body)`` in a route does the same.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from wsgiref.simple_server import WSGIRequestHandler, make_server

import exoflow
import exoflow.push
from exoflow import PUBLISH_ID_ATTRIBUTE, QueueOptions

#: Where the manifest's push subscription sends: the app's port (``EXO_EXAMPLE_LISTEN`` when the
#: manifest is given another) and the path /events/orders.
PUSH_LISTEN = "127.0.0.1:7480"


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def consume(queues: exoflow.QueueClient, queue: str) -> list[str]:
    """Reads ``queue`` until it stays empty, acking each message; the bodies, first copies only."""
    seen: set[str] = set()
    bodies: list[str] = []
    while True:
        batch = queues.receive(queue, max_messages=10, wait_seconds=1)
        if not batch:
            return bodies
        for message in batch:
            # At least once: a publish retried after a timeout may arrive twice, with one id.
            publish_id = message.attributes.get(PUBLISH_ID_ATTRIBUTE, "")
            if publish_id not in seen:
                seen.add(publish_id)
                bodies.append(message.text)
            queues.ack(queue, message)


def main() -> int:
    topics = exoflow.TopicClient.from_env()
    queues = exoflow.QueueClient.from_env()

    # The mail service listens before anything is published (a push it misses is retried).
    pushed: dict[str, str] = {}
    lock = threading.Lock()

    def on_order(push: exoflow.PushedMessage) -> None:
        with lock:
            # A redelivered push has the same publish id.
            pushed[push.publish_id] = push.message.text

    listen = os.environ.get("EXO_EXAMPLE_LISTEN", PUSH_LISTEN)
    host, port = listen.rsplit(":", 1)
    endpoints = {"/events/orders": exoflow.push.wsgi_app(on_order)}

    def app(environ: dict[str, object], start_response: exoflow.push.StartResponse) -> list[bytes]:
        handler = endpoints.get(str(environ.get("PATH_INFO", "")))
        if handler is None:
            start_response("404 Not Found", [("content-length", "0")])
            return [b""]
        return list(handler(environ, start_response))

    server = make_server(host, int(port), app, handler_class=QuietHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    try:
        topics.create_topic("order-events")
        # Each subscription delivers into a queue of its own (made here if missing).
        topics.subscribe("order-events", "billing", "billing-orders", create_queue=QueueOptions())
        topics.subscribe(
            "order-events", "shipping-eu", "shipping-eu-orders", "region = 'eu'", create_queue=QueueOptions()
        )

        for n, region in [(1, "eu"), (2, "us"), (3, "eu")]:
            published = topics.publish("order-events", f"order {n} created", attributes={"region": region})
            print(f"published order {n} ({region}) to {published.deliveries} subscription(s)")

        # The mail service's copies arrive by themselves.
        mail: list[str] = []
        for _ in range(150):
            with lock:
                mail = sorted(pushed.values())
            if len(mail) >= 3:
                break
            time.sleep(0.1)
        print(f"mail got        {mail} (pushed)")
        if mail != ["order 1 created", "order 2 created", "order 3 created"]:
            print(
                f"mail should be pushed every order, got {mail}; did the proxies start with "
                "`exo up --manifest sdk/rust/examples/topics.yaml` (which declares the push subscription)?",
                file=sys.stderr,
            )
            return 1

        billing = consume(queues, "billing-orders")
        shipping = consume(queues, "shipping-eu-orders")
        print(f"billing got     {billing}")
        print(f"shipping-eu got {shipping}")
        # What the filters promise.
        if len(billing) != 3:
            print(f"billing should get every order, got {billing}", file=sys.stderr)
            return 1
        if sorted(shipping) != ["order 1 created", "order 3 created"]:
            print(f"shipping-eu should get the eu orders only, got {shipping}", file=sys.stderr)
            return 1
        return 0
    finally:
        server.shutdown()
        topics.close()
        queues.close()


if __name__ == "__main__":
    sys.exit(main())
