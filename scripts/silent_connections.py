#!/usr/bin/env python3
"""Connections that send nothing must not lock other clients out of eqs-proxy.

A client may open connections and never send a request on them: a port scanner, a crashed or
frozen app, or someone who means harm. Each such connection holds one of the proxy's
`server.max-connections` slots (4 096 by default); if they are never closed, the proxy stops
accepting once the slots are gone and every real client waits in the listen backlog.

Three runs: a plaintext port, `server.tls` (server certificate only) and `server.tls` with
`client-ca-file` (mTLS). Each starts eqs-proxy on the memory backend with
`server.header-read-timeout` (and, with TLS, `server.tls.handshake-timeout`) set to
--header-timeout seconds (2 by default; the proxy's default is 10) and `server.max-connections`
at its default (4 096) unless --max-connections is given, then:

  - opens --connections (5 000) TCP connections as fast as the proxy takes them and keeps them
    open for the whole run. Plaintext: 80 % send nothing at all, 20 % send only the HTTP/2
    client preface (PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n, no SETTINGS frame). TLS: 60 % send
    nothing (not even a ClientHello), 30 % complete the TLS handshake and then send nothing,
    10 % complete it and send only the HTTP/2 preface;
  - from one second before that until --duration (20) seconds after (longer when the last
    connections went silent less than header-timeout + grace before the end), a normal client
    sends a message to a queue it made (POST /api/v1/queues/probe/messages) every 200 ms, each
    on a fresh connection (with TLS, a fresh handshake), and times it;
  - watches every silent socket for the server closing it (EOF or reset).

Checks, per run:
  - every probe is answered 200 within 1 s (a probe gives up after 5 s);
  - every silent connection is closed by the server before the run ends;
  - each within header-timeout + --grace (3) seconds of going silent (the moment the client
    sent the last byte it will send: the TCP connect, the preface, the end of the handshake);
    the grace covers scheduling and connections accepted only once others freed their slots;
  - once the script closes its sockets, a send is served within 1 s again (tried for 15 s);
  - the proxy is still running.
The report also gives, per kind, how many were closed and when, the probes' latencies (a slow
one with its TCP connect and TLS handshake times), the most sockets the proxy held at once
against its logged connection cap, and the kernel's accept-queue overflow and SYN-cookie
counters for the run (system-wide).

Pacing. The connections are opened as fast as the proxy accepts them: never more than half the
limit of its accept queue waiting in it (read over netlink, as `ss -lt` does), and a batch a
second when the queue stays full (a proxy that stopped accepting). --unpaced opens all of them
at once instead: that overflows the accept queue (128 for the proxy's listener), and with SYN
cookies on (the Linux default) the kernel completes handshakes for the client and then drops
them on its own side, so the client holds an "established" socket the proxy never had, while
other clients' SYNs are dropped and resent after 1 s. That tests the kernel rather than the
proxy. Sockets still open at the end with no socket on the proxy's side (/proc/net/tcp) are
reported as "never reached the proxy" and not counted against it.

The probes run in a process of their own, so the script's work on thousands of sockets and
TLS handshakes does not delay them on the GIL.

Run (no root needed; the open-files limit is raised to the hard limit, which must exceed
--connections by a few hundred), about 65 s:
  python3 scripts/silent_connections.py --bin-dir target/debug --work reports/silent-connections
Options: --connections N, --header-timeout S, --grace S, --duration S, --max-connections N,
--runs plain,tls,mtls, --unpaced. Exits non-zero when a check failed. Proxy logs and configs: WORK/<run>.log and
WORK/<run>.yaml; certificates: WORK/tls/.
"""

import argparse
import errno
import http.client
import json
import multiprocessing
import os
import re
import resource
import selectors
import socket
import ssl
import statistics
import struct
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


