#!/usr/bin/env python3
"""A broker killed -9 under load and restarted, as the apps behind a proxy see it: for each of a
private RabbitMQ node (eqs `rabbitmq`), a private NATS JetStream server (eqs `nats`) and a private
Redis with AOF fsynced on every write (ekv `redis`), eight workers call the proxy's HTTP API
without pause (eqs: send, receive waiting up to 1 s, ack what came; ekv: put one of the worker's
own keys, get another); the server is killed -9 a few seconds in, left down ~6 s while the load
goes on, and restarted on the same port and data directory. Checked, per server:

  1. every error answer is retryable (`retryable: true` in its problem+json) — the non-retryable
     ones are printed with their status, reason and detail;
  2. calls in flight at the kill and calls made while the server is down answer within 5 s (not
     the proxy's 30 s request timeout; each call here waits up to 40 s so a hung one is measured);
  3. the proxy heals by itself: every kind of call succeeds again within 30 s of the server
     accepting connections again, the proxy never restarted;
  4. nothing acknowledged is lost: every send answered 200 is received (the queue is drained
     after the load), every key reads back its last acknowledged put (or a later put whose answer
     was an error: it may have been applied), and no read during the load went back to an older
     value.

Every server is private (free loopback ports, data under --work); the machine's shared servers
are never touched. Everything started here is stopped here, also on failure.

  broker_crash.py --bin-dir DIR --work DIR [--rabbitmq-server PATH] [--nats-server PATH]
      [--redis-server PATH] [--only rabbitmq|nats|redis]
"""

import argparse
import base64
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections import Counter

from harness import check, failures, free_port, request, start_proxy, until

WORKERS = 8
WARM_UP = 3.0  # seconds of load before the kill
OUTAGE = 6.0  # seconds the server stays down
CALL_TIMEOUT = 40  # per HTTP call: a hung call is measured as slow, not lost as an exception
SLOW = 5.0  # check 2: longest acceptable answer with the server down
HEAL_WITHIN = 30.0  # check 3
AFTER_HEAL = 3.0  # load kept on once healed
KEYS = 4  # ekv keys per worker


def b64(text):
    return base64.b64encode(text.encode()).decode()


def unb64(text):
    return base64.b64decode(text).decode(errors="replace")


# ---------------------------------------------------------------------------------------------
# Private servers


class Server:
    """A server process in a session of its own (kill -9 takes the whole group: RabbitMQ is a
    shell script, the Erlang VM and its helpers), restartable with the same arguments."""

    def __init__(self, name, argv, port, log, env=None, boot_seconds=30):
        self.name, self.argv, self.port, self.log, self.env = name, argv, port, log, env
        self.boot_seconds = boot_seconds
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(self.argv, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT,
                                     env=self.env, start_new_session=True)

    def accepting(self):
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            return True
        except OSError:
            return False

    def wait_accepting(self):
        if not until(lambda: self.accepting() or self.proc.poll() is not None, self.boot_seconds) \
                or not self.accepting():
            raise SystemExit(f"{self.name} did not listen on {self.port} within {self.boot_seconds} s "
                             f"(log: {self.log})")

    def kill9(self):
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.wait_group_gone()

    def wait_group_gone(self):
        """Until no process of the group is left (the Erlang VM dies after the script that
        started it) and the port is closed."""
        def gone():
            try:
                os.killpg(self.proc.pid, 0)
                return False
            except ProcessLookupError:
                return not self.accepting()
        if not until(gone, 30):
            raise SystemExit(f"{self.name}: processes of group {self.proc.pid} still alive 30 s after kill -9")

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # whatever of the group is left
        except ProcessLookupError:
            pass
        self.proc.wait()


