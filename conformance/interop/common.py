"""What the interop scripts share: checks, the proxies' HTTP/JSON API, and the large-object
round trip through eos (streamed in, stored by the cloud backend in parts, read back natively and
through eos, with eos-proxy's peak memory checked)."""

import base64
import hashlib
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

failures = []


def check(condition, what):
    print(f"  {'ok  ' if condition else 'FAIL'} {what}")
    if not condition:
        failures.append(what)


def call(method, url, body=None):
    """JSON in, JSON out; raises on an error status with the problem body."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            text = response.read()
            return json.loads(text) if text else {}
    except urllib.error.HTTPError as err:
        raise RuntimeError(f"{method} {url}: {err.code} {err.read().decode(errors='replace')}") from None


def refusal(method, url, body=None):
    """The error `call` raises ("METHOD URL: status problem-body"), or "" when the call succeeds."""
    try:
        call(method, url, body)
        return ""
    except RuntimeError as err:
        return str(err)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def put_object(eos, bucket, key, data, content_type, metadata):
    """PUT through eos's HTTP API (`data` may be an iterator of chunks: sent chunked)."""
    headers = {"content-type": content_type, **{f"x-exo-meta-{k}": v for k, v in metadata.items()}}
    if not isinstance(data, bytes):
        headers["transfer-encoding"] = "chunked"
    request = urllib.request.Request(
        f"{eos}/api/v1/buckets/{bucket}/objects/{urllib.parse.quote(key)}", data=data, method="PUT", headers=headers)
    urllib.request.urlopen(request, timeout=600).read()


def get_object(eos, bucket, key):
    """(body, headers) read through eos's HTTP API."""
    with urllib.request.urlopen(f"{eos}/api/v1/buckets/{bucket}/objects/{urllib.parse.quote(key)}", timeout=600) as r:
        return r.read(), r.headers


