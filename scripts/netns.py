#!/usr/bin/env python3
"""Network mode across hosts (issue 13): three network namespaces — `vm1` and `vm2`, where
standalone proxies run as on two VMs, and `app`, an application host whose edge proxies forward
to them — joined by a bridge in the test's own namespace, which plays a fourth host (an outside
client). Nothing here goes over loopback between hosts.

- the three conformance suites pass from `app` through `kind: remote` edges to the standalone
  proxies on `vm1`, over TLS with client certificates required;
- from the outside host: plaintext to the TLS port gets no HTTP answer; a TLS client with no
  certificate, with one from another CA, or with an expired one is refused (and the standalone
  proxy logs why); the allowed certificate gets in;
- an edge with an expired client certificate is refused at start; an edge whose standalone proxy
  serves an expired certificate is refused at start saying so;
- the standalone eqs's certificate is rotated on disk: new connections get the new one within
  its reload interval, without a restart, and an edge keeps working across the rotation;
- DNS SRV from a DNS server on `vm2` (dnsmasq): a primary on `vm1` (priority 10) and a standby on
  `vm2` (priority 20), both on one PostgreSQL schema (reached through a forwarder on the bridge):
  the primary killed -9, traffic moves to the standby within 2 s and every acknowledged send is
  received; the primary back, calls return to it.

Needs root (ip netns, a bridge, veth pairs); everything is removed at the end.
  netns.py --bin-dir DIR --work DIR --postgres URL [--dnsmasq PATH]
"""

import argparse
import asyncio
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse

from harness import check, failures, receive_all, request, send_retrying, served_sends
from remote import TOKEN, authority, issue, write

STANDALONE = {"eqs": 7401, "eos": 7402, "ekv": 7403}
SERVICES = {"eqs": "queue", "eos": "object", "ekv": "kv"}


def ip(*args, check_=True):
    return subprocess.run(["ip", *args], check=check_, capture_output=True, text=True)


class Hosts:
    """The namespaces and the bridge; addresses 10.213.N.{1,2,3}, the bridge .254."""

    def __init__(self):
        tag = os.getpid() % 10000
        self.prefix = f"10.213.{os.getpid() % 250}"
        self.bridge = f"exobr{tag}"
        self.ns = {name: f"exo{tag}-{name}" for name in ("vm1", "vm2", "app")}
        self.number = {"vm1": 1, "vm2": 2, "app": 3}

    def addr(self, host):
        return f"{self.prefix}.{self.number[host]}" if host != "outside" else f"{self.prefix}.254"

    def up(self):
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{self.addr('outside')}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        for host, ns in self.ns.items():
            outer, inner = f"{self.bridge}{host[0]}{self.number[host]}", "eth0"
            ip("netns", "add", ns)
            ip("link", "add", outer, "type", "veth", "peer", "name", inner, "netns", ns)
            ip("link", "set", outer, "master", self.bridge, "up")
            ip("-n", ns, "addr", "add", f"{self.addr(host)}/24", "dev", inner)
            ip("-n", ns, "link", "set", inner, "up")
            ip("-n", ns, "link", "set", "lo", "up")

    def cut(self, host):
        """Takes `host` off the network: its link to the bridge goes down, nothing answers."""
        ip("link", "set", f"{self.bridge}{host[0]}{self.number[host]}", "down")

    def down(self):
        for ns in self.ns.values():
            ip("netns", "del", ns, check_=False)
        ip("link", "del", self.bridge, check_=False)

    def popen(self, host, argv, log, env=None):
        return subprocess.Popen(["ip", "netns", "exec", self.ns[host], *argv], stdout=open(log, "ab"),
                                stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})

    def run(self, host, argv, env=None, timeout=300):
        return subprocess.run(["ip", "netns", "exec", self.ns[host], *argv], capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, **(env or {})})


