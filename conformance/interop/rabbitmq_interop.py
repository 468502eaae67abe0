"""eqs `rabbitmq` against a real RabbitMQ, as a native client (pika) sees it: what eqs sends is a
message pika reads with its properties and headers, what pika publishes to the queue a waiting eqs
receive gets, the server closing every connection of the vhost (`rabbitmqctl
close_all_connections`) gives back what eqs held and eqs reconnects by itself, and a proxy killed
-9 while holding a message loses nothing: the broker redelivers it. Attributes named like headers the
broker reads (CC, BCC, x-…) travel escaped and come back as sent; a native producer's typed headers
arrive as documented text. Topics: pika reads each
subscription's copy of one publish (BCC routing stripped, filters applied), and a private proxy
killed -9 under a publish load loses no acknowledged publish for either subscription. Last, eqs over amqps to a
private TLS-only node (a throw-away CA): served with `ca-file`, refused naming the certificate
without it.

    rabbitmq_interop.py --eqs URL --amqp amqp://guest:guest@127.0.0.1:5672/VHOST --vhost VHOST \
        --namespace NS --eqs-proxy PATH --config FILE --scratch DIR [--rabbitmq-server PATH]
"""

import argparse
import base64
import os
import signal
import subprocess
import threading
import time

import pika

from common import (b64, call, check, check_none_lost, check_tls_proxy, eventually, finish, free_port,
                    make_certificates, publishes_killed, refusal, wait_for_port)

RUN = f"{int(time.time())}"


def receive(eqs, name, **extra):
    return call("POST", f"{eqs}/api/v1/queues/{name}/messages/receive", {"maxMessages": 10, **extra}).get("messages", [])


def native(eqs, amqp, ns):
    print("RabbitMQ <-> eqs")
    connection = pika.BlockingConnection(pika.URLParameters(amqp))
    channel = connection.channel()
    name = f"interop-{RUN}"
    queue = f"{ns}.{name}"
    call("POST", f"{eqs}/api/v1/queues", {"name": name})
    declared = channel.queue_declare(queue, passive=True)
    check(declared.method.message_count == 0, f"a queue is the RabbitMQ queue <namespace>.<queue> ({queue})")

    body = b"\x00binary\xff body"
    sent = call("POST", f"{eqs}/api/v1/queues/{name}/messages",
                {"message": {"body": b64(body), "attributes": {"origin": "eqs", "x-death": "mine"}}})
    method, properties, got = channel.basic_get(queue, auto_ack=False)
    check(got == body, "a message sent through eqs is read by pika byte-exact")
    check(properties is not None and properties.message_id == sent.get("messageId")
          and properties.delivery_mode == 2, "its message_id property is the id eqs reported; it is persistent")
    headers = (properties.headers or {}) if properties else {}
    check(headers.get("origin") in (b"eqs", "eqs") and headers.get("exo.attr.x-death") in (b"mine", "mine"),
          "attributes are headers; one named like a broker header travels as exo.attr.<name>")
    if method:
        channel.basic_ack(method.delivery_tag)
    info = call("GET", f"{eqs}/api/v1/queues/{name}")["info"]
    check(int(info.get("visibleMessages", 0)) == 0, "a native ack removes it for eqs too")

    # A native producer publishes to the queue; a waiting eqs receive gets it.
    got = {}

    def wait():
        got["messages"] = receive(eqs, name, maxMessages=1, waitSeconds=10)
    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.5)
    started = time.monotonic()
    channel.basic_publish("", queue, b"from pika",
                          pika.BasicProperties(headers={"origin": "pika"}, delivery_mode=2), mandatory=True)
    waiter.join()
    waited = time.monotonic() - started
    messages = got.get("messages", [])
    check(len(messages) == 1 and base64.b64decode(messages[0]["body"]) == b"from pika"
          and messages[0].get("attributes") == {"origin": "pika"} and messages[0]["messageId"].startswith("rmq-"),
          "a message pika publishes reaches a waiting receive: headers as attributes, a content digest as id")
    check(waited < 2, f"the waiting receive answered {waited:.2f} s after the publish")
    for m in messages:
        call("POST", f"{eqs}/api/v1/queues/{name}/messages/ack", {"receipt": m["receipt"]})

    # A queue made by hand (a classic queue, no registry record) is served as it is.
    handmade = f"handmade-{RUN}"
    channel.queue_declare(f"{ns}.{handmade}", durable=True)
    channel.basic_publish("", f"{ns}.{handmade}", b"by hand", pika.BasicProperties(delivery_mode=2))
    got = receive(eqs, handmade, waitSeconds=5)
    check([base64.b64decode(m["body"]) for m in got] == [b"by hand"] and got[0]["dequeueCount"] == 1,
          "a classic queue made by hand with pika is received from through eqs")
    for m in got:
        call("POST", f"{eqs}/api/v1/queues/{handmade}/messages/ack", {"receipt": m["receipt"]})
    check(channel.basic_get(f"{ns}.{handmade}", auto_ack=True)[0] is None, "an ack through eqs removes it")
    refused = refusal("POST", f"{eqs}/api/v1/queues", {"name": handmade})
    check(": 409 " in refused and "QUEUE_ALREADY_EXISTS" in refused and "arguments" in refused,
          f"creating it through eqs says it exists with other arguments, changing nothing ({refused[-90:]})")
    check(channel.queue_declare(f"{ns}.{handmade}", passive=True).method.message_count == 0
          and receive(eqs, handmade) == [], "and it is still the same, usable queue")
    channel.queue_delete(f"{ns}.{handmade}")
    connection.close()
    return name


