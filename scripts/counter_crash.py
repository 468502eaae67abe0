#!/usr/bin/env python3
"""ekv-proxy killed -9 during 16 concurrent incrementers loses no acknowledged increment: for
each of the `embedded` (SQLite file), `postgres` (a schema of its own on the machine's server,
dropped after) and `redis` (a private redis-server, AOF fsynced on every write) backends, 16
threads increment one counter over HTTP without pause, each by its own delta (1 << thread, all
positive); the proxy is killed -9 a moment in, restarted on the same port and data, and the load
goes on a moment more. Every call is booked as

  acknowledged  200 with a value: applied;
  not applied   no connection (the proxy was down: nothing sent), or 429 THROTTLED (documented
                to write nothing);
  unknown       anything else: a connection reset with the request sent (in flight at the
                kill), or an error answer; it may or may not have applied.

The proxy is stopped and the counter read natively (the sqlite3 module on the file, psycopg with
convert_from(value, 'UTF8')::bigint, redis-py HGET <ns>:e:<table>:<key> v). Checked, per backend:

  1. the load was real: increments acknowledged before the kill and after the restart;
  2. the final value is at least the sum of the acknowledged deltas and at most that plus the sum
     of the unknown ones, equal when nothing is unknown, and what it exceeds the acknowledged sum
     by is a sum of some of the unknown deltas;
  3. increments are atomic and nothing acknowledged went back: every acknowledged answer is a
     distinct value (all deltas are positive), every value answered after the restart is above
     every value answered before the kill, and none is above the final value;
  4. ekv serves what the native client reads (its Get before the stop equals the native value).

--plant makes the driver book wrongly, to show the checks can fail: `bogus-ack` books one
acknowledged increment that was never sent, of 1 << 16 (more than all threads' deltas together,
so no in-flight increment that applied can make up for it: the final value falls short of the
acknowledged sum); `forget-unknowns` drops the unknown calls from the books (the final value then
exceeds the acknowledged sum whenever an in-flight increment had applied).

What the final value cannot tell: an acknowledged increment lost while the same thread's
in-flight one applied (both of the same delta) adds up to the same value; checks 2 and 3 catch a
loss that no set of unknown increments accounts for.

Run by scripts/test with the interop venv's Python (psycopg, redis-py); everything started here is
stopped here, also on failure, and the machine's shared servers are only used for the schema of
this run, which is dropped.

  counter_crash.py --bin-dir DIR --work DIR [--postgres URL] [--redis-server PATH]
      [--only embedded|postgres|redis] [--plant bogus-ack|forget-unknowns]
"""

import argparse
import base64
import http.client
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from collections import Counter

import psycopg
import redis

from harness import check, failures, free_port, request, until

THREADS = 16
WARM_UP = 1.5  # seconds of load before the kill
DOWN = 0.5  # seconds the proxy stays down
AFTER = 1.5  # seconds of load once the restarted proxy is ready
CALL_TIMEOUT = 30
TABLE = "counters"
KEY = "hits"


# ---------------------------------------------------------------------------------------------
# The proxy, on one port across the restart


