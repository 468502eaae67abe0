#!/usr/bin/env python3
"""The `remote` backends as an operator runs them: a standalone eqs, eos and ekv (embedded, fs,
embedded) serve TLS with client certificates required (`allowed-clients: [CN=edge]`) and a bearer
token; edge proxies whose backend is `kind: remote` forward to them.

- the whole conformance suite (queue, object, kv) passes through the edges;
- an edge is refused, at start and saying why, with: a client certificate from another CA, no
  client certificate, a certificate of the right CA but not an allowed identity, a wrong token,
  plaintext to the TLS port;
- an edge started before its standalone proxy starts, is not ready and answers 503 (retryable)
  forwarding nothing; once the standalone proxy is up the edge is ready by itself;
- the standalone eqs killed -9: the edge answers 503 retryable and is not ready; restarted, every
  message acknowledged before the kill is received through the edge;
- a 64 MiB object streams through the edge eos byte-exact, and an upload cut halfway at the
  edge leaves nothing on the standalone proxy;
- discovery by DNS SRV (dnsmasq on a free port answering `_eqs._tcp.exo.test` with a primary of
  priority 10 and a standby of priority 20, two standalone eqs on one PostgreSQL schema): calls go
  to the primary; the primary killed -9, they move to the standby within 2 s and every
  acknowledged send is received; the primary back, calls return to it.

  remote.py --bin-dir DIR --work DIR --postgres URL [--dnsmasq PATH]
Certificates are made with the openssl CLI.
"""

import argparse
import base64
import hashlib
import os
import socket
import subprocess
import sys
import time
import urllib.request

from harness import check, failures, free_port, receive_all, request, send_retrying, served_sends

TOKEN = "upstream-token-" + base64.b32encode(os.urandom(10)).decode()


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def authority(work, name):
    """A throw-away CA: (ca.pem, ca.key)."""
    ca, key = os.path.join(work, f"{name}-ca.pem"), os.path.join(work, f"{name}-ca.key")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", ca, "-days", "2",
            "-subj", f"/CN={name} test CA")
    return ca, key


def issue(work, ca, name, cn, extensions, days="2"):
    """A certificate for `cn` signed by `ca`, valid for `days` (negative: expired): (cert.pem,
    cert.key)."""
    cert, key, csr, ext = (os.path.join(work, f"{name}.{e}") for e in ("pem", "key", "csr", "cnf"))
    with open(ext, "w") as f:
        f.write(extensions + "\n")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", f"/CN={cn}")
    openssl("x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial", "-out", cert,
            "-days", days, "-extfile", ext)
    return cert, key


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def standalone_config(server, ca, backend):
    """A standalone proxy's config: TLS, client certificates of `ca` required and only CN=edge
    let in, the bearer token from $EXO_UPSTREAM_TOKEN, and `backend` (its `backend:` lines)."""
    return f"""server:
  auth-token: env:EXO_UPSTREAM_TOKEN
  tls:
    cert-file: {server[0]}
    key-file: {server[1]}
    client-ca-file: {ca[0]}
    allowed-clients: [CN=edge]
backend:
  {backend}
"""


def wait_ready(url, proc, log, seconds=20):
    for _ in range(int(seconds * 10)):
        if proc.poll() is not None:
            break
        try:
            if request("GET", f"{url}/readyz", timeout=2)[0] == 200:
                return True
        except OSError:
            pass
        time.sleep(0.1)
    print(open(log).read()[-3000:])
    return False


def start(binary, config, port, log, env=None, scheme="http"):
    proc = subprocess.Popen([binary, "--config", config, "--listen", f"127.0.0.1:{port}"],
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    return proc, f"{scheme}://127.0.0.1:{port}"


def upstream_ready(port, seconds=20):
    """The standalone proxies serve TLS only: ready once the port accepts connections."""
    for _ in range(seconds * 10):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.1)
    return False


def send_count(port, cert, ca):
    """The sends a standalone (mTLS) eqs on this host has served."""
    return served_sends(f"https://localhost:{port}", cert, ca)


