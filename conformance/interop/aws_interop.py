#!/usr/bin/env python3
"""Interop between the ExoFlow proxies and native AWS clients (boto3), both ways.

What a proxy writes, boto3 reads straight from SQS / SNS / S3 / DynamoDB with the same bytes;
what boto3 writes natively, the proxy serves with the same bytes (topics: a publish through eqs
is read from the subscription's SQS queue, a native SNS publish reaches eqs subscribers). Also streams a large object (100 MiB
by default) through eos-proxy to S3 as a multipart upload and back, and checks the proxy's peak
memory stayed bounded.

Run by scripts/test against moto, with running proxies:
  aws_interop.py --eqs URL --eos URL --eos-pid PID --ekv URL
AWS settings (endpoint, region, keys) come from the environment, as for the proxies.
"""

import argparse
import base64
import hashlib
import json
import os
import sys
import time
import urllib.parse
import uuid

import boto3

from common import (b64, call, check, check_stale_cas_fails, finish, get_object, large_round_trip, put_object,
                    refusal)

ENDPOINT = os.environ.get("AWS_ENDPOINT_URL")
RUN = uuid.uuid4().hex[:8]


def queues(eqs):
    print("SQS <-> eqs")
    sqs = boto3.client("sqs", endpoint_url=ENDPOINT)
    name = f"interop-{RUN}"
    call("POST", f"{eqs}/api/v1/queues", {"name": name})
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]

    # Proxy -> native: text stays plain text, binary arrives base64 with exo.encoding.
    text = "héllo, SQS ✓".encode()
    binary = bytes(range(256))
    for body in (text, binary):
        call("POST", f"{eqs}/api/v1/queues/{name}/messages",
             {"message": {"body": b64(body), "attributes": {"origin": "eqs"}}})
    got = {}
    for _ in range(10):
        out = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                  MessageAttributeNames=["All"])
        for m in out.get("Messages", []):
            attributes = m.get("MessageAttributes", {})
            encoding = attributes.get("exo.encoding", {}).get("StringValue")
            raw = base64.b64decode(m["Body"]) if encoding == "base64" else m["Body"].encode()
            got[raw] = (encoding, attributes.get("origin", {}).get("StringValue"))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        if len(got) == 2:
            break
    check(got.get(text) == (None, "eqs"), "a text body sent through eqs is plain text to boto3")
    check(got.get(binary) == ("base64", "eqs"), "a binary body sent through eqs decodes to the same bytes")

    # Native -> proxy: plain text needs nothing; base64 with exo.encoding comes back as bytes.
    sqs.send_message(QueueUrl=url, MessageBody="from boto3 ✓",
                     MessageAttributes={"origin": {"DataType": "String", "StringValue": "boto3"}})
    sqs.send_message(QueueUrl=url, MessageBody=b64(b"\x00\xffraw"),
                     MessageAttributes={"exo.encoding": {"DataType": "String", "StringValue": "base64"}})
    received = {}
    for _ in range(10):
        out = call("POST", f"{eqs}/api/v1/queues/{name}/messages/receive",
                   {"maxMessages": 10, "waitSeconds": 1})
        for m in out.get("messages", []):
            received[base64.b64decode(m.get("body", ""))] = m.get("attributes", {})
            call("POST", f"{eqs}/api/v1/queues/{name}/messages/ack", {"receipt": m["receipt"]})
        if len(received) == 2:
            break
    check(received.get("from boto3 ✓".encode()) == {"origin": "boto3"},
          "a text message sent by boto3 reaches eqs byte-exact with its attribute")
    check(received.get(b"\x00\xffraw") == {}, "a base64 message marked exo.encoding reaches eqs as its bytes")

    # A malformed foreign message never blocks the others: it arrives as stored, marked.
    sqs.send_message(QueueUrl=url, MessageBody="not base64 at all!",
                     MessageAttributes={"exo.encoding": {"DataType": "String", "StringValue": "base64"}})
    sqs.send_message(QueueUrl=url, MessageBody="marked empty, is not",
                     MessageAttributes={"exo.encoding": {"DataType": "String", "StringValue": "empty"}})
    sqs.send_message(QueueUrl=url, MessageBody="good one")
    sqs.send_message(QueueUrl=url, MessageBody="with binary",
                     MessageAttributes={"blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01\xff"},
                                        "n": {"DataType": "Number", "StringValue": "42"}})
    received = {}
    for _ in range(10):
        out = call("POST", f"{eqs}/api/v1/queues/{name}/messages/receive", {"maxMessages": 10, "waitSeconds": 1})
        for m in out.get("messages", []):
            received[base64.b64decode(m.get("body", ""))] = m.get("attributes", {})
            call("POST", f"{eqs}/api/v1/queues/{name}/messages/ack", {"receipt": m["receipt"]})
        if len(received) == 4:
            break
    bad = received.get(b"not base64 at all!", {})
    check("placeholder" in received.get(b"marked empty, is not", {}).get("exo.undecodable", ""),
          "a body marked exo.encoding=empty that is not the placeholder is delivered, marked, never dropped")
    check("base64" in bad.get("exo.undecodable", ""),
          "a message marked base64 whose body is not is delivered as stored, marked exo.undecodable")
    check(received.get(b"good one") == {}, "the good message received beside it is delivered, not hidden")
    check(received.get(b"with binary") == {"blob": b64(b"\x00\x01\xff"), "n": "42", "exo.base64-attributes": "blob"},
          "a Binary attribute arrives base64, named in exo.base64-attributes (never an empty string)")
    call("DELETE", f"{eqs}/api/v1/queues/{name}")

    # A queue made beforehand with no attributes set (console, CLI) works as if eqs had made it.
    name = f"interop-foreign-{RUN}"
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    info = call("GET", f"{eqs}/api/v1/queues/{name}")["info"]
    check(info["options"].get("visibilityTimeoutSeconds") == 30 and info["options"].get("retentionSeconds") == 345600,
          "a queue made natively has the contract's defaults (30 s visibility, 4 days retention)")
    created = call("POST", f"{eqs}/api/v1/queues", {"name": name})
    check(created.get("created") is not True, "creating it through eqs adopts it")
    call("POST", f"{eqs}/api/v1/queues/{name}/messages", {"message": {"body": b64(b"kept")}})
    first = call("POST", f"{eqs}/api/v1/queues/{name}/messages/receive", {"maxMessages": 10, "waitSeconds": 5})
    again = call("POST", f"{eqs}/api/v1/queues/{name}/messages/receive", {"maxMessages": 10, "waitSeconds": 1})
    check([base64.b64decode(m["body"]) for m in first.get("messages", [])] == [b"kept"] and not again.get("messages"),
          "a message sent to it is delivered once and stays hidden for its visibility timeout")
    sqs.delete_queue(QueueUrl=url)


