"""Push delivery end to end: a real eqs proxy (started here, memory backend, on a port and a
Unix socket) pushes a topic's messages to real apps in this process: a FastAPI app (served by
uvicorn) and a Flask app (served by Werkzeug), each with a route that decodes the POST with
``decode_pushed`` and with ``exoflow.push.asgi_app`` / ``wsgi_app`` mounted beside it."""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import flask
import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request, Response
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.serving import make_server

import exoflow
import exoflow.push
from conftest import free_port, start_eqs, stop, wait_ready

pytestmark = pytest.mark.push

TOPIC = "pushed-events"
ENDPOINTS = ["asgi-direct", "asgi-mounted", "wsgi-direct", "wsgi-mounted"]


@dataclass
class Seen:
    """Every POST each endpoint took, in order."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    deliveries: dict[str, list[tuple[exoflow.PushedMessage, bool]]] = field(
        default_factory=lambda: {name: [] for name in ENDPOINTS}
    )

    def take(self, endpoint: str, pushed: exoflow.PushedMessage) -> bool:
        """Records a delivery; refuses the first delivery of a message marked refuse-once."""
        with self.lock:
            earlier = [p for p, _ in self.deliveries[endpoint] if p.publish_id == pushed.publish_id]
            accept = pushed.message.attributes.get("refuse-once") != "yes" or bool(earlier)
            self.deliveries[endpoint].append((pushed, accept))
            return accept

    def acked(self, endpoint: str) -> dict[str, exoflow.PushedMessage]:
        with self.lock:
            return {p.publish_id: p for p, accepted in self.deliveries[endpoint] if accepted}


@dataclass
class PushRig:
    seen: Seen
    endpoint: str
    unix_endpoint: str
    asgi_url: str
    wsgi_url: str


def asgi_app(seen: Seen) -> FastAPI:
    api = FastAPI()

    @api.post("/events/direct")
    async def direct(request: Request) -> Response:
        pushed = exoflow.decode_pushed(await request.body())
        return Response(status_code=204 if seen.take("asgi-direct", pushed) else 503)

    async def mounted(pushed: exoflow.PushedMessage) -> bool:
        await asyncio.sleep(0)
        return seen.take("asgi-mounted", pushed)

    api.mount("/events/mounted", exoflow.push.asgi_app(mounted))
    return api


def wsgi_app(seen: Seen) -> DispatcherMiddleware:
    app = flask.Flask("push-test")

    @app.post("/events/direct")
    def direct() -> tuple[str, int]:
        pushed = exoflow.decode_pushed(flask.request.get_data())
        return "", 204 if seen.take("wsgi-direct", pushed) else 503

    return DispatcherMiddleware(
        app, {"/events/mounted": exoflow.push.wsgi_app(lambda pushed: seen.take("wsgi-mounted", pushed))}
    )


@pytest.fixture(scope="module")
def rig() -> Iterator[PushRig]:
    seen = Seen()
    asgi_port, wsgi_port, proxy_port = free_port(), free_port(), free_port()

    server = uvicorn.Server(
        uvicorn.Config(asgi_app(seen), host="127.0.0.1", port=asgi_port, log_level="warning", lifespan="off")
    )
    asgi_thread = threading.Thread(target=server.run, daemon=True)
    asgi_thread.start()
    wsgi = make_server("127.0.0.1", wsgi_port, wsgi_app(seen), threaded=True)
    wsgi_thread = threading.Thread(target=wsgi.serve_forever, daemon=True)
    wsgi_thread.start()
    until = time.monotonic() + 10
    while not server.started and time.monotonic() < until:
        time.sleep(0.02)

    with tempfile.TemporaryDirectory(prefix="exopush-") as d:
        workdir = Path(d)
        sock = workdir / "eqs.sock"
        urls = {
            "asgi-direct": f"http://127.0.0.1:{asgi_port}/events/direct",
            "asgi-mounted": f"http://127.0.0.1:{asgi_port}/events/mounted/",
            "wsgi-direct": f"http://127.0.0.1:{wsgi_port}/events/direct",
            "wsgi-mounted": f"http://127.0.0.1:{wsgi_port}/events/mounted",
        }
        subscriptions = "".join(
            f"      - name: {name}\n"
            f"        queue: {name}-q\n"
            f"        create-queue: true\n"
            f"        push: {{ url: '{url}', concurrency: 4, timeout: 5s }}\n"
            for name, url in urls.items()
        )
        config = (
            f"server:\n  listen: 127.0.0.1:{proxy_port}\n  unix-socket: {sock}\n"
            f"backend:\n  kind: memory\n"
            f"topics:\n  - name: {TOPIC}\n    subscriptions:\n{subscriptions}"
        )
        process, log = start_eqs(config, workdir)
        try:
            wait_ready(f"http://127.0.0.1:{proxy_port}/readyz", process)
            yield PushRig(
                seen,
                f"http://127.0.0.1:{proxy_port}",
                f"unix:{sock}",
                f"http://127.0.0.1:{asgi_port}",
                f"http://127.0.0.1:{wsgi_port}",
            )
        except BaseException:
            print(log.read_text())
            raise
        finally:
            stop(process)
            server.should_exit = True
            wsgi.shutdown()
            asgi_thread.join(timeout=10)
            wsgi_thread.join(timeout=10)


def test_the_proxy_pushes_every_message_to_asgi_and_wsgi_apps(rig: PushRig) -> None:
    # Published through the proxy's Unix socket: the cheapest transport, same calls.
    topics = exoflow.TopicClient(rig.unix_endpoint)
    bodies = [bytes([i]) * (i + 1) + b"\xff\x00payload" for i in range(5)]
    published = [
        topics.publish(TOPIC, body, attributes={"n": str(i), "refuse-once": "yes" if i == 2 else "no"})
        for i, body in enumerate(bodies)
    ]
    assert all(p.deliveries == len(ENDPOINTS) for p in published)
    wanted = {p.publish_id: body for p, body in zip(published, bodies, strict=False)}

    until = time.monotonic() + 30
    while time.monotonic() < until and any(set(rig.seen.acked(e)) != set(wanted) for e in ENDPOINTS):
        time.sleep(0.1)
    for endpoint in ENDPOINTS:
        acked = rig.seen.acked(endpoint)
        assert set(acked) == set(wanted), f"{endpoint} got {sorted(acked)}"
        for publish_id, pushed in acked.items():
            assert pushed.message.body == wanted[publish_id], "byte-exact"
            assert (pushed.topic, pushed.subscription, pushed.queue) == (TOPIC, endpoint, f"{endpoint}-q")
            assert pushed.message.attributes[exoflow.TOPIC_ATTRIBUTE] == TOPIC
            assert pushed.message.receipt == "", "the proxy acknowledges pushed messages itself"

        # The refused delivery came back, counted, and was then taken.
        refused = published[2].publish_id
        with rig.seen.lock:
            tries = [
                (p.message.dequeue_count, ok) for p, ok in rig.seen.deliveries[endpoint] if p.publish_id == refused
            ]
        assert tries[0] == (1, False)
        assert tries[-1][1]
        assert tries[-1][0] >= 2

    # A 2xx acknowledged each message: every subscription's queue ends empty.
    queues = exoflow.QueueClient(rig.endpoint)
    until = time.monotonic() + 10
    for endpoint in ENDPOINTS:
        while True:
            info = queues.queue_info(f"{endpoint}-q")
            if info.visible_messages + info.in_flight_messages + info.delayed_messages == 0:
                break
            assert time.monotonic() < until, f"{endpoint}-q still holds {info}"
            time.sleep(0.1)


def test_the_apps_refuse_what_is_not_a_pushed_message(rig: PushRig) -> None:
    for base in (rig.asgi_url, rig.wsgi_url):
        assert httpx.post(f"{base}/events/mounted/", content=b"{not json").status_code == 400
        assert httpx.get(f"{base}/events/mounted/").status_code == 405


def test_a_unix_socket_endpoint_serves_every_call(rig: PushRig) -> None:
    async def main() -> None:
        async with exoflow.AsyncQueueClient(rig.unix_endpoint) as queues:
            await queues.create_queue("over-the-socket")
            await queues.send("over-the-socket", b"hello")
            [message] = await queues.receive("over-the-socket", wait_seconds=2)
            assert message.body == b"hello"
            await queues.delete_queue("over-the-socket")

    asyncio.run(main())
    with exoflow.QueueClient(f"unix://{rig.unix_endpoint[len('unix:') :]}") as queues:
        assert queues.describe().backend == "memory"
