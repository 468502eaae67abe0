"""ekv `redis` against a real Redis, as a native client sees it: what ekv writes redis-py reads
from the documented layout under the namespace, an entry redis-py writes in that layout is served
by ekv, nothing lands outside the namespace, and ekv reconnects by itself after CLIENT KILL without
losing an acknowledged write.

    redis_interop.py --ekv URL --redis redis://127.0.0.1:6379/0 --namespace NS
"""

import argparse
import base64
import os
import subprocess
import time
import urllib.parse

import redis

from common import (b64, call, check, check_stale_cas_fails, check_tls_proxy, eventually, finish, free_port,
                    make_certificates, refusal, wait_for_port)

RUN = f"{int(time.time())}"


def tls(ekv_proxy, redis_server, scratch):
    """ekv to a private Redis that speaks only TLS (a certificate of a throw-away CA)."""
    print("ekv over TLS to Redis (a private server)")
    tls_dir = os.path.join(scratch, "tls")
    ca, cert, key = make_certificates(tls_dir)
    port = free_port()
    log = open(os.path.join(scratch, "redis-server-tls.log"), "ab")
    server = subprocess.Popen([redis_server, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
                               "--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", ca,
                               "--tls-auth-clients", "no", "--save", "", "--appendonly", "no",
                               "--dir", tls_dir], stdout=log, stderr=log)
    try:
        wait_for_port(port, "redis-server (TLS)")

        def config(with_ca):
            path = os.path.join(tls_dir, f"ekv-{with_ca}.yaml")
            with open(path, "w") as f:
                f.write(f"backend:\n  kind: redis\n  url: rediss://localhost:{port}/0\n  namespace: tls\n")
                if with_ca:
                    f.write(f"  ca-file: {ca}\n")
            return path

        def exercise(ekv):
            call("POST", f"{ekv}/api/v1/tables", {"name": "secure"})
            call("PUT", f"{ekv}/api/v1/tables/secure/entries/k", {"value": b64(b"over tls")})
            got = call("GET", f"{ekv}/api/v1/tables/secure/entries/k").get("entry", {})
            check(base64.b64decode(got.get("value", "")) == b"over tls",
                  "an entry goes through ekv to a TLS-only Redis (rediss:// URL, ca-file)")
        check_tls_proxy(ekv_proxy, config, tls_dir, exercise)
    finally:
        server.terminate()
        server.wait()


