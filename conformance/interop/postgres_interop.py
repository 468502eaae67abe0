"""eqs and ekv `postgres` against a real PostgreSQL, as a native client sees them: what the proxies
write is read by psycopg from the documented layout, rows psycopg writes are served by the proxies,
and the proxies heal by themselves when the server drops their connections (pg_terminate_backend)
without losing anything acknowledged.

    postgres_interop.py --eqs URL --ekv URL --dsn postgres://... --schema NAME
"""

import argparse
import base64
import json
import os
import socket
import subprocess
import threading
import time
import urllib.parse

import psycopg

from common import b64, call, check, check_stale_cas_fails, eventually, finish, refusal

RUN = f"{int(time.time())}"


def drop_connections(db):
    """Terminates every connection the proxies hold; returns how many."""
    return db.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                      "WHERE application_name = 'exoflow' AND pid <> pg_backend_pid()").fetchone()[0]


def tls(db, eqs_proxy, tls_url, ca_file, schema, scratch):
    """eqs over TLS to the server (sslmode=require, the certificate verified against ca_file); a
    CA that did not sign it stops the proxy at start with a message naming the certificate."""
    print("eqs over TLS to PostgreSQL")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    # Its own application name, so its connections are told apart from the other proxies'.
    app = f"exoflow-tls-{RUN}"
    url = f"{tls_url}{'&' if '?' in tls_url else '?'}application_name={app}"

    def config(name, ca):
        path = os.path.join(scratch, name)
        with open(path, "w") as f:
            f.write(f"backend:\n  kind: postgres\n  url: {url}\n  schema: {schema}\n")
            if ca:
                f.write(f"  ca-file: {ca}\n")
        return path

    log = open(os.path.join(scratch, "eqs-tls.log"), "ab")
    proxy = subprocess.Popen([eqs_proxy, "--config", config("tls.yaml", ca_file), "--listen", f"127.0.0.1:{port}"],
                             stdout=log, stderr=log)
    try:
        eqs = f"http://127.0.0.1:{port}"
        eventually_up = None
        for _ in range(100):
            try:
                eventually_up = call("GET", f"{eqs}/api/v1/describe")
                break
            except (RuntimeError, OSError):
                time.sleep(0.1)
        check(eventually_up is not None, "eqs starts with sslmode=require and the server's CA")
        name = f"tls-{RUN}"
        call("POST", f"{eqs}/api/v1/queues", {"name": name})
        call("POST", f"{eqs}/api/v1/queues/{name}/messages", {"message": {"body": b64(b"over tls")}})
        got = call("POST", f"{eqs}/api/v1/queues/{name}/messages/receive", {"maxMessages": 1})
        check([base64.b64decode(m["body"]) for m in got.get("messages", [])] == [b"over tls"],
              "a message goes through eqs over TLS")
        encrypted = db.execute("SELECT bool_and(s.ssl), count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a "
                               "ON a.pid = s.pid WHERE a.application_name = %s", (app,)).fetchone()
        check(encrypted[0] is True and encrypted[1] >= 1,
              f"every new eqs connection is encrypted (pg_stat_ssl: {encrypted})")
        call("DELETE", f"{eqs}/api/v1/queues/{name}")
    finally:
        proxy.terminate()
        proxy.wait()
    wrong = subprocess.run([eqs_proxy, "--config", config("wrong-ca.yaml", None), "--listen", f"127.0.0.1:{port}"],
                           capture_output=True, text=True, timeout=60)
    named = next((line for line in wrong.stderr.splitlines() if "certificate" in line.lower()), "")
    check(wrong.returncode != 0 and named != "",
          f"against roots that did not sign the server's certificate eqs refuses to start, saying so ({named[-90:]})")


