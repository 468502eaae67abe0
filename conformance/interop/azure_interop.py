#!/usr/bin/env python3
"""Interop between the ExoFlow proxies and the native Azure SDKs, both ways.

What a proxy writes, azure-storage-queue / azure-storage-blob / azure-data-tables read straight
from Azure Storage with the same bytes; what they write natively, the proxy serves with the same
bytes. Also streams a large object (100 MiB by default) through eos-proxy to Blob storage as
staged blocks and back, checking the proxy's peak memory stayed bounded.

Topics: the registry and outbox table, a left-over outbox row finished by the drainer, and a
private eqs-proxy killed -9 under a publish load losing no acknowledged publish.

Run by scripts/test against Azurite, with running proxies:
  azure_interop.py --eqs URL --eos URL --eos-pid PID --ekv URL --eqs-proxy BIN --eqs-config FILE --scratch DIR
Azurite's endpoints come from EXO_AZURITE_{QUEUE,BLOB,TABLE}_URL; the account is Azurite's
well-known devstoreaccount1 with its documented key in EXO_TEST_AZURE_KEY.
"""

import argparse
import base64
import json
import os
import time
import urllib.parse
import uuid

from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import EdmType, EntityProperty as EdmProperty, TableServiceClient
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueServiceClient

from common import (b64, call, check, check_none_lost, drain_bodies, finish, get_object, large_round_trip,
                    publishes_killed, put_object, refusal)

ACCOUNT = "devstoreaccount1"
RUN = uuid.uuid4().hex[:8]


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


def queues(eqs, credential, arm_template):
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

    # Foreign texts: whitespace kept, padded envelopes read, broken envelopes marked, never dropped.
    pad = lambda data: base64.urlsafe_b64encode(data).decode()
    sent = {
        '{"a": 1}\n': ('{"a": 1}\n'.encode(), {}),
        "  indented": (b"  indented", {}),
        "exo1." + pad(b"hi") + ".a" + pad(b"k") + "=" + pad(b"v"): (b"hi", {"k": "v"}),
    }
    for text in sent:
        native.send_message(text)
    native.send_message("exo1.!!broken")
    got = {}
    for _ in range(10):
        out = call("POST", f"{eqs}/api/v1/queues/{name}/messages/receive", {"maxMessages": 10, "waitSeconds": 1})
        for m in out.get("messages", []):
            got[base64.b64decode(m.get("body", ""))] = m.get("attributes", {})
            call("POST", f"{eqs}/api/v1/queues/{name}/messages/ack", {"receipt": m["receipt"]})
        if len(got) == 4:
            break
    for text, (body, attributes) in sent.items():
        check(got.get(body) == attributes, f"native text {text!r} reaches eqs byte-exact")
    check("not an ExoFlow envelope" in got.get(b"exo1.!!broken", {}).get("exo.undecodable", ""),
          "a broken envelope is delivered as stored, marked exo.undecodable")
    call("DELETE", f"{eqs}/api/v1/queues/{name}")

    # Queues made beforehand: bare (az storage queue create) and as the ARM template renders them.
    bare = f"interop-bare-{RUN}"
    service.create_queue(bare)
    info = call("GET", f"{eqs}/api/v1/queues/{bare}")["info"]["options"]
    check(info.get("visibilityTimeoutSeconds") == 30 and info.get("retentionSeconds") == 345600,
          "a queue made without eqs's metadata has the contract's defaults")
    call("POST", f"{eqs}/api/v1/queues/{bare}/messages", {"message": {"body": b64(b"kept")}})
    time.sleep(2)
    first = call("POST", f"{eqs}/api/v1/queues/{bare}/messages/receive", {"maxMessages": 10, "waitSeconds": 1})
    again = call("POST", f"{eqs}/api/v1/queues/{bare}/messages/receive", {"maxMessages": 10, "waitSeconds": 1})
    check([base64.b64decode(m["body"]) for m in first.get("messages", [])] == [b"kept"],
          "a message sent to it outlives a second (no 1 s TTL)")
    check(not again.get("messages"), "a received message stays hidden for the visibility timeout")
    created = call("POST", f"{eqs}/api/v1/queues",
                   {"name": bare, "options": {"visibilityTimeoutSeconds": 45, "retentionSeconds": 3600}})
    check(created.get("created") is not True and created["info"]["options"].get("visibilityTimeoutSeconds") == 45,
          "creating it through eqs adopts it with the requested options")
    check(service.get_queue_client(bare).get_queue_properties().metadata.get("exovisibility") == "45",
          "and records them in its metadata")
    service.delete_queue(bare)
    if arm_template:
        with open(arm_template) as f:
            template = json.load(f)
        for resource in template["resources"]:
            if resource["type"].endswith("/queueServices/queues"):
                name = f"interop-arm-{RUN}"
                metadata = resource["properties"]["metadata"]
                service.create_queue(name, metadata=metadata)
                options = call("GET", f"{eqs}/api/v1/queues/{name}")["info"]["options"]
                check(options.get("visibilityTimeoutSeconds") == int(metadata["exovisibility"])
                      and options.get("retentionSeconds") == 345600,
                      f"a queue as the ARM template creates it ({resource['name']}) has the manifest's options")
                service.delete_queue(name)
                break
        else:
            check(False, f"the ARM template {arm_template} creates a queue")