def reserved_headers(eqs, amqp, ns):
    """Attributes named like headers the broker reads (CC, BCC, x-…) travel escaped, so the broker
    neither routes by them nor closes the publishing channel; a native producer's typed headers
    (bytes, tables, arrays, decimals, void) arrive in their documented text forms."""
    print("RabbitMQ reserved header names and native header types")
    connection = pika.BlockingConnection(pika.URLParameters(amqp))
    channel = connection.channel()
    name, other = f"reserved-{RUN}", f"reserved-other-{RUN}"
    for queue in (name, other):
        call("POST", f"{eqs}/api/v1/queues", {"name": queue})
    reserved = {"CC": other, "BCC": other, "cc": "x", "X-Delay": "5000", "x-stream-filter-value": "f"}
    for attribute, value in reserved.items():
        sent = call("POST", f"{eqs}/api/v1/queues/{name}/messages",
                    {"message": {"body": b64(attribute.encode()), "attributes": {attribute: value}}})
        check(bool(sent.get("messageId")), f"a send with attribute {attribute!r} is stored")
    method, properties, body = channel.basic_get(f"{ns}.{name}", auto_ack=False)
    headers = (properties.headers or {}) if properties else {}
    check(body == b"CC" and headers.get("exo.attr.CC") in (other, other.encode()) and "CC" not in headers,
          "pika reads CC as exo.attr.CC: the broker did not route by it")
    if method:
        channel.basic_nack(method.delivery_tag, requeue=True)
    check(channel.queue_declare(f"{ns}.{other}", passive=True).method.message_count == 0,
          "no copy went to the queue a CC/BCC attribute named")
    got = {}
    for _ in range(10):
        for m in receive(eqs, name):
            got[base64.b64decode(m["body"]).decode()] = m.get("attributes", {})
            call("POST", f"{eqs}/api/v1/queues/{name}/messages/ack", {"receipt": m["receipt"]})
        if len(got) == len(reserved):
            break
    check(all(got.get(a) == {a: v} for a, v in reserved.items()),
          f"each comes back through eqs with its attribute as sent ({got})")
    # Publishing still works (the channel was never lost), on the same proxy.
    after = call("POST", f"{eqs}/api/v1/queues/{name}/messages", {"message": {"body": b64(b"after")}})
    check(bool(after.get("messageId")), "sends after them are served")
    for m in receive(eqs, name, waitSeconds=5):
        call("POST", f"{eqs}/api/v1/queues/{name}/messages/ack", {"receipt": m["receipt"]})

    # A topic with two subscriptions: a user's BCC attribute is the user's, not the routing.
    topic = f"reserved-topic-{RUN}"
    call("POST", f"{eqs}/api/v1/topics", {"name": topic})
    for sub, queue in (("one", f"reserved-t1-{RUN}"), ("two", f"reserved-t2-{RUN}")):
        call("POST", f"{eqs}/api/v1/topics/{topic}/subscriptions", {"name": sub, "queue": queue, "createQueue": {}})
    call("POST", f"{eqs}/api/v1/topics/{topic}/publish",
         {"message": {"body": b64(b"bcc"), "attributes": {"BCC": "mine", "CC": "also mine"}}})
    for queue in (f"reserved-t1-{RUN}", f"reserved-t2-{RUN}"):
        copies = receive(eqs, queue, waitSeconds=5)
        attributes = copies[0].get("attributes", {}) if copies else {}
        check(len(copies) == 1 and attributes.get("BCC") == "mine" and attributes.get("CC") == "also mine",
              f"{queue} got one copy with the user's BCC and CC attributes intact ({attributes})")
        for m in copies:
            call("POST", f"{eqs}/api/v1/queues/{queue}/messages/ack", {"receipt": m["receipt"]})
        call("DELETE", f"{eqs}/api/v1/queues/{queue}")
    call("DELETE", f"{eqs}/api/v1/topics/{topic}")

    # A native producer's typed headers.
    from decimal import Decimal
    channel.basic_publish("", f"{ns}.{name}", b"typed", pika.BasicProperties(delivery_mode=2, headers={
        "blob": b"\x00\x01\xfe\xff", "table": {"a": 1, "b": "two"}, "list": [1, "x", True],
        "price": Decimal("123.45"), "nothing": None, "flag": True, "count": 7}))
    typed = receive(eqs, name, waitSeconds=5)
    attributes = typed[0].get("attributes", {}) if typed else {}
    expected = {"blob": base64.b64encode(b"\x00\x01\xfe\xff").decode(), "exo.base64-attributes": "blob",
                "price": "123.45", "nothing": "null", "flag": "true", "count": "7"}
    check(all(attributes.get(k) == v for k, v in expected.items()),
          f"bytes arrive base64 (named in exo.base64-attributes), decimals, void, booleans, numbers as text ({attributes})")
    import json
    check(json.loads(attributes.get("table", "null")) == {"a": 1, "b": "two"}
          and json.loads(attributes.get("list", "null")) == [1, "x", True], "tables and arrays arrive as JSON")
    for m in typed:
        call("POST", f"{eqs}/api/v1/queues/{name}/messages/ack", {"receipt": m["receipt"]})
    for queue in (name, other):
        call("DELETE", f"{eqs}/api/v1/queues/{queue}")
    connection.close()