def srv_discovery(args, work, binary, ca, server, edge, env):
    print("discovery by DNS SRV: a primary and a standby in front of one PostgreSQL schema")
    schema = f"exo_remote_{int(time.time())}_{os.getpid()}"
    names = {"primary": free_port(), "standby": free_port()}
    procs = {}
    dns_port = free_port()
    dns = None
    edge_proc = None
    try:
        for name, port in names.items():
            write(f"{work}/srv-{name}.yaml",
                  standalone_config(server, ca, f"kind: postgres\n  url: {args.postgres}\n  schema: {schema}"))
            procs[name] = start(binary("eqs"), f"{work}/srv-{name}.yaml", port, f"{work}/srv-{name}.log", env)[0]
        for name, port in names.items():
            if not upstream_ready(port):
                print(open(f"{work}/srv-{name}.log").read()[-2000:])
                raise SystemExit(f"standalone eqs {name} did not start")
        dns = subprocess.Popen(
            [args.dnsmasq, "--no-daemon", "--conf-file=/dev/null", f"--port={dns_port}", "--listen-address=127.0.0.1",
             "--bind-interfaces", "--no-resolv", "--no-hosts", "--local-ttl=1", "--user=root",
             "--host-record=primary.exo.test,127.0.0.1", "--host-record=standby.exo.test,127.0.0.1",
             f"--srv-host=_eqs._tcp.exo.test,primary.exo.test,{names['primary']},10,1",
             f"--srv-host=_eqs._tcp.exo.test,standby.exo.test,{names['standby']},20,1"],
            stdout=open(f"{work}/dnsmasq.log", "ab"), stderr=subprocess.STDOUT)
        time.sleep(0.5)
        check(dns.poll() is None, "dnsmasq serves the SRV records")
        config = write(f"{work}/edge-srv.yaml", f"""backend:
  kind: remote
  url: srv:_eqs._tcp.exo.test
  nameserver: 127.0.0.1:{dns_port}
  ca-file: {ca[0]}
  client-cert-file: {edge[0]}
  client-key-file: {edge[1]}
  token: env:EXO_REMOTE_TOKEN
""")
        edge_port = free_port()
        edge_proc, edge_url = start(binary("eqs"), config, edge_port, f"{work}/edge-srv.log", {"EXO_REMOTE_TOKEN": TOKEN})
        check(wait_ready(edge_url, edge_proc, f"{work}/edge-srv.log"), "an edge with url: srv:… and a nameserver is ready")
        queue = "srv-orders"
        request("POST", f"{edge_url}/api/v1/queues", {"name": queue})
        acknowledged, failed_over_after = [], None

        def send(i):
            if send_retrying(edge_url, queue, f"s{i}"):
                acknowledged.append(f"s{i}")

        for i in range(30):
            send(i)
        client = edge
        on_primary, on_standby = send_count(names["primary"], client, ca), send_count(names["standby"], client, ca)
        check(on_primary >= 30 and on_standby == 0,
              f"calls go to the lowest priority (primary {on_primary:.0f} sends, standby {on_standby:.0f})")
        procs["primary"].kill()
        procs["primary"].wait()
        killed = time.monotonic()
        send(30)
        failed_over_after = time.monotonic() - killed
        for i in range(31, 60):
            send(i)
        check(failed_over_after < 2, f"with the primary killed -9 the next send succeeded on the standby after {failed_over_after:.2f} s")
        check(send_count(names["standby"], client, ca) >= 30, "and the calls after it went to the standby")
        got = receive_all(edge_url, queue, acknowledged)
        missing = set(acknowledged) - got
        check(len(acknowledged) == 60 and not missing,
              f"{len(acknowledged)} sends acknowledged, every one received ({len(missing)} missing)")
        procs["primary"] = start(binary("eqs"), f"{work}/srv-primary.yaml", names["primary"], f"{work}/srv-primary.log", env)[0]
        upstream_ready(names["primary"])
        before = 0.0
        for i in range(60, 200):
            send(i)
            before = send_count(names["primary"], client, ca)
            if before > 0:
                break
            time.sleep(0.1)
        check(before > 0, "the primary back, calls return to it")
    finally:
        if edge_proc:
            edge_proc.kill()
        if dns:
            dns.kill()
        for proc in procs.values():
            proc.kill()
        subprocess.run(["psql", args.postgres, "-q", "-c", f"DROP SCHEMA IF EXISTS {schema} CASCADE"],
                       capture_output=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin-dir", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--postgres", required=True, help="a database both standalone eqs of the SRV check share")
    parser.add_argument("--dnsmasq", default="/usr/sbin/dnsmasq")
    args = parser.parse_args()
    work = os.path.abspath(args.work)
    os.environ["RUST_BACKTRACE"] = "0"  # an error exit prints its message, not a backtrace
    os.makedirs(work, exist_ok=True)
    binary = lambda proxy: os.path.join(args.bin_dir, f"{proxy}-proxy")
    conformance = os.path.join(args.bin_dir, "conformance")

    ca = authority(work, "edge")
    server = issue(work, ca, "server", "localhost",
                   "subjectAltName=DNS:localhost,IP:127.0.0.1,DNS:primary.exo.test,DNS:standby.exo.test")
    edge = issue(work, ca, "edge", "edge", "extendedKeyUsage=clientAuth")
    intruder = issue(work, ca, "intruder", "intruder", "extendedKeyUsage=clientAuth")
    foreign = issue(work, authority(work, "foreign"), "foreign", "edge", "extendedKeyUsage=clientAuth")

    backends = {"eqs": f"kind: embedded\n  path: {work}/eqs.db",
                "eos": f"kind: fs\n  root: {work}/objects",
                "ekv": f"kind: embedded\n  path: {work}/ekv.db"}
    upstream, ports = {}, {}
    env = {"EXO_UPSTREAM_TOKEN": TOKEN}
    for proxy, backend in backends.items():
        ports[proxy] = free_port()
        config = write(f"{work}/upstream-{proxy}.yaml", standalone_config(server, ca, backend))
        upstream[proxy] = start(binary(proxy), config, ports[proxy], f"{work}/upstream-{proxy}.log", env)[0]
    try:
        for proxy in backends:
            if not upstream_ready(ports[proxy]):
                print(open(f"{work}/upstream-{proxy}.log").read())
                raise SystemExit(f"standalone {proxy} did not start")

        def edge_config(proxy, name, url=None, cert=edge, token="env:EXO_REMOTE_TOKEN"):
            tls = f"  ca-file: {ca[0]}\n" if url is None or url.startswith("https:") else ""
            tls += f"  client-cert-file: {cert[0]}\n  client-key-file: {cert[1]}\n" if cert else ""
            return write(f"{work}/edge-{proxy}-{name}.yaml", f"""backend:
  kind: remote
  url: {url or f"https://localhost:{ports[proxy]}"}
{tls}  token: {token}
  connect-timeout: 5s
""")

        edge_env = {"EXO_REMOTE_TOKEN": TOKEN}
        print("the conformance suite through edge proxies (kind: remote) over mTLS")
        # `remote` is a backend of every service, so each edge config is run with its service.
        runs = [subprocess.Popen(
            [conformance, "run", "--config", edge_config(proxy, "good"), "--service", service,
             "--report-dir", os.path.join(work, "conformance")],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, **edge_env})
            for proxy, service in (("eqs", "queue"), ("eos", "object"), ("ekv", "kv"))]
        for (proxy, run) in zip(backends, runs):
            output = run.communicate()[0]
            summary = output.strip().splitlines()[-1] if output.strip() else ""
            check(run.returncode == 0 and " 0 failed" in summary,
                  f"{proxy}: the suite passes through remote over mTLS ({summary})"
                  + ("" if run.returncode == 0 else f"\n{output[-3000:]}"))

        print("an edge the standalone proxy must refuse, refused at start with the cause")
        refusals = [
            ("a client certificate from another CA", edge_config("eqs", "foreign", cert=foreign), edge_env),
            ("no client certificate", edge_config("eqs", "nocert", cert=None), edge_env),
            ("a certificate of the CA but not an allowed identity", edge_config("eqs", "intruder", cert=intruder), edge_env),
            ("a wrong token", edge_config("eqs", "token"), {"EXO_REMOTE_TOKEN": "not-the-token"}),
            ("plaintext to the TLS port", edge_config("eqs", "plain", url=f"http://127.0.0.1:{ports['eqs']}", cert=None), edge_env),
        ]
        for what, config, env_ in refusals:
            log = f"{work}/edge-refused.log"
            proc = subprocess.run([binary("eqs"), "--config", config, "--listen", f"127.0.0.1:{free_port()}"],
                                  capture_output=True, text=True, timeout=30, env={**os.environ, **env_})
            said = (proc.stdout + proc.stderr).strip().splitlines()
            last = said[-1] if said else ""
            with open(log, "a") as f:
                f.write(f"--- {what}\n{proc.stdout}{proc.stderr}")
            check(proc.returncode != 0 and "remote" in last, f"{what}: exit {proc.returncode}, {last[-160:]!r}")

        print("an edge started before its standalone proxy: up but not ready, then ready by itself")
        late_port = free_port()
        late = write(f"{work}/upstream-late.yaml", standalone_config(server, ca, f"kind: embedded\n  path: {work}/late.db"))
        edge_port = free_port()
        edge_proc, edge_url = start(binary("eqs"), edge_config("eqs", "early", url=f"https://localhost:{late_port}"),
                                    edge_port, f"{work}/edge-early.log", edge_env)
        late_proc = None
        try:
            up = False
            for _ in range(100):
                try:
                    up = request("GET", f"{edge_url}/healthz", timeout=2)[0] == 200
                except OSError:
                    pass
                if up or edge_proc.poll() is not None:
                    break
                time.sleep(0.1)
            check(up, "the edge starts while nothing listens at its remote's address")
            check(request("GET", f"{edge_url}/readyz", timeout=5)[0] == 503, "and is not ready")
            status, problem = request("POST", f"{edge_url}/api/v1/queues", {"name": "early"})
            check(status == 503 and isinstance(problem, dict) and problem.get("retryable") is True,
                  f"a call answers 503, retryable, forwarding nothing ({status})")
            status, _ = request("GET", f"{edge_url}/api/v1/describe")
            check(status == 503, f"Describe answers 503 until the remote has described itself ({status})")
            late_proc = start(binary("eqs"), late, late_port, f"{work}/upstream-late.log", env)[0]
            check(upstream_ready(late_port) and wait_ready(edge_url, edge_proc, f"{work}/edge-early.log", 30),
                  "the standalone proxy started, the edge is ready by itself")
            status, described = request("GET", f"{edge_url}/api/v1/describe")
            check(status == 200 and described.get("backend") == "remote"
                  and described.get("limits", {}).get("maxMessageBytes") is not None,
                  f"and describes the remote's capabilities and limits ({status})")
            status, _ = request("POST", f"{edge_url}/api/v1/queues", {"name": "early"})
            sent, _ = request("POST", f"{edge_url}/api/v1/queues/early/messages", {"message": {"body": "ZWFybHk="}})
            check(status in (200, 201) and sent == 200, f"calls go through ({status}, {sent})")
        finally:
            edge_proc.kill()
            if late_proc:
                late_proc.kill()

        print("the standalone eqs killed -9 and restarted under an edge")
        edge_port = free_port()
        edge_proc, edge_url = start(binary("eqs"), edge_config("eqs", "good"), edge_port, f"{work}/edge-eqs.log", edge_env)
        try:
            check(wait_ready(edge_url, edge_proc, f"{work}/edge-eqs.log"), "the edge eqs is ready")
            queue = f"kept-{int(time.time())}"
            request("POST", f"{edge_url}/api/v1/queues", {"name": queue})
            sent = set()
            for i in range(20):
                status, answer = request("POST", f"{edge_url}/api/v1/queues/{queue}/messages",
                                         {"message": {"body": base64.b64encode(f"m{i}".encode()).decode()}})
                if status == 200:
                    sent.add(f"m{i}")
            check(len(sent) == 20, f"20 sends acknowledged through the edge ({len(sent)})")
            upstream["eqs"].kill()
            upstream["eqs"].wait()
            status, problem = request("POST", f"{edge_url}/api/v1/queues/{queue}/messages",
                                      {"message": {"body": "eA=="}}, timeout=40)
            check(status in (503, 504) and isinstance(problem, dict) and problem.get("retryable") is True,
                  f"with the standalone proxy gone a send fails retryable ({status} {problem.get('reason') if isinstance(problem, dict) else problem!r})")
            ready = 200
            for _ in range(60):
                ready = request("GET", f"{edge_url}/readyz", timeout=5)[0]
                if ready != 200:
                    break
                time.sleep(0.1)
            check(ready == 503, f"and the edge is not ready (/readyz {ready})")
            upstream["eqs"] = start(binary("eqs"), f"{work}/upstream-eqs.yaml", ports["eqs"],
                                    f"{work}/upstream-eqs.log", env)[0]
            check(upstream_ready(ports["eqs"]) and wait_ready(edge_url, edge_proc, f"{work}/edge-eqs.log", 30),
                  "restarted, the edge is ready again by itself")
            got = receive_all(edge_url, queue, sent, rounds=20)
            check(sent <= got, f"every acknowledged message is received through the edge ({len(sent - got)} missing)")
        finally:
            edge_proc.kill()

        print("objects stream through the edge eos")
        edge_port = free_port()
        edge_proc, edge_url = start(binary("eos"), edge_config("eos", "good"), edge_port, f"{work}/edge-eos.log", edge_env)
        try:
            check(wait_ready(edge_url, edge_proc, f"{work}/edge-eos.log"), "the edge eos is ready")
            bucket = f"big-{int(time.time())}"
            request("POST", f"{edge_url}/api/v1/buckets", {"name": bucket})
            chunk = os.urandom(1 << 20)
            digest = hashlib.sha256()
            for i in range(64):
                digest.update(chunk)

            def body():
                for _ in range(64):
                    yield chunk
            status, _ = request("PUT", f"{edge_url}/api/v1/buckets/{bucket}/objects/big.bin", raw=body(),
                                headers={"content-type": "application/octet-stream", "transfer-encoding": "chunked"},
                                timeout=300)
            check(status == 200, f"a 64 MiB upload through the edge is stored ({status})")
            read = hashlib.sha256()
            size = 0
            with urllib.request.urlopen(f"{edge_url}/api/v1/buckets/{bucket}/objects/big.bin", timeout=300) as r:
                while block := r.read(1 << 20):
                    read.update(block)
                    size += len(block)
            check(size == 64 << 20 and read.digest() == digest.digest(), f"and read back byte-exact ({size} bytes)")

            # Half a body, then the client goes away.
            cut = socket.create_connection(("127.0.0.1", edge_port))
            cut.sendall(f"PUT /api/v1/buckets/{bucket}/objects/cut.bin HTTP/1.1\r\nhost: edge\r\n"
                        f"content-type: application/octet-stream\r\ncontent-length: {8 << 20}\r\n\r\n".encode())
            cut.sendall(os.urandom(4 << 20))
            cut.close()
            time.sleep(1)
            status, _ = request("HEAD", f"{edge_url}/api/v1/buckets/{bucket}/objects/cut.bin")
            check(status == 404, f"an upload cut halfway at the edge left nothing on the standalone proxy (HEAD {status})")
        finally:
            edge_proc.kill()
        srv_discovery(args, work, binary, ca, server, edge, env)
    finally:
        for proc in upstream.values():
            proc.kill()
    if failures:
        print(f"remote: {len(failures)} check(s) failed")
        sys.exit(1)
    print("remote: every check passed")


if __name__ == "__main__":
    main()