def write_config(path, header_timeout, max_connections=None, tls=None):
    """eqs on the memory backend with the header-read timeout (and the TLS handshake timeout)
    at `header_timeout` seconds; `tls`: (server cert, key, client CA or None)."""
    text = f"""server:
  header-read-timeout: {round(header_timeout * 1000)}ms
  shutdown-grace: 3s
"""
    if max_connections:
        text += f"  max-connections: {max_connections}\n"
    if tls:
        cert, key, client_ca = tls
        text += f"""  tls:
    cert-file: {cert}
    key-file: {key}
    handshake-timeout: {round(header_timeout * 1000)}ms
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


def call(port, context, method, path, body=None, timeout=PROBE_TIMEOUT, phases=None):
    """One request on a fresh connection (HTTPS when `context`): (status, seconds it took).
    `phases`, a dict, gets the seconds of the TCP connect ("tcp") and the TLS handshake ("tls").
    Raises OSError / HTTPException when there is no answer."""
    phases = {} if phases is None else phases
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        phases["tcp"] = time.monotonic() - started
        if context:
            sock = context.wrap_socket(sock, server_hostname="localhost")
            phases["tls"] = time.monotonic() - started - phases["tcp"]
        conn.sock = sock
        conn.request(method, path, body=json.dumps(body).encode() if body is not None else None,
                     headers={"content-type": "application/json", "connection": "close"})
        answer = conn.getresponse()
        answer.read()
        return answer.status, time.monotonic() - started
    finally:
        conn.close()


class Probes:
    """A normal client: a send on a fresh connection every PROBE_EVERY seconds, each in its own
    thread so one that hangs does not delay the next. They run in a process of their own, so the
    script's work on the silent sockets (thousands of TLS handshakes) does not delay them on the
    GIL (time.monotonic is one clock for both processes). `finish` returns (started, seconds,
    outcome, phases): outcome 200, another status or the error's text; phases the seconds of the
    TCP connect and the TLS handshake."""

    def __init__(self, port, context):
        fork = multiprocessing.get_context("fork")
        self.stop, self.answers = fork.Event(), fork.Queue()
        self.process = fork.Process(target=self.run, args=(port, context), daemon=True)

    def start(self):
        self.process.start()

    def run(self, port, context):
        results, lock, threads = [], threading.Lock(), []

        def one():
            started = time.monotonic()
            body, phases = {"message": {"body": "cHJvYmU="}}, {}  # base64 of "probe"
            try:
                outcome, seconds = call(port, context, "POST", f"/api/v1/queues/{QUEUE}/messages", body,
                                        phases=phases)
            except (OSError, http.client.HTTPException) as err:
                outcome, seconds = f"{type(err).__name__}: {err}", time.monotonic() - started
            with lock:
                results.append((started, seconds, outcome, phases))

        next_at = time.monotonic()
        while not self.stop.is_set():
            threads.append(threading.Thread(target=one, daemon=True))
            threads[-1].start()
            next_at += PROBE_EVERY
            self.stop.wait(max(0.0, next_at - time.monotonic()))
        for thread in threads:
            thread.join(PROBE_TIMEOUT + 1)
        with lock:
            self.answers.put(sorted(results, key=lambda r: r[0]))

    def finish(self):
        self.stop.set()
        results = self.answers.get(timeout=PROBE_TIMEOUT + 10)
        self.process.join()
        return results

    def kill(self):
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


class Silent:
    """One silent connection: what it sends, when it went silent, when the server closed it."""
    __slots__ = ("sock", "kind", "stage", "silent_at", "closed_at", "how", "received", "port")

    def __init__(self, sock, kind):
        self.sock, self.kind, self.stage = sock, kind, "connecting"
        self.silent_at = self.closed_at = self.how = self.port = None
        self.received = 0


class SilentCrowd:
    """Opens `n` silent connections to `port` and, in one thread, drives them through connect,
    TLS handshake and preface, then watches them (reading and discarding what the server sends:
    its HTTP/2 SETTINGS, TLS session tickets) until the server closes them or `finish`.

    Paced (the default), it opens as many as the proxy's accept queue has room for below half
    its limit (`ss -lt`'s Recv-Q and Send-Q, over netlink), again as soon as the proxy took
    them, and a batch after a second without room (a proxy that stopped accepting), so each
    connection reaches the proxy rather than being dropped by the kernel at a full accept
    queue; unpaced, it opens all of them at once."""

    BATCH = 64  # without the accept queue's numbers: this many each 50 ms

    def __init__(self, port, n, kinds, context, paced=True):
        self.port, self.n, self.kinds, self.context, self.paced = port, n, kinds, context, paced
        self.selector = selectors.DefaultSelector()
        self.conns = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.started = self.opened_at = self.settled_at = None
        self.batch_at, self.forced = 0.0, 0
        self.error = None

    def start(self):
        self.started = time.monotonic()
        self.thread.start()

    def open_some(self, now):
        """Starts the next connects (non-blocking) when the proxy has room for them."""
        left = self.n - len(self.conns)
        if self.paced:
            queue = accept_queue(self.port)
            room = queue[1] // 2 - queue[0] if queue else self.BATCH * (now - self.batch_at >= 0.05)
            if room <= 0 and now - self.batch_at < 1.0:
                return
            self.forced += room <= 0
            left = min(left, room if room > 0 else self.BATCH)
        self.batch_at = now
        for _ in range(left):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            rc = sock.connect_ex(("127.0.0.1", self.port))
            conn = Silent(sock, self.kinds[len(self.conns) % len(self.kinds)])
            if rc in (0, errno.EINPROGRESS):
                self.selector.register(sock, selectors.EVENT_WRITE, conn)
            else:
                conn.stage, conn.how = "failed", errno.errorcode.get(rc, str(rc))
                sock.close()
            self.conns.append(conn)
        if len(self.conns) == self.n:
            self.opened_at = time.monotonic()

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
            conn.silent_at, conn.port = now, conn.sock.getsockname()[1]
            if conn.kind == "h2-preface":
                try:
                    conn.sock.send(PREFACE)
                except OSError as err:
                    self.closed(conn, now, f"sending the preface: {type(err).__name__}")
                    return
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
        try:
            self.watch()
        except Exception as err:  # reported by `report` as a failed check, not lost in a thread
            self.error = f"{type(err).__name__}: {err}"

    def watch(self):
        while not self.stop.is_set():
            opening = self.opened_at is None
            if opening:
                self.open_some(time.monotonic())
            events = self.selector.select(0.005 if opening else 0.05)
            now = time.monotonic()
            for key, _ in events:
                self.step(key.data, now)
            if (self.settled_at is None and self.opened_at is not None
                    and not any(c.stage in ("connecting", "handshake") for c in self.conns)):
                self.settled_at = now

    def finish(self):
        """Stops watching and closes every socket still open (the script's side); once."""
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()
        for conn in self.conns:
            if conn.stage not in ("closed", "failed"):
                conn.sock.close()
                conn.stage = "closed by the script"
        self.selector.close()


def percent(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))] if values else float("nan")


