#!/usr/bin/env python3
"""The embedded backends on a full disk, as a user meets it: fill a small tmpfs through each
proxy's API until writes answer 507 STORAGE_FULL (not retryable), check that receives, acks and
deletes still drain what filled it, that a proxy killed with -9 on the full disk starts again,
and that writes are accepted again once data was drained.

Needs root (it mounts a tmpfs). Run by scripts/test:
  disk_full.py --bin-dir target/debug --work DIR
"""

import argparse
import base64
import os
import signal
import subprocess
import sys
import time

from harness import check, failures, free_port, request


class Proxy:
    def __init__(self, binary, args, log):
        self.binary, self.args, self.log = binary, args, log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.start()

    def start(self):
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([self.binary, "--listen", f"127.0.0.1:{self.port}", *self.args],
                                         stdout=log, stderr=log)
        for _ in range(100):
            try:
                if request("GET", f"{self.url}/readyz")[0] == 200:
                    return True
            except OSError:
                pass
            if self.proc.poll() is not None:
                return False
            time.sleep(0.1)
        return False

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


def fill(write, what, limit=2000):
    """Calls write() until it answers 507; returns (acknowledged writes, the 507 problem)."""
    acknowledged = 0
    for _ in range(limit):
        status, problem = write(acknowledged)
        if status == 507:
            return acknowledged, problem
        if status not in (200, 201):
            check(False, f"{what}: a write answered {status} {problem} before the disk was full")
            return acknowledged, problem
        acknowledged += 1
    check(False, f"{what}: {limit} writes never filled the disk")
    return acknowledged, None


def full_problem(problem, what):
    check(problem is not None and problem.get("reason") == "STORAGE_FULL" and problem.get("retryable") is False,
          f"{what}: a write on the full disk is 507 STORAGE_FULL, not retryable ({problem and problem.get('reason')})")


def queues(bin_dir, disk, log):
    print("eqs embedded on a full disk")
    db = os.path.join(disk, "eqs.db")
    proxy = Proxy(os.path.join(bin_dir, "eqs-proxy"), ["--backend", "embedded", "--db", db], log)
    base = f"{proxy.url}/api/v1/queues"
    request("POST", base, {"name": "fill"})
    body = base64.b64encode(os.urandom(60_000)).decode()
    sent, problem = fill(lambda i: request("POST", f"{base}/fill/messages", {"message": {"body": body}}), "send")
    full_problem(problem, "send")
    check(sent > 0, f"{sent} messages were acknowledged before the disk was full")

    proxy.kill9()
    check(proxy.start(), "eqs-proxy killed with -9 on the full disk starts again and is ready")

    received = 0
    for _ in range(sent + 10):
        status, out = request("POST", f"{base}/fill/messages/receive", {"maxMessages": 10, "waitSeconds": 0})
        if status != 200:
            check(False, f"receive on the full disk answered {status} {out}")
            break
        messages = (out or {}).get("messages", [])
        if not messages:
            break
        for m in messages:
            status, out = request("POST", f"{base}/fill/messages/ack", {"receipt": m["receipt"]})
            if status != 200:
                check(False, f"ack on the full disk answered {status} {out}")
                break
            received += 1
    check(received == sent, f"every acknowledged message was received and acked on the full disk ({received}/{sent})")
    status, _ = request("POST", f"{base}/fill/purge")
    check(status == 200, f"purge on the full disk answered {status}")
    status, out = request("POST", f"{base}/fill/messages", {"message": {"body": body}})
    check(status == 200, f"once drained, sends are accepted again ({status} {out and out.get('reason')})")
    proxy.stop()


def kv(bin_dir, disk, log):
    print("ekv embedded on a full disk")
    db = os.path.join(disk, "ekv.db")
    proxy = Proxy(os.path.join(bin_dir, "ekv-proxy"), ["--backend", "embedded", "--db", db], log)
    base = f"{proxy.url}/api/v1/tables"
    request("POST", base, {"name": "fill"})
    value = base64.b64encode(os.urandom(60_000)).decode()
    put, problem = fill(lambda i: request("PUT", f"{base}/fill/entries/k{i}", {"value": value}), "put")
    full_problem(problem, "put")
    proxy.kill9()
    check(proxy.start(), "ekv-proxy killed with -9 on the full disk starts again and is ready")
    deleted = sum(request("DELETE", f"{base}/fill/entries/k{i}")[0] == 200 for i in range(put))
    check(deleted == put, f"every key deletes on the full disk ({deleted}/{put})")
    status, out = request("PUT", f"{base}/fill/entries/again", {"value": value})
    check(status == 200, f"once deleted, puts are accepted again ({status} {out and out.get('reason')})")
    proxy.stop()


def objects(bin_dir, disk, log):
    print("eos fs on a full disk")
    root = os.path.join(disk, "objects")
    proxy = Proxy(os.path.join(bin_dir, "eos-proxy"), ["--backend", "fs", "--root", root], log)
    base = f"{proxy.url}/api/v1/buckets"
    request("POST", base, {"name": "fill"})
    data = os.urandom(256 * 1024)
    headers = {"content-type": "application/octet-stream"}
    put, problem = fill(lambda i: request("PUT", f"{base}/fill/objects/o{i}", raw=data, headers=headers), "put")
    full_problem(problem, "put")
    proxy.kill9()
    check(proxy.start(), "eos-proxy killed with -9 on the full disk starts again and is ready")
    deleted = sum(request("DELETE", f"{base}/fill/objects/o{i}")[0] in (200, 204) for i in range(put))
    check(deleted == put, f"every object deletes on the full disk ({deleted}/{put})")
    status, out = request("PUT", f"{base}/fill/objects/again", raw=data, headers=headers)
    check(status == 200, f"once deleted, puts are accepted again ({status} {out and out.get('reason')})")
    proxy.stop()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin-dir", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--size-mib", type=int, default=24)
    args = parser.parse_args()
    disk = os.path.join(os.path.abspath(args.work), "disk")
    os.makedirs(disk, exist_ok=True)
    log = os.path.join(os.path.abspath(args.work), "proxies.log")
    for run in (queues, kv, objects):
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={args.size_mib}m", "tmpfs", disk], check=True)
        try:
            run(os.path.abspath(args.bin_dir), disk, log)
        finally:
            subprocess.run(["umount", "-l", disk], check=False)
    if failures:
        sys.exit(f"{len(failures)} disk-full check(s) failed (proxy logs: {log})")
    print("disk full: every check passed")


if __name__ == "__main__":
    main()