def registry_deleted(eqs, amqp, ns):
    """The registry stream is auxiliary: deleted by hand, queues are still served (sends,
    receives, acks) and the stream is made again for what needs it (listing, topics)."""
    print("RabbitMQ: the registry stream deleted under a running eqs")
    name = f"registry-{RUN}"
    call("POST", f"{eqs}/api/v1/queues", {"name": name})
    connection = pika.BlockingConnection(pika.URLParameters(amqp))
    connection.channel().queue_delete(f"{ns}._registry")
    connection.close()
    sent = [call("POST", f"{eqs}/api/v1/queues/{name}/messages", {"message": {"body": b64(f"m{i}".encode())}})
            for i in range(3)]
    check(all(s.get("messageId") for s in sent), "sends to an existing queue are served without the registry")
    got = []
    for _ in range(10):
        for m in receive(eqs, name, waitSeconds=1):
            got.append(m["messageId"])
            call("POST", f"{eqs}/api/v1/queues/{name}/messages/ack", {"receipt": m["receipt"]})
        if len(got) >= 3:
            break
    check(sorted(got) == sorted(s["messageId"] for s in sent), "and received and acked")
    listed, _ = eventually("list queues", lambda: call("GET", f"{eqs}/api/v1/queues"), tries=30)
    check(listed is not None, "listing works again: the registry stream was made again")
    call("DELETE", f"{eqs}/api/v1/queues/{name}")


