#!/usr/bin/env python3
"""Instructions per call in the proxies, counted by valgrind (callgrind): a figure that does not
swing with the machine's load or CPU wake-up latency, so a change that adds work to the send or
get path shows even on a noisy VM.

For each path the proxy runs under callgrind twice, serving FEW and then MANY calls over one
HTTP/1.1 keep-alive connection (memory backend, 1 KiB bodies); the difference in instructions
divided by the difference in calls is the cost of one call, start-up and shutdown cancelled out.
The last path counts the edge of a forwarding hop: an eqs-proxy whose backend is `kind: remote`,
forwarding each send over gRPC to a plain eqs-proxy that runs outside valgrind.

  cargo build --release -p eqs -p ekv
  python3 benches/instructions.py --bin-dir target/release     # needs valgrind (apt install valgrind)
  python3 benches/instructions.py --bin-dir target/release --only edge   # the paths whose name has "edge"
"""

import argparse
import base64
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port, what, within=120):
    deadline = time.monotonic() + within
    while True:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/readyz")
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not become ready")
        time.sleep(0.2)


def run(binary, port, work, calls, out, backend_args=("--backend", "memory")):
    """Serves `calls` under callgrind; returns the instructions counted."""
    proxy = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", binary, *backend_args,
         "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(port, f"{binary} under valgrind")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

        def call(method, path, body=None):
            conn.request(method, path, body=json.dumps(body) if body is not None else None,
                         headers={"content-type": "application/json"})
            response = conn.getresponse()
            text = response.read()
            if response.status >= 300:
                raise SystemExit(f"{method} {path}: {response.status} {text[:200]!r}")
            return json.loads(text) if text else {}

        work(call, calls)
    finally:
        proxy.send_signal(signal.SIGTERM)
        proxy.wait(timeout=120)
    with open(out) as f:
        text = f.read()
    match = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
    if not match:
        raise SystemExit(f"no instruction total in {out}")
    return int(match.group(1))


BODY = base64.b64encode(b"x" * 1024).decode()


def eqs_send(call, calls):
    call("POST", "/api/v1/queues", {"name": "bench"})
    for _ in range(calls):
        call("POST", "/api/v1/queues/bench/messages", {"message": {"body": BODY}})


def eqs_receive_ack(call, calls):
    call("POST", "/api/v1/queues", {"name": "bench"})
    for _ in range(calls):
        call("POST", "/api/v1/queues/bench/messages", {"message": {"body": BODY}})
    for _ in range(calls):
        got = call("POST", "/api/v1/queues/bench/messages/receive", {"maxMessages": 1})
        call("POST", "/api/v1/queues/bench/messages/ack", {"receipt": got["messages"][0]["receipt"]})


def ekv_get(call, calls):
    call("POST", "/api/v1/tables", {"name": "bench"})
    call("PUT", "/api/v1/tables/bench/entries/k", {"value": BODY})
    for _ in range(calls):
        call("GET", "/api/v1/tables/bench/entries/k")


def remote_proxy(binary, work):
    """A plain eqs-proxy (memory backend, not under valgrind) for the edge to forward to; returns
    the process and the edge's `--config` arguments."""
    port = free_port()
    remote = subprocess.Popen([binary, "--backend", "memory", "--listen", f"127.0.0.1:{port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_ready(port, "the remote eqs-proxy", within=30)
    config = os.path.join(work, "edge.yaml")
    with open(config, "w") as f:
        f.write(f"backend:\n  kind: remote\n  url: http://127.0.0.1:{port}\n")
    return remote, ("--config", config)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin-dir", default="target/release")
    parser.add_argument("--few", type=int, default=200)
    parser.add_argument("--many", type=int, default=1200)
    parser.add_argument("--only", default="", help="run the paths whose name contains this")
    args = parser.parse_args()
    # The last path counts the edge of a forwarding hop: an eqs-proxy whose backend is
    # `kind: remote`, forwarding over gRPC to a plain eqs-proxy outside valgrind.
    paths = [
        ("eqs send", "eqs-proxy", eqs_send, False),
        ("eqs send + receive + ack", "eqs-proxy", eqs_receive_ack, False),
        ("ekv get", "ekv-proxy", ekv_get, False),
        ("eqs send, the edge of a hop (kind: remote)", "eqs-proxy", eqs_send, True),
    ]
    print(f"instructions per call (callgrind; {args.many} minus {args.few} calls, HTTP/1.1 keep-alive, "
          f"memory backend, 1 KiB)")
    print("| path | instructions per call |")
    print("|---|---|")
    with tempfile.TemporaryDirectory() as work:
        for name, binary, workload, edge in paths:
            if args.only not in name:
                continue
            path = os.path.join(args.bin_dir, binary)
            counts = []
            for calls, out in ((args.few, "few.out"), (args.many, "many.out")):
                remote, backend_args = remote_proxy(path, work) if edge else (None, ("--backend", "memory"))
                try:
                    counts.append(run(path, free_port(), workload, calls, os.path.join(work, out), backend_args))
                finally:
                    if remote is not None:
                        remote.send_signal(signal.SIGTERM)
                        remote.wait(timeout=30)
            per_call = (counts[1] - counts[0]) / (args.many - args.few)
            print(f"| {name} | {per_call:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