def queues(eqs, db, schema):
    print("PostgreSQL <-> eqs")
    name = f"interop-{RUN}"
    call("POST", f"{eqs}/api/v1/queues", {"name": name})
    body = b"\x00binary\xff body"
    sent = call("POST", f"{eqs}/api/v1/queues/{name}/messages",
                {"message": {"body": b64(body), "attributes": {"origin": "eqs"}}})
    row = db.execute(f"SELECT body, attributes, message_id, visible_at_ms <= expires_at_ms FROM {schema}.eqs_messages "
                     "WHERE queue = %s", (name,)).fetchone()
    check(row is not None and bytes(row[0]) == body and row[1] == {"origin": "eqs"},
          "a message sent through eqs is a row psycopg reads: body bytes and attributes as JSON")
    check(row is not None and row[2] == sent.get("messageId"), "with the message id eqs reported")
    call("POST", f"{eqs}/api/v1/queues/{name}/purge", {})

    # A native producer inserts (queue, body, attributes); a waiting long poll gets it.
    got = {}

    def wait():
        got.update(call("POST", f"{eqs}/api/v1/queues/{name}/messages/receive",
                        {"maxMessages": 1, "waitSeconds": 10}))
    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.5)
    started = time.monotonic()
    db.execute(f"INSERT INTO {schema}.eqs_messages (queue, body, attributes) VALUES (%s, %s, %s)",
               (name, b"from psycopg", json.dumps({"origin": "psycopg"})))
    waiter.join()
    waited = time.monotonic() - started
    messages = got.get("messages", [])
    check(len(messages) == 1 and base64.b64decode(messages[0]["body"]) == b"from psycopg"
          and messages[0].get("attributes") == {"origin": "psycopg"},
          "a row inserted by psycopg with just (queue, body, attributes) reaches a waiting receive")
    check(waited < 2, f"the waiting receive answered {waited:.2f} s after the insert")
    if messages:
        call("POST", f"{eqs}/api/v1/queues/{name}/messages/ack", {"receipt": messages[0]["receipt"]})
    left = db.execute(f"SELECT count(*) FROM {schema}.eqs_messages WHERE queue = %s", (name,)).fetchone()[0]
    check(left == 0, "an ack deletes the row")

    # A foreign row whose attributes are not an object is delivered marked, and the messages beside
    # it are delivered too (it never fails the receive that picks it).
    db.execute(f"INSERT INTO {schema}.eqs_messages (queue, body, attributes) VALUES (%s, %s, %s), (%s, %s, DEFAULT)",
               (name, b"odd", json.dumps([1, 2]), name, b"plain"))
    out, _ = eventually("receive beside a malformed row", lambda: call(
        "POST", f"{eqs}/api/v1/queues/{name}/messages/receive", {"maxMessages": 10, "waitSeconds": 1}))
    got = {base64.b64decode(m["body"]): m.get("attributes", {}) for m in (out or {}).get("messages", [])}
    check(got.get(b"odd") == {"exo.attributes": "[1, 2]"} and got.get(b"plain") == {},
          "a native row with non-object attributes arrives marked exo.attributes, and its neighbour too")
    for m in (out or {}).get("messages", []):
        call("POST", f"{eqs}/api/v1/queues/{name}/messages/ack", {"receipt": m["receipt"]})

    # Connections dropped by the server: an acknowledged send survives, eqs reconnects by itself.
    call("POST", f"{eqs}/api/v1/queues/{name}/messages", {"message": {"body": b64(b"kept")}})
    check(drop_connections(db) >= 1, "pg_terminate_backend dropped eqs's connections")
    out, failures = eventually("receive after the drop", lambda: call(
        "POST", f"{eqs}/api/v1/queues/{name}/messages/receive", {"maxMessages": 10, "waitSeconds": 1}))
    bodies = [base64.b64decode(m["body"]) for m in (out or {}).get("messages", [])]
    check(bodies == [b"kept"], "after the server dropped its connections eqs serves the message sent before")
    check(all(": 503 " in f and "BACKEND_UNAVAILABLE" in f for f in failures),
          f"calls in between failed retryable (503 BACKEND_UNAVAILABLE), if at all ({len(failures)})")
    call("DELETE", f"{eqs}/api/v1/queues/{name}")


