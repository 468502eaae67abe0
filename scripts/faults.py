#!/usr/bin/env python3
"""Fault injection between a proxy and its backend: eqs on SQS (moto) through
scripts/fault_proxy.py, one proxy per case with the layer settings the case is about, each
checked from outside as an app sees it (HTTP answers, Retry-After, /metrics) and against what
actually reached the backend (the fault proxy's request count).

  breaker  connections reset: the breaker opens on the 5th failure in a row, the 6th call
           fails fast with a Retry-After and nothing reaches the backend while it is open;
           /readyz answers 503 from the open breaker at once (the backend then silent);
           after the rest one probe closes it; every acknowledged send is received.
  budget   half of the backend requests reset at random: the proxy's retries of reads stay
           within the budget (20 % of calls; the floor of retries a second set to 0 here),
           counted at the backend.
  shed     the backend stalls (blackhole): once max-in-flight calls hang, further calls are
           refused at once (429 THROTTLED, Retry-After), p99 bounded; the stalled calls end in
           TIMEOUT at the request timeout; calls go through again when the backend does.
  latency  300 ms per burst each way: calls succeed, slower; 2.5 s: calls end in TIMEOUT at
           the 2 s request timeout instead of hanging.

Run by scripts/test with moto up:
  faults.py --bin-dir DIR --work DIR
Environment: EXO_MOTO_URL (scripts/emulators.sh).
"""

import argparse
import base64
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

from harness import check, failures, free_port, receive_all, request, start_proxy


def call(method, url, body=None, timeout=30):
    """(status, JSON answer or {}, headers, seconds taken)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    started = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, text, headers = r.status, r.read(), r.headers
    except urllib.error.HTTPError as err:
        status, text, headers = err.code, err.read(), err.headers
    took = time.monotonic() - started
    try:
        answer = json.loads(text) if text else {}
    except ValueError:
        answer = {"raw": text[:200]}
    return status, answer, headers, took


class Fault:
    """A fault proxy in front of moto."""

    def __init__(self, target_port):
        self.listen, self.control = free_port(), free_port()
        self.proc = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(__file__), "fault_proxy.py"),
                                      "--listen", str(self.listen), "--target", str(target_port),
                                      "--control", str(self.control)])
        for _ in range(50):
            try:
                self.stats()
                return
            except OSError:
                time.sleep(0.1)
        raise SystemExit("the fault proxy did not start")

    def mode(self, mode):
        request("POST", f"http://127.0.0.1:{self.control}/mode/{mode}")

    def stats(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.control}/stats", timeout=5) as r:
            return json.loads(r.read())

    def reached(self):
        """Connections plus requests that reached the fault proxy so far."""
        s = self.stats()
        return s["connections"] + s["requests"]


@contextlib.contextmanager
def running_eqs(args, fault, name, server):
    """An eqs on SQS through `fault`, with `server:` settings `server`, for one case: yields its
    URL; afterwards the fault is cleared and the proxy stopped."""
    config = os.path.join(args.work, f"{name}.yaml")
    with open(config, "w") as f:
        f.write(f"backend:\n  kind: sqs\n  region: us-east-1\n  endpoint: http://127.0.0.1:{fault.listen}\n"
                f"server:\n{server}")
    proc, url = start_proxy(os.path.join(args.bin_dir, "eqs-proxy"), config, os.path.join(args.work, f"{name}.log"))
    try:
        yield url
    finally:
        fault.mode("pass")
        proc.terminate()
        proc.wait(timeout=10)


def metric(url, name):
    """The sum of samples of `name` (label sets included) in the proxy's /metrics."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


def send(url, queue, text, timeout=30):
    return call("POST", f"{url}/api/v1/queues/{queue}/messages",
                {"message": {"body": base64.b64encode(text.encode()).decode()}}, timeout=timeout)