def logged_cap(log):
    """The connection cap the proxy logged at start, and how often it logged reaching it."""
    text = open(log, errors="replace").read()
    caps = re.findall(r"max_connections\W+(\d+)", text)
    return (int(caps[-1]) if caps else None), text.count("connection cap reached")


def listen_counters():
    """The kernel's (system-wide) counters of connections it dropped at a full accept queue and
    of SYN cookies, from /proc/net/netstat."""
    wanted = ("ListenOverflows", "ListenDrops", "SyncookiesSent", "SyncookiesRecv")
    try:
        lines = [line.split() for line in open("/proc/net/netstat") if line.startswith("TcpExt:")]
        return {k: int(v) for k, v in zip(lines[0], lines[1]) if k in wanted}
    except (OSError, IndexError, ValueError):
        return {}


def proc_net_tcp(port):
    """The IPv4 sockets on the proxy's side of `port` (/proc/net/tcp): (client port, state hex,
    receive queue) each; the listener's (state 0A) receive queue is its accept queue's length."""
    rows = []
    try:
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                local, remote, state, queues = line.split()[1:5]
                if int(local.split(":")[1], 16) == port:
                    rows.append((int(remote.split(":")[1], 16), state, int(queues.split(":")[1], 16)))
    except OSError:
        pass
    return rows