def receive_all(eqs, queue, want):
    """Bodies (bytes) -> attributes of what eqs delivers from `queue`, acked, until `want` arrived."""
    got = {}
    for _ in range(15):
        out = call("POST", f"{eqs}/api/v1/queues/{queue}/messages/receive", {"maxMessages": 10, "waitSeconds": 1})
        for m in out.get("messages", []):
            got[base64.b64decode(m.get("body", ""))] = m.get("attributes", {})
            call("POST", f"{eqs}/api/v1/queues/{queue}/messages/ack", {"receipt": m["receipt"]})
        if len(got) >= want:
            break
    return got


def topics(eqs):
    print("SNS <-> eqs topics")
    sns = boto3.client("sns", endpoint_url=ENDPOINT)
    sqs = boto3.client("sqs", endpoint_url=ENDPOINT)
    topic, billing, eu = f"orders-{RUN}", f"billing-{RUN}", f"eu-{RUN}"
    call("POST", f"{eqs}/api/v1/topics", {"name": topic})
    call("POST", f"{eqs}/api/v1/topics/{topic}/subscriptions", {"name": "billing", "queue": billing, "createQueue": {}})
    call("POST", f"{eqs}/api/v1/topics/{topic}/subscriptions",
         {"name": "eu-only", "queue": eu, "filter": "region = 'eu'", "createQueue": {}})
    arn = next(t["TopicArn"] for t in sns.list_topics()["Topics"] if t["TopicArn"].endswith(":" + topic))

    # What eqs made is what SNS users expect: raw delivery, a filter policy, a queue policy.
    subs = {s["Endpoint"].rsplit(":", 1)[-1]: s for s in sns.list_subscriptions_by_topic(TopicArn=arn)["Subscriptions"]}
    check(set(subs) == {billing, eu}, "each eqs subscription is an SNS subscription of its queue")
    attrs = sns.get_subscription_attributes(SubscriptionArn=subs[eu]["SubscriptionArn"])["Attributes"]
    check(attrs.get("RawMessageDelivery") == "true", "subscriptions use raw message delivery")
    check(json.loads(attrs.get("FilterPolicy", "{}")) == {"region": ["eu"]}, "the filter is an SNS filter policy")
    policy = json.loads(sqs.get_queue_attributes(QueueUrl=sqs.get_queue_url(QueueName=eu)["QueueUrl"],
                                                 AttributeNames=["Policy"])["Attributes"]["Policy"])
    check(any(s.get("Condition", {}).get("ArnEquals", {}).get("aws:SourceArn") == arn for s in policy["Statement"]),
          "the queue policy lets the topic send to the queue")

    # Published through eqs, read by boto3 from the subscription's SQS queue.
    published = call("POST", f"{eqs}/api/v1/topics/{topic}/publish",
                     {"message": {"body": b64(bytes(range(256))), "attributes": {"region": "eu"}}})
    url = sqs.get_queue_url(QueueName=billing)["QueueUrl"]
    native = None
    for _ in range(10):
        out = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, MessageAttributeNames=["All"])
        if out.get("Messages"):
            native = out["Messages"][0]
            sqs.delete_message(QueueUrl=url, ReceiptHandle=native["ReceiptHandle"])
            break
    check(native is not None, "boto3 receives the copy from the subscription's queue")
    a = {k: v["StringValue"] for k, v in native["MessageAttributes"].items()}
    check(base64.b64decode(native["Body"]) == bytes(range(256)) and a.get("exo.encoding") == "base64",
          "the copy's body is the published bytes, base64 with exo.encoding as a send's")
    check(a.get("exo.topic") == topic and a.get("exo.publish-id") == published["publishId"] and a.get("region") == "eu",
          "the copy carries the published attributes, exo.topic and exo.publish-id")
    got = receive_all(eqs, eu, 1)
    check(list(got) == [bytes(range(256))], "the filtered subscription got the matching message through eqs")

    # Published natively to the SNS topic, received through eqs by each matching subscription.
    sns.publish(TopicArn=arn, Message="from boto3 ✓",
                MessageAttributes={"region": {"DataType": "String", "StringValue": "us"}})
    got = receive_all(eqs, billing, 1)
    check(got.get("from boto3 ✓".encode()) == {"region": "us"}, "a native SNS publish reaches eqs subscribers byte-exact")
    check(receive_all(eqs, eu, 1) == {}, "the filter holds for native publishes too")

    # A subscription made natively before eqs looked is listed, named after its queue.
    made = f"made-{RUN}"
    made_url = sqs.create_queue(QueueName=made)["QueueUrl"]
    made_arn = sqs.get_queue_attributes(QueueUrl=made_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=made_arn, Attributes={"RawMessageDelivery": "true"})
    info = call("GET", f"{eqs}/api/v1/topics/{topic}")["info"]
    check({s["name"] for s in info["subscriptions"]} == {"billing", "eu-only", made},
          "a native subscription is listed under its queue's name")
    call("POST", f"{eqs}/api/v1/topics/{topic}/publish", {"message": {"body": b64(b"to all")}})
    check(list(receive_all(eqs, made, 1)) == [b"to all"], "and gets what eqs publishes")

    # Deleting a subscription's queue through eqs unsubscribes it (SNS would keep it).
    call("DELETE", f"{eqs}/api/v1/queues/{eu}")
    remaining = {s["Endpoint"].rsplit(":", 1)[-1] for s in sns.list_subscriptions_by_topic(TopicArn=arn)["Subscriptions"]}
    check(eu not in remaining, "deleting a queue through eqs removes its SNS subscription")
    call("DELETE", f"{eqs}/api/v1/topics/{topic}")
    check(not any(t["TopicArn"] == arn for t in sns.list_topics()["Topics"]), "deleting the topic deletes the SNS topic")
    for queue in (billing, made):
        sqs.delete_queue(QueueUrl=sqs.get_queue_url(QueueName=queue)["QueueUrl"])


