"""eqs `nats` against a real NATS JetStream server, as a native client (nats-py) sees it: what eqs
sends is a stream message nats-py reads with its headers, what nats-py publishes to the queue's
subject a waiting eqs receive gets, a native consumer bound to the proxy's durable consumer acks
what eqs sent, and — on a private server this script starts and kills -9 — an acknowledged send
survives the server's restart and eqs reconnects by itself. Topics: the registry is a key-value
entry nats-py reads, each copy a stream message with the publish id as Nats-Msg-Id, an outbox
message left by a proxy that died mid-fan-out is finished by the drainer (a malformed one beside
it is left alone), and a private eqs-proxy killed -9 under a publish load loses no acknowledged
publish for either subscription.

    nats_interop.py --eqs URL --nats nats://127.0.0.1:4222 --namespace NS \
        --eqs-proxy PATH --eqs-config FILE --nats-server PATH --scratch DIR
"""

import argparse
import asyncio
import base64
import json
import os
import signal
import subprocess
import threading
import time
import urllib.request

import nats

from common import (b64, call, check, check_none_lost, check_tls_proxy, drain_bodies, eventually, finish, free_port,
                    make_certificates, publishes_killed, refusal, wait_for_port)

RUN = f"{int(time.time())}"






def receive_all(eqs, name):
    return call("POST", f"{eqs}/api/v1/queues/{name}/messages/receive",
                {"maxMessages": 10, "waitSeconds": 5}).get("messages", [])


async def native(eqs, url, ns):
    print("NATS JetStream <-> eqs")
    nc = await nats.connect(url)
    js = nc.jetstream()
    name = f"interop-{RUN}"
    stream = f"{ns}_{name}"
    call("POST", f"{eqs}/api/v1/queues", {"name": name})
    info = await js.stream_info(stream)
    check(getattr(info.config.retention, "value", info.config.retention) == "workqueue" and info.config.subjects == [f"{ns}.{name}"],
          "a queue is a work-queue stream <namespace>_<queue> on the subject <namespace>.<queue>")

    body = b"\x00binary\xff body"
    sent = call("POST", f"{eqs}/api/v1/queues/{name}/messages",
                {"message": {"body": b64(body), "attributes": {"origin": "eqs", "note": "two\nlines"}}})
    raw = await js.get_msg(stream, (await js.stream_info(stream)).state.last_seq)
    headers = raw.headers or {}
    check(raw.data == body, "a message sent through eqs is a stream message nats-py reads byte-exact")
    check(headers.get("exo.message-id") == sent.get("messageId") == headers.get("Nats-Msg-Id"),
          "its exo.message-id (and Nats-Msg-Id) header is the id eqs reported")
    check(headers.get("origin") == "eqs" and headers.get("exo.base64-values") == "note"
          and base64.b64decode(headers.get("note", "")) == b"two\nlines",
          "attributes are headers; a value with a line break travels base64, listed in exo.base64-values")

    # A native consumer bound to the proxy's durable consumer takes and acks it.
    sub = await js.pull_subscribe_bind("exo", stream)
    taken = await sub.fetch(1, timeout=5)
    check(len(taken) == 1 and taken[0].data == body, "nats-py bound to the durable consumer `exo` gets it")
    for m in taken:
        await m.ack_sync()
    after = call("GET", f"{eqs}/api/v1/queues/{name}")["info"]
    check(int(after.get("visibleMessages", 0)) + int(after.get("inFlightMessages", 0)) == 0,
          "a native ack removes it for eqs too")
    await sub.unsubscribe()

    # A native producer publishes to the queue's subject; a waiting eqs receive gets it.
    got = {}

    def wait():
        got.update(call("POST", f"{eqs}/api/v1/queues/{name}/messages/receive",
                        {"maxMessages": 1, "waitSeconds": 10}))
    waiter = threading.Thread(target=wait)
    waiter.start()
    await asyncio.sleep(0.5)
    started = time.monotonic()
    ack = await js.publish(f"{ns}.{name}", b"from nats-py", headers={"origin": "nats-py", "Nats-Msg-Id": "py-1"})
    await asyncio.to_thread(waiter.join)
    waited = time.monotonic() - started
    messages = got.get("messages", [])
    check(len(messages) == 1 and base64.b64decode(messages[0]["body"]) == b"from nats-py"
          and messages[0].get("attributes") == {"origin": "nats-py"} and messages[0].get("messageId") == "py-1",
          "a message nats-py publishes reaches a waiting receive: its headers as attributes, Nats-Msg-Id as id")
    check(waited < 2, f"the waiting receive answered {waited:.2f} s after the publish (stream seq {ack.seq})")
    for m in messages:
        call("POST", f"{eqs}/api/v1/queues/{name}/messages/ack", {"receipt": m["receipt"]})
    check((await js.stream_info(stream)).state.messages == 0, "an ack through eqs removes it from the stream")

    # A bare publish (no headers at all): no attributes, the stream sequence as its id.
    bare = await js.publish(f"{ns}.{name}", b"bare")
    got = receive_all(eqs, name)
    check([(base64.b64decode(m["body"]), m.get("attributes", {}), m["messageId"]) for m in got]
          == [(b"bare", {}, str(bare.seq))], f"a bare native publish arrives with no attributes, id = its sequence {bare.seq}")
    for m in got:
        call("POST", f"{eqs}/api/v1/queues/{name}/messages/ack", {"receipt": m["receipt"]})

    call("DELETE", f"{eqs}/api/v1/queues/{name}")
    try:
        await js.stream_info(stream)
        gone = False
    except nats.js.errors.NotFoundError:
        gone = True
    check(gone, "deleting the queue through eqs deletes its stream")
    await nc.close()


