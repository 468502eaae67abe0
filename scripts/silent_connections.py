#!/usr/bin/env python3
"""Connections that send nothing must not lock other clients out of eqs-proxy.

A client may open connections and never send a request on them: a port scanner, a crashed or
frozen app, or someone who means harm. Each such connection holds one of the proxy's
`server.max-connections` slots (4096 by default); when they are never closed, the proxy stops
accepting once the slots are gone and every real client waits in the listen backlog.

For each of three runs — a plaintext port, `server.tls` (server certificate only) and
`server.tls` with `client-ca-file` (mTLS) — this script starts eqs-proxy on the memory backend
with `server.header-read-timeout` (and, with TLS, `server.tls.handshake-timeout`) lowered to
--header-timeout seconds (2 by default), then:

  - opens --connections (5 000) TCP connections as fast as it can and keeps them open for the
    whole run. Plaintext: 80 % send nothing at all, 20 % send only the HTTP/2 client preface
    (`PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n`, no SETTINGS frame). TLS: 60 % send nothing (not
    even a ClientHello), 30 % complete the TLS handshake and then send nothing, 10 % complete it
    and send only the HTTP/2 preface;
  - from one second before that until --duration (20) seconds after it started, a normal client
    sends a message to a queue it made (POST /api/v1/queues/probe/messages) every 200 ms, each
    on a fresh connection (with TLS: a fresh handshake), in its own thread, and times it;
  - watches every silent socket for the server closing it (EOF or reset).

Checks per run:
  - every probe is answered 200 within 1 s (a probe gives up after 5 s);
  - every silent connection is closed by the server before the run ends;
  - each is closed within header-timeout + --grace (3) seconds of going silent (the moment the
    client sent the last byte it will send: the TCP connect, the preface, the end of the
    handshake). The grace covers the proxy's scheduling and a second round of connections
    accepted only once the first round freed their slots (5 000 > the 4 096 cap);
  - once the script closes its silent sockets, requests are served again within 15 s.
It also reports how many connections were closed per kind, when (median and slowest), the
probes' latencies and the proxy's connection cap as it logged it.

Run (no root needed; the open-files limit is raised to the hard limit, which must be above
--connections + a few hundred):
  python3 scripts/silent_connections.py --bin-dir target/debug --work reports/silent-connections
Options: --connections N, --header-timeout S, --grace S, --duration S, --runs plain,tls,mtls.
Exits non-zero when a check failed. Proxy logs: WORK/<run>.log; certificates: WORK/tls/.
"""

import argparse
import errno
import http.client
import json
import os
import re
import resource
import selectors
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time

from harness import check, failures, free_port, start_proxy, until

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
PROBE_EVERY = 0.2    # seconds between two probes
PROBE_LIMIT = 1.0    # a probe must be answered within this
PROBE_TIMEOUT = 5.0  # a probe gives up after this
BASELINE = 1.0       # probes before the silent connections are opened
QUEUE = "probe"

# Which silent connections each run opens: one kind per slot, repeated (interleaved).
PLAIN_KINDS = ["silent"] * 4 + ["h2-preface"]                            # 80 % / 20 %
TLS_KINDS = ["silent"] * 6 + ["tls-then-silent"] * 3 + ["tls-then-preface"]  # 60 / 30 / 10 %


def make_certificates(scratch):
    """A throw-away CA, a server certificate for localhost / 127.0.0.1 and a client certificate
    (CN=probe), all signed by the CA, made with the openssl CLI as
    conformance/interop/common.py does (P-256 keys: 5 000 handshakes stay cheap).
    Returns (ca.pem, (server.pem, server.key), (client.pem, client.key))."""
    os.makedirs(scratch, exist_ok=True)
    path = lambda name: os.path.join(scratch, name)  # noqa: E731
    quiet = {"check": True, "capture_output": True}
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    subprocess.run(["openssl", "req", "-x509", *ec, "-keyout", path("ca.key"), "-out", path("ca.pem"),
                    "-days", "2", "-subj", "/CN=exoflow silent-connections CA"], **quiet)
    for name, subject, ext in (("server", "/CN=localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1\n"),
                               ("client", "/CN=probe", "extendedKeyUsage=clientAuth\n")):
        with open(path(f"{name}.cnf"), "w") as f:
            f.write(ext)
        subprocess.run(["openssl", "req", *ec, "-keyout", path(f"{name}.key"), "-out", path(f"{name}.csr"),
                        "-subj", subject], **quiet)
        subprocess.run(["openssl", "x509", "-req", "-in", path(f"{name}.csr"), "-CA", path("ca.pem"),
                        "-CAkey", path("ca.key"), "-CAcreateserial", "-out", path(f"{name}.pem"), "-days", "2",
                        "-extfile", path(f"{name}.cnf")], **quiet)
    return path("ca.pem"), (path("server.pem"), path("server.key")), (path("client.pem"), path("client.key"))