def counters(ekv, db, schema, table):
    """Increment through ekv as psycopg sees it: a counter is its decimal text in `value`, read
    natively with convert_from(value, 'UTF8')::bigint; a counter a native writer sets (with a
    fresh version) is added to; a value that is no counter, or a sum past the i64 range, is refused
    with the row left as it was."""
    key = "hits/α"

    def increment(delta):
        return call("POST", f"{ekv}/api/v1/tables/{table}/increment", {"key": key, "delta": delta})

    def native():
        return db.execute(f"SELECT convert_from(value, 'UTF8')::bigint, value, version FROM {schema}.kv_entries "
                          "WHERE table_name = %s AND key = %s", (table, key.encode())).fetchone()

    def native_text():
        return db.execute(f"SELECT value, version FROM {schema}.kv_entries WHERE table_name = %s AND key = %s",
                          (table, key.encode())).fetchone()

    def set_natively(text, version):
        db.execute(f"UPDATE {schema}.kv_entries SET value = %s, version = %s WHERE table_name = %s AND key = %s",
                   (text, version, table, key.encode()))

    first, second = increment(40), increment(2)
    row = native()
    check(first.get("value") == "40" and second.get("value") == "42",
          f"two increments through ekv answer 40 then 42 ({first.get('value')}, {second.get('value')})")
    check(row is not None and row[0] == 42 and bytes(row[1]) == b"42" and row[2] == second.get("version"),
          f"psycopg reads the counter as convert_from(value, 'UTF8')::bigint = 42, value b'42', at the version "
          f"ekv answered ({row and (row[0], bytes(row[1]), row[2])})")

    set_natively(b"1000", "pg-c1")
    after = increment(-1)
    row = native()
    check(after.get("value") == "999" and row is not None and row[0] == 999 and bytes(row[1]) == b"999",
          f"an increment of -1 adds to the counter psycopg set to 1000 (answer {after.get('value')}, row "
          f"{row and row[0]})")
    check(row is not None and row[2] == after.get("version")
          and after.get("version") not in ("pg-c1", second.get("version")),
          "and writes a fresh version, the one it answered")

    for text, reason in ((b"007", "NOT_A_COUNTER"), (b"9223372036854775807", "COUNTER_OVERFLOW")):
        set_natively(text, "pg-c2")
        refused = refusal("POST", f"{ekv}/api/v1/tables/{table}/increment", {"key": key, "delta": 1})
        shown = refused.split('"detail":', 1)[-1][:110]
        row = native_text()
        check(": 409 " in refused and f'"reason":"{reason}"' in refused,
              f"an increment of a row psycopg set to {text.decode()} is refused (409 {reason}): {shown}")
        check(row is not None and bytes(row[0]) == text and row[1] == "pg-c2",
              f"and leaves the row as it was ({row and (bytes(row[0]), row[1])})")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--eqs", required=True)
    parser.add_argument("--ekv", required=True)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--schema", required=True)
    parser.add_argument("--eqs-proxy", help="with --tls-url: check TLS to the server")
    parser.add_argument("--tls-url", help="a URL of the same server with sslmode=require")
    parser.add_argument("--ca-file", help="the CA that signed the server's certificate")
    parser.add_argument("--scratch", default="/tmp")
    args = parser.parse_args()
    ekv, schema = args.ekv, args.schema
    db = psycopg.connect(args.dsn, autocommit=True)
    queues(args.eqs, db, schema)
    if args.tls_url:
        tls(db, args.eqs_proxy, args.tls_url, args.ca_file, schema, args.scratch)
    print("PostgreSQL <-> ekv")

    table = f"interop-{RUN}"
    call("POST", f"{ekv}/api/v1/tables", {"name": table})
    value = b"\x00\x01binary \xff"
    key = "user/42#prefs?"
    quoted = urllib.parse.quote(key, safe="")
    put = call("PUT", f"{ekv}/api/v1/tables/{table}/entries/{quoted}", {"value": b64(value)})
    row = db.execute(
        f"SELECT value, version, expires_at_ms FROM {schema}.kv_entries WHERE table_name = %s AND key = %s",
        (table, key.encode())).fetchone()
    check(row is not None and bytes(row[0]) == value, "an entry written through ekv is read by psycopg byte-exact")
    check(row is not None and row[1] == put.get("version") and row[2] == 0,
          "with the version ekv reported and expires_at_ms 0 (never)")

    db.execute(f"INSERT INTO {schema}.kv_entries (table_name, key, value, version, expires_at_ms) "
               "VALUES (%s, %s, %s, %s, 0)", (table, b"native", b"from psycopg", "pg-1"))
    entry = call("GET", f"{ekv}/api/v1/tables/{table}/entries/native").get("entry", {})
    check(base64.b64decode(entry.get("value", "")) == b"from psycopg" and entry.get("version") == "pg-1",
          "a row written by psycopg in the documented layout is served by ekv")

    # The rule for native writers: change `version` with `value`; a stale compare-and-set then fails.
    db.execute(f"UPDATE {schema}.kv_entries SET value = %s, version = %s WHERE table_name = %s AND key = %s",
               (b"updated by psycopg", "pg-2", table, b"native"))
    check_stale_cas_fails(ekv, table, "native", "pg-1")
    counters(ekv, db, schema, table)

    # Prefix listing is in byte order, like every other backend.
    for k in ["b", "a/2", "a/10", "a/1"]:
        call("PUT", f"{ekv}/api/v1/tables/{table}/entries/{urllib.parse.quote(k, safe='')}", {"value": b64(b"x")})
    listed = call("GET", f"{ekv}/api/v1/tables/{table}/entries?prefix=a/")
    check([e["key"] for e in listed.get("entries", [])] == ["a/1", "a/10", "a/2"], "a prefix lists in byte order")

    # The server drops every connection ekv holds: calls may fail retryable for a moment, then ekv
    # reconnects by itself and everything acknowledged before is still there.
    dropped = drop_connections(db)
    check(dropped >= 1, f"pg_terminate_backend dropped ekv's connections ({dropped})")
    served, failures = eventually("get after the drop", lambda: call(
        "GET", f"{ekv}/api/v1/tables/{table}/entries/{quoted}").get("entry", {}))
    check(served is not None and base64.b64decode(served.get("value", "")) == value,
          "after the server dropped its connections ekv reconnects and serves the acknowledged entry")
    check(all(": 503 " in f and "BACKEND_UNAVAILABLE" in f for f in failures),
          f"calls in between failed retryable (503 BACKEND_UNAVAILABLE), if at all ({len(failures)})")
    call("DELETE", f"{ekv}/api/v1/tables/{table}")
    left = db.execute(f"SELECT count(*) FROM {schema}.kv_entries WHERE table_name = %s", (table,)).fetchone()[0]
    check(left == 0, "deleting the table through ekv deletes its rows")
    finish()


if __name__ == "__main__":
    main()