def large_round_trip(eos, eos_pid, bucket, mib, native_size, native_chunks):
    """Streams `mib` MiB through eos as `large.bin`, checks the backend stored all of it
    (`native_size()`), that a native reader (`native_chunks()`) and eos both return the same bytes,
    and that eos-proxy's peak RSS stayed below 64 MiB."""
    size = mib * 1024 * 1024
    chunk = hashlib.sha256(b"exoflow").digest() * (1024 * 1024 // 32)  # 1 MiB, not compressible
    digest = hashlib.sha256()
    for _ in range(mib):
        digest.update(chunk)
    started = time.monotonic()
    put_object(eos, bucket, "large.bin", (chunk for _ in range(mib)), "application/octet-stream", {})
    put_seconds = time.monotonic() - started
    check(native_size() == size, f"{mib} MiB arrived whole")
    native = hashlib.sha256()
    for part in native_chunks():
        native.update(part)
    check(native.digest() == digest.digest(), "the native SDK reads the same bytes")
    started = time.monotonic()
    back = hashlib.sha256()
    with urllib.request.urlopen(f"{eos}/api/v1/buckets/{bucket}/objects/large.bin", timeout=600) as r:
        while block := r.read(1024 * 1024):
            back.update(block)
    get_seconds = time.monotonic() - started
    check(back.digest() == digest.digest(), "eos streams the same bytes back")
    with open(f"/proc/{eos_pid}/status") as status:
        peak_kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    print(f"  ..   put {size / put_seconds / 1e6:.0f} MB/s, get {size / get_seconds / 1e6:.0f} MB/s, "
          f"eos-proxy peak RSS {peak_kib / 1024:.1f} MiB")
    check(peak_kib < 64 * 1024, f"eos-proxy peak memory stayed bounded ({peak_kib} KiB < 64 MiB for {mib} MiB)")


def check_stale_cas_fails(ekv, table, key, stale_version):
    """A compare-and-set at a version a native writer has since replaced fails with 412."""
    refused = refusal("PUT", f"{ekv}/api/v1/tables/{table}/entries/{urllib.parse.quote(key, safe='')}",
                      {"value": b64(b"stale write"), "condition": {"versionEquals": stale_version}})
    check(": 412 " in refused and "CONDITION_FAILED" in refused,
          "a compare-and-set at the version before a native update fails (412 CONDITION_FAILED)")


def eventually(what, attempt, tries=20):
    """`attempt()` until it answers; returns (answer or None, the errors in between)."""
    failures = []
    for _ in range(tries):
        try:
            return attempt(), failures
        except RuntimeError as err:
            failures.append(str(err))
            time.sleep(0.1)
    check(False, f"{what}: never answered ({failures[-1:]})")
    return None, failures


def drain_bodies(eqs, queue, want, seconds=40):
    """Every body eqs delivers from `queue` (acked), until `want` (a set) is covered or time runs out."""
    got = []
    deadline = time.time() + seconds
    while time.time() < deadline:
        out = call("POST", f"{eqs}/api/v1/queues/{queue}/messages/receive", {"maxMessages": 32, "waitSeconds": 1})
        for m in out.get("messages", []):
            got.append((base64.b64decode(m.get("body", "")), m.get("attributes", {})))
            call("POST", f"{eqs}/api/v1/queues/{queue}/messages/ack", {"receipt": m["receipt"]})
        if want <= {body for body, _ in got}:
            break
    return got


def publishes_killed(eqs_proxy, eqs_config, scratch, topic, seconds=2.0):
    """A private eqs-proxy on `eqs_config`, four publishers on `topic`, a kill -9 after `seconds`:
    the bodies whose publish was acknowledged before the kill."""
    import signal
    import threading
    port = free_port()
    log = open(os.path.join(scratch, "eqs-proxy-killed.log"), "ab")
    victim = subprocess.Popen([eqs_proxy, "--config", eqs_config, "--listen", f"127.0.0.1:{port}"], stdout=log, stderr=log)
    wait_for_port(port, "the eqs-proxy to kill")
    acknowledged, stop = set(), threading.Event()

    def publisher(worker):
        n = 0
        while not stop.is_set():
            body = f"w{worker}-{n}".encode()
            try:
                call("POST", f"http://127.0.0.1:{port}/api/v1/topics/{topic}/publish", {"message": {"body": b64(body)}})
            except Exception:
                return
            acknowledged.add(body)
            n += 1

    workers = [threading.Thread(target=publisher, args=(w,)) for w in range(4)]
    for w in workers:
        w.start()
    time.sleep(seconds)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    stop.set()
    for w in workers:
        w.join()
    check(len(acknowledged) >= 10, f"the load was real ({len(acknowledged)} publishes acknowledged before the kill)")
    return acknowledged


def check_none_lost(eqs, queues, acknowledged, seconds=60):
    """Every acknowledged body reaches every queue in `queues` (read and acked through `eqs`)."""
    for queue in queues:
        got = {body for body, _ in drain_bodies(eqs, queue, set(acknowledged), seconds=seconds)}
        lost = acknowledged - got
        check(not lost, f"no acknowledged publish is lost at {queue} ({len(lost)} of {len(acknowledged)} missing)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, what, seconds=20):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on {port} within {seconds} s")


def make_certificates(scratch):
    """A throw-away CA and a server certificate it signed for localhost / 127.0.0.1 (openssl CLI):
    returns (ca.pem, server.pem, server.key)."""
    os.makedirs(scratch, exist_ok=True)
    ca, ca_key = os.path.join(scratch, "ca.pem"), os.path.join(scratch, "ca.key")
    cert, key, csr = (os.path.join(scratch, n) for n in ("server.pem", "server.key", "server.csr"))
    ext = os.path.join(scratch, "san.cnf")
    with open(ext, "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    quiet = {"check": True, "capture_output": True}
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca,
                    "-days", "2", "-subj", "/CN=exoflow test CA"], **quiet)
    subprocess.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
                    "-subj", "/CN=localhost"], **quiet)
    subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
                    "-out", cert, "-days", "2", "-extfile", ext], **quiet)
    return ca, cert, key


def check_tls_proxy(proxy_bin, write_config, scratch, exercise):
    """Starts `proxy_bin` with write_config(ca) (the CA that signed the server's certificate) and
    runs exercise(url); then starts it with write_config(None) (the default roots, which did not
    sign it) and checks it refuses to start saying why."""
    port = free_port()
    log = open(os.path.join(scratch, "proxy-tls.log"), "ab")
    proxy = subprocess.Popen([proxy_bin, "--config", write_config(True), "--listen", f"127.0.0.1:{port}"],
                             stdout=log, stderr=log)
    try:
        wait_for_port(port, "the proxy over TLS")
        exercise(f"http://127.0.0.1:{port}")
    finally:
        proxy.terminate()
        proxy.wait()
    wrong = subprocess.run([proxy_bin, "--config", write_config(False), "--listen", f"127.0.0.1:{port}"],
                           capture_output=True, text=True, timeout=60)
    named = next((line for line in wrong.stderr.splitlines() if "certificate" in line.lower()
                  or "unknownissuer" in line.lower()), "")
    check(wrong.returncode != 0 and named != "",
          f"with roots that did not sign the server's certificate the proxy refuses to start, saying so "
          f"({named[-100:]})")


def finish():
    if failures:
        raise SystemExit(f"{len(failures)} interop check(s) failed")
    print("interop: every check passed")