def write_config(path, header_timeout, tls=None):
    """eqs on the memory backend with the header-read timeout (and the TLS handshake timeout)
    at `header_timeout` seconds; `tls`: (server cert, key, client CA or None)."""
    text = f"""server:
  header-read-timeout: {header_timeout}s
  shutdown-grace: 3s
"""
    if tls:
        cert, key, client_ca = tls
        text += f"""  tls:
    cert-file: {cert}
    key-file: {key}
    handshake-timeout: {header_timeout}s
"""
        if client_ca:
            text += f"    client-ca-file: {client_ca}\n"
    text += "backend:\n  kind: memory\n"
    with open(path, "w") as f:
        f.write(text)
    return path


def start_tls_proxy(binary, config, log, context):
    """start_proxy for a TLS port: ready once /readyz answers 200 over TLS. (process, port)."""
    port = free_port()
    proc = subprocess.Popen([binary, "--config", config, "--listen", f"127.0.0.1:{port}"],
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT)

    def ready():
        try:
            return call(port, context, "GET", "/readyz", timeout=2)[0] == 200
        except (OSError, http.client.HTTPException):
            return proc.poll() is not None
    if not until(ready, 15) or proc.poll() is not None:
        proc.terminate()
        raise SystemExit(f"{binary} did not become ready over TLS (log: {log})")
    return proc, port


def call(port, context, method, path, body=None, timeout=PROBE_TIMEOUT):
    """One request on a fresh connection (HTTPS when `context`): (status, seconds it took).
    Raises OSError / HTTPException when there is no answer."""
    started = time.monotonic()
    conn = (http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=timeout) if context
            else http.client.HTTPConnection("127.0.0.1", port, timeout=timeout))
    try:
        conn.request(method, path, body=json.dumps(body).encode() if body is not None else None,
                     headers={"content-type": "application/json", "connection": "close"})
        answer = conn.getresponse()
        answer.read()
        return answer.status, time.monotonic() - started
    finally:
        conn.close()


class Probes:
    """A normal client: a send on a fresh connection every PROBE_EVERY seconds, each in its own
    thread so one that hangs does not delay the next. `results`: (started, seconds, outcome)
    with outcome 200, another status, or the error's text."""

    def __init__(self, port, context):
        self.port, self.context = port, context
        self.results, self.lock, self.stop = [], threading.Lock(), threading.Event()
        self.threads = []
        self.ticker = threading.Thread(target=self.run, daemon=True)

    def one(self):
        started = time.monotonic()
        body = {"message": {"body": "cHJvYmU="}}  # base64 of "probe"
        try:
            outcome, seconds = call(self.port, self.context, "POST", f"/api/v1/queues/{QUEUE}/messages", body)
        except (OSError, http.client.HTTPException) as err:
            outcome, seconds = f"{type(err).__name__}: {err}", time.monotonic() - started
        with self.lock:
            self.results.append((started, seconds, outcome))

    def run(self):
        next_at = time.monotonic()
        while not self.stop.is_set():
            thread = threading.Thread(target=self.one, daemon=True)
            thread.start()
            self.threads.append(thread)
            next_at += PROBE_EVERY
            self.stop.wait(max(0.0, next_at - time.monotonic()))

    def finish(self):
        self.stop.set()
        self.ticker.join()
        for thread in self.threads:
            thread.join(PROBE_TIMEOUT + 1)
        return sorted(self.results)


