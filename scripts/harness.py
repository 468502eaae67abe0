"""What the test-harness scripts (disk_full.py, outage.py, remote.py, netns.py) share: checks
that are counted, an HTTP call that never raises on an error status, free loopback ports, and a
queue's sends and receives as an SDK makes them."""

import base64
import json
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request

failures = []


def check(condition, what):
    print(f"  {'ok  ' if condition else 'FAIL'} {what}")
    if not condition:
        failures.append(what)


def request(method, url, body=None, raw=None, headers=None, timeout=30):
    """(status, parsed JSON — {} for an empty body, the bytes when not JSON)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, text = r.status, r.read()
    except urllib.error.HTTPError as err:
        status, text = err.code, err.read()
    try:
        return status, json.loads(text) if text else {}
    except ValueError:
        return status, text


def until(condition, seconds):
    """Whether `condition()` held within `seconds` (asked every 0.3 s, and once more at the end)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.3)
    return condition()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_proxy(binary, config, log):
    """Starts a proxy binary with `config` on a free loopback port, its output in `log`, and
    waits until it is ready: (process, base URL). One that never gets ready ends the run."""
    port = free_port()
    proc = subprocess.Popen([binary, "--config", config, "--listen", f"127.0.0.1:{port}"],
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(150):
        try:
            if request("GET", f"{url}/readyz", timeout=2)[0] == 200:
                return proc, url
        except OSError:
            pass
        time.sleep(0.1)
    proc.terminate()
    raise SystemExit(f"{binary} did not become ready (log: {log})")


def send_retrying(base, queue, text, seconds=10):
    """One send through eqs at `base` as an SDK makes it: retried on a retryable answer for up to
    `seconds`. Whether it was acknowledged."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        status, answer = request("POST", f"{base}/api/v1/queues/{queue}/messages",
                                 {"message": {"body": base64.b64encode(text.encode()).decode()}}, timeout=10)
        if status == 200:
            return True
        if not (isinstance(answer, dict) and answer.get("retryable")):
            return False
        time.sleep(0.05)
    return False


def receive_all(base, queue, expected, rounds=30):
    """Receives (and acks) from eqs at `base` until every text in `expected` came, or `rounds`
    receives of up to a second; the texts received."""
    got = set()
    for _ in range(rounds):
        status, answer = request("POST", f"{base}/api/v1/queues/{queue}/messages/receive",
                                 {"maxMessages": 10, "waitSeconds": 1})
        for m in answer.get("messages", []) if status == 200 else []:
            got.add(base64.b64decode(m["body"]).decode())
            request("POST", f"{base}/api/v1/queues/{queue}/messages/ack", {"receipt": m["receipt"]})
        if set(expected) <= got:
            break
    return got


def served_sends(base, cert, ca):
    """The sends an mTLS eqs at `base` (https://) has served, from its /metrics; the chain is
    checked against `ca`, not the host name (tests reach it by address)."""
    context = ssl.create_default_context(cafile=ca[0])
    context.check_hostname = False
    context.load_cert_chain(cert[0], cert[1])
    with urllib.request.urlopen(f"{base}/metrics", context=context, timeout=5) as r:
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("exo_requests_total{") and 'op="send"' in line and 'outcome="ok"' in line)