def counters(ekv, r, ns, table):
    """Increment through ekv as redis-py sees it: `HGET <ns>:e:<table>:<key> v` is the counter's
    decimal text; a counter set natively (with a fresh `ver`) is added to; the expiry an increment
    gives a new counter is Redis's own and later increments keep it; a value that is no counter,
    or a sum past the i64 range, is refused with the hash left as it was."""
    key = "hits/α"
    entry = f"{ns}:e:{table}:{key}"

    def increment(delta):
        return call("POST", f"{ekv}/api/v1/tables/{table}/increment", {"key": key, "delta": delta})

    first, second = increment(40), increment(2)
    check(first.get("value") == "40" and second.get("value") == "42",
          f"two increments through ekv answer 40 then 42 ({first.get('value')}, {second.get('value')})")
    check(r.hget(entry, "v") == b"42" and r.hget(entry, "ver") == second.get("version", "").encode(),
          f"HGET {entry} v reads b'42', with the version ekv answered ({r.hmget(entry, 'v', 'ver')})")
    check(r.zscore(f"{ns}:i:{table}", key) == 0, "the counter's key is in the table's index")

    r.hset(entry, mapping={"v": b"1000", "ver": "py-c1"})
    after = increment(-1)
    check(after.get("value") == "999" and r.hget(entry, "v") == b"999",
          f"an increment of -1 adds to the counter redis-py set to 1000 (answer {after.get('value')}, "
          f"HGET {r.hget(entry, 'v')})")
    check(r.hget(entry, "ver") == after.get("version", "").encode()
          and after.get("version") not in ("py-c1", second.get("version")),
          "and writes a fresh version, the one it answered")

    for text, reason in ((b"007", "NOT_A_COUNTER"), (b"9223372036854775807", "COUNTER_OVERFLOW")):
        r.hset(entry, mapping={"v": text, "ver": "py-c2"})
        refused = refusal("POST", f"{ekv}/api/v1/tables/{table}/increment", {"key": key, "delta": 1})
        shown = refused.split('"detail":', 1)[-1][:110]
        check(": 409 " in refused and f'"reason":"{reason}"' in refused,
              f"an increment of a hash redis-py set to {text.decode()} is refused (409 {reason}): {shown}")
        check(r.hmget(entry, "v", "ver") == [text, b"py-c2"],
              f"and leaves the hash as it was ({r.hmget(entry, 'v', 'ver')})")

    windowed = f"{ns}:e:{table}:window"
    first = call("POST", f"{ekv}/api/v1/tables/{table}/increment", {"key": "window", "delta": 1, "ttlSeconds": 30})
    ttl_ms = r.pttl(windowed)
    time.sleep(0.2)
    again = call("POST", f"{ekv}/api/v1/tables/{table}/increment", {"key": "window", "delta": 1, "ttlSeconds": 300})
    kept_ms = r.pttl(windowed)
    check(first.get("value") == "1" and again.get("value") == "2" and r.hget(windowed, "v") == b"2",
          f"a counter created with ttlSeconds counts on ({first.get('value')}, {again.get('value')})")
    check(0 < ttl_ms <= 30_000 and 0 < kept_ms < ttl_ms,
          f"its expiry is Redis's own ({ttl_ms} ms left) and a later increment keeps it, not its own 300 s "
          f"({kept_ms} ms left)")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ekv", required=True)
    parser.add_argument("--redis", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--ekv-proxy", help="with --redis-server: check TLS on a private server")
    parser.add_argument("--redis-server")
    parser.add_argument("--scratch", default="/tmp")
    args = parser.parse_args()
    ekv, ns = args.ekv, args.namespace
    r = redis.Redis.from_url(args.redis)
    print("Redis <-> ekv")
    before = set(r.scan_iter(match="*", count=1000))

    table = f"interop-{RUN}"
    call("POST", f"{ekv}/api/v1/tables", {"name": table})
    value = b"\x00\x01binary \xff"
    key = "user/42#prefs?"
    quoted = urllib.parse.quote(key, safe="")
    put = call("PUT", f"{ekv}/api/v1/tables/{table}/entries/{quoted}", {"value": b64(value)})
    entry = r.hgetall(f"{ns}:e:{table}:{key}")
    check(entry.get(b"v") == value, "an entry written through ekv is read by redis-py byte-exact")
    check(entry.get(b"ver", b"").decode() == put.get("version") and entry.get(b"exp") == b"0",
          "with the version ekv reported and exp 0 (never)")
    check(r.zscore(f"{ns}:i:{table}", key) == 0 and r.zscore(f"{ns}:tables", table) == 0,
          "the key is in the table's index and the table in the namespace's table set")

    call("PUT", f"{ekv}/api/v1/tables/{table}/entries/short", {"value": b64(b"x"), "ttlSeconds": 30})
    ttl_ms = r.pttl(f"{ns}:e:{table}:short")
    check(0 < ttl_ms <= 30_000, f"a TTL is Redis's own expiry on the entry ({ttl_ms} ms left)")

    r.hset(f"{ns}:e:{table}:native", mapping={"v": b"from redis-py", "ver": "py-1", "exp": "0"})
    r.zadd(f"{ns}:i:{table}", {"native": 0})
    got = call("GET", f"{ekv}/api/v1/tables/{table}/entries/native").get("entry", {})
    check(base64.b64decode(got.get("value", "")) == b"from redis-py" and got.get("version") == "py-1",
          "an entry written by redis-py in the documented layout is served by ekv")
    r.hset(f"{ns}:e:{table}:native", mapping={"v": b"updated by redis-py", "ver": "py-2"})
    check_stale_cas_fails(ekv, table, "native", "py-1")
    counters(ekv, r, ns, table)

    outside = [k for k in set(r.scan_iter(match="*", count=1000)) - before if not k.startswith(f"{ns}:".encode())]
    check(not outside, f"every key ekv wrote is inside its namespace ({outside[:3]})")

    # The server drops ekv's connection: the next calls reconnect, the acknowledged entry is there.
    # ekv's connection is the one whose last commands are its scripts (or the commands around them).
    killed = 0
    for client in r.client_list():
        ours = client.get("cmd", "").startswith("eval") or client.get("cmd") in ("zadd", "zrange", "ping")
        if ours and client["id"] != str(r.client_id()):
            killed += r.client_kill_filter(_id=client["id"]) or 0
    check(killed >= 1, f"CLIENT KILL dropped ekv's connection ({killed})")
    served, failures = eventually("get after the kill", lambda: call(
        "GET", f"{ekv}/api/v1/tables/{table}/entries/{quoted}").get("entry", {}))
    check(served is not None and base64.b64decode(served.get("value", "")) == value,
          "after CLIENT KILL ekv reconnects and serves the acknowledged entry")
    check(all(": 503 " in f and "BACKEND_UNAVAILABLE" in f for f in failures),
          f"calls in between failed retryable (503 BACKEND_UNAVAILABLE), if at all ({len(failures)})")
    call("DELETE", f"{ekv}/api/v1/tables/{table}")
    left = list(r.scan_iter(match=f"{ns}:*{table}*", count=1000))
    check(not left, f"deleting the table through ekv deletes its keys ({left[:3]})")
    if args.redis_server:
        tls(args.ekv_proxy, args.redis_server, args.scratch)
    finish()


if __name__ == "__main__":
    main()