def server_side_peers(port):
    """The client ports of every socket the kernel holds on the proxy's side of `port` (accepted
    by the proxy or waiting in its accept queue)."""
    return {peer for peer, state, _ in proc_net_tcp(port) if state != "0A"}  # 0A: LISTEN


def accept_queue(port):
    """(length, limit) of the accept queue of the TCP listener on `port`, asked of the kernel
    over netlink (sock_diag: what `ss -lt` shows as Recv-Q and Send-Q), or None."""
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 4) as nl:  # NETLINK_SOCK_DIAG
            # inet_diag_req_v2: IPv4 TCP sockets in state LISTEN (1 << 10), any address.
            request = struct.pack("=BBBBI", socket.AF_INET, socket.IPPROTO_TCP, 0, 0, 1 << 10) + bytes(48)
            # nlmsghdr: SOCK_DIAG_BY_FAMILY (20), NLM_F_REQUEST | NLM_F_DUMP.
            nl.sendall(struct.pack("=IHHII", 16 + len(request), 20, 0x301, 1, 0) + request)
            while True:
                data, offset = nl.recv(65536), 0
                while offset < len(data):
                    length, kind = struct.unpack_from("=IH", data, offset)
                    if kind in (2, 3):  # NLMSG_ERROR, NLMSG_DONE: not found
                        return None
                    # inet_diag_msg after the 16-byte header: its source port at 4, queues at 56.
                    if struct.unpack_from(">H", data, offset + 20)[0] == port:
                        return struct.unpack_from("=II", data, offset + 16 + 56)
                    offset += (length + 3) & ~3
    except OSError:
        return None


def open_sockets(pid):
    """How many sockets process `pid` holds (its listener included)."""
    count = 0
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    for fd in fds:
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return count