class Proxy:
    def __init__(self, binary, config, port, log):
        self.binary, self.config, self.port, self.log = binary, config, port, log
        self.base = f"http://127.0.0.1:{port}"
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([self.binary, "--config", self.config, "--listen", f"127.0.0.1:{self.port}"],
                                     stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)

        def ready():
            try:
                return request("GET", f"{self.base}/readyz", timeout=2)[0] == 200
            except OSError:
                return self.proc.poll() is not None
        if not until(ready, 20) or self.proc.poll() is not None:
            self.stop()
            raise SystemExit(f"{self.binary} did not become ready on {self.port} (log: {self.log})")

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def increment(port, delta):
    """One increment over HTTP on a fresh connection: (outcome, value or None, detail)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=CALL_TIMEOUT)
    try:
        try:
            conn.connect()
        except OSError as err:  # no connection: nothing was sent
            return "not applied", None, f"connect: {type(err).__name__}"
        try:
            conn.request("POST", f"/api/v1/tables/{TABLE}/increment", json.dumps({"key": KEY, "delta": delta}),
                         {"content-type": "application/json"})
            response = conn.getresponse()
            status, text = response.status, response.read()
        except (OSError, http.client.HTTPException) as err:  # sent, then the connection failed
            return "unknown", None, f"no answer: {type(err).__name__}"
    finally:
        conn.close()
    try:
        answer = json.loads(text)
    except ValueError:
        answer = None
    answer = answer if isinstance(answer, dict) else {}
    if status == 200 and isinstance(answer.get("value"), str):
        return "acknowledged", int(answer["value"]), ""
    reason = answer.get("reason", "?")
    if status == 429 and reason == "THROTTLED":
        return "not applied", None, "429 THROTTLED"
    return "unknown", None, f"{status} {reason}"


# ---------------------------------------------------------------------------------------------
# The load, the kill, the restart


def crash_under_load(proxy):
    """The calls [(thread, delta, started, ended, outcome, value, detail)] and when the kill was."""
    calls, lock, stop = [], threading.Lock(), threading.Event()

    def worker(w):
        delta = 1 << w
        while not stop.is_set():
            started = time.monotonic()
            outcome, value, detail = increment(proxy.port, delta)
            with lock:
                calls.append((w, delta, started, time.monotonic(), outcome, value, detail))
            if outcome != "acknowledged":
                time.sleep(0.02)

    threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(THREADS)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    try:
        time.sleep(WARM_UP)
        t_kill = time.monotonic()
        proxy.kill9()
        time.sleep(DOWN)
        proxy.start()
        t_up = time.monotonic()
        print(f"    killed -9 at +{t_kill - t0:.1f} s, restarted and ready at +{t_up - t0:.1f} s")
        time.sleep(AFTER)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=CALL_TIMEOUT + 5)
    return calls, t_kill


def subset_sums(deltas):
    """Every sum of a subset of `deltas`, as a bit set (bit n set: n is such a sum)."""
    sums = 1
    for d in deltas:
        sums |= sums << d
    return sums


def judge(name, calls, t_kill, final, served, plant):
    """Checks 1-4 from the books; the summary line."""
    acked = [c for c in calls if c[4] == "acknowledged"]
    unknown = [c for c in calls if c[4] == "unknown"]
    refused = [c for c in calls if c[4] == "not applied"]
    if plant == "bogus-ack":
        acked.append((THREADS, 1 << THREADS, t_kill, t_kill, "acknowledged", None, "planted"))
    elif plant == "forget-unknowns":
        unknown = []
    low = sum(c[1] for c in acked)
    high = low + sum(c[1] for c in unknown)
    before = [c[5] for c in acked if c[5] is not None and c[2] < t_kill]
    after = [c[5] for c in acked if c[5] is not None and c[2] >= t_kill]
    values = before + after

    details = Counter(c[6] for c in unknown + refused)
    print(f"    {len(calls)} calls: {len(before)} acknowledged before the kill, {len(after)} after the restart, "
          f"{len(unknown)} unknown, {len(refused)} not applied"
          + (f" ({', '.join(f'{n} x {d}' for d, n in details.most_common())})" if details else ""))
    check(len(before) >= 20 and len(after) >= 20,
          f"{name}: the load was real ({len(before)} increments acknowledged before the kill, {len(after)} after "
          f"the restart)")

    gap = final - low if isinstance(final, int) else None
    deltas = [c[1] for c in unknown]
    # The deltas are distinct powers of two when each thread had at most one call unknown: the
    # gap's bits then name the ones that applied.
    applied = f", {bin(gap).count('1')} of them applied" if gap is not None and gap >= 0 \
        and len(set(deltas)) == len(deltas) else ""
    if not unknown:
        bound = "exactly the acknowledged sum (nothing unknown)"
        held = gap == 0
    else:
        bound = (f"in [acknowledged {low}, acknowledged + unknown {high}] and {gap} above the acknowledged sum, "
                 f"a sum of unknown deltas{applied}")
        held = gap is not None and 0 <= gap <= high - low and (subset_sums(deltas) >> gap) & 1 == 1
    check(held, f"{name}: no acknowledged increment lost: the final value {final} (read natively) is {bound}")

    went_back = [v for v in after if before and v <= max(before)]
    check(len(set(values)) == len(values) and not went_back and isinstance(final, int)
          and max(values, default=0) <= final,
          f"{name}: every acknowledged value is distinct ({len(values) - len(set(values))} repeated), every value "
          f"after the restart is above the {max(before, default=None)} answered before the kill "
          f"({len(went_back)} not), none above the final value (highest {max(values, default=None)})")
    check(served == final, f"{name}: ekv's Get before the stop served {served}, the native read {final}")
    return (f"{name}: final {final}; {len(acked)} acknowledged (sum {low}), {len(unknown)} unknown "
            f"(sum {high - low}){applied}, {len(refused)} not applied")


# ---------------------------------------------------------------------------------------------
# The backends: each (ekv config, the native read of the counter, what stops or drops what it made)


def counter_text(name, raw):
    """The counter a native value holds (its canonical decimal text), or None when absent."""
    if raw is None:
        return None
    text = bytes(raw).decode()
    canonical = text.lstrip("-").isdigit() and str(int(text)) == text
    check(canonical, f"{name}: the stored value {text!r} is a counter's decimal text")
    return int(text) if canonical else text


def embedded(home, _args):
    path = os.path.join(home, "ekv.db")

    def native():
        db = sqlite3.connect(path)
        try:
            check(db.execute("PRAGMA integrity_check").fetchone()[0] == "ok",
                  "embedded: the SQLite file passes PRAGMA integrity_check")
            row = db.execute("SELECT e.value FROM kv_entries e JOIN kv_tables t ON t.id = e.table_id "
                             "WHERE t.name = ? AND e.key = ?", (TABLE, KEY.encode())).fetchone()
        finally:
            db.close()
        return counter_text("embedded", row[0] if row else None)
    return f"backend:\n  kind: embedded\n  path: {path}\n", native, lambda: None


def postgres(_home, args):
    url, schema = args.postgres, f"exo_counter_crash_{int(time.time())}_{os.getpid()}"

    def native():
        with psycopg.connect(url, autocommit=True) as db:
            row = db.execute(f"SELECT convert_from(value, 'UTF8')::bigint, value FROM {schema}.kv_entries "
                             "WHERE table_name = %s AND key = %s", (TABLE, KEY.encode())).fetchone()
        if row is None:
            return None
        check(counter_text("postgres", row[1]) == row[0],
              f"postgres: convert_from(value, 'UTF8')::bigint reads {row[0]}, the value's text")
        return row[0]

    def drop():
        with psycopg.connect(url, autocommit=True) as db:
            db.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    return f"backend:\n  kind: postgres\n  url: {url}\n  schema: {schema}\n", native, drop


def private_redis(home, args):
    """A private redis-server with AOF fsynced on every write, on a free port."""
    port, data = free_port(), os.path.join(home, "data")
    os.makedirs(data)
    server = subprocess.Popen([args.redis_server, "--port", str(port), "--bind", "127.0.0.1", "--appendonly", "yes",
                               "--appendfsync", "always", "--save", "", "--dir", data],
                              stdout=open(os.path.join(home, "redis-server.log"), "ab"), stderr=subprocess.STDOUT)

    def stop():
        server.terminate()
        server.wait(timeout=10)

    def up():
        try:
            return redis.Redis(port=port).ping()
        except redis.exceptions.ConnectionError:
            return server.poll() is not None
    if not until(up, 20) or server.poll() is not None:
        stop()
        raise SystemExit(f"redis-server did not start on {port} (log in {home})")
    namespace = "crash"

    def native():
        return counter_text("redis", redis.Redis(port=port).hget(f"{namespace}:e:{TABLE}:{KEY}", "v"))
    return f"backend:\n  kind: redis\n  url: redis://127.0.0.1:{port}/0\n  namespace: {namespace}\n", native, stop


BACKENDS = {"embedded": embedded, "postgres": postgres, "redis": private_redis}


def scenario(name, bin_dir, home, config_text, native, plant):
    config = os.path.join(home, "ekv.yaml")
    with open(config, "w") as f:
        f.write(config_text)
    proxy = Proxy(os.path.join(bin_dir, "ekv-proxy"), config, free_port(), os.path.join(home, "ekv-proxy.log"))
    proxy.start()
    try:
        check(request("POST", f"{proxy.base}/api/v1/tables", {"name": TABLE}, timeout=10)[0] in (200, 201),
              f"{name}: a table")
        calls, t_kill = crash_under_load(proxy)
        status, answer = request("GET", f"{proxy.base}/api/v1/tables/{TABLE}/entries/{KEY}", timeout=10)
        served = int(base64.b64decode(answer["entry"]["value"])) if status == 200 else f"{status} {answer}"
    finally:
        proxy.stop()
    return judge(name, calls, t_kill, native(), served, plant)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin-dir", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--postgres", default=os.environ.get("EXO_TEST_POSTGRES_URL",
                                                             "postgres://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--redis-server", default=shutil.which("redis-server") or "redis-server")
    parser.add_argument("--only", choices=tuple(BACKENDS))
    parser.add_argument("--plant", choices=("bogus-ack", "forget-unknowns"),
                        help="book wrongly on purpose: the loss checks must then fail")
    args = parser.parse_args()
    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    started = time.monotonic()
    summaries = []
    for name, backend in BACKENDS.items():
        if args.only not in (None, name):
            continue
        home = os.path.join(work, name)
        shutil.rmtree(home, ignore_errors=True)  # a fresh data directory per run, inside --work
        os.makedirs(home)
        print(f"{name}: ekv-proxy killed -9 under {THREADS} concurrent incrementers, restarted on the same data")
        config, native, cleanup = backend(home, args)
        try:
            summaries.append(scenario(name, args.bin_dir, home, config, native, args.plant))
        finally:
            cleanup()
    for line in summaries:
        print(line)
    print(f"counter_crash: {time.monotonic() - started:.0f} s")
    if failures:
        raise SystemExit(f"counter_crash: {len(failures)} check(s) failed")
    print("counter_crash: every check passed")


if __name__ == "__main__":
    main()
