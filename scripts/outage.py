#!/usr/bin/env python3
"""Failover outage tests, as an operator sees them: eqs, eos and ekv run on an AWS + Azure chain
(moto first, through scripts/fault_proxy.py; Azurite second) while the primary's connections are
reset, then blackholed, then restored. Every acknowledged send, put, overwrite and delete must
hold after fail-back — checked on the primary itself with boto3 — reads during the outage must
answer the truth (the value, or 503 UNAVAILABLE, never a false 404), conditional writes must not
succeed on a guess, and with the primary blackholed calls must keep succeeding within twice the
member deadline.

Run by scripts/test with moto and Azurite up:
  outage.py --bin-dir DIR --work DIR
Environment: EXO_MOTO_URL, EXO_AZURITE_{QUEUE,BLOB,TABLE}_URL, EXO_TEST_AZURE_KEY (scripts/emulators.sh).
"""

import argparse
import base64
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import boto3

MEMBER_TIMEOUT = 1.0
from harness import check, failures, free_port, request, start_proxy


def fault(control, mode):
    request("POST", f"http://127.0.0.1:{control}/mode/{mode}")


def b64(data):
    return base64.b64encode(data).decode()


def blackholed_calls(call, count=20):
    """Runs `call` count times with the primary blackholed: (successes, slowest seconds)."""
    ok, slowest = 0, 0.0
    for i in range(count):
        started = time.monotonic()
        status = call(i)
        slowest = max(slowest, time.monotonic() - started)
        ok += status in (200, 201)
    return ok, slowest


def read_as_sdk(url, seconds=5):
    """A GET as an SDK makes it: a retryable answer (the primary not re-admitted yet: the chain
    says 503 rather than guess) is tried again for up to `seconds`. (status, answer)."""
    deadline = time.monotonic() + seconds
    while True:
        status, answer = request("GET", url)
        retryable = isinstance(answer, dict) and answer.get("retryable")
        if not retryable or time.monotonic() >= deadline:
            return status, answer
        time.sleep(0.2)


def wait_for(condition, what, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.25)
    check(False, what)
    return False


def kv(url, control, dynamodb, run):
    print("ekv on sqs/dynamodb → azure-table")
    table = f"out-{run}"
    base = f"{url}/api/v1/tables"
    request("POST", base, {"name": table})
    for key in ["kept", "overwritten", "deleted", "guarded"]:
        request("PUT", f"{base}/{table}/entries/{key}", {"value": b64(b"before")})
    fault(control, "reset")
    status, _ = request("GET", f"{base}/{table}/entries/kept")
    check(status == 503, f"a key only the primary holds reads as 503 during the outage, not a false 404 ({status})")
    acknowledged = {}
    for key, value in [("overwritten", b"during"), ("new", b"during")]:
        if request("PUT", f"{base}/{table}/entries/{key}", {"value": b64(value)})[0] == 200:
            acknowledged[key] = value
    deleted = request("DELETE", f"{base}/{table}/entries/deleted")[0] == 200
    check(len(acknowledged) == 2 and deleted, "puts, overwrites and deletes are accepted during the outage")
    status, _ = request("PUT", f"{base}/{table}/entries/guarded", {"value": b64(b"x"), "condition": {"mustNotExist": True}})
    check(status == 503, f"create-only on a key the primary holds is 503, not accepted on a guess ({status})")
    fault(control, "pass")
    wait_for(lambda: request("GET", f"{base}/{table}/entries")[0] == 200, "the primary is back and the journal replayed")
    # A hung primary, from a healthy chain: set aside after one member deadline.
    fault(control, "blackhole")
    ok, slowest = blackholed_calls(lambda i: request("PUT", f"{base}/{table}/entries/hung-{i}", {"value": b64(b"h")})[0])
    check(ok >= 19, f"with the primary blackholed, {ok}/20 puts succeed")
    check(slowest <= 2 * MEMBER_TIMEOUT + 0.5, f"none waits more than twice the member deadline (slowest {slowest:.2f} s)")
    acknowledged.update({f"hung-{i}": b"h" for i in range(20)})
    fault(control, "pass")

    def primary(key):
        item = dynamodb.get_item(TableName=table, Key={"p": {"S": "0"}, "k": {"S": key}}, ConsistentRead=True)
        return item.get("Item", {}).get("v", {}).get("B")

    wait_for(lambda: all(primary(k) == v for k, v in acknowledged.items()) and primary("deleted") is None,
             "every acknowledged write and delete reached the primary after fail-back")
    check(primary("kept") == b"before" and primary("guarded") == b"before", "what the outage did not touch is unchanged")
    for key, value in acknowledged.items():
        status, out = read_as_sdk(f"{base}/{table}/entries/{key}")
        if status != 200 or base64.b64decode(out["entry"]["value"]) != value:
            check(False, f"{key} reads back through ekv after fail-back ({status})")
            break
    else:
        check(True, f"all {len(acknowledged)} acknowledged writes read back through ekv after fail-back")
    status, answer = read_as_sdk(f"{base}/{table}/entries/deleted")
    check(status == 404, f"the deleted key stays deleted ({status} {answer})")


