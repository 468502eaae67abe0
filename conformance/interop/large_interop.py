#!/usr/bin/env python3
"""Large messages between eqs (SQS + S3) and the AWS SQS Extended Client for Python, both ways.

eqs with `large-messages:` puts a body above SQS's limit into S3 and sends the extended client's
reference. This checks that a consumer using the extended client (amazon-sqs-extended-client)
gets the whole body and deletes the object, that plain boto3 sees the reference and the object
holds the exact bytes, that what the extended client sends (current and legacy format) reaches
eqs whole, and that an ack through eqs deletes the object.

Run by scripts/test against moto, with an eqs proxy configured with large-messages on S3:
  large_interop.py --eqs URL --bucket BUCKET
AWS settings (endpoint, region, keys) come from the environment, as for the proxy.
"""

import argparse
import base64
import json
import os
import uuid

import boto3
import botocore.exceptions

from common import b64, call, check, finish

ENDPOINT = os.environ.get("AWS_ENDPOINT_URL")
RUN = uuid.uuid4().hex[:8]


def exists(s3, bucket, key):
    try:
        s3.head_object(Bucket=bucket, Key=key)
        return True
    except botocore.exceptions.ClientError:
        return False


def receive_eqs(eqs, name, want):
    got = []
    for _ in range(10):
        out = call("POST", f"{eqs}/api/v1/queues/{name}/messages/receive", {"maxMessages": 10, "waitSeconds": 1})
        got.extend(out.get("messages", []))
        if len(got) >= want:
            break
    return got


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eqs", required=True)
    parser.add_argument("--bucket", required=True)
    args = parser.parse_args()
    eqs, bucket = args.eqs.rstrip("/"), args.bucket

    plain_sqs = boto3.client("sqs", endpoint_url=ENDPOINT)
    s3 = boto3.client("s3", endpoint_url=ENDPOINT)
    # Importing the extended client replaces boto3's Session: clients made after it have the
    # large-payload settings (off until large_payload_support names a bucket).
    import sqs_extended_client  # noqa: F401
    extended = boto3.session.Session().client("sqs", endpoint_url=ENDPOINT)
    extended.large_payload_support = bucket
    # The Python client keeps objects after a delete unless asked (the Java one deletes them).
    extended.delete_payload_from_s3 = True
    extended.s3_client = boto3.session.Session().client("s3", endpoint_url=ENDPOINT)

    name = f"large-{RUN}"
    call("POST", f"{eqs}/api/v1/queues", {"name": name})
    url = plain_sqs.get_queue_url(QueueName=name)["QueueUrl"]
    described = call("GET", f"{eqs}/api/v1/describe")
    check("LARGE_MESSAGES" in described.get("capabilities", []), "eqs declares LARGE_MESSAGES")

    print("eqs -> SQS + S3 (plain boto3, then the extended client)")
    text = ("1 MiB of text, ünïcödé ✓ " * 45000).encode()[: 1024 * 1024 + 3]
    text = text.decode("utf-8", errors="ignore").encode()
    call("POST", f"{eqs}/api/v1/queues/{name}/messages",
         {"message": {"body": b64(text), "attributes": {"origin": "eqs"}}})
    peek = plain_sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, WaitTimeSeconds=2,
                                     VisibilityTimeout=0, MessageAttributeNames=["All"])["Messages"][0]
    pointer = json.loads(peek["Body"])
    attributes = peek.get("MessageAttributes", {})
    check(pointer[0] == "software.amazon.payloadoffloading.PayloadS3Pointer" and pointer[1]["s3BucketName"] == bucket,
          f"plain boto3 sees the extended client's reference ({peek['Body'][:90]}…)")
    check(attributes.get("ExtendedPayloadSize", {}).get("StringValue") == str(len(text)),
          "and the ExtendedPayloadSize attribute with the body's size")
    key = pointer[1]["s3Key"]
    stored = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    check(stored == text, f"the S3 object {key} holds the exact body ({len(stored)} bytes)")
    out = extended.receive_message(QueueUrl=url, MaxNumberOfMessages=1, WaitTimeSeconds=2,
                                   MessageAttributeNames=["All"])
    message = out["Messages"][0]
    check(message["Body"].encode() == text, "the extended client receives the whole body")
    check(message.get("MessageAttributes", {}).get("origin", {}).get("StringValue") == "eqs",
          "with its attribute")
    extended.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    check(not exists(s3, bucket, key), "the extended client's delete removes the object")

    print("extended client -> eqs")
    for legacy in (False, True):
        extended.use_legacy_attribute = legacy
        body = f"sent by the extended client (legacy format: {legacy}) ☃ ".encode() * 12000
        extended.send_message(QueueUrl=url, MessageBody=body.decode(),
                              MessageAttributes={"origin": {"DataType": "String", "StringValue": "python"}})
        raw = plain_sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, WaitTimeSeconds=2,
                                        VisibilityTimeout=0)["Messages"][0]
        key = json.loads(raw["Body"])[1]["s3Key"]
        got = receive_eqs(eqs, name, 1)
        check(len(got) == 1 and base64.b64decode(got[0].get("body", "")) == body,
              f"eqs receives the extended client's {'legacy ' if legacy else ''}large message whole "
              f"({len(body)} bytes)")
        check(len(got) == 1 and got[0].get("attributes") == {"origin": "python"},
              "with its attribute and without the reference's")
        for m in got:
            call("POST", f"{eqs}/api/v1/queues/{name}/messages/ack", {"receipt": m["receipt"]})
        check(not exists(s3, bucket, key), "an ack through eqs deletes the object")

    print("a binary large body through eqs")
    binary = bytes(range(256)) * 4100
    call("POST", f"{eqs}/api/v1/queues/{name}/messages", {"message": {"body": b64(binary)}})
    raw = plain_sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, WaitTimeSeconds=2,
                                    VisibilityTimeout=0)["Messages"][0]
    key = json.loads(raw["Body"])[1]["s3Key"]
    check(s3.get_object(Bucket=bucket, Key=key)["Body"].read() == binary,
          "the S3 object holds the binary body as its bytes")
    got = receive_eqs(eqs, name, 1)
    check(len(got) == 1 and base64.b64decode(got[0]["body"]) == binary, "eqs gives the binary body back")
    for m in got:
        call("POST", f"{eqs}/api/v1/queues/{name}/messages/ack", {"receipt": m["receipt"]})
    check(not exists(s3, bucket, key), "and its ack deletes the object")

    call("DELETE", f"{eqs}/api/v1/queues/{name}")
    finish()


if __name__ == "__main__":
    main()