def rabbitmq_server(path, home):
    """A private RabbitMQ node: its own node name, ports, database, logs and cookie ($HOME)."""
    port, dist_port = free_port(), free_port()
    conf = os.path.join(home, "conf")
    os.makedirs(conf)
    with open(os.path.join(conf, "rabbitmq.conf"), "w") as f:
        f.write(f"listeners.tcp.default = 127.0.0.1:{port}\n")
    with open(os.path.join(conf, "enabled_plugins"), "w") as f:
        f.write("[].\n")
    env = {**os.environ, "HOME": home,
           "RABBITMQ_NODENAME": f"exo-crash-{os.getpid()}@localhost", "RABBITMQ_DIST_PORT": str(dist_port),
           "RABBITMQ_CONFIG_FILE": os.path.join(conf, "rabbitmq"),
           "RABBITMQ_ADVANCED_CONFIG_FILE": os.path.join(conf, "advanced.config"),
           "RABBITMQ_MNESIA_BASE": os.path.join(home, "mnesia"), "RABBITMQ_LOG_BASE": os.path.join(home, "log"),
           "RABBITMQ_ENABLED_PLUGINS_FILE": os.path.join(conf, "enabled_plugins"),
           "RABBITMQ_PID_FILE": os.path.join(home, "pid"),
           "RABBITMQ_CONF_ENV_FILE": os.path.join(conf, "no-rabbitmq-env.conf")}
    server = Server("rabbitmq-server", [path], port, os.path.join(home, "server.log"), env, boot_seconds=120)
    return server, f"backend:\n  kind: rabbitmq\n  url: amqp://guest:guest@127.0.0.1:{port}/%2f\n  namespace: crash\n"


