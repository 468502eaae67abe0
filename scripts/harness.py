"""What the test-harness scripts (disk_full.py, outage.py) share: checks that are counted, an
HTTP call that never raises on an error status, and free loopback ports."""

import json
import socket
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


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