def objects(eos, eos_pid, credential, large_mib):
    print("Blob <-> eos")
    service = BlobServiceClient(os.environ["EXO_AZURITE_BLOB_URL"], credential=credential)
    bucket = f"interop-{RUN}"
    call("POST", f"{eos}/api/v1/buckets", {"name": bucket})
    container = service.get_container_client(bucket)
    data = bytes(range(256)) * 1000
    put_object(eos, bucket, "dir/from-eos.bin", data, "application/x-test", {"origin": "eos"})
    blob = container.get_blob_client("dir/from-eos.bin")
    props = blob.get_blob_properties()
    check(blob.download_blob().readall() == data, "an object written through eos is read natively byte-exact")
    check(props.content_settings.content_type == "application/x-test" and props.metadata == {"origin": "eos"},
          "its content type and metadata are the blob's own")

    container.upload_blob("from sdk/ü.txt", b"native \x00 bytes", metadata={"origin": "sdk"})
    body, headers = get_object(eos, bucket, "from sdk/ü.txt")
    check(body == b"native \x00 bytes", "a blob written natively is served by eos byte-exact")
    check(headers.get("x-exo-meta-origin") == "sdk", "with its metadata")

    # Every listed key is readable, writable and deletable under that key, '%' included.
    for name in ("inbox/file%20name.pdf", "inbox/100%25.txt", "inbox/a%5Cb"):
        container.upload_blob(name, name.encode())
    listed = call("GET", f"{eos}/api/v1/buckets/{bucket}/objects?prefix=inbox/")
    keys = [o["key"] for o in listed.get("objects", [])]
    check(sorted(keys) == sorted(["inbox/file%20name.pdf", "inbox/100%25.txt", "inbox/a\\b"]), f"native names list as keys: {keys}")
    for key in keys:
        body, _ = get_object(eos, bucket, key)
        check(body in (b"inbox/file%20name.pdf", b"inbox/100%25.txt", b"inbox/a%5Cb"),
              f"listed key {key!r} reads its blob")
        put_object(eos, bucket, key, b"rewritten", "text/plain", {})
        call("DELETE", f"{eos}/api/v1/buckets/{bucket}/objects/{urllib.parse.quote(key, safe='')}")
    left = [b.name for b in container.list_blobs(name_starts_with="inbox/")]
    check(left == [], f"writes and deletes through those keys hit the same blobs (left: {left})")
    put_object(eos, bucket, "pct/50%25 off", b"x", "text/plain", {})
    check([b.name for b in container.list_blobs(name_starts_with="pct/")] == ["pct/50%25 off"],
          "a key with '%' written through eos is the same blob name natively")
    check(get_object(eos, bucket, "pct/50%25 off")[0] == b"x", "and reads back under its own key")

    # Large object: streamed in, staged as blocks, streamed back.
    large = container.get_blob_client("large.bin")
    large_round_trip(
        eos, eos_pid, bucket, large_mib,
        native_size=lambda: large.get_blob_properties().size,
        native_chunks=lambda: large.download_blob().chunks())
    blocks, _ = large.get_block_list("committed")
    check(len(blocks) > 1, f"as staged blocks ({len(blocks)} committed)")
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
    counters(ekv, client, table)
    call("DELETE", f"{ekv}/api/v1/tables/{table}")


