#!/usr/bin/env python3
"""Interop between the ExoFlow proxies and the native Azure SDKs, both ways.

What a proxy writes, azure-storage-queue / azure-storage-blob / azure-data-tables read straight
from Azure Storage with the same bytes; what they write natively, the proxy serves with the same
bytes. Also streams a large object (100 MiB by default) through eos-proxy to Blob storage as
staged blocks and back, checking the proxy's peak memory stayed bounded.

Run by scripts/test against Azurite, with running proxies:
  azure_interop.py --eqs URL --eos URL --eos-pid PID --ekv URL
Azurite's endpoints come from EXO_AZURITE_{QUEUE,BLOB,TABLE}_URL; the account is Azurite's
well-known devstoreaccount1 with its documented key in EXO_TEST_AZURE_KEY.
"""

import argparse
import base64
import hashlib
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

from azure.core.credentials import AzureNamedKeyCredential
from azure.data.tables import TableServiceClient
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueServiceClient

ACCOUNT = "devstoreaccount1"
RUN = uuid.uuid4().hex[:8]
failures = []


def check(condition, what):
    print(f"  {'ok  ' if condition else 'FAIL'} {what}")
    if not condition:
        failures.append(what)


def call(method, url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            text = response.read()
            return json.loads(text) if text else {}
    except urllib.error.HTTPError as err:
        raise RuntimeError(f"{method} {url}: {err.code} {err.read().decode(errors='replace')}") from None


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def decode_exo_message(text: str):
    """How a native consumer reads a message eqs wrote: exo1.<body>[.a<name>=<value>]..."""
    if not text.startswith("exo1."):
        return text.encode(), {}
    parts = text[len("exo1."):].split(".")
    body, attributes = b64url_decode(parts[0]), {}
    for part in parts[1:]:
        if part.startswith("a"):
            name, value = part[1:].split("=", 1)
            attributes[b64url_decode(name).decode()] = b64url_decode(value).decode()
    return body, attributes


def queues(eqs, credential):
    print("Storage Queue <-> eqs")
    service = QueueServiceClient(os.environ["EXO_AZURITE_QUEUE_URL"], credential=credential)
    name = f"interop-{RUN}"
    call("POST", f"{eqs}/api/v1/queues", {"name": name})
    native = service.get_queue_client(name)
    binary = bytes(range(256))
    call("POST", f"{eqs}/api/v1/queues/{name}/messages",
         {"message": {"body": b64(binary), "attributes": {"origin": "eqs"}}})
    got = list(native.receive_messages(messages_per_page=32))
    decoded = [decode_exo_message(m.content) for m in got]
    check(decoded == [(binary, {"origin": "eqs"})], "a binary message with an attribute sent through eqs decodes natively")
    for m in got:
        native.delete_message(m)

    native.send_message("plain text from the Azure SDK ✓")
    received = call("POST", f"{eqs}/api/v1/queues/{name}/messages/receive", {"maxMessages": 10, "waitSeconds": 5})
    bodies = [base64.b64decode(m.get("body", "")) for m in received.get("messages", [])]
    check(bodies == ["plain text from the Azure SDK ✓".encode()], "a plain message sent natively reaches eqs byte-exact")
    for m in received.get("messages", []):
        call("POST", f"{eqs}/api/v1/queues/{name}/messages/ack", {"receipt": m["receipt"]})
    call("DELETE", f"{eqs}/api/v1/queues/{name}")


def objects(eos, eos_pid, credential, large_mib):
    print("Blob <-> eos")
    service = BlobServiceClient(os.environ["EXO_AZURITE_BLOB_URL"], credential=credential)
    bucket = f"interop-{RUN}"
    call("POST", f"{eos}/api/v1/buckets", {"name": bucket})
    container = service.get_container_client(bucket)
    data = bytes(range(256)) * 1000
    request = urllib.request.Request(
        f"{eos}/api/v1/buckets/{bucket}/objects/dir/from-eos.bin", data=data, method="PUT",
        headers={"content-type": "application/x-test", "x-exo-meta-origin": "eos"})
    urllib.request.urlopen(request, timeout=60).read()
    blob = container.get_blob_client("dir/from-eos.bin")
    props = blob.get_blob_properties()
    check(blob.download_blob().readall() == data, "an object written through eos is read natively byte-exact")
    check(props.content_settings.content_type == "application/x-test" and props.metadata == {"origin": "eos"},
          "its content type and metadata are the blob's own")

    container.upload_blob("from sdk/ü.txt", b"native \x00 bytes", metadata={"origin": "sdk"})
    quoted = urllib.parse.quote("from sdk/ü.txt")
    with urllib.request.urlopen(f"{eos}/api/v1/buckets/{bucket}/objects/{quoted}", timeout=60) as r:
        body, headers = r.read(), r.headers
    check(body == b"native \x00 bytes", "a blob written natively is served by eos byte-exact")
    check(headers.get("x-exo-meta-origin") == "sdk", "with its metadata")

    size = large_mib * 1024 * 1024
    chunk = hashlib.sha256(b"exoflow").digest() * (1024 * 1024 // 32)

    def generate():
        for _ in range(large_mib):
            yield chunk

    digest = hashlib.sha256()
    for _ in range(large_mib):
        digest.update(chunk)
    started = time.monotonic()
    request = urllib.request.Request(
        f"{eos}/api/v1/buckets/{bucket}/objects/large.bin", data=generate(), method="PUT",
        headers={"content-type": "application/octet-stream", "transfer-encoding": "chunked"})
    urllib.request.urlopen(request, timeout=600).read()
    put_seconds = time.monotonic() - started
    large = container.get_blob_client("large.bin")
    check(large.get_blob_properties().size == size, f"{large_mib} MiB arrived in Blob storage whole")
    blocks, _ = large.get_block_list("committed")
    check(len(blocks) > 1, f"as staged blocks ({len(blocks)} committed)")
    native = hashlib.sha256()
    for part in large.download_blob().chunks():
        native.update(part)
    check(native.digest() == digest.digest(), "the SDK reads the same bytes")
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
    check(peak_kib < 64 * 1024, f"eos-proxy peak memory stayed bounded ({peak_kib} KiB < 64 MiB)")
    large.delete_blob()


def items(ekv, credential):
    print("Table <-> ekv")
    service = TableServiceClient(os.environ["EXO_AZURITE_TABLE_URL"], credential=credential)
    table = f"interop-{RUN}"
    call("POST", f"{ekv}/api/v1/tables", {"name": table})
    physical = "t" + table.replace("z", "zz").replace("-", "zy")
    client = service.get_table_client(physical)
    value = b"\x00\x01binary \xff"
    key = "user/42#prefs?"
    put = call("PUT", f"{ekv}/api/v1/tables/{table}/entries/{urllib.parse.quote(key, safe='')}", {"value": b64(value)})
    entity = client.get_entity("0", key.encode().hex())
    stored = b"".join(bytes(entity[f"v{i}"]) for i in range(entity["n"]))
    check(stored == value and entity["k"] == key, "an entry written through ekv is read natively byte-exact")
    check(entity.metadata["etag"] == put.get("version"), "its version is the entity's ETag")

    client.upsert_entity({"PartitionKey": "0", "RowKey": "native".encode().hex(), "k": "native",
                          "n": 1, "v0": b"from the sdk", "exp_ms": 0})
    entry = call("GET", f"{ekv}/api/v1/tables/{table}/entries/native").get("entry", {})
    check(base64.b64decode(entry.get("value", "")) == b"from the sdk",
          "an entity written natively in the documented layout is served by ekv")
    call("DELETE", f"{ekv}/api/v1/tables/{table}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--eqs", required=True)
    parser.add_argument("--eos", required=True)
    parser.add_argument("--eos-pid", required=True, type=int)
    parser.add_argument("--ekv", required=True)
    parser.add_argument("--large-mib", type=int, default=100)
    args = parser.parse_args()
    credential = AzureNamedKeyCredential(ACCOUNT, os.environ["EXO_TEST_AZURE_KEY"])
    queues(args.eqs, credential)
    objects(args.eos, args.eos_pid, credential, args.large_mib)
    items(args.ekv, credential)
    if failures:
        sys.exit(f"{len(failures)} interop check(s) failed")
    print("interop: every check passed")


if __name__ == "__main__":
    main()