async def handmade(eqs, url, ns):
    print("NATS: a stream made by hand before the proxy sees it")
    nc = await nats.connect(url)
    js = nc.jetstream()
    name = f"hand-{RUN}"
    stream = f"{ns}_{name}"
    await js.add_stream(name=stream, subjects=[f"{ns}.{name}"], retention="workqueue", max_msg_size=1024)
    refused = refusal("POST", f"{eqs}/api/v1/queues/{name}/messages", {"message": {"body": b64(b"x" * 2000)}})
    check(": 413 " in refused and "MESSAGE_TOO_LARGE" in refused,
          f"a body over the hand-made stream's max_msg_size is refused as too large, not unavailable ({refused[-120:]})")
    check((await js.stream_info(stream)).state.messages == 0, "and nothing was stored")
    call("POST", f"{eqs}/api/v1/queues/{name}/messages", {"message": {"body": b64(b"small")}})
    got = receive_all(eqs, name)
    check([base64.b64decode(m["body"]) for m in got] == [b"small"], "a body within it is sent and received")
    for m in got:
        call("POST", f"{eqs}/api/v1/queues/{name}/messages/ack", {"receipt": m["receipt"]})
    await js.delete_stream(stream)
    await nc.close()


async def topics(eqs, url, ns, eqs_proxy, eqs_config, scratch):
    print("NATS topics: registry in a key-value bucket, fan-out through an outbox stream")
    nc = await nats.connect(url)
    js = nc.jetstream()
    topic, first, second = f"orders-{RUN}", f"first-{RUN}", f"second-{RUN}"
    call("POST", f"{eqs}/api/v1/topics", {"name": topic})
    for name, queue in (("first", first), ("second", second)):
        call("POST", f"{eqs}/api/v1/topics/{topic}/subscriptions",
             {"name": name, "queue": queue, "createQueue": {}, "filter": "kind = 'order'" if name == "second" else ""})
    kv = await js.key_value(f"{ns}_exo_topics")
    entry = json.loads((await kv.get(topic)).value)
    check({n: s["queue"] for n, s in entry["subscriptions"].items()} == {"first": first, "second": second}
          and entry["subscriptions"]["second"]["filter"] == "kind = 'order'",
          "the topic is a key of the bucket <namespace>_exo_topics holding its subscriptions")

    outbox = f"{ns}_exo_outbox"
    published = call("POST", f"{eqs}/api/v1/topics/{topic}/publish",
                     {"message": {"body": b64(b"\x00order\xff"), "attributes": {"kind": "order"}}})
    check(published.get("deliveries") == 2, "a publish matching both filters is delivered twice")
    for queue in (first, second):
        stream = f"{ns}_{queue}"
        raw = await js.get_msg(stream, (await js.stream_info(stream)).state.last_seq)
        headers = raw.headers or {}
        check(raw.data == b"\x00order\xff" and headers.get("kind") == "order" and headers.get("exo.topic") == topic
              and headers.get("exo.publish-id") == published["publishId"] == headers.get("Nats-Msg-Id"),
              f"its copy in {stream} is a stream message with the publish id as exo.publish-id and Nats-Msg-Id")
    check((await js.stream_info(outbox)).state.messages == 0, "the outbox holds nothing once the copies are stored")
    for queue in (first, second):
        drain_bodies(eqs, queue, {b"\x00order\xff"}, seconds=5)

    # What a proxy that died mid-fan-out leaves: the outbox message, published before the copies.
    # A drainer finishes it once it is 10 s old. A message there that is no publish is left alone.
    junk = await js.publish(f"{ns}.exo_outbox", b"not a publish")
    publish_id = f"left-{RUN}"
    await js.publish(f"{ns}.exo_outbox", b"left behind", headers={
        "Nats-Msg-Id": publish_id, "exo.outbox-queues": f"{first},{second}",
        "exo.topic": topic, "exo.publish-id": publish_id})
    for queue in (first, second):
        got = drain_bodies(eqs, queue, {b"left behind"}, seconds=30)
        check([body for body, _ in got] == [b"left behind"] and got[0][1].get("exo.publish-id") == publish_id,
              f"a left-over outbox message reaches {queue} (the drainer finished it)")
    # A left-over entry naming a queue no queue can be (a subscription written by hand) still
    # reaches the valid one; the bad name's copy is dropped, not the whole entry.
    odd_id = f"odd-{RUN}"
    await js.publish(f"{ns}.exo_outbox", b"odd queue", headers={
        "Nats-Msg-Id": odd_id, "exo.outbox-queues": f"{first},no such/queue",
        "exo.topic": topic, "exo.publish-id": odd_id})
    got = drain_bodies(eqs, first, {b"odd queue"}, seconds=30)
    check([body for body, _ in got] == [b"odd queue"],
          "a left-over outbox message that also names an invalid queue still reaches the valid one")
    for _ in range(50):  # the drainer deletes the entry just after storing the copy
        state = (await js.stream_info(outbox)).state
        if state.messages == 1:
            break
        await asyncio.sleep(0.1)
    check(state.messages == 1 and state.first_seq == junk.seq,
          "only the malformed message is left in the outbox, for a person to look at")
    await js.delete_msg(outbox, junk.seq)

    # kill -9 under a publish load: every acknowledged publish reaches both subscriptions.
    call("DELETE", f"{eqs}/api/v1/topics/{topic}/subscriptions/second")
    call("POST", f"{eqs}/api/v1/topics/{topic}/subscriptions", {"name": "second", "queue": second})
    acknowledged = publishes_killed(eqs_proxy, eqs_config, scratch, topic)
    print(f"       {(await js.stream_info(outbox)).state.messages} outbox message(s) left mid-fan-out by the kill")
    check_none_lost(eqs, (first, second), acknowledged)
    call("DELETE", f"{eqs}/api/v1/topics/{topic}")
    for queue in (first, second):
        call("DELETE", f"{eqs}/api/v1/queues/{queue}")
    await nc.close()