def registry_blocked(eqs_proxy, amqp, scratch):
    """A registry stream that cannot be declared (its name taken by a classic queue made by
    hand) does not take the backend down: eqs starts and serves existing queues; what needs the
    registry answers 503 BACKEND_UNAVAILABLE naming it."""
    print("RabbitMQ: a registry stream that cannot be declared")
    ns = f"blocked{RUN}"
    connection = pika.BlockingConnection(pika.URLParameters(amqp))
    channel = connection.channel()
    channel.queue_declare(f"{ns}._registry", durable=True)  # a classic queue, not a stream
    channel.queue_declare(f"{ns}.made-by-hand", durable=True, arguments={"x-queue-type": "quorum"})
    config = os.path.join(scratch, "eqs-blocked.yaml")
    with open(config, "w") as f:
        f.write(f"backend:\n  kind: rabbitmq\n  url: {amqp}\n  namespace: {ns}\n")
    port = free_port()
    log = open(os.path.join(scratch, "eqs-proxy-blocked.log"), "ab")
    proxy = subprocess.Popen([eqs_proxy, "--config", config, "--listen", f"127.0.0.1:{port}"], stdout=log, stderr=log)
    try:
        wait_for_port(port, "eqs with a blocked registry")
        eqs = f"http://127.0.0.1:{port}"
        sent = call("POST", f"{eqs}/api/v1/queues/made-by-hand/messages", {"message": {"body": b64(b"served")}})
        got = receive(eqs, "made-by-hand", waitSeconds=5)
        check(bool(sent.get("messageId")) and [m["messageId"] for m in got] == [sent.get("messageId")],
              "eqs started and serves a queue while its registry stream cannot be declared")
        for m in got:
            call("POST", f"{eqs}/api/v1/queues/made-by-hand/messages/ack", {"receipt": m["receipt"]})
        refused = refusal("POST", f"{eqs}/api/v1/queues", {"name": "needs-registry"})
        check(": 503 " in refused and "BACKEND_UNAVAILABLE" in refused and "registry" in refused,
              f"creating a queue (which needs the registry) is 503 naming the registry ({refused[-120:]})")
    finally:
        proxy.terminate()
        proxy.wait(timeout=10)
        channel.queue_delete(f"{ns}._registry")
        channel.queue_delete(f"{ns}.made-by-hand")
        connection.close()


def server_closes_connections(eqs, vhost, name):
    print("eqs across rabbitmqctl close_all_connections")
    sent = call("POST", f"{eqs}/api/v1/queues/{name}/messages", {"message": {"body": b64(b"acknowledged")}})
    held = receive(eqs, name, visibilityTimeoutSeconds=300)
    check([m["messageId"] for m in held] == [sent.get("messageId")], "eqs holds the message (visibility 300 s)")
    closed = subprocess.run(["rabbitmqctl", "close_all_connections", "--vhost", vhost, "exoflow interop"],
                            capture_output=True, text=True, timeout=60)
    check(closed.returncode == 0, f"rabbitmqctl closed the vhost's connections ({closed.stderr.strip()[:100]})")
    out, failures = eventually("receive after the close", lambda: receive(eqs, name, waitSeconds=5), tries=100)
    messages = out or []
    check([m.get("messageId") for m in messages] == [sent.get("messageId")]
          and messages[0].get("dequeueCount") == 2,
          "eqs reconnects by itself and the message it held is delivered again (dequeue count 2)")
    check(all(": 503 " in f and "BACKEND_UNAVAILABLE" in f for f in failures),
          f"calls in between failed retryable (503 BACKEND_UNAVAILABLE), if at all ({len(failures)})")
    if held:
        try:
            call("POST", f"{eqs}/api/v1/queues/{name}/messages/ack", {"receipt": held[0]["receipt"]})
            stale = None
        except RuntimeError as err:
            stale = str(err)
        check(stale is not None and "RECEIPT_STALE" in stale, "the receipt from before the close is RECEIPT_STALE")
    for m in messages:
        call("POST", f"{eqs}/api/v1/queues/{name}/messages/ack", {"receipt": m["receipt"]})


