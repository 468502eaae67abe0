#!/usr/bin/env python3
"""Credential rotation without a restart, as an operator rotates a Kubernetes secret: eqs, eos
and ekv run on Azurite with `account-key: file:PATH`. The file is overwritten with a wrong key —
calls must start failing UNAUTHENTICATED within seconds (the file is read again, not cached for
the process's life) — then with the right key again — calls must succeed again. The proxy is
never restarted; a last call shows it is the same process.

And eos on fake-gcs-server with `service-account-key: file:PATH`:
the key file is replaced by another account's key, and the presigned URLs eos signs must name
(and be signed by) the new account within seconds.

Run by scripts/test with Azurite up:
  rotation.py --bin-dir DIR --work DIR
Environment: EXO_AZURITE_{QUEUE,BLOB,TABLE}_URL, EXO_TEST_AZURE_KEY, EXO_FAKE_GCS_URL
(scripts/emulators.sh); `openssl` for the GCS keys.
"""

import argparse
import base64
import os
import json
import subprocess
import sys
import time
import urllib.parse

from harness import check, failures, request, start_proxy

# Secrets are read again every 5 s; the check allows for that plus a slow call.
FOLLOW_WITHIN = 12.0


def write_key(path, key):
    # As kubelet and most secret tools do: a new file renamed over the old one.
    with open(path + ".new", "w") as f:
        f.write(key + "\n")
    os.replace(path + ".new", path)


def wait_until(call, want, seconds):
    """Seconds until `call()` answered status `want` (polled every 0.25 s), or None; the last
    answer."""
    started = time.monotonic()
    answer = None
    while time.monotonic() - started < seconds:
        try:
            status, answer = call()
        except OSError as err:  # not listening yet
            status, answer = None, str(err)
        if status == want:
            return time.monotonic() - started, answer
        time.sleep(0.25)
    return None, answer


def service_account_key(work, name):
    """A throw-away service-account key file's text for account `name`."""
    pem = os.path.join(work, f"{name}.pem")
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", pem],
                   check=True, capture_output=True)
    return json.dumps({"type": "service_account", "project_id": "exo-test",
                       "client_email": f"{name}@exo-test.iam.gserviceaccount.com",
                       "private_key": open(pem).read(), "token_uri": "https://oauth2.googleapis.com/token"})


def gcs_key_rotation(args):
    print("eos-proxy on gcs, service-account key from a file rotated under it")
    key_file = os.path.join(args.work, "gcs-key.json")
    write_key(key_file, service_account_key(args.work, "before"))
    rotated = service_account_key(args.work, "after")
    config = os.path.join(args.work, "eos-gcs.yaml")
    with open(config, "w") as f:
        f.write(f"backend:\n  kind: gcs\n  project: exo-test\n  endpoint: {os.environ['EXO_FAKE_GCS_URL']}\n"
                f"  credentials:\n    anonymous: true\n    service-account-key: file:{key_file}\n")
    proc, base = start_proxy(os.path.join(args.bin_dir, "eos-proxy"), config, os.path.join(args.work, "eos-gcs.log"))
    bucket = f"rotation-{os.getpid()}"

    def signer():
        status, answer = request("POST", f"{base}/api/v1/buckets/{bucket}/presign",
                                 {"key": "k", "method": "GET", "expiresInSeconds": 60})
        if status != 200:
            return status, answer
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(answer["url"]).query))
        return status, query.get("X-Goog-Credential", "").split("@")[0]

    try:
        check(request("POST", f"{base}/api/v1/buckets", {"name": bucket})[0] in (200, 201), "gcs: bucket made")
        check(signer() == (200, "before"), f"gcs: URLs are signed by the first key's account ({signer()})")
        write_key(key_file, rotated)
        took, last = wait_until(lambda: (200 if signer() == (200, "after") else 0, signer()), 200, FOLLOW_WITHIN)
        check(took is not None, f"gcs: the rotated key signs within {FOLLOW_WITHIN:.0f} s "
                                f"(after {took if took is None else round(took, 1)} s; last {last})")
        check(proc.poll() is None, "gcs: the same process throughout (never restarted)")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin-dir", required=True)
    parser.add_argument("--work", required=True)
    args = parser.parse_args()
    os.makedirs(args.work, exist_ok=True)
    key = os.environ["EXO_TEST_AZURE_KEY"]
    wrong = base64.b64encode(b"a rotated-away key, not this account's").decode()
    services = [
        ("eqs", "azure-queue", os.environ["EXO_AZURITE_QUEUE_URL"], "/api/v1/queues",
         f"  table-endpoint: {os.environ['EXO_AZURITE_TABLE_URL']}\n"),
        ("eos", "azure-blob", os.environ["EXO_AZURITE_BLOB_URL"], "/api/v1/buckets", ""),
        ("ekv", "azure-table", os.environ["EXO_AZURITE_TABLE_URL"], "/api/v1/tables", ""),
    ]
    for proxy, kind, endpoint, path, extra in services:
        print(f"{proxy}-proxy on {kind}, account key from a file rotated under it")
        key_file = os.path.join(args.work, f"{proxy}-account-key")
        write_key(key_file, key)
        config = os.path.join(args.work, f"{proxy}.yaml")
        with open(config, "w") as f:
            f.write(f"backend:\n  kind: {kind}\n  account: devstoreaccount1\n  endpoint: {endpoint}\n"
                    f"  credentials:\n    account-key: file:{key_file}\n{extra}")
        proc, base = start_proxy(os.path.join(args.bin_dir, f"{proxy}-proxy"), config,
                                 os.path.join(args.work, f"{proxy}.log"))
        try:
            call = lambda: request("GET", f"{base}{path}")
            status, answer = call()
            check(status == 200, f"{proxy}: GET {path} answers 200 with the right key (got {status} {answer})")

            if proxy == "eqs":
                # Caught mid-write, as `echo KEY > file` leaves it for a moment: empty, then half
                # a key. Neither is taken; the last good key stays (the code is shared by all three).
                for caught in ("", key[:13] + " "):
                    with open(key_file, "w") as f:
                        f.write(caught)
                    time.sleep(6)
                    status, answer = call()
                    check(status == 200, f"{proxy}: a key file caught mid-write ({len(caught)} bytes) keeps the "
                                         f"last good key ({status} {answer})")
            write_key(key_file, wrong)
            took, answer = wait_until(call, 401, FOLLOW_WITHIN)
            check(took is not None and answer.get("reason") == "UNAUTHENTICATED",
                  f"{proxy}: the wrong key written to the file is used within {FOLLOW_WITHIN:.0f} s "
                  f"(401 UNAUTHENTICATED after {took if took is None else round(took, 1)} s; last {answer})")

            write_key(key_file, key)
            took, answer = wait_until(call, 200, FOLLOW_WITHIN)
            check(took is not None,
                  f"{proxy}: the right key written back is used within {FOLLOW_WITHIN:.0f} s "
                  f"(200 after {took if took is None else round(took, 1)} s; last {answer})")
            check(proc.poll() is None, f"{proxy}: the same process throughout (never restarted)")
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    gcs_key_rotation(args)
    if failures:
        print(f"{len(failures)} rotation check(s) failed", file=sys.stderr)
        sys.exit(1)
    print("credential rotation: every check passed")


if __name__ == "__main__":
    main()
