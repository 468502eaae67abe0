#!/usr/bin/env python3
"""Passwords of Redis, RabbitMQ and NATS rotated on disk are used without a restart (issue 13):
each proxy runs with `password: file:…`; the server's password changes and the proxy's
connections are closed from the server side; until the file has the new password reconnects are
refused, once it has, the proxy connects and serves again — never restarted.

- Redis: an ACL user of its own on this machine's Redis (deleted after). Redis also keeps open
  connections authenticated, so the proxy's live connection is checked to take the new password
  (AUTH again) before it is cut.
- RabbitMQ: a user and a vhost of its own on this machine's RabbitMQ (rabbitmqctl; deleted after).
- NATS: a private nats-server with a password in its config file, reloaded with SIGHUP (the
  machine's NATS has no authentication to rotate).

Run by scripts/test:
  broker_rotation.py --bin-dir DIR --work DIR [--redis URL] [--amqp URL] [--nats-server PATH]
"""

import argparse
import base64
import os
import signal
import subprocess
import time
import urllib.parse

from harness import check, failures, free_port, request, start_proxy, until

RUN = f"exo-rot-{os.getpid()}"
BODY = base64.b64encode(b"v").decode()


def write_secret(path, value):
    with open(path + ".new", "w") as f:
        f.write(value + "\n")
    os.replace(path + ".new", path)


def rotate(name, serve, change_server, cut, secret, log):
    """The shared sequence: serving with the first password; the server's password changed and
    the proxy's connections cut; refused until the file has the new one; serving again after."""
    check(until(serve, 10), f"{name}: serves with the first password")
    change_server()
    cut()
    time.sleep(6)  # past the 5 s re-read interval: the file is read again, unchanged
    check(not until(serve, 3), f"{name}: reconnects with the old password are refused")
    write_secret(secret, "second-password")
    started = time.monotonic()
    check(until(serve, 20), f"{name}: serves again with the new password without a restart "
                            f"(after {time.monotonic() - started:.1f} s)")
    text = open(log, errors="replace").read()
    check("second-password" not in text and "first-password" not in text, f"{name}: no password in its log")


def redis_rotation(args, work):
    user = RUN
    url = urllib.parse.urlsplit(args.redis)
    cli = ["redis-cli", "-h", url.hostname or "127.0.0.1", "-p", str(url.port or 6379)]

    def redis(*words):
        return subprocess.run([*cli, *words], check=True, capture_output=True, text=True).stdout.strip()

    redis("ACL", "SETUSER", user, "on", ">first-password", "allkeys", "+@all")
    secret = os.path.join(work, "redis-password")
    write_secret(secret, "first-password")
    config = os.path.join(work, "ekv-redis.yaml")
    with open(config, "w") as f:
        f.write(f"backend:\n  kind: redis\n  url: redis://{user}@{url.hostname}:{url.port or 6379}/0\n"
                f"  namespace: {RUN}\n  password: file:{secret}\n")
    log = os.path.join(work, "ekv-redis.log")
    proc, base = start_proxy(os.path.join(args.bin_dir, "ekv-proxy"), config, log)
    try:
        check(request("POST", f"{base}/api/v1/tables", {"name": "rotating"})[0] in (200, 201), "redis: a table")

        def put():
            return request("PUT", f"{base}/api/v1/tables/rotating/entries/k", {"value": BODY})[0] == 200

        check(until(put, 10), "redis: serves with the first password")
        # The open connection sends AUTH again when the file changes. Redis keeps a connection
        # authenticated whatever AUTH it sends later, so the way to see the AUTH is a wrong one:
        # Redis logs the failure (ACL LOG), and the connection goes on serving.
        redis("ACL", "LOG", "RESET")
        write_secret(secret, "not-the-password")
        seen = until(lambda: user in redis("ACL", "LOG") and "auth" in redis("ACL", "LOG"), 15)
        check(seen, "redis: the open connection authenticated again when the file changed")
        check(put(), "redis: and a wrong new password does not break the open connection")
        write_secret(secret, "first-password")
        time.sleep(6)
        rotate("redis", put,
               lambda: redis("ACL", "SETUSER", user, "resetpass", ">second-password"),
               lambda: redis("CLIENT", "KILL", "USER", user),
               secret, log)
        check(proc.poll() is None, "redis: the proxy never restarted")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        keys = redis("--scan", "--pattern", f"{RUN}:*").split()
        if keys:
            redis("DEL", *keys)
        redis("ACL", "DELUSER", user)