def proxy_killed(eqs, eqs_proxy, config, scratch, name):
    print("a proxy killed -9 while it holds a message")
    port = free_port()
    log = open(os.path.join(scratch, "eqs-proxy-killed.log"), "ab")
    other = subprocess.Popen([eqs_proxy, "--config", config, "--listen", f"127.0.0.1:{port}"], stdout=log, stderr=log)
    try:
        second = f"http://127.0.0.1:{port}"
        wait_for_port(port, "the second eqs-proxy")
        sent = call("POST", f"{eqs}/api/v1/queues/{name}/messages", {"message": {"body": b64(b"held when killed")}})
        held = receive(second, name, visibilityTimeoutSeconds=300)
        check([m["messageId"] for m in held] == [sent.get("messageId")], "the second proxy holds it (visibility 300 s)")
        check(receive(eqs, name) == [], "while it is held nobody else gets it")
        other.send_signal(signal.SIGKILL)
        other.wait()
        out = receive(eqs, name, waitSeconds=10)
        check([m.get("messageId") for m in out] == [sent.get("messageId")],
              "after kill -9 of the proxy holding it the broker redelivers it at once, nothing lost")
        for m in out:
            call("POST", f"{eqs}/api/v1/queues/{name}/messages/ack", {"receipt": m["receipt"]})
    finally:
        if other.poll() is None:
            other.kill()
            other.wait()