def breaker_case(args, fault, run):
    print("breaker: the backend's connections reset, then back")
    queue = f"faults-breaker-{run}"
    with running_eqs(args, fault, "breaker", "  breaker:\n    failures: 5\n    open-for: 2s\n") as url:
        check(request("POST", f"{url}/api/v1/queues", {"name": queue})[0] in (200, 201), "breaker: queue made")
        acked = [f"before-{i}" for i in range(3) if send(url, queue, f"before-{i}")[0] == 200]
        fault.mode("reset")
        answers = [send(url, queue, f"down-{i}") for i in range(6)]
        first_five = answers[:5]
        check(all(s == 503 and a.get("reason") == "BACKEND_UNAVAILABLE" and "circuit open" not in a.get("detail", "")
                  for s, a, _, _ in first_five),
              f"breaker: the first 5 failed sends reach the backend and fail 503 BACKEND_UNAVAILABLE "
              f"({[(s, a.get('detail', '')[:60]) for s, a, _, _ in first_five]})")
        status, answer, headers, took = answers[5]
        check(status == 503 and "circuit open" in answer.get("detail", "") and answer.get("retryable") is True,
              f"breaker: the 6th fails fast with 'circuit open', retryable ({status} {answer.get('detail')})")
        hint = answer.get("retryAfterMs", 0)
        check(0 < hint <= 2000 and headers.get("Retry-After") in ("1", "2"),
              f"breaker: it says when to come back (retryAfterMs {hint}, Retry-After {headers.get('Retry-After')})")
        check(took < 0.1, f"breaker: failing fast took {took * 1000:.1f} ms (< 100 ms)")
        check(metric(url, "exo_breaker_open") == 1, "breaker: exo_breaker_open is 1")
        # Readiness answers from the open breaker at once, even with the backend now silent
        # (a blackhole would hold a probe of the backend for the whole request timeout).
        fault.mode("blackhole")
        started = time.monotonic()
        ready_status, ready_answer = request("GET", f"{url}/readyz", timeout=35)
        took_ready = time.monotonic() - started
        check(ready_status == 503 and "circuit open" in str(ready_answer) and took_ready < 1,
              f"breaker: /readyz answers 503 from the open breaker in {took_ready * 1000:.0f} ms ({ready_status})")
        fault.mode("reset")
        # Counted at the breaker: the backend also sees the proxy's own background calls (queue
        # depth for /metrics), which do not go through the breaker.
        rejected = metric(url, "exo_breaker_rejected_total")
        while_open = [send(url, queue, f"open-{i}") for i in range(10)]
        check(all(s == 503 and t < 0.1 for s, _, _, t in while_open)
              and metric(url, "exo_breaker_rejected_total") - rejected == 10,
              "breaker: 10 calls while open fail fast, all rejected by the breaker without a backend call")
        fault.mode("pass")
        time.sleep(2.2)
        status, answer, _, _ = send(url, queue, "probe")
        check(status == 200, f"breaker: after the rest the probe goes through ({status} {answer})")
        if status == 200:
            acked.append("probe")
        after = [send(url, queue, f"after-{i}")[0] for i in range(5)]
        acked += [f"after-{i}" for i, s in enumerate(after) if s == 200]
        check(after == [200] * 5 and metric(url, "exo_breaker_open") == 0,
              f"breaker: closed again, sends go through ({after})")
        got = receive_all(url, queue, acked)
        check(set(acked) <= got, f"breaker: all {len(acked)} acknowledged sends are received "
                                 f"(missing {sorted(set(acked) - got)})")


def budget_case(args, fault, run):
    print("budget: half of the backend's requests reset at random")
    # The breaker off: this case is about the retries alone; and no floor of retries a second,
    # so that the bound does not grow with the time a run takes.
    with running_eqs(args, fault, "budget", "  breaker:\n    failures: 0\n  retry:\n    min-retries: 0\n") as url:
        # What one list costs at the backend with no fault (a connection may be opened too).
        before = fault.stats()["requests"]
        for _ in range(20):
            request("GET", f"{url}/api/v1/queues")
        per_call = (fault.stats()["requests"] - before) / 20
        check(per_call >= 1, f"budget: a list reaches the backend ({per_call:.2f} requests per call)")
        fault.mode("flaky")
        calls = 300
        before, started = fault.stats()["requests"], time.monotonic()
        statuses = [call("GET", f"{url}/api/v1/queues") for _ in range(calls)]
        seconds = time.monotonic() - started
        reached = fault.stats()["requests"] - before
        fault.mode("pass")
        # Budget: 0.2 of a retry per call (the 20 calls above included: their share may be
        # spent now); each try costs per_call requests; 2 % more for a request the fault proxy
        # happened to read as two bursts. Without a budget (3 tries each) it would be ~1.75x.
        allowed = per_call * (calls * 1.2 + 20 * 0.2) + calls * 0.02
        retries, exhausted = metric(url, "exo_retries_total"), metric(url, "exo_retry_budget_exhausted_total")
        ok = sum(1 for s, _, _, _ in statuses if s == 200)
        check(reached <= allowed,
              f"budget: {reached} requests reached the backend for {calls} calls in {seconds:.1f} s "
              f"(at most {allowed:.0f} within the budget; without one, 3 tries would send ~{calls * 1.75:.0f})")
        check(retries > 0 and exhausted > 0,
              f"budget: reads were retried ({retries:.0f}) until the budget ran out ({exhausted:.0f} refused)")
        failed = [(s, a.get("reason"), a.get("retryable")) for s, a, _, _ in statuses if s != 200]
        check(all(f == (503, "BACKEND_UNAVAILABLE", True) for f in failed),
              f"budget: every failed call is 503 BACKEND_UNAVAILABLE, retryable ({ok} of {calls} succeeded; "
              f"others {sorted(set(failed))})")