def counters(ekv, client, table):
    """Increment through ekv as azure-data-tables sees it: the entity's value pieces hold the
    counter's decimal text and its ETag is the version ekv answered; a counter set natively is
    added to; a value that is no counter, or a sum past the i64 range, is refused with the entity
    left as it was; the expiry an increment gives a new counter stays with later increments."""
    key = "hits/α"

    def increment(delta, k=key, **extra):
        return call("POST", f"{ekv}/api/v1/tables/{table}/increment", {"key": k, "delta": delta, **extra})

    def stored(k=key):
        try:
            entity = client.get_entity("0", k.encode().hex())
        except ResourceNotFoundError:
            return None, None
        return b"".join(bytes(entity[f"v{i}"]) for i in range(entity["n"])), entity.metadata["etag"]

    def set_natively(text):
        client.upsert_entity({"PartitionKey": "0", "RowKey": key.encode().hex(), "k": key, "n": 1, "v0": text,
                              "exp_ms": 0})
        return stored()[1]

    first = increment(40)
    check(stored() == (b"40", first.get("version")),
          f"after an increment of 40 the entity holds b'40' under the ETag ekv answered ({stored()}, {first})")
    second = increment(2)
    check(second.get("value") == "42" and stored() == (b"42", second.get("version"))
          and second.get("version") != first.get("version"),
          f"after another of 2: b'42' under a new ETag, the version answered ({stored()}, {second})")

    native_etag = set_natively(b"1000")
    after = increment(-1)
    check(after.get("value") == "999" and stored() == (b"999", after.get("version"))
          and after.get("version") not in (native_etag, second.get("version")),
          f"an increment of -1 adds to the counter the SDK set to 1000, under a new ETag ({stored()}, {after})")

    for text, reason in ((b"007", "NOT_A_COUNTER"), (b"9223372036854775807", "COUNTER_OVERFLOW")):
        native_etag = set_natively(text)
        refused = refusal("POST", f"{ekv}/api/v1/tables/{table}/increment", {"key": key, "delta": 1})
        shown = refused.split('"detail":', 1)[-1][:110]
        check(": 409 " in refused and f'"reason":"{reason}"' in refused,
              f"an increment of an entity the SDK set to {text.decode()} is refused (409 {reason}): {shown}")
        check(stored() == (text, native_etag), f"and leaves the entity as it was ({stored()})")

    def expiry():
        try:
            value = client.get_entity("0", "window".encode().hex())["exp_ms"]
        except ResourceNotFoundError:
            return None
        return int(getattr(value, "value", value))

    started_ms = int(time.time() * 1000)
    first = increment(1, "window", ttlSeconds=30)
    created = expiry()
    again = increment(1, "window", ttlSeconds=300)
    check(first.get("value") == "1" and again.get("value") == "2" and stored("window")[0] == b"2",
          f"a counter created with ttlSeconds counts on ({first.get('value')}, {again.get('value')})")
    check(created is not None and started_ms + 29_000 <= created <= started_ms + 31_000 and expiry() == created,
          f"its expiry (exp_ms {created}) is 30 s out and a later increment keeps it (exp_ms {expiry()})")