def tls(eqs_proxy, rabbitmq_server, scratch):
    """eqs to a private RabbitMQ node that listens only with TLS (amqps)."""
    print("eqs over amqps to RabbitMQ (a private node)")
    tls_dir = os.path.join(scratch, "tls")
    ca, cert, key = make_certificates(tls_dir)
    port, dist_port = free_port(), free_port()
    with open(os.path.join(tls_dir, "rabbitmq.conf"), "w") as f:
        f.write(f"listeners.tcp = none\nlisteners.ssl.default = 127.0.0.1:{port}\n"
                f"ssl_options.cacertfile = {ca}\nssl_options.certfile = {cert}\nssl_options.keyfile = {key}\n"
                "ssl_options.verify = verify_none\nssl_options.fail_if_no_peer_cert = false\n")
    with open(os.path.join(tls_dir, "enabled_plugins"), "w") as f:
        f.write("[].\n")
    env = {**os.environ, "RABBITMQ_NODENAME": f"exo-tls-{RUN}@localhost", "RABBITMQ_DIST_PORT": str(dist_port),
           "RABBITMQ_CONFIG_FILE": os.path.join(tls_dir, "rabbitmq"),
           "RABBITMQ_MNESIA_BASE": os.path.join(tls_dir, "mnesia"), "RABBITMQ_LOG_BASE": os.path.join(tls_dir, "log"),
           "RABBITMQ_ENABLED_PLUGINS_FILE": os.path.join(tls_dir, "enabled_plugins"),
           "RABBITMQ_PID_FILE": os.path.join(tls_dir, "pid"),
           "RABBITMQ_CONF_ENV_FILE": os.path.join(tls_dir, "no-rabbitmq-env.conf")}
    log = open(os.path.join(tls_dir, "rabbitmq-server.log"), "ab")
    # Its own session: the script starts the Erlang VM as a child, and both go at the end.
    server = subprocess.Popen([rabbitmq_server], stdout=log, stderr=log, env=env, start_new_session=True)
    try:
        wait_for_port(port, "rabbitmq-server (TLS)", seconds=90)

        def config(with_ca):
            path = os.path.join(tls_dir, f"eqs-{with_ca}.yaml")
            with open(path, "w") as f:
                f.write(f"backend:\n  kind: rabbitmq\n  url: amqps://guest:guest@localhost:{port}/%2f\n"
                        "  namespace: tls\n")
                if with_ca:
                    f.write(f"  ca-file: {ca}\n")
            return path

        def exercise(eqs):
            call("POST", f"{eqs}/api/v1/queues", {"name": "secure"})
            call("POST", f"{eqs}/api/v1/queues/secure/messages", {"message": {"body": b64(b"over amqps")}})
            got = receive(eqs, "secure", waitSeconds=5)
            check([base64.b64decode(m["body"]) for m in got] == [b"over amqps"],
                  "a message goes through eqs to a TLS-only RabbitMQ (amqps:// URL, ca-file)")
        check_tls_proxy(eqs_proxy, config, tls_dir, exercise)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def topics(eqs, amqp, ns, eqs_proxy, config, scratch):
    print("RabbitMQ topics: one publish, BCC to every subscription's queue")
    connection = pika.BlockingConnection(pika.URLParameters(amqp))
    channel = connection.channel()
    topic, a, b = f"events-{RUN}", f"sub-a-{RUN}", f"sub-b-{RUN}"
    call("POST", f"{eqs}/api/v1/topics", {"name": topic})
    for name, queue, flt in (("all", a, ""), ("eu-only", b, "region = 'eu'")):
        call("POST", f"{eqs}/api/v1/topics/{topic}/subscriptions", {"name": name, "queue": queue, "filter": flt, "createQueue": {}})
    published = call("POST", f"{eqs}/api/v1/topics/{topic}/publish",
                     {"message": {"body": b64(b"\x00to both"), "attributes": {"region": "eu"}}})
    for queue in (a, b):
        method, properties, body = channel.basic_get(f"{ns}.{queue}", auto_ack=True)
        headers = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in ((properties.headers or {}) if properties else {}).items()}
        check(body == b"\x00to both" and headers.get("exo.topic") == topic
              and headers.get("exo.publish-id") == published.get("publishId") and headers.get("region") == "eu",
              f"pika reads the copy in {ns}.{queue}: the body, the attributes, exo.topic and exo.publish-id as headers")
        check("BCC" not in headers and "CC" not in headers, f"the broker stripped the BCC routing header ({queue})")
    call("POST", f"{eqs}/api/v1/topics/{topic}/publish", {"message": {"body": b64(b"us"), "attributes": {"region": "us"}}})
    time.sleep(0.3)
    check(channel.queue_declare(f"{ns}.{b}", passive=True).method.message_count == 0, "the filtered queue got no us message")
    check(channel.queue_declare(f"{ns}.{a}", passive=True).method.message_count == 1, "the unfiltered queue got it")
    channel.queue_purge(f"{ns}.{a}")

    # kill -9 under a publish load: every acknowledged publish reaches both subscriptions.
    call("DELETE", f"{eqs}/api/v1/topics/{topic}/subscriptions/eu-only")
    call("POST", f"{eqs}/api/v1/topics/{topic}/subscriptions", {"name": "eu-only", "queue": b})
    acknowledged = publishes_killed(eqs_proxy, config, scratch, topic)
    check_none_lost(eqs, (a, b), acknowledged)
    call("DELETE", f"{eqs}/api/v1/topics/{topic}")
    for queue in (a, b):
        call("DELETE", f"{eqs}/api/v1/queues/{queue}")
    connection.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--eqs", required=True)
    parser.add_argument("--amqp", required=True)
    parser.add_argument("--vhost", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--eqs-proxy", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--scratch", required=True)
    parser.add_argument("--rabbitmq-server", default="/usr/lib/rabbitmq/bin/rabbitmq-server",
                        help="the broker's start script, run as this user for the private TLS node")
    args = parser.parse_args()
    name = native(args.eqs, args.amqp, args.namespace)
    reserved_headers(args.eqs, args.amqp, args.namespace)
    registry_deleted(args.eqs, args.amqp, args.namespace)
    registry_blocked(args.eqs_proxy, args.amqp, args.scratch)
    topics(args.eqs, args.amqp, args.namespace, args.eqs_proxy, args.config, args.scratch)
    server_closes_connections(args.eqs, args.vhost, name)
    proxy_killed(args.eqs, args.eqs_proxy, args.config, args.scratch, name)
    call("DELETE", f"{args.eqs}/api/v1/queues/{name}")
    tls(args.eqs_proxy, args.rabbitmq_server, args.scratch)
    finish()


if __name__ == "__main__":
    main()