def run(name, binary, work, args, certs):
    print(f"{name}: eqs-proxy ({'plaintext' if name == 'plain' else 'TLS' if name == 'tls' else 'mTLS'}), "
          f"{args.connections} silent connections, header-read-timeout {args.header_timeout:g} s"
          f"{'' if name == 'plain' else f', tls.handshake-timeout {args.header_timeout:g} s'}")
    log = os.path.join(work, f"{name}.log")
    open(log, "w").close()
    config = os.path.join(work, f"{name}.yaml")
    context = None
    if name == "plain":
        write_config(config, args.header_timeout, args.max_connections)
        proc, url = start_proxy(binary, config, log)
        port = int(url.rsplit(":", 1)[1])
        kinds = PLAIN_KINDS
    else:
        ca, server, client = certs
        write_config(config, args.header_timeout, args.max_connections,
                     (server[0], server[1], ca if name == "mtls" else None))
        context = ssl.create_default_context(cafile=ca)
        if name == "mtls":
            context.load_cert_chain(*client)
        proc, port = start_tls_proxy(binary, config, log, context)
        kinds = TLS_KINDS
    crowd = SilentCrowd(port, args.connections, kinds, context, paced=not args.unpaced)
    probes = Probes(port, context)
    try:
        status, _ = call(port, context, "POST", "/api/v1/queues", {"name": QUEUE})
        check(status in (200, 201), f"{name}: the probe queue is made ({status})")
        probes.start()
        time.sleep(BASELINE)
        counters = listen_counters()
        crowd.start()
        t0 = crowd.started
        # The run lasts --duration, and longer when the last connections went silent so late
        # that the proxy's timeout (+ grace) has not passed for them yet.
        peak = (0, 0.0)  # the most sockets the proxy held at once, and when
        while time.monotonic() < max(t0 + args.duration, (crowd.settled_at or t0 + args.duration)
                                     + args.header_timeout + args.grace + 0.5):
            held = open_sockets(proc.pid) or 0
            peak = max(peak, (held, time.monotonic() - t0))
            time.sleep(0.2)
        run_seconds = time.monotonic() - t0
        results = probes.finish()
        crowd.stop.set()
        crowd.thread.join()
        # What the kernel and the proxy hold at the end, before the script closes its sockets.
        kernel = {"peers": server_side_peers(port), "proxy sockets": open_sockets(proc.pid), "peak": peak,
                  "run": run_seconds,
                  **{k: v - counters.get(k, 0) for k, v in listen_counters().items()}}
        report(name, args, crowd, results, t0, log, kernel)
        crowd.finish()
        closed_by_us = time.monotonic()

        def served():
            try:
                return call(port, context, "POST", f"/api/v1/queues/{QUEUE}/messages",
                            {"message": {"body": "YWdhaW4="}}, timeout=PROBE_LIMIT)[0] == 200
            except (OSError, http.client.HTTPException):
                return False
        recovered = until(served, 15)
        when = f"after {time.monotonic() - closed_by_us:.1f} s" if recovered else "not within 15 s"
        check(recovered, f"{name}: once the script closed its silent sockets, a send is served within "
                         f"{PROBE_LIMIT:g} s again ({when})")
        check(proc.poll() is None, f"{name}: the proxy is still running")
    finally:
        probes.kill()
        crowd.finish()
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def report(name, args, crowd, results, t0, log, kernel):
    if crowd.error:
        check(False, f"{name}: the script's watch over the silent sockets failed: {crowd.error}")
    cap, cap_reached = logged_cap(log)
    conns = crowd.conns
    opened = [c for c in conns if c.stage != "failed"]  # connected, or still trying
    pacing = (f"paced by the proxy's accept queue, {crowd.forced} batch(es) sent after a second without room"
              if crowd.paced else "unpaced")
    print(f"    opened {len(conns)} connections in "
          f"{f'{crowd.opened_at - t0:.2f} s' if crowd.opened_at else 'more than the run'} ({pacing}): "
          f"{sum(c.stage != 'connecting' for c in opened)} established, "
          f"{sum(c.stage == 'connecting' for c in opened)} still connecting, {len(conns) - len(opened)} failed"
          + (f"; every connect/handshake settled {crowd.settled_at - t0:.1f} s after the first connect"
             if crowd.settled_at else "; some connects/handshakes never completed before the run ended"))
    held, when = kernel["peak"]
    print(f"    the proxy logged its connection cap as {cap} and 'connection cap reached' {cap_reached} time(s); "
          f"it held at most {held} sockets at once (listener included; sampled every 0.2 s, at {when:+.1f} s), "
          f"{kernel['proxy sockets']} at the end"
          + ("" if cap is None or held > cap else " — the cap was never reached (--max-connections lowers it)"))
    print(f"    kernel, during the run (system-wide): {kernel.get('ListenOverflows', '?')} accept-queue overflows, "
          f"{kernel.get('SyncookiesSent', '?')} SYN cookies sent, {kernel.get('SyncookiesRecv', '?')} received")

    # The normal client.
    served = [(s - t0, d) for s, d, o, _ in results if o == 200]
    late = [(s - t0, d, o, ph) for s, d, o, ph in results if o != 200 or d > PROBE_LIMIT]
    latencies = [d for _, d in served]
    if latencies:
        print(f"    probes answered 200: {len(served)} of {len(results)}; latency median "
              f"{statistics.median(latencies) * 1000:.0f} ms, p99 {percent(latencies, 99) * 1000:.0f} ms, "
              f"max {max(latencies) * 1000:.0f} ms")
    before = [r for r in results if r[0] < t0]
    if late:
        print(f"    probes not answered within {PROBE_LIMIT:g} s: {len(late)} (start after the first silent connect: "
              f"latency, of which TCP connect / TLS handshake; outcome):")
        for started, seconds, outcome, phases in late[:25]:
            parts = [f"{k} {phases[k] * 1000:.0f} ms" for k in ("tcp", "tls") if k in phases]
            why = ("200" if outcome == 200 else f"status {outcome}" if isinstance(outcome, int) else outcome)
            hint = (" (its SYN was retransmitted: the accept queue was full)"
                    if phases.get("tcp", 0) > 0.9 else "")
            print(f"      {started:+5.1f} s: {seconds * 1000:5.0f} ms ({', '.join(parts) or 'no connection'}); "
                  f"{why}{hint}")
        if len(late) > 25:
            print(f"      … and {len(late) - 25} more")
    check(results and not late,
          f"{name}: every probe (a send on a fresh connection every {PROBE_EVERY * 1000:.0f} ms, {len(before)} "
          f"before the silent connections and {len(results) - len(before)} while they were open) is answered "
          f"within {PROBE_LIMIT:g} s ({len(results) - len(late)} of {len(results)})")

    # The silent connections. One still open on the script's side with no socket on the proxy's
    # side never reached the proxy: the kernel answered its SYN with a cookie and dropped the
    # connection at a full accept queue when the ACK came; a client that sends nothing never
    # learns it. The proxy cannot close what it never had, so those are reported, not counted.
    limit = args.header_timeout + args.grace
    counted = closed_total = in_time_total = 0
    for kind in dict.fromkeys(crowd.kinds):
        mine = [c for c in opened if c.kind == kind]
        closed = [c for c in mine if c.stage == "closed"]
        open_ = [c for c in mine if c.stage != "closed"]
        # Not on the proxy's side: dropped by the kernel, or a connect still unanswered.
        phantom = [c for c in open_ if c.port not in kernel["peers"]]
        connecting = sum(c.stage == "connecting" for c in phantom)
        held = len(open_) - len(phantom)
        after = [c.closed_at - c.silent_at for c in closed]
        in_time = sum(a <= limit for a in after)
        counted += len(mine) - len(phantom)
        closed_total += len(closed)
        in_time_total += in_time
        hows = {}
        for c in closed:
            hows[c.how] = hows.get(c.how, 0) + 1
        line = f"    {kind}: {len(mine)} opened, {len(closed)} closed by the server"
        if closed:
            first, last = (f(c.closed_at for c in closed) - t0 for f in (min, max))
            line += (f" ({', '.join(f'{h} ×{n}' for h, n in hows.items())}), {in_time} within {limit:g} s of "
                     f"going silent; closed after median {statistics.median(after):.1f} s, max {max(after):.1f} s; "
                     f"first at {first:+.1f} s, last at {last:+.1f} s")
        line += f"; still open at the end: {held} held on the proxy's side"
        if len(phantom) > connecting:
            line += (f", {len(phantom) - connecting} never reached the proxy (no socket on its side: "
                     f"dropped by the kernel)")
        if connecting:
            line += f", {connecting} still connecting (not counted)"
        never = sum(c.stage == "handshake" for c in mine)
        if never:
            line += f"; {never} never finished the TLS handshake"
        print(line)
    print(f"    (connections that never reached the proxy are not counted below: {len(opened) - counted})")
    check(len(opened) == len(conns) and closed_total == counted,
          f"{name}: every silent connection the proxy's side had is closed by the server within the "
          f"{kernel['run']:.0f} s run ({closed_total} of {counted} closed; {len(conns) - len(opened)} failed to connect)")
    check(len(opened) == len(conns) and in_time_total == counted,
          f"{name}: every silent connection the proxy's side had is closed within header-read-timeout "
          f"{args.header_timeout:g} s + {args.grace:g} s of going silent ({in_time_total} of {counted})")


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
    parser.add_argument("--max-connections", type=int,
                        help="server.max-connections (the proxy's default, 4096, unless set)")
    parser.add_argument("--runs", default="plain,tls,mtls")
    parser.add_argument("--unpaced", action="store_true",
                        help="open every connection at once, overflowing the proxy's accept queue")
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