def objects(url, control, s3, run):
    print("eos on s3 → azure-blob")
    bucket = f"out-{run}"
    base = f"{url}/api/v1/buckets"
    request("POST", base, {"name": bucket})
    put = lambda key, data, headers=None: request("PUT", f"{base}/{bucket}/objects/{key}", raw=data,
                                                   headers={"content-type": "application/octet-stream", **(headers or {})})[0]
    for key in ["kept", "overwritten", "deleted", "guarded"]:
        put(key, b"before")
    fault(control, "reset")
    status, _ = request("GET", f"{base}/{bucket}/objects/kept")
    check(status == 503, f"an object only the primary holds reads as 503 during the outage, not a false 404 ({status})")
    acknowledged = {k: v for k, v in [("overwritten", b"during"), ("new", b"during")] if put(k, v) == 200}
    deleted = request("DELETE", f"{base}/{bucket}/objects/deleted")[0] == 200
    check(len(acknowledged) == 2 and deleted, "uploads, overwrites and deletes are accepted during the outage")
    status = put("guarded", b"x", {"if-none-match": "*"})
    check(status == 503, f"create-only on an object the primary holds is 503 ({status})")
    fault(control, "pass")
    wait_for(lambda: request("GET", f"{base}/{bucket}/objects")[0] == 200, "the primary is back and the journal replayed")
    fault(control, "blackhole")
    ok, slowest = blackholed_calls(lambda i: put(f"hung-{i}", b"h"))
    check(ok >= 19, f"with the primary blackholed, {ok}/20 uploads succeed")
    check(slowest <= 2 * MEMBER_TIMEOUT + 0.5, f"none waits more than twice the member deadline (slowest {slowest:.2f} s)")
    acknowledged.update({f"hung-{i}": b"h" for i in range(20)})
    fault(control, "pass")

    def primary(key):
        try:
            return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except s3.exceptions.NoSuchKey:
            return None

    wait_for(lambda: all(primary(k) == v for k, v in acknowledged.items()) and primary("deleted") is None,
             "every acknowledged upload and delete reached the primary after fail-back")
    check(primary("kept") == b"before" and primary("guarded") == b"before", "what the outage did not touch is unchanged")
    status, answer = read_as_sdk(f"{base}/{bucket}/objects/deleted")
    check(status == 404, f"the deleted object stays deleted ({status} {answer})")


def queues(url, control, sqs, run):
    print("eqs on sqs → azure-queue")
    queue = f"out-{run}"
    base = f"{url}/api/v1/queues"
    request("POST", base, {"name": queue})
    sent = set()

    def send(tag):
        body = f"{tag}".encode()
        status = request("POST", f"{base}/{queue}/messages", {"message": {"body": b64(body)}})[0]
        if status == 200:
            sent.add(body)
        return status

    for i in range(10):
        send(f"before-{i}")
    fault(control, "reset")
    for i in range(10):
        send(f"reset-{i}")
    fault(control, "pass")
    time.sleep(2)  # a probe (every 0.5 s) re-admits the primary: it takes sends again
    fault(control, "blackhole")
    ok, slowest = blackholed_calls(lambda i: send(f"hung-{i}"))
    check(ok >= 19, f"with the primary blackholed, {ok}/20 sends succeed")
    check(slowest <= 2 * MEMBER_TIMEOUT + 0.5, f"none waits more than twice the member deadline (slowest {slowest:.2f} s)")
    fault(control, "pass")
    received = set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not sent <= received:
        status, out = request("POST", f"{base}/{queue}/messages/receive", {"maxMessages": 10, "waitSeconds": 1})
        for m in (out.get("messages", []) if status == 200 else []):
            received.add(base64.b64decode(m.get("body", "")))
            request("POST", f"{base}/{queue}/messages/ack", {"receipt": m["receipt"]})
    check(sent <= received, f"every acknowledged message is received after fail-back ({len(sent & received)}/{len(sent)})")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin-dir", required=True)
    parser.add_argument("--work", required=True)
    args = parser.parse_args()
    os.makedirs(args.work, exist_ok=True)
    moto = urllib.parse.urlparse(os.environ["EXO_MOTO_URL"])
    run = uuid.uuid4().hex[:6]
    procs = []
    try:
        for service, aws, azure, azure_url in [("ekv", "dynamodb", "azure-table", "EXO_AZURITE_TABLE_URL"),
                                               ("eos", "s3", "azure-blob", "EXO_AZURITE_BLOB_URL"),
                                               ("eqs", "sqs", "azure-queue", "EXO_AZURITE_QUEUE_URL")]:
            listen, control = free_port(), free_port()
            procs.append(subprocess.Popen([sys.executable, os.path.join(os.path.dirname(__file__), "fault_proxy.py"),
                                           "--listen", str(listen), "--target", str(moto.port), "--control", str(control)]))
            time.sleep(0.3)
            config = os.path.join(args.work, f"{service}.yaml")
            journal = "" if service == "eqs" else f"  journal: {args.work}/{service}-journal-{run}.db\n"
            timeout = f"  member-timeout: {MEMBER_TIMEOUT}s\n"
            with open(config, "w") as f:
                f.write(f"backend:\n  kind: failover\n{journal}{timeout}  members:\n"
                        f"  - kind: {aws}\n    region: us-east-1\n    endpoint: http://127.0.0.1:{listen}\n"
                        f"  - kind: {azure}\n    account: devstoreaccount1\n    endpoint: {os.environ[azure_url]}\n"
                        f"    credentials:\n      account-key: env:EXO_TEST_AZURE_KEY\n")
            proc, url = start_proxy(os.path.join(args.bin_dir, f"{service}-proxy"), config, os.path.join(args.work, f"{service}.log"))
            procs.append(proc)
            aws_client = boto3.client(aws, endpoint_url=os.environ["EXO_MOTO_URL"], region_name="us-east-1")
            {"ekv": kv, "eos": objects, "eqs": queues}[service](url, control, aws_client, run)
    finally:
        for p in procs:
            p.terminate()
    if failures:
        raise SystemExit(f"{len(failures)} outage check(s) failed (logs in {args.work})")
    print("outage: every check passed")


if __name__ == "__main__":
    main()