def topics(eqs, credential, eqs_proxy, eqs_config, scratch):
    print("Azure topics: registry and outbox in a table, fan-out by the proxy")
    tables = TableServiceClient(endpoint=os.environ["EXO_AZURITE_TABLE_URL"], credential=credential)
    registry = tables.get_table_client("exotopics")
    topic, first, second = f"orders-{RUN}", f"first-{RUN}", f"second-{RUN}"
    call("POST", f"{eqs}/api/v1/topics", {"name": topic})
    for name, queue in (("first", first), ("second", second)):
        call("POST", f"{eqs}/api/v1/topics/{topic}/subscriptions", {"name": name, "queue": queue, "createQueue": {}})
    rows = {e["RowKey"]: e for e in registry.query_entities(f"PartitionKey eq '{topic}'")}
    check(set(rows) == {"!topic", "first", "second"} and rows["first"]["queue"] == first,
          "the topic and its subscriptions are rows of the exotopics table")

    # A fan-out a proxy left half done: its outbox row, as written before the copies, is
    # finished by the drainer of any running proxy once it is stale.
    # A row in the outbox partition that is no outbox row (written by hand, or truncated): it is
    # left alone and must not hold up the rows beside it.
    junk = "00000000-junk-" + RUN
    registry.create_entity({"PartitionKey": "~outbox", "RowKey": junk, "queues": "not json",
                            "at_ms": EdmProperty(int(time.time() * 1000) - 120_000, EdmType.INT64)})
    publish_id = str(uuid.uuid4())
    registry.create_entity({
        "PartitionKey": "~outbox", "RowKey": publish_id, "topic": topic, "body": b"left behind",
        "attributes": json.dumps({"exo.topic": topic, "exo.publish-id": publish_id}),
        "queues": json.dumps([first, second]), "at_ms": EdmProperty(int(time.time() * 1000) - 60_000, EdmType.INT64)})
    for queue in (first, second):
        got = drain_bodies(eqs, queue, {b"left behind"}, seconds=30)
        check([body for body, _ in got] == [b"left behind"] and got[0][1].get("exo.publish-id") == publish_id,
              f"a left-over outbox row reaches {queue} (the drainer finished it)")
    check(not list(registry.query_entities(f"PartitionKey eq '~outbox' and RowKey eq '{publish_id}'")),
          "and its row is gone")
    check(list(registry.query_entities(f"PartitionKey eq '~outbox' and RowKey eq '{junk}'")) != [],
          "a malformed outbox row next to it did not stop the drainer, and is left for a person to look at")
    registry.delete_entity("~outbox", junk)

    # kill -9 under a publish load: every acknowledged publish reaches both subscriptions.
    acknowledged = publishes_killed(eqs_proxy, eqs_config, scratch, topic)
    left = len(list(registry.query_entities("PartitionKey eq '~outbox'")))
    print(f"       {left} outbox row(s) left mid-fan-out by the kill")
    check_none_lost(eqs, (first, second), acknowledged)
    call("DELETE", f"{eqs}/api/v1/topics/{topic}")
    for queue in (first, second):
        call("DELETE", f"{eqs}/api/v1/queues/{queue}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--eqs", required=True)
    parser.add_argument("--eos", required=True)
    parser.add_argument("--eos-pid", required=True, type=int)
    parser.add_argument("--ekv", required=True)
    parser.add_argument("--large-mib", type=int, default=100)
    parser.add_argument("--arm-template", help="a template from exo deploy render: its queues are made natively")
    parser.add_argument("--eqs-proxy", required=True, help="the eqs-proxy binary, for a private proxy killed -9")
    parser.add_argument("--eqs-config", required=True, help="its config (the same backend as --eqs)")
    parser.add_argument("--scratch", required=True, help="a directory for the private proxy's log")
    args = parser.parse_args()
    credential = AzureNamedKeyCredential(ACCOUNT, os.environ["EXO_TEST_AZURE_KEY"])
    queues(args.eqs, credential, args.arm_template)
    topics(args.eqs, credential, args.eqs_proxy, args.eqs_config, args.scratch)
    objects(args.eos, args.eos_pid, credential, args.large_mib)
    items(args.ekv, credential)
    finish()


if __name__ == "__main__":
    main()