def rabbitmq_rotation(args, work):
    user, vhost = RUN, RUN

    def ctl(*words):
        subprocess.run(["timeout", "60", "rabbitmqctl", "-q", *words], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    url = urllib.parse.urlsplit(args.amqp)
    ctl("add_vhost", vhost)
    ctl("add_user", user, "first-password")
    ctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
    secret = os.path.join(work, "amqp-password")
    write_secret(secret, "first-password")
    config = os.path.join(work, "eqs-rabbitmq.yaml")
    with open(config, "w") as f:
        f.write(f"backend:\n  kind: rabbitmq\n  url: amqp://{user}@{url.hostname}:{url.port or 5672}/{vhost}\n"
                f"  namespace: rot\n  password: file:{secret}\n")
    log = os.path.join(work, "eqs-rabbitmq.log")
    proc, base = start_proxy(os.path.join(args.bin_dir, "eqs-proxy"), config, log)
    try:
        check(request("POST", f"{base}/api/v1/queues", {"name": "rotating"})[0] in (200, 201), "rabbitmq: a queue")

        def send():
            return request("POST", f"{base}/api/v1/queues/rotating/messages", {"message": {"body": BODY}})[0] == 200

        rotate("rabbitmq", send,
               lambda: ctl("change_password", user, "second-password"),
               lambda: ctl("close_all_user_connections", user, "password rotated"),
               secret, log)
        check(proc.poll() is None, "rabbitmq: the proxy never restarted")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        ctl("delete_vhost", vhost)
        ctl("delete_user", user)


def nats_rotation(args, work):
    port = free_port()
    store = os.path.join(work, "nats-store")
    server_config = os.path.join(work, "nats-server.conf")

    def write_server_config(password):
        with open(server_config, "w") as f:
            f.write(f'port: {port}\nhost: 127.0.0.1\njetstream {{ store_dir: "{store}" }}\n'
                    f'authorization {{ users = [ {{ user: exo, password: "{password}" }} ] }}\n')

    write_server_config("first-password")
    server = subprocess.Popen([args.nats_server, "-c", server_config],
                              stdout=open(os.path.join(work, "nats-server.log"), "ab"), stderr=subprocess.STDOUT)
    secret = os.path.join(work, "nats-password")
    write_secret(secret, "first-password")
    config = os.path.join(work, "eqs-nats.yaml")
    with open(config, "w") as f:
        f.write(f"backend:\n  kind: nats\n  url: nats://127.0.0.1:{port}\n  namespace: rot\n"
                f"  user: exo\n  password: file:{secret}\n")
    log = os.path.join(work, "eqs-nats.log")
    proc = None
    try:
        time.sleep(1)
        proc, base = start_proxy(os.path.join(args.bin_dir, "eqs-proxy"), config, log)
        check(request("POST", f"{base}/api/v1/queues", {"name": "rotating"})[0] in (200, 201), "nats: a queue")

        def send():
            return request("POST", f"{base}/api/v1/queues/rotating/messages", {"message": {"body": BODY}},
                           timeout=5)[0] == 200

        def change():
            write_server_config("second-password")
            server.send_signal(signal.SIGHUP)  # reload: clients no longer authorised are closed

        rotate("nats", send, change, lambda: None, secret, log)
        check(proc.poll() is None, "nats: the proxy never restarted")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
        server.terminate()
        server.wait(timeout=10)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin-dir", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--amqp", default="amqp://127.0.0.1:5672")
    parser.add_argument("--nats-server", default="nats-server")
    args = parser.parse_args()
    os.makedirs(args.work, exist_ok=True)
    work = os.path.abspath(args.work)
    print("redis"); redis_rotation(args, work)
    print("rabbitmq"); rabbitmq_rotation(args, work)
    print("nats"); nats_rotation(args, work)
    if failures:
        raise SystemExit(f"broker_rotation: {len(failures)} check(s) failed")
    print("broker_rotation: every check passed")


if __name__ == "__main__":
    main()