class Silent:
    """One silent connection: what it sends, when it went silent, when the server closed it."""
    __slots__ = ("sock", "kind", "stage", "silent_at", "closed_at", "how", "received")

    def __init__(self, sock, kind):
        self.sock, self.kind, self.stage = sock, kind, "connecting"
        self.silent_at = self.closed_at = self.how = None
        self.received = 0


class SilentCrowd:
    """Opens `n` silent connections to `port` and, in one thread, drives them through connect,
    TLS handshake and preface, then watches them (reading and discarding what the server sends:
    its HTTP/2 SETTINGS, TLS session tickets) until the server closes them or `finish`."""

    def __init__(self, port, n, kinds, context):
        self.port, self.n, self.kinds, self.context = port, n, kinds, context
        self.selector = selectors.DefaultSelector()
        self.conns, self.refused = [], 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.started = self.opened_at = self.settled_at = None

    def open(self):
        """Starts every connect (non-blocking), then the thread that drives and watches them."""
        self.started = time.monotonic()
        for i in range(self.n):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            rc = sock.connect_ex(("127.0.0.1", self.port))
            conn = Silent(sock, self.kinds[i % len(self.kinds)])
            if rc in (0, errno.EINPROGRESS):
                self.selector.register(sock, selectors.EVENT_WRITE, conn)
            else:
                conn.stage, conn.how = "failed", errno.errorcode.get(rc, str(rc))
                sock.close()
                self.refused += 1
            self.conns.append(conn)
        self.opened_at = time.monotonic()
        self.thread.start()

    def went_silent(self, conn, now):
        conn.stage, conn.silent_at = "silent", now
        self.selector.modify(conn.sock, selectors.EVENT_READ, conn)

    def closed(self, conn, now, how):
        self.selector.unregister(conn.sock)
        conn.stage, conn.closed_at, conn.how = "closed", now, how

    def handshake(self, conn, now):
        try:
            conn.sock.do_handshake()
        except ssl.SSLWantReadError:
            self.selector.modify(conn.sock, selectors.EVENT_READ, conn)
            return
        except ssl.SSLWantWriteError:
            self.selector.modify(conn.sock, selectors.EVENT_WRITE, conn)
            return
        except (OSError, ssl.SSLError) as err:
            # The server hung up before the handshake ended: closed all the same.
            conn.silent_at = conn.silent_at or now
            self.closed(conn, now, f"during the handshake: {type(err).__name__}")
            return
        if conn.kind == "tls-then-preface":
            try:
                conn.sock.send(PREFACE)
            except (OSError, ssl.SSLError) as err:
                self.closed(conn, now, f"sending the preface: {type(err).__name__}")
                return
        self.went_silent(conn, now)

    def step(self, conn, now):
        if conn.stage == "connecting":
            err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.selector.unregister(conn.sock)
                conn.stage, conn.how = "failed", errno.errorcode.get(err, str(err))
                return
            # The reference time for a connection that never finishes its handshake.
            conn.silent_at = now
            if conn.kind == "h2-preface":
                conn.sock.send(PREFACE)
            if conn.kind.startswith("tls"):
                self.selector.unregister(conn.sock)
                conn.sock = self.context.wrap_socket(conn.sock, server_hostname="localhost",
                                                     do_handshake_on_connect=False)
                conn.stage = "handshake"
                self.selector.register(conn.sock, selectors.EVENT_WRITE, conn)
                self.handshake(conn, now)
            else:
                self.went_silent(conn, now)
        elif conn.stage == "handshake":
            self.handshake(conn, now)
        elif conn.stage == "silent":
            try:
                while True:
                    data = conn.sock.recv(65536)
                    if not data:
                        self.closed(conn, now, "EOF")
                        return
                    conn.received += len(data)
                    if not (isinstance(conn.sock, ssl.SSLSocket) and conn.sock.pending()):
                        return
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return
            except ConnectionResetError:
                self.closed(conn, now, "reset")
            except (OSError, ssl.SSLError) as err:
                self.closed(conn, now, type(err).__name__)

    def loop(self):
        while not self.stop.is_set():
            events = self.selector.select(0.05)
            now = time.monotonic()
            for key, _ in events:
                self.step(key.data, now)
            if self.settled_at is None and not any(c.stage in ("connecting", "handshake") for c in self.conns):
                self.settled_at = now

    def finish(self):
        """Stops watching and closes every socket still open (the script's side)."""
        self.stop.set()
        self.thread.join()
        for conn in self.conns:
            if conn.stage not in ("closed", "failed"):
                conn.sock.close()
        self.selector.close()