def nats_server(path, home):
    port = free_port()
    argv = [path, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", os.path.join(home, "jetstream")]
    server = Server("nats-server", argv, port, os.path.join(home, "server.log"))
    return server, f"backend:\n  kind: nats\n  url: nats://127.0.0.1:{port}\n  namespace: crash\n"


def redis_server(path, home):
    port = free_port()
    argv = [path, "--port", str(port), "--bind", "127.0.0.1", "--appendonly", "yes", "--appendfsync", "always",
            "--dir", os.path.join(home, "data"), "--save", ""]
    os.makedirs(os.path.join(home, "data"))
    server = Server("redis-server", argv, port, os.path.join(home, "server.log"))
    return server, f"backend:\n  kind: redis\n  url: redis://127.0.0.1:{port}/0\n  namespace: crash\n"


# ---------------------------------------------------------------------------------------------
# Calls under load


class Calls:
    """Every call the workers made: (op, started, ended, status, answer), monotonic seconds."""

    def __init__(self):
        self.lock = threading.Lock()
        self.records = []

    def call(self, op, method, url, body=None):
        started = time.monotonic()
        try:
            status, answer = request(method, url, body, timeout=CALL_TIMEOUT)
        except (OSError, http.client.HTTPException) as err:  # no HTTP answer at all (timeout, reset)
            status, answer = 0, {"reason": "NO_ANSWER", "detail": f"{type(err).__name__}: {err}", "retryable": False}
        ended = time.monotonic()
        with self.lock:
            self.records.append((op, started, ended, status, answer))
        return status, answer

    def snapshot(self):
        with self.lock:
            return list(self.records)


def describe(status, answer):
    if isinstance(answer, dict):
        return f"{status} {answer.get('reason', '?')}: {str(answer.get('detail', ''))[:240]}"
    return f"{status} (not JSON): {bytes(answer)[:160]!r}"


def retryable(answer):
    return isinstance(answer, dict) and answer.get("retryable") is True


def eqs_load(base, queue, calls, state):
    """A worker's loop: send a unique text, receive (waiting up to 1 s), ack what came."""

    def worker(w, stop):
        i = 0
        while not stop.is_set():
            text = f"w{w}-{i}"
            i += 1
            status, _ = calls.call("send", "POST", f"{base}/api/v1/queues/{queue}/messages",
                                   {"message": {"body": b64(text)}})
            with state["lock"]:
                state["attempted"].add(text)
                if status == 200:
                    state["acked"].add(text)
            status, answer = calls.call("receive", "POST", f"{base}/api/v1/queues/{queue}/messages/receive",
                                        {"maxMessages": 5, "waitSeconds": 1})
            if status != 200:
                time.sleep(0.05)
                continue
            for m in answer.get("messages", []):
                with state["lock"]:
                    state["received"][unb64(m["body"])] += 1
                calls.call("ack", "POST", f"{base}/api/v1/queues/{queue}/messages/ack", {"receipt": m["receipt"]})
    return worker


def ekv_load(base, table, calls, book):
    """A worker's loop over its own keys: put `key=i`, then get another of its keys and compare
    with the last put acknowledged for it before the get began."""

    def worker(w, stop):
        i = KEYS  # values 0..KEYS-1 were written before the load
        while not stop.is_set():
            key = f"w{w}-k{i % KEYS}"
            with book["lock"]:
                book["attempted"].setdefault(key, set()).add(i)
            status, _ = calls.call("put", "PUT", f"{base}/api/v1/tables/{table}/entries/{key}",
                                   {"value": b64(f"{key}={i}")})
            if status == 200:
                with book["lock"]:
                    book["acked"][key] = i
            else:
                time.sleep(0.05)
            other = f"w{w}-k{(i + 1) % KEYS}"
            with book["lock"]:
                floor = book["acked"].get(other)
            status, answer = calls.call("get", "GET", f"{base}/api/v1/tables/{table}/entries/{other}")
            if status == 200:
                got = int(unb64(answer["entry"]["value"]).rsplit("=", 1)[1])
                if floor is not None and got < floor:
                    book["went_back"].append(f"{other}: read {got} after {floor} was acknowledged")
            elif status == 404 and floor is not None:
                book["went_back"].append(f"{other}: 404 after {floor} was acknowledged")
            if status != 200:
                time.sleep(0.05)
            i += 1
    return worker


def phase(started, ended, t_kill, t_up, healed):
    if started < t_kill:
        return "in flight at the kill" if ended > t_kill else "before the kill"
    if started < t_up:
        return "server down"
    if healed is None or started < healed:
        return "server back, not healed"
    return "healed"


def healed_at(records, t_up, ops):
    """When every kind of call in `ops` had succeeded once after the server was back (the end of
    the last of those first successes), or None."""
    firsts = {}
    for op, started, ended, status, _ in records:
        if status == 200 and started >= t_up and op in ops:
            firsts[op] = min(firsts.get(op, ended), ended)
    return max(firsts.values()) if len(firsts) == len(ops) else None


def crash_under_load(name, server, worker, ops, calls):
    """The load, the kill -9, the outage, the restart; the load kept on until healed (or given
    up). Returns the timeline (t0, t_kill, t_restart, t_up, healed)."""
    stop = threading.Event()
    threads = [threading.Thread(target=worker, args=(w, stop), daemon=True) for w in range(WORKERS)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    try:
        time.sleep(WARM_UP)
        t_kill = time.monotonic()
        server.kill9()
        print(f"    killed -9 at +{t_kill - t0:.1f} s")
        time.sleep(OUTAGE)
        t_restart = time.monotonic()
        server.start()
        server.wait_accepting()
        t_up = time.monotonic()
        print(f"    restarted at +{t_restart - t0:.1f} s, accepting connections at +{t_up - t0:.1f} s")
        healed = None
        deadline = t_up + HEAL_WITHIN + 10
        while time.monotonic() < deadline:
            healed = healed_at(calls.snapshot(), t_up, ops)
            if healed is not None and time.monotonic() > healed + AFTER_HEAL:
                break
            time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=CALL_TIMEOUT + 5)
    return t0, t_kill, t_restart, t_up, healed


def report_and_check(name, records, timeline, ops, proxy, expected_refusal):
    """Checks 1-3 from the calls' records."""
    t0, t_kill, t_restart, t_up, healed = timeline
    by_phase = Counter()
    for op, started, ended, status, answer in records:
        by_phase[(phase(started, ended, t_kill, t_up, healed), status == 200)] += 1
    for p in ("before the kill", "in flight at the kill", "server down", "server back, not healed", "healed"):
        if by_phase[(p, True)] + by_phase[(p, False)]:
            print(f"    {p}: {by_phase[(p, True)]} ok, {by_phase[(p, False)]} errors")

    errors = [(op, started, ended, status, answer) for op, started, ended, status, answer in records
              if status != 200 and not expected_refusal(op, status, answer)]
    # Grouped with their numbers blanked (ports, delays, ids), each group shown by its first answer.
    answers, first = Counter(), {}
    for op, started, ended, status, answer in errors:
        group = (op, phase(started, ended, t_kill, t_up, healed), retryable(answer),
                 re.sub(r"\d+", "N", describe(status, answer)))
        answers[group] += 1
        first.setdefault(group, describe(status, answer))
    for group, n in sorted(answers.items(), key=lambda kv: -kv[1]):
        op, p, is_retryable, _ = group
        print(f"    {n:5d} x {op:7s} [{p}] {'retryable' if is_retryable else 'NOT RETRYABLE'}: {first[group]}")
    refused = Counter(op + " " + re.sub(r"\d+", "N", describe(status, answer)) for op, _, _, status, answer in records
                      if status != 200 and expected_refusal(op, status, answer))
    for text, n in refused.items():
        print(f"    {n:5d} x (expected, not counted) {text}")
    wrong = [(op, status, answer) for op, _, _, status, answer in errors if not retryable(answer)]
    check(not wrong, f"{name}: every error answer is retryable ({len(errors)} error answers, "
                     f"{len(wrong)} not retryable"
          + (": " + "; ".join(sorted({f'{op} {describe(s, a)}' for op, s, a in wrong})[:4]) if wrong else "") + ")")

    at_kill = [ended - started for _, started, ended, _, _ in records if started < t_kill < ended]
    down = [ended - started for _, started, ended, _, _ in records if t_kill <= started < t_up]
    slow = [x for x in at_kill + down if x > SLOW]
    back = [ended - started for _, started, ended, _, _ in records if started >= t_up and (healed is None or started < healed)]
    check(not slow and (at_kill or down),
          f"{name}: calls in flight at the kill ({len(at_kill)}, slowest {max(at_kill, default=0):.2f} s) and "
          f"with the server down ({len(down)}, slowest {max(down, default=0):.2f} s) answer within {SLOW:.0f} s "
          f"({len(slow)} slower)")
    slow_calls = sorted((r for r in records if r[1] < t_up and r[2] - r[1] > SLOW and r[2] > t_kill),
                        key=lambda r: r[1] - r[2])
    for op, started, ended, status, answer in slow_calls[:10]:
        print(f"    slow: {op:7s} started {started - t_kill:+.2f} s from the kill, answered after {ended - started:.2f} s: "
              f"{'200' if status == 200 else describe(status, answer)}")
    if len(slow_calls) > 10:
        print(f"    slow: … {len(slow_calls) - 10} more")
    print(f"    slowest call after the server was back, before healed: {max(back, default=0):.2f} s; "
          f"slowest of the whole run: {max((e - s for _, s, e, _, _ in records), default=0):.2f} s")

    after = [r for r in records if healed is not None and r[1] >= healed and r[3] != 200
             and not expected_refusal(r[0], r[3], r[4])]
    if healed is None:
        firsts = {op for op, started, _, status, _ in records if status == 200 and started >= t_up}
        check(False, f"{name}: the proxy heals by itself within {HEAL_WITHIN:.0f} s of the server being back "
                     f"(never healed in {HEAL_WITHIN + 10:.0f} s: no success after the restart for "
                     f"{', '.join(sorted(set(ops) - firsts))})")
    else:
        check(healed - t_up <= HEAL_WITHIN and proxy.poll() is None,
              f"{name}: the proxy heals by itself within {HEAL_WITHIN:.0f} s of the server being back "
              f"(took {healed - t_up:.1f} s after it accepted connections, {healed - t_restart:.1f} s after the "
              f"restart, {healed - t_kill:.1f} s after the kill; {len(after)} errors after that; proxy "
              f"{'never restarted' if proxy.poll() is None else 'EXITED'})")


# ---------------------------------------------------------------------------------------------
# The three servers


def eqs_scenario(name, bin_dir, home, server, config_text):
    config = os.path.join(home, "eqs.yaml")
    with open(config, "w") as f:
        f.write(config_text)
    server.start()
    proxy = None
    try:
        server.wait_accepting()
        proxy, base = start_proxy(os.path.join(bin_dir, "eqs-proxy"), config, os.path.join(home, "eqs-proxy.log"))
        queue = "crash"
        check(until(lambda: request("POST", f"{base}/api/v1/queues", {"name": queue}, timeout=10)[0] in (200, 201), 30),
              f"{name}: a queue")
        calls = Calls()
        state = {"lock": threading.Lock(), "attempted": set(), "acked": set(), "received": Counter()}
        ops = ("send", "receive")
        timeline = crash_under_load(name, server, eqs_load(base, queue, calls, state), ops, calls)
        records = calls.snapshot()
        print(f"    {len(records)} calls: {len(state['acked'])} sends acknowledged of {len(state['attempted'])}")
        # An ack of a delivery the broker already gave back (its connection dropped) is a definite
        # RECEIPT_STALE: the message comes again. Documented, so not counted as an error here.
        report_and_check(name, records, timeline, ops, proxy,
                         lambda op, status, answer: op == "ack" and isinstance(answer, dict)
                         and answer.get("reason") == "RECEIPT_STALE")

        missing = drain(base, queue, state)
        redelivered = sum(1 for n in state["received"].values() if n > 1)
        stored_anyway = len(set(state["received"]) - state["acked"])
        check(not missing, f"{name}: every acknowledged send is received ({len(missing)} of {len(state['acked'])} "
                           f"missing{': ' + ', '.join(sorted(missing)[:10]) if missing else ''}; {redelivered} "
                           f"received more than once, {stored_anyway} received whose send answered an error)")
    finally:
        if proxy is not None:
            proxy.terminate()
            proxy.wait(timeout=10)
        server.stop()


def drain(base, queue, state, quiet=35, cap=120):
    """Receives and acks until every acknowledged send was received, or nothing came for `quiet`
    seconds (longer than the 30 s visibility: deliveries whose ack failed come back), or `cap`
    seconds passed. What is still missing."""
    started = last_new = time.monotonic()
    while True:
        with state["lock"]:
            missing = state["acked"] - set(state["received"])
        now = time.monotonic()
        if not missing or now - last_new > quiet or now - started > cap:
            return missing
        try:
            status, answer = request("POST", f"{base}/api/v1/queues/{queue}/messages/receive",
                                     {"maxMessages": 10, "waitSeconds": 1}, timeout=CALL_TIMEOUT)
        except (OSError, http.client.HTTPException):
            status, answer = 0, {}
        for m in answer.get("messages", []) if status == 200 else []:
            text = unb64(m["body"])
            with state["lock"]:
                if text not in state["received"]:
                    last_new = time.monotonic()
                state["received"][text] += 1
            try:
                request("POST", f"{base}/api/v1/queues/{queue}/messages/ack", {"receipt": m["receipt"]}, timeout=10)
            except (OSError, http.client.HTTPException):
                pass
        if status != 200:
            time.sleep(0.2)


def redis_scenario(bin_dir, home, server, config_text):
    name = "redis"
    config = os.path.join(home, "ekv.yaml")
    with open(config, "w") as f:
        f.write(config_text)
    server.start()
    proxy = None
    try:
        server.wait_accepting()
        proxy, base = start_proxy(os.path.join(bin_dir, "ekv-proxy"), config, os.path.join(home, "ekv-proxy.log"))
        table = "crash"
        check(request("POST", f"{base}/api/v1/tables", {"name": table}, timeout=10)[0] in (200, 201), f"{name}: a table")
        book = {"lock": threading.Lock(), "attempted": {}, "acked": {}, "went_back": []}
        for w in range(WORKERS):
            for k in range(KEYS):
                key = f"w{w}-k{k}"
                request("PUT", f"{base}/api/v1/tables/{table}/entries/{key}", {"value": b64(f"{key}={k}")}, timeout=10)
                book["attempted"][key], book["acked"][key] = {k}, k
        calls = Calls()
        ops = ("put", "get")
        timeline = crash_under_load(name, server, ekv_load(base, table, calls, book), ops, calls)
        records = calls.snapshot()
        print(f"    {len(records)} calls: {sum(1 for r in records if r[0] == 'put' and r[3] == 200)} puts acknowledged "
              f"of {sum(1 for r in records if r[0] == 'put')}")
        # A 404 on a get is judged by check 4 (every key was written before the load).
        report_and_check(name, records, timeline, ops, proxy, lambda op, status, answer: op == "get" and status == 404)

        lost, later = [], 0
        for key, last in sorted(book["acked"].items()):
            status, answer = 0, {}
            for _ in range(50):
                try:
                    status, answer = request("GET", f"{base}/api/v1/tables/{table}/entries/{key}", timeout=10)
                except (OSError, http.client.HTTPException):
                    status = 0
                if status in (200, 404):
                    break
                time.sleep(0.2)
            if status != 200:
                lost.append(f"{key}: {describe(status, answer)} (last acknowledged {last})")
                continue
            got = int(unb64(answer["entry"]["value"]).rsplit("=", 1)[1])
            if got == last:
                continue
            if got > last and got in book["attempted"][key]:
                later += 1  # a put answered with an error, or none, that was applied after all
            else:
                lost.append(f"{key}: reads {got}, last acknowledged {last}")
        check(not lost and not book["went_back"],
              f"{name}: every key reads back its last acknowledged put ({len(lost)} of {len(book['acked'])} keys "
              f"lost or older{': ' + '; '.join(lost[:6]) if lost else ''}; {later} hold a later put whose answer "
              f"was an error; {len(book['went_back'])} reads during the load went back"
              f"{': ' + '; '.join(book['went_back'][:4]) if book['went_back'] else ''})")
    finally:
        if proxy is not None:
            proxy.terminate()
            proxy.wait(timeout=10)
        server.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin-dir", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--rabbitmq-server", default="/usr/lib/rabbitmq/bin/rabbitmq-server",
                        help="the broker's start script, run as this user for the private node")
    parser.add_argument("--nats-server", default=shutil.which("nats-server") or "nats-server")
    parser.add_argument("--redis-server", default=shutil.which("redis-server") or "redis-server")
    parser.add_argument("--only", choices=("rabbitmq", "nats", "redis"))
    args = parser.parse_args()
    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    started = time.monotonic()
    for name in ("rabbitmq", "nats", "redis"):
        if args.only not in (None, name):
            continue
        home = os.path.join(work, name)
        shutil.rmtree(home, ignore_errors=True)  # a fresh data directory per run, inside --work
        os.makedirs(home)
        print(f"{name}: killed -9 under a load of {WORKERS} workers, restarted on the same port and data")
        if name == "rabbitmq":
            server, config = rabbitmq_server(args.rabbitmq_server, home)
            eqs_scenario(name, args.bin_dir, home, server, config)
        elif name == "nats":
            server, config = nats_server(args.nats_server, home)
            eqs_scenario(name, args.bin_dir, home, server, config)
        else:
            server, config = redis_server(args.redis_server, home)
            redis_scenario(args.bin_dir, home, server, config)
    print(f"broker_crash: {time.monotonic() - started:.0f} s")
    if failures:
        raise SystemExit(f"broker_crash: {len(failures)} check(s) failed")
    print("broker_crash: every check passed")


if __name__ == "__main__":
    main()