def objects(eos, eos_pid, large_mib):
    print("S3 <-> eos")
    s3 = boto3.client("s3", endpoint_url=ENDPOINT)
    bucket = f"interop-{RUN}"
    call("POST", f"{eos}/api/v1/buckets", {"name": bucket})
    data = bytes(range(256)) * 1000
    put_object(eos, bucket, "dir/from-eos.bin", data, "application/x-test", {"origin": "eos"})
    native = s3.get_object(Bucket=bucket, Key="dir/from-eos.bin")
    check(native["Body"].read() == data, "an object written through eos is read by boto3 byte-exact")
    check(native["ContentType"] == "application/x-test" and native["Metadata"] == {"origin": "eos"},
          "its content type and metadata are S3's own headers")

    s3.put_object(Bucket=bucket, Key="from boto3/ü.txt", Body=b"native \x00 bytes",
                  ContentType="text/plain", Metadata={"origin": "boto3"})
    body, headers = get_object(eos, bucket, "from boto3/ü.txt")
    check(body == b"native \x00 bytes", "an object written by boto3 is served by eos byte-exact")
    check(headers.get("x-exo-meta-origin") == "boto3", "with its metadata")

    # Large object: streamed in, multipart to S3 (its ETag says how many parts), streamed back.
    large_round_trip(
        eos, eos_pid, bucket, large_mib,
        native_size=lambda: s3.head_object(Bucket=bucket, Key="large.bin")["ContentLength"],
        native_chunks=lambda: s3.get_object(Bucket=bucket, Key="large.bin")["Body"].iter_chunks(1 << 20))
    etag = s3.head_object(Bucket=bucket, Key="large.bin")["ETag"]
    check("-" in etag, f"as a multipart upload (ETag {etag})")
    s3.delete_object(Bucket=bucket, Key="large.bin")

    # A body of exactly one part (8 MiB), sent with its length, is one PutObject: a plain MD5 ETag.
    part = hashlib.sha256(b"one part").digest() * (8 * 1024 * 1024 // 32)
    put_object(eos, bucket, "one-part.bin", part, "application/octet-stream", {})
    etag = s3.head_object(Bucket=bucket, Key="one-part.bin")["ETag"].strip('"')
    check(etag == hashlib.md5(part).hexdigest(), f"exactly one part size is a single PutObject (ETag {etag})")
    s3.delete_object(Bucket=bucket, Key="one-part.bin")


def counters(ekv, dynamodb, table):
    """Increment through ekv as boto3 sees it: the item's `v` (B) holds the counter's decimal text
    and `ver` the version ekv answered; a counter set natively (with a fresh `ver`) is added to;
    a value that is no counter, or a sum past the i64 range, is refused with the item left as it
    was; the expiry an increment gives a new counter stays with later increments."""
    key = "hits/α"

    def increment(delta, k=key, **extra):
        return call("POST", f"{ekv}/api/v1/tables/{table}/increment", {"key": k, "delta": delta, **extra})

    def item(k=key):
        return dynamodb.get_item(TableName=table, Key={"p": {"S": "0"}, "k": {"S": k}},
                                 ConsistentRead=True).get("Item", {})

    def stored(k=key):
        got = item(k)
        return got.get("v", {}).get("B"), got.get("ver", {}).get("S")

    first = increment(40)
    check(stored() == (b"40", first.get("version")), f"after an increment of 40 boto3 reads v = b'40' at the "
          f"version ekv answered ({stored()}, {first})")
    second = increment(2)
    check(second.get("value") == "42" and stored() == (b"42", second.get("version"))
          and second.get("version") != first.get("version"),
          f"after another of 2: v = b'42' and ver changed to the version answered ({stored()}, {second})")

    dynamodb.update_item(TableName=table, Key={"p": {"S": "0"}, "k": {"S": key}},
                         UpdateExpression="SET v = :v, ver = :ver",
                         ExpressionAttributeValues={":v": {"B": b"1000"}, ":ver": {"S": "boto3-c1"}})
    after = increment(-1)
    check(after.get("value") == "999" and stored() == (b"999", after.get("version"))
          and after.get("version") not in ("boto3-c1", second.get("version")),
          f"an increment of -1 adds to the counter boto3 set to 1000, under a fresh version ({stored()}, {after})")

    for text, reason in ((b"007", "NOT_A_COUNTER"), (b"9223372036854775807", "COUNTER_OVERFLOW")):
        dynamodb.update_item(TableName=table, Key={"p": {"S": "0"}, "k": {"S": key}},
                             UpdateExpression="SET v = :v, ver = :ver",
                             ExpressionAttributeValues={":v": {"B": text}, ":ver": {"S": "boto3-c2"}})
        refused = refusal("POST", f"{ekv}/api/v1/tables/{table}/increment", {"key": key, "delta": 1})
        shown = refused.split('"detail":', 1)[-1][:110]
        check(": 409 " in refused and f'"reason":"{reason}"' in refused,
              f"an increment of an item boto3 set to {text.decode()} is refused (409 {reason}): {shown}")
        check(stored() == (text, "boto3-c2"), f"and leaves the item as it was ({stored()})")

    started_ms = int(time.time() * 1000)
    first = increment(1, "window", ttlSeconds=30)
    created = item("window")
    again = increment(1, "window", ttlSeconds=300)
    kept = item("window")
    expiry = int(created.get("exp_ms", {}).get("N", "0"))
    check(first.get("value") == "1" and again.get("value") == "2" and kept.get("v", {}).get("B") == b"2",
          f"a counter created with ttlSeconds counts on ({first.get('value')}, {again.get('value')})")
    check(started_ms + 29_000 <= expiry <= started_ms + 31_000 and kept.get("exp_ms") == created.get("exp_ms")
          and kept.get("exp") == created.get("exp") and "exp" in created,
          f"its expiry (exp_ms {expiry}, exp {created.get('exp', {}).get('N')}) is 30 s out and a later increment "
          f"keeps it (exp_ms {kept.get('exp_ms', {}).get('N')})")


def items(ekv):
    print("DynamoDB <-> ekv")
    dynamodb = boto3.client("dynamodb", endpoint_url=ENDPOINT)
    table = f"interop-{RUN}"
    call("POST", f"{ekv}/api/v1/tables", {"name": table})
    value = b"\x00\x01binary \xff"
    key = "user/42#prefs?"
    quoted = urllib.parse.quote(key, safe="")
    put = call("PUT", f"{ekv}/api/v1/tables/{table}/entries/{quoted}", {"value": b64(value)})
    item = dynamodb.get_item(TableName=table, Key={"p": {"S": "0"}, "k": {"S": key}},
                             ConsistentRead=True).get("Item", {})
    check(item.get("v", {}).get("B") == value, "an entry written through ekv is read by boto3 byte-exact")
    check(item.get("ver", {}).get("S") == put.get("version"), "with the version ekv reported")

    dynamodb.put_item(TableName=table, Item={
        "p": {"S": "0"}, "k": {"S": "native"}, "v": {"B": b"from boto3"}, "ver": {"S": "boto3-1"},
        "exp_ms": {"N": "0"}})
    got = call("GET", f"{ekv}/api/v1/tables/{table}/entries/native")
    entry = got.get("entry", {})
    check(base64.b64decode(entry.get("value", "")) == b"from boto3" and entry.get("version") == "boto3-1",
          "an item written by boto3 in the documented layout is served by ekv")

    # The documented rule for native writers: change `ver` with `v`; a stale compare-and-set then fails.
    dynamodb.update_item(TableName=table, Key={"p": {"S": "0"}, "k": {"S": "native"}},
                         UpdateExpression="SET v = :v, ver = :ver",
                         ExpressionAttributeValues={":v": {"B": b"updated by boto3"}, ":ver": {"S": "boto3-2"}})
    check_stale_cas_fails(ekv, table, "native", "boto3-1")
    entry = call("GET", f"{ekv}/api/v1/tables/{table}/entries/native").get("entry", {})
    check(base64.b64decode(entry.get("value", "")) == b"updated by boto3" and entry.get("version") == "boto3-2",
          "the native update stands, under its new version")
    counters(ekv, dynamodb, table)
    call("DELETE", f"{ekv}/api/v1/tables/{table}")

    # A table made beforehand (as CloudFormation does) is used as it is, if its layout is ekv's;
    # one with another key schema is refused with a clear reason rather than failing later.
    made = f"made-{RUN}"
    dynamodb.create_table(TableName=made, BillingMode="PAY_PER_REQUEST",
                          AttributeDefinitions=[{"AttributeName": "p", "AttributeType": "S"},
                                                {"AttributeName": "k", "AttributeType": "S"}],
                          KeySchema=[{"AttributeName": "p", "KeyType": "HASH"}, {"AttributeName": "k", "KeyType": "RANGE"}])
    check(call("POST", f"{ekv}/api/v1/tables", {"name": made}).get("created") in (False, None),
          "a table made beforehand in ekv's layout is adopted (created=false)")
    other = f"other-{RUN}"
    dynamodb.create_table(TableName=other, BillingMode="PAY_PER_REQUEST",
                          AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                          KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
    try:
        call("POST", f"{ekv}/api/v1/tables", {"name": other})
        check(False, "a table with another key schema is refused")
    except RuntimeError as err:
        check("key schema" in str(err) and ": 400 " in str(err), "a table with another key schema is refused (400)")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--eqs", required=True)
    parser.add_argument("--eos", required=True)
    parser.add_argument("--eos-pid", required=True, type=int)
    parser.add_argument("--ekv", required=True)
    parser.add_argument("--large-mib", type=int, default=100)
    args = parser.parse_args()
    if not ENDPOINT:
        sys.exit("AWS_ENDPOINT_URL is not set: these tests run against moto (scripts/emulators.sh)")
    queues(args.eqs)
    topics(args.eqs)
    objects(args.eos, args.eos_pid, args.large_mib)
    items(args.ekv)
    finish()


if __name__ == "__main__":
    main()