def forward(listen, target):
    """A TCP forwarder on the bridge to a loopback-only server of the outside host (PostgreSQL),
    in a background thread."""
    async def pipe(reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def handle(reader, writer):
        try:
            up_reader, up_writer = await asyncio.open_connection(*target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def serve():
        server = await asyncio.start_server(handle, *listen)
        async with server:
            await server.serve_forever()

    threading.Thread(target=lambda: asyncio.run(serve()), daemon=True).start()


def tls_config(server, ca, reload="1s"):
    return f"""  tls:
    cert-file: {server[0]}
    key-file: {server[1]}
    client-ca-file: {ca[0]}
    allowed-clients: [CN=edge]
    reload-interval: {reload}
"""


def standalone(work, name, server, ca, backend):
    return write(f"{work}/{name}.yaml", f"""server:
  auth-token: env:EXO_UPSTREAM_TOKEN
{tls_config(server, ca)}backend:
  {backend}
""")


def edge(work, name, url, ca, cert, extra=""):
    client = f"  client-cert-file: {cert[0]}\n  client-key-file: {cert[1]}\n" if cert else ""
    return write(f"{work}/edge-{name}.yaml", f"""backend:
  kind: remote
  url: {url}
  ca-file: {ca[0]}
{client}  token: env:EXO_REMOTE_TOKEN
  connect-timeout: 5s
{extra}""")


def reachable(address, port, seconds=20):
    for _ in range(seconds * 10):
        try:
            socket.create_connection((address, port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.1)
    return False


def tls_get(address, port, ca, cert=None, path="/healthz"):
    """(status line or None, the peer's certificate DER, error text) of an HTTPS GET."""
    context = ssl.create_default_context(cafile=ca[0])
    context.check_hostname = False
    if cert:
        context.load_cert_chain(cert[0], cert[1])
    peer = None
    try:
        with socket.create_connection((address, port), timeout=5) as raw:
            with context.wrap_socket(raw) as tls:
                peer = tls.getpeercert(binary_form=True)
                tls.sendall(f"GET {path} HTTP/1.1\r\nhost: vm\r\nconnection: close\r\n\r\n".encode())
                answer = tls.recv(4096).decode(errors="replace")
                return (answer.split("\r\n", 1)[0] if answer else None), peer, ""
    except (OSError, ssl.SSLError) as err:
        return None, peer, str(err)


def wait_http(url, seconds=30, want=200):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if request("GET", url, timeout=2)[0] == want:
                return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def send_count(address, port, cert, ca):
    """The sends a standalone (mTLS) eqs on another host has served."""
    return served_sends(f"https://{address}:{port}", cert, ca)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin-dir", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--postgres", required=True)
    parser.add_argument("--dnsmasq", default="/usr/sbin/dnsmasq")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("netns.py needs root: it creates network namespaces, a bridge and veth pairs")
    work = os.path.abspath(args.work)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    os.environ["RUST_BACKTRACE"] = "0"
    binary = lambda proxy: os.path.join(os.path.abspath(args.bin_dir), f"{proxy}-proxy")
    conformance = os.path.join(os.path.abspath(args.bin_dir), "conformance")
    hosts = Hosts()
    procs = []
    hosts.down()
    hosts.up()
    try:
        run_cases(args, work, hosts, binary, conformance, procs)
    finally:
        for proc in procs:
            proc.kill()
        hosts.down()
    if failures:
        print(f"netns: {len(failures)} check(s) failed")
        sys.exit(1)
    print("netns: every check passed")


def run_cases(args, work, hosts, binary, conformance, procs):
    vm1, vm2, app, outside = (hosts.addr(h) for h in ("vm1", "vm2", "app", "outside"))
    print(f"hosts: vm1 {vm1}, vm2 {vm2}, app {app}, outside (this one) {outside}")
    ca = authority(work, "net")
    sans = f"subjectAltName=IP:{vm1},IP:{vm2},DNS:vm1.exo.test,DNS:vm2.exo.test"
    server = issue(work, ca, "server", "vm", sans)
    client = issue(work, ca, "edge", "edge", "extendedKeyUsage=clientAuth")
    foreign = issue(work, authority(work, "foreign"), "foreign", "edge", "extendedKeyUsage=clientAuth")
    expired_client = issue(work, ca, "expired-edge", "edge", "extendedKeyUsage=clientAuth", days="-1")
    expired_server = issue(work, ca, "expired-server", "vm", sans, days="-1")
    upstream_env = {"EXO_UPSTREAM_TOKEN": TOKEN}
    edge_env = {"EXO_REMOTE_TOKEN": TOKEN}

    backends = {"eqs": f"kind: embedded\n  path: {work}/eqs.db", "eos": f"kind: fs\n  root: {work}/objects",
                "ekv": f"kind: embedded\n  path: {work}/ekv.db"}
    # The standalone eqs's certificate lives in files of its own, to be rotated below.
    rotating = (f"{work}/eqs-server.pem", f"{work}/eqs-server.key")
    shutil.copy(server[0], rotating[0])
    shutil.copy(server[1], rotating[1])
    for proxy, backend in backends.items():
        config = standalone(work, f"vm1-{proxy}", rotating if proxy == "eqs" else server, ca, backend)
        procs.append(hosts.popen("vm1", [binary(proxy), "--config", config, "--listen", f"{vm1}:{STANDALONE[proxy]}"],
                                 f"{work}/vm1-{proxy}.log", upstream_env))
    for proxy, port in STANDALONE.items():
        if not reachable(vm1, port):
            print(open(f"{work}/vm1-{proxy}.log").read()[-3000:])
            raise SystemExit(f"the standalone {proxy} on vm1 did not start")

    print("the conformance suites from the app host through edges (kind: remote) to vm1, over mTLS")
    runs = [hosts.popen("app", [conformance, "run", "--config",
                                edge(work, proxy, f"https://{vm1}:{STANDALONE[proxy]}", ca, client),
                                "--service", SERVICES[proxy], "--report-dir", f"{work}/conformance"],
                        f"{work}/conformance-{proxy}.log", edge_env)
            for proxy in STANDALONE]
    for proxy, run in zip(STANDALONE, runs):
        run.wait(timeout=600)
        lines = open(f"{work}/conformance-{proxy}.log").read().strip().splitlines()
        summary = lines[-1] if lines else ""
        check(run.returncode == 0 and " 0 failed" in summary, f"{proxy}: {summary}")

    print("clients the standalone proxy must refuse, from the outside host")
    port = STANDALONE["eqs"]
    with socket.create_connection((vm1, port), timeout=5) as raw:
        raw.sendall(b"GET /healthz HTTP/1.1\r\nhost: vm1\r\n\r\n")
        raw.settimeout(5)
        try:
            answer = raw.recv(4096)
        except OSError:
            answer = b""
    check(not answer.startswith(b"HTTP/"), f"plaintext HTTP to the TLS port gets no HTTP answer ({answer[:16]!r})")
    for what, cert in (("no client certificate", None), ("a certificate from another CA", foreign),
                       ("an expired certificate", expired_client)):
        status, _, error = tls_get(vm1, port, ca, cert)
        check(status is None, f"{what}: refused ({error or status})")
    # The proxy logs a failed handshake after the client has seen the alert: give it a moment.
    deadline = time.monotonic() + 5
    while True:
        refusals = [line for line in open(f"{work}/vm1-eqs.log").read().splitlines()
                    if "TLS handshake failed" in line]
        logged = any("xpired" in line for line in refusals)
        if logged or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    check(logged, "the standalone proxy logs that the refused client certificate had expired"
          + ("" if logged else f" (handshake failures logged: {refusals[-3:]})"))
    status, _, error = tls_get(vm1, port, ca, client)
    check(status == "HTTP/1.1 200 OK", f"the allowed certificate gets in ({status or error})")

    print("edges refused at start, saying why")
    refused = hosts.run("app", [binary("eqs"), "--config",
                                edge(work, "expired-client", f"https://{vm1}:{port}", ca, expired_client),
                                "--listen", "127.0.0.1:7501"], edge_env, timeout=60)
    last = (refused.stdout + refused.stderr).strip().splitlines()[-1:] or [""]
    check(refused.returncode != 0 and "remote" in last[0], f"an expired client certificate: exit {refused.returncode}, {last[0][-140:]!r}")
    expired_config = standalone(work, "vm2-expired", expired_server, ca, f"kind: embedded\n  path: {work}/expired.db")
    procs.append(hosts.popen("vm2", [binary("eqs"), "--config", expired_config, "--listen", f"{vm2}:7411"],
                             f"{work}/vm2-expired.log", upstream_env))
    reachable(vm2, 7411)
    refused = hosts.run("app", [binary("eqs"), "--config", edge(work, "expired-server", f"https://{vm2}:7411", ca, client),
                                "--listen", "127.0.0.1:7501"], edge_env, timeout=60)
    last = (refused.stdout + refused.stderr).strip().splitlines()[-1:] or [""]
    check(refused.returncode != 0 and "xpired" in last[0],
          f"a standalone proxy serving an expired certificate: exit {refused.returncode}, {last[0][-140:]!r}")

    print("the standalone eqs's certificate rotated on disk, no restart")
    edge_url = f"http://{app}:7401"
    procs.append(hosts.popen("app", [binary("eqs"), "--config", edge(work, "rotation", f"https://{vm1}:{port}", ca, client),
                                     "--listen", f"{app}:7401", "--allow-insecure-non-loopback"],
                             f"{work}/app-edge.log", edge_env))
    check(wait_http(f"{edge_url}/readyz"), "an edge on the app host is ready (reached from the outside host)")
    request("POST", f"{edge_url}/api/v1/queues", {"name": "rotation"})
    before = tls_get(vm1, port, ca, client)[1]
    renewed = issue(work, ca, "renewed", "vm", sans)
    # The key first: a reload that sees the new certificate finds its key there.
    shutil.copy(renewed[1], rotating[1])
    shutil.copy(renewed[0], rotating[0])
    served, waited = before, time.monotonic()
    while served == before and time.monotonic() - waited < 10:
        time.sleep(0.2)
        served = tls_get(vm1, port, ca, client)[1]
    renewed_der = ssl.PEM_cert_to_DER_cert(open(renewed[0]).read())
    check(served == renewed_der, f"new connections get the new certificate after {time.monotonic() - waited:.1f} s")
    status, _ = request("POST", f"{edge_url}/api/v1/queues/rotation/messages", {"message": {"body": "cm90YXRlZA=="}})
    check(status == 200, f"the edge still sends through ({status})")

    srv(args, work, hosts, binary, procs, ca, server, client, upstream_env, edge_env)


def srv(args, work, hosts, binary, procs, ca, server, client, upstream_env, edge_env):
    vm1, vm2, app, outside = (hosts.addr(h) for h in ("vm1", "vm2", "app", "outside"))
    print("DNS SRV across hosts: a primary on vm1, a standby on vm2, the DNS server on vm2")
    pg = urllib.parse.urlsplit(args.postgres)
    forward((outside, 15432), (pg.hostname or "127.0.0.1", pg.port or 5432))
    userinfo = pg.netloc.rsplit("@", 1)[0] + "@" if "@" in pg.netloc else ""
    database = pg._replace(netloc=f"{userinfo}{outside}:15432").geturl()
    schema = f"exo_netns_{int(time.time())}_{os.getpid()}"
    port = 7421
    members = {"vm1": None, "vm2": None}
    config = standalone(work, "srv", server, ca, f"kind: postgres\n  url: {database}\n  schema: {schema}")

    def start(host):
        members[host] = hosts.popen(host, [binary("eqs"), "--config", config, "--listen", f"{hosts.addr(host)}:{port}"],
                                    f"{work}/srv-{host}.log", upstream_env)
        procs.append(members[host])
        return reachable(hosts.addr(host), port)

    try:
        check(start("vm1") and start("vm2"), "a primary on vm1 and a standby on vm2 share one PostgreSQL schema")
        dns = hosts.popen("vm2", [args.dnsmasq, "--no-daemon", "--conf-file=/dev/null", "--port=53",
                                  f"--listen-address={vm2}", "--bind-interfaces", "--no-resolv", "--no-hosts",
                                  "--local-ttl=1", "--user=root",
                                  f"--host-record=vm1.exo.test,{vm1}", f"--host-record=vm2.exo.test,{vm2}",
                                  f"--srv-host=_eqs._tcp.exo.test,vm1.exo.test,{port},10,1",
                                  f"--srv-host=_eqs._tcp.exo.test,vm2.exo.test,{port},20,1"],
                          f"{work}/dnsmasq.log")
        procs.append(dns)
        time.sleep(0.5)
        check(dns.poll() is None, "dnsmasq on vm2 serves the SRV records")
        edge_url = f"http://{app}:7402"
        procs.append(hosts.popen("app", [binary("eqs"), "--config",
                                         edge(work, "srv", "srv:_eqs._tcp.exo.test", ca, client, f"  nameserver: {vm2}:53\n"),
                                         "--listen", f"{app}:7402", "--allow-insecure-non-loopback"],
                                 f"{work}/app-srv-edge.log", edge_env))
        check(wait_http(f"{edge_url}/readyz"), "an edge on the app host with url: srv:… is ready")
        request("POST", f"{edge_url}/api/v1/queues", {"name": "srv"})
        acknowledged = []

        def send(i):
            if send_retrying(edge_url, "srv", f"s{i}"):
                acknowledged.append(f"s{i}")

        for i in range(30):
            send(i)
        primary, standby = send_count(vm1, port, client, ca), send_count(vm2, port, client, ca)
        check(primary >= 30 and standby == 0, f"calls go to the primary on vm1 ({primary:.0f} there, {standby:.0f} on vm2)")
        members["vm1"].kill()
        members["vm1"].wait()
        killed = time.monotonic()
        send(30)
        moved = time.monotonic() - killed
        for i in range(31, 60):
            send(i)
        check(moved < 2, f"the primary killed -9, the next send succeeded on vm2 after {moved:.2f} s")
        check(send_count(vm2, port, client, ca) >= 30, "and the calls after it went to vm2")
        got = receive_all(edge_url, "srv", acknowledged)
        missing = set(acknowledged) - got
        check(len(acknowledged) == 60 and not missing,
              f"{len(acknowledged)} sends acknowledged, every one received ({len(missing)} missing)")
        start("vm1")
        back = 0.0
        for i in range(60, 200):
            send(i)
            back = send_count(vm1, port, client, ca)
            if back > 0:
                break
            time.sleep(0.1)
        check(back > 0, "the primary back on vm1, calls return to it")
        # A host that vanishes without a word (powered off, partitioned): no reset, no refusal,
        # packets to it are dropped.
        acknowledged.clear()
        hosts.cut("vm1")
        cut = time.monotonic()
        send(1000)
        moved = time.monotonic() - cut
        for i in range(1001, 1020):
            send(i)
        check(moved < 2, f"vm1 cut off the network, the next send succeeded on vm2 after {moved:.2f} s")
        check(len(acknowledged) == 20, f"and every send after it was acknowledged ({len(acknowledged)} of 20)")
    finally:
        subprocess.run(["psql", args.postgres, "-q", "-c", f"DROP SCHEMA IF EXISTS {schema} CASCADE"],
                       capture_output=True)


if __name__ == "__main__":
    main()