def percent(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))] if values else float("nan")


def logged_cap(log):
    """The connection cap the proxy logged at start, and how often it logged reaching it."""
    text = open(log, errors="replace").read()
    caps = re.findall(r"max_connections\W+(\d+)", text)
    return (int(caps[-1]) if caps else None), text.count("connection cap reached")


def run(name, binary, work, args, certs):
    print(f"{name}: eqs-proxy ({'plaintext' if name == 'plain' else 'TLS' if name == 'tls' else 'mTLS'}), "
          f"{args.connections} silent connections, header-read-timeout {args.header_timeout:g} s"
          f"{'' if name == 'plain' else f', tls.handshake-timeout {args.header_timeout:g} s'}")
    log = os.path.join(work, f"{name}.log")
    open(log, "w").close()
    config = os.path.join(work, f"{name}.yaml")
    context = None
    if name == "plain":
        write_config(config, args.header_timeout)
        proc, url = start_proxy(binary, config, log)
        port = int(url.rsplit(":", 1)[1])
        kinds = PLAIN_KINDS
    else:
        ca, server, client = certs
        write_config(config, args.header_timeout, (server[0], server[1], ca if name == "mtls" else None))
        context = ssl.create_default_context(cafile=ca)
        if name == "mtls":
            context.load_cert_chain(*client)
        proc, port = start_tls_proxy(binary, config, log, context)
        kinds = TLS_KINDS
    crowd = None
    try:
        status, _ = call(port, context, "POST", "/api/v1/queues", {"name": QUEUE})
        check(status in (200, 201), f"{name}: the probe queue is made ({status})")
        probes = Probes(port, context)
        probes.ticker.start()
        time.sleep(BASELINE)
        crowd = SilentCrowd(port, args.connections, kinds, context)
        crowd.open()
        t0 = crowd.started
        time.sleep(max(0.0, t0 + args.duration - time.monotonic()))
        results = probes.finish()
        crowd.stop.set()
        crowd.thread.join()
        report(name, args, crowd, results, t0, log)
        crowd.finish()
        closed_by_us = time.monotonic()

        def served():
            try:
                return call(port, context, "POST", f"/api/v1/queues/{QUEUE}/messages",
                            {"message": {"body": "YWdhaW4="}}, timeout=PROBE_LIMIT)[0] == 200
            except (OSError, http.client.HTTPException):
                return False
        recovered = until(served, 15)
        check(recovered, f"{name}: once the script closed its silent sockets, a send is served within "
                         f"{PROBE_LIMIT:g} s again ({f'after {time.monotonic() - closed_by_us:.1f} s' if recovered else 'not within 15 s'})")
        check(proc.poll() is None, f"{name}: the proxy is still running")
    finally:
        if crowd is not None and not crowd.stop.is_set():
            crowd.finish()
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def report(name, args, crowd, results, t0, log):
    cap, cap_reached = logged_cap(log)
    conns = crowd.conns
    established = sum(c.stage != "failed" for c in conns)
    print(f"    opened {len(conns)} connections in {crowd.opened_at - t0:.2f} s: {established} established, "
          f"{len(conns) - established} failed"
          + (f"; every connect/handshake settled {crowd.settled_at - t0:.1f} s after the first connect"
             if crowd.settled_at else "; some connects/handshakes never completed before the run ended"))
    print(f"    the proxy logged its connection cap as {cap} and 'connection cap reached' {cap_reached} time(s)")

    # The normal client.
    served = [(s - t0, d) for s, d, o in results if o == 200]
    late = [(s - t0, d, o) for s, d, o in results if o != 200 or d > PROBE_LIMIT]
    latencies = [d for _, d in served]
    if latencies:
        print(f"    probes answered 200: {len(served)} of {len(results)}; latency median {statistics.median(latencies) * 1000:.0f} ms, "
              f"p99 {percent(latencies, 99) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms")
    before = [r for r in results if r[0] < t0]
    if late:
        outcomes = {}
        for _, _, o in late:
            key = "200 but slow" if o == 200 else str(o).split(":")[0] if not isinstance(o, int) else f"status {o}"
            outcomes[key] = outcomes.get(key, 0) + 1
        print(f"    probes not answered within {PROBE_LIMIT:g} s: {len(late)} (first one started {late[0][0]:+.1f} s, "
              f"last {late[-1][0]:+.1f} s after the first silent connect): "
              + ", ".join(f"{k} ×{v}" for k, v in outcomes.items()))
    check(results and not late,
          f"{name}: every probe (a send on a fresh connection every {PROBE_EVERY * 1000:.0f} ms, {len(before)} before the "
          f"silent connections and {len(results) - len(before)} while they were open) is answered within {PROBE_LIMIT:g} s "
          f"({len(results) - len(late)} of {len(results)})")

    # The silent connections.
    limit = args.header_timeout + args.grace
    all_closed = all_in_time = 0
    for kind in dict.fromkeys(crowd.kinds):
        mine = [c for c in conns if c.kind == kind and c.stage != "failed"]
        closed = [c for c in mine if c.stage == "closed"]
        after = [c.closed_at - c.silent_at for c in closed]
        in_time = sum(a <= limit for a in after)
        all_closed += len(closed)
        all_in_time += in_time
        hows = {}
        for c in closed:
            hows[c.how] = hows.get(c.how, 0) + 1
        never = [c for c in mine if c.stage == "handshake"]
        line = f"    {kind}: {len(mine)} open, {len(closed)} closed by the server"
        if closed:
            line += (f" ({', '.join(f'{h} ×{n}' for h, n in hows.items())}), {in_time} within {limit:g} s; "
                     f"closed after median {statistics.median(after):.1f} s, max {max(after):.1f} s of going silent, "
                     f"first at {min(c.closed_at for c in closed) - t0:+.1f} s, last at {max(c.closed_at for c in closed) - t0:+.1f} s")
        if never:
            line += f"; {len(never)} never finished the handshake"
        line += f"; bytes from the server per connection: max {max((c.received for c in mine), default=0)}"
        print(line)
    total = sum(c.stage != "failed" for c in conns)
    check(total == len(conns) and all_closed == total,
          f"{name}: every silent connection is closed by the server within the {args.duration:g} s run "
          f"({all_closed} of {len(conns)} closed, {len(conns) - total} never connected)")
    check(total == len(conns) and all_in_time == total,
          f"{name}: every silent connection is closed within header-read-timeout {args.header_timeout:g} s + "
          f"{args.grace:g} s of going silent ({all_in_time} of {len(conns)})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bin-dir", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--header-timeout", type=float, default=2.0,
                        help="server.header-read-timeout and server.tls.handshake-timeout, seconds (2)")
    parser.add_argument("--grace", type=float, default=3.0,
                        help="how much later than the timeout a silent connection may be closed, seconds (3)")
    parser.add_argument("--duration", type=float, default=20.0,
                        help="seconds the silent connections stay open and the probes run (20)")
    parser.add_argument("--runs", default="plain,tls,mtls")
    args = parser.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if limit != resource.RLIM_INFINITY and limit < args.connections + 200:
        sys.exit(f"the open-files limit is {limit}: too low for {args.connections} connections (raise the hard limit)")

    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    binary = os.path.join(os.path.abspath(args.bin_dir), "eqs-proxy")
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    certs = make_certificates(os.path.join(work, "tls")) if set(runs) - {"plain"} else None
    started = time.monotonic()
    for name in runs:
        run(name, binary, work, args, certs)
    print(f"silent connections: {time.monotonic() - started:.0f} s")
    if failures:
        sys.exit(f"{len(failures)} silent-connection check(s) failed (proxy logs: {work}/*.log)")
    print("silent connections: every check passed")


if __name__ == "__main__":
    main()