def shed_case(args, fault, run):
    print("shed: the backend stalls with max-in-flight 4")
    queue = f"faults-shed-{run}"
    with running_eqs(args, fault, "shed",
                          "  max-in-flight: 4\n  request-timeout: 3s\n  breaker:\n    failures: 0\n") as url:
        check(request("POST", f"{url}/api/v1/queues", {"name": queue})[0] in (200, 201), "shed: queue made")
        fault.mode("blackhole")
        stalled = []

        def stall(i):
            stalled.append(send(url, queue, f"stalled-{i}"))

        threads = [threading.Thread(target=stall, args=(i,)) for i in range(4)]
        started = time.monotonic()
        for t in threads:
            t.start()
        time.sleep(0.5)
        refused = [send(url, queue, f"shed-{i}", timeout=10) for i in range(40)]
        describe = [call("GET", f"{url}/api/v1/describe")[3] for _ in range(10)]
        still_stalled = sum(t.is_alive() for t in threads)
        for t in threads:
            t.join(timeout=15)
        stalled_for = time.monotonic() - started
        statuses = sorted({(s, a.get("reason"), h.get("Retry-After")) for s, a, h, _ in refused})
        check(statuses == [(429, "THROTTLED", "1")],
              f"shed: with 4 calls hanging, 40 more are refused 429 THROTTLED with Retry-After ({statuses})")
        times = sorted(t for _, _, _, t in refused)
        p99 = times[int(len(times) * 0.99) - 1]
        check(p99 < 0.25, f"shed: refusals answer at once (p99 {p99 * 1000:.1f} ms, < 250 ms; the stall is 3 s)")
        check(max(describe) < 0.25, f"shed: describe answers meanwhile (slowest {max(describe) * 1000:.1f} ms)")
        check(still_stalled == 4, f"shed: the 4 stalled calls were still hanging meanwhile ({still_stalled})")
        reasons = sorted((s, a.get("reason")) for s, a, _, _ in stalled)
        check(reasons == [(504, "TIMEOUT")] * 4 and stalled_for < 5,
              f"shed: the stalled calls end in 504 TIMEOUT at the request timeout ({reasons}, {stalled_for:.1f} s)")
        check(metric(url, "exo_shed_total") == 40, f"shed: exo_shed_total counts 40 ({metric(url, 'exo_shed_total')})")
        fault.mode("pass")
        status = send(url, queue, "after")[0]
        check(status == 200, f"shed: the backend back, a send goes through ({status})")


def latency_case(args, fault, run):
    print("latency: every burst held, then held past the request timeout")
    queue = f"faults-latency-{run}"
    with running_eqs(args, fault, "latency", "  request-timeout: 2s\n  breaker:\n    failures: 0\n") as url:
        check(request("POST", f"{url}/api/v1/queues", {"name": queue})[0] in (200, 201), "latency: queue made")
        fast = [send(url, queue, f"fast-{i}")[3] for i in range(3)]
        fault.mode("latency/300")
        slow = [send(url, queue, f"slow-{i}") for i in range(3)]
        check(all(s == 200 and t >= 0.6 for s, _, _, t in slow),
              f"latency: with 300 ms each way sends succeed, slower "
              f"({[(s, round(t, 2)) for s, _, _, t in slow]}; {max(fast) * 1000:.0f} ms before)")
        fault.mode("latency/2500")
        status, answer, _, took = send(url, queue, "too-slow")
        check(status == 504 and answer.get("reason") == "TIMEOUT" and answer.get("retryable") is True and 1.8 < took < 3.0,
              f"latency: past the 2 s request timeout the send ends 504 TIMEOUT, retryable, in {took:.2f} s "
              f"({status} {answer.get('detail')})")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin-dir", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--only", choices=["breaker", "budget", "shed", "latency"])
    args = parser.parse_args()
    os.makedirs(args.work, exist_ok=True)
    moto = urllib.parse.urlparse(os.environ["EXO_MOTO_URL"])
    run = uuid.uuid4().hex[:6]
    fault = Fault(moto.port)
    try:
        for name, case in [("breaker", breaker_case), ("budget", budget_case), ("shed", shed_case),
                           ("latency", latency_case)]:
            if args.only in (None, name):
                case(args, fault, run)
    finally:
        fault.proc.terminate()
    if failures:
        raise SystemExit(f"{len(failures)} fault-injection check(s) failed (logs in {args.work})")
    print("faults: every check passed")


if __name__ == "__main__":
    main()