def restart(eqs_proxy, nats_server, scratch):
    """A private server killed -9 and restarted under a running eqs."""
    print("eqs across a NATS server kill -9 and restart (a private server)")
    port, eqs_port = free_port(), free_port()
    store = os.path.join(scratch, "jetstream")
    server_cmd = [nats_server, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", store]
    log = open(os.path.join(scratch, "nats-server.log"), "ab")
    server = subprocess.Popen(server_cmd, stdout=log, stderr=log)
    wait_for_port(port, "nats-server")
    config = os.path.join(scratch, "eqs.yaml")
    with open(config, "w") as f:
        f.write(f"backend:\n  kind: nats\n  url: nats://127.0.0.1:{port}\n  namespace: restart\n")
    proxy_log = open(os.path.join(scratch, "eqs-proxy.log"), "ab")
    proxy = subprocess.Popen([eqs_proxy, "--config", config, "--listen", f"127.0.0.1:{eqs_port}"],
                             stdout=proxy_log, stderr=proxy_log)
    try:
        wait_for_port(eqs_port, "eqs-proxy")
        eqs = f"http://127.0.0.1:{eqs_port}"
        call("POST", f"{eqs}/api/v1/queues", {"name": "kept"})
        sent = call("POST", f"{eqs}/api/v1/queues/kept/messages", {"message": {"body": b64(b"acknowledged")}})
        server.send_signal(signal.SIGKILL)
        server.wait()
        downs = []
        for _ in range(6):
            started = time.monotonic()
            try:
                call("POST", f"{eqs}/api/v1/queues/kept/messages/receive", {"maxMessages": 1})
                downs.append((None, 0.0))
            except RuntimeError as err:
                downs.append((str(err), time.monotonic() - started))
        down = downs[0][0]
        # Unavailable at once, or, while the client is still reconnecting, out of time: both retryable.
        check(down is not None and '"retryable":true' in down
              and ((": 503 " in down and "BACKEND_UNAVAILABLE" in down) or (": 504 " in down and "TIMEOUT" in down)),
              f"with the server down a call fails retryable (503 BACKEND_UNAVAILABLE or 504 TIMEOUT): {str(down)[:120]}")
        reconnecting = downs[1:5]
        check(all(d is not None and ": 503 " in d and "BACKEND_UNAVAILABLE" in d and t < 2.0 for d, t in reconnecting),
              "while the client reconnects, calls fail at once with 503 BACKEND_UNAVAILABLE (took "
              + ", ".join(f"{t * 1000:.0f}" for _, t in reconnecting) + " ms)")
        fast, took = downs[-1]
        check(fast is not None and "circuit open" in fast and ": 503 " in fast and took < 0.5,
              f"after 5 failures in a row the breaker fails the next call fast ({took * 1000:.0f} ms): {str(fast)[-110:]}")
        with urllib.request.urlopen(f"{eqs}/metrics", timeout=10) as r:
            metrics = r.read().decode()
        check('exo_breaker_open{backend="nats"} 1' in metrics, "the breaker's state is in /metrics")
        server = subprocess.Popen(server_cmd, stdout=log, stderr=log)
        wait_for_port(port, "nats-server (restarted)")
        out, failures = eventually("receive after the restart", lambda: call(
            "POST", f"{eqs}/api/v1/queues/kept/messages/receive", {"maxMessages": 10, "waitSeconds": 1}), tries=100)
        messages = (out or {}).get("messages", [])
        check([m.get("messageId") for m in messages] == [sent.get("messageId")]
              and base64.b64decode(messages[0]["body"]) == b"acknowledged",
              "after kill -9 and restart of the server eqs reconnects and delivers the acknowledged message")
        check(all(": 503 " in f and "BACKEND_UNAVAILABLE" in f for f in failures),
              f"calls in between failed retryable (503 BACKEND_UNAVAILABLE), if at all ({len(failures)})")
    finally:
        proxy.terminate()
        proxy.wait()
        server.terminate()
        server.wait()


def tls(eqs_proxy, nats_server, scratch):
    """eqs to a private server that speaks only TLS (a certificate of a throw-away CA)."""
    print("eqs over TLS to NATS (a private server)")
    tls_dir = os.path.join(scratch, "tls")
    ca, cert, key = make_certificates(tls_dir)
    port = free_port()
    log = open(os.path.join(scratch, "nats-server-tls.log"), "ab")
    server = subprocess.Popen([nats_server, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd",
                               os.path.join(tls_dir, "jetstream"), "--tls", "--tlscert", cert, "--tlskey", key],
                              stdout=log, stderr=log)
    try:
        wait_for_port(port, "nats-server (TLS)")

        def config(with_ca):
            path = os.path.join(tls_dir, f"eqs-{with_ca}.yaml")
            with open(path, "w") as f:
                f.write(f"backend:\n  kind: nats\n  url: tls://localhost:{port}\n  namespace: tls\n")
                if with_ca:
                    f.write(f"  ca-file: {ca}\n")
            return path

        def exercise(eqs):
            call("POST", f"{eqs}/api/v1/queues", {"name": "secure"})
            call("POST", f"{eqs}/api/v1/queues/secure/messages", {"message": {"body": b64(b"over tls")}})
            got = call("POST", f"{eqs}/api/v1/queues/secure/messages/receive", {"maxMessages": 1})
            check([base64.b64decode(m["body"]) for m in got.get("messages", [])] == [b"over tls"],
                  "a message goes through eqs to a TLS-only NATS server (tls:// URL, ca-file)")
        check_tls_proxy(eqs_proxy, config, tls_dir, exercise)
    finally:
        server.terminate()
        server.wait()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--eqs", required=True)
    parser.add_argument("--nats", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--eqs-proxy", required=True)
    parser.add_argument("--eqs-config", required=True, help="the config of --eqs, for a private proxy killed -9")
    parser.add_argument("--nats-server", required=True)
    parser.add_argument("--scratch", required=True)
    args = parser.parse_args()
    asyncio.run(native(args.eqs, args.nats, args.namespace))
    asyncio.run(handmade(args.eqs, args.nats, args.namespace))
    asyncio.run(topics(args.eqs, args.nats, args.namespace, args.eqs_proxy, args.eqs_config, args.scratch))
    restart(args.eqs_proxy, args.nats_server, args.scratch)
    tls(args.eqs_proxy, args.nats_server, args.scratch)
    finish()


if __name__ == "__main__":
    main()
