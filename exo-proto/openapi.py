"""Generates the HTTP/JSON side of the ExoFlow contract: openapi.json (every route, for
reading) and one document per proxy, each of exactly the routes that proxy serves and served
by it at /api/v1/openapi.json: openapi-eqs.json, openapi-eos.json, openapi-ekv.json.

    python3 exo-proto/openapi.py exo-proto

scripts/test fails when the committed files differ from this script's output and runs
schemathesis against each running proxy with its document; the exo-proto tests check every
schema against the proto message of the same name. Enum values come from the protos. Every
optional property is nullable: null means "unset", the field's default (proto3 JSON).
"""
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def enum_values(proto, name):
    """The value names of `enum name` in `proto` (without the *_UNSPECIFIED zero)."""
    text = open(os.path.join(HERE, "proto", proto)).read()
    body = re.search(r"enum " + name + r" \{(.*?)\}", text, re.S).group(1)
    return [v for v in re.findall(r"^\s*([A-Z0-9_]+)\s*=", body, re.M) if not v.endswith("_UNSPECIFIED")]


def proto_fields():
    """{package short name: {message: {json field: accepts null}}}. The proto3 JSON mapping
    (pbjson) reads null as "unset" for `optional` scalars, messages and oneof members; other
    fields refuse it."""
    out = {}
    for pkg, path in [("queue", "exo/queue/v1/queue.proto"), ("kv", "exo/kv/v1/kv.proto"), ("object", "exo/object/v1/object.proto")]:
        text = open(os.path.join(HERE, "proto", path)).read()
        enums = set(re.findall(r"enum (\w+)", text))
        messages = {}
        # A one-line `message X {}` has no fields (and must not swallow the next message).
        for name, body in re.findall(r"^message (\w+) \{(?:\}|(.*?)^\})", text, re.S | re.M):
            fields = {}
            in_oneof = False
            for line in body.split("\n"):
                line = line.split("//")[0].strip()
                if line.startswith("oneof "):
                    in_oneof = True
                    continue
                if line == "}":
                    in_oneof = False
                    continue
                m = re.match(r"^(optional |repeated )?(map<[^>]+>|[\w.]+) (\w+) = \d+", line)
                if not m:
                    continue
                label, typ, field = m.groups()
                camel = re.sub(r"_([a-z])", lambda x: x.group(1).upper(), field)
                scalar = typ in ("string", "bytes", "bool", "uint32", "uint64", "int32", "int64", "double", "float") or typ.startswith("map<") or typ in enums
                fields[camel] = in_oneof or label == "optional " or (label is None and not scalar)
            messages[name] = fields
        out[pkg] = messages
    return out
PROTO = proto_fields()


# Portable resource names (queues, buckets, tables): 3-63 of a-z 0-9 and '-', alphanumeric at
# both ends, no '--'.
NAME = {"pattern": "^[a-z0-9]+(-[a-z0-9]+)*$", "minLength": 3, "maxLength": 63}
# Keys: 1 to 1024 bytes of UTF-8 (the length counts characters: exact for ASCII keys).
KV_KEY = {"type": "string", "minLength": 1, "maxLength": 1024}
OBJECT_KEY = {"type": "string", "minLength": 1, "maxLength": 1024, "pattern": "^[^\\u0000-\\u001F\\u007F]+$"}
ETAG = {"type": "string", "minLength": 1, "maxLength": 256, "pattern": "^[!-~]+$"}
# In a header an empty value is the same as no header.
ETAG_HEADER = {"type": "string", "maxLength": 256, "pattern": "^[!-~]*$"}
VERSION = {"type": "string", "minLength": 1, "maxLength": 256}
def at_most_one(a, b):
    """A oneof: at most one of the two set (null is unset)."""
    return {"not": {"required": [a, b], "properties": {a: {"not": {"type": "null"}}, b: {"not": {"type": "null"}}}}}
# Page tokens: base64url (no padding) of a position; any such string is a position.
TOKEN = {"type": "string", "pattern": "^([A-Za-z0-9_-]{4})*([A-Za-z0-9_-]{2,3})?$", "maxLength": 2048}
u64 = {"type": "string", "pattern": "^[0-9]+$", "description": "64-bit unsigned integer, as a decimal string (proto3 JSON mapping)."}
def u32(desc, **kw):
    d = {"type": "integer", "format": "int32", "minimum": 0, "description": desc}; d.update(kw); return d
def s(desc, **kw):
    d = {"type": "string", "description": desc}; d.update(kw); return d
def ref(n): return {"$ref": f"#/components/schemas/{n}"}
def obj(desc, props, required=None):
    o = {"type": "object", "description": desc, "properties": props, "additionalProperties": False}
    if required: o["required"] = required
    return o
def u64d(desc): d = dict(u64); d["description"] = desc + " " + u64["description"]; return d
def entry_message(desc, delay=False):
    """A batch entry's message: its fields' shapes and no other field are checked for the whole
    request (as a single send's are); their rules (sizes, names) fail that entry alone."""
    # As proto3 JSON reads them: null for a field is its default; delaySeconds is a uint32.
    props = {"body": {"type": ["string", "null"], "format": "byte"},
             "attributes": {"type": ["object", "null"], "additionalProperties": {"type": "string"}}}
    if delay: props["delaySeconds"] = {"type": ["integer", "null"], "minimum": 0, "maximum": 4294967295}
    return {"type": "object", "description": desc, "properties": props, "additionalProperties": False}

caps = enum_values("exo/queue/v1/queue.proto", "QueueCapability")
def dead_letter_pairing(schema):
    """maxReceives and deadLetterQueue go together: both unset, or both set."""
    schema["anyOf"] = [
        {"properties": {"maxReceives": {"enum": [0, None]}, "deadLetterQueue": {"enum": ["", None]}}},
        {"required": ["maxReceives", "deadLetterQueue"], "properties": {"maxReceives": {"type": "integer", "minimum": 1}, "deadLetterQueue": {"type": "string", **NAME}}}]
    return schema
# Attribute names: dot-separated runs of A-Z a-z 0-9 _ -, 1-128, not under a reserved prefix;
# values: non-empty, no control characters but tab and line ends.
ATTRIBUTES = {"type": "object", "maxProperties": 10,
  "propertyNames": {"maxLength": 128, "pattern": "^[A-Za-z0-9_-]+([.][A-Za-z0-9_-]+)*$", "not": {"pattern": "^([eE][xX][oO]|[aA][wW][sS]|[aA][mM][aA][zZ][oO][nN])[.]"}},
  "additionalProperties": {"type": "string", "minLength": 1, "pattern": "^[^\\u0000-\\u0008\\u000B\\u000C\\u000E-\\u001F\\u007F-\\u009F]+$"}}
schemas = {
 "Problem": {"type": "object", "description": "RFC 9457 problem details, with ExoFlow's stable error fields.",
   "properties": {
     "type": s("urn:exoflow:error:<REASON>"), "title": s("HTTP reason phrase"), "status": {"type": "integer"},
     "detail": s("What went wrong, for a human"), "reason": s("Stable error reason, e.g. QUEUE_NOT_FOUND"),
     "backend": s("Backend that answered; empty if the proxy rejected the request itself"),
     "retryable": {"type": "boolean", "description": "Whether retrying later may succeed"},
     "field": s("Request field at fault, if any"), "resource": s("Queue or other resource concerned, if any"),
     "retryAfterMs": {"type": "integer", "minimum": 1, "description": "How long to wait before retrying, when the proxy knows (an open circuit breaker, shed load); also sent as Retry-After in seconds"}},
   "required": ["type", "title", "status", "detail", "reason", "retryable"]},
 "QueueCapability": {"type": "string", "enum": caps, "description": "An optional behaviour a backend may declare."},
 "Limits": obj("Limits every request is checked against before anything is written.", {
   "maxMessageBytes": u64d("Largest message (body plus attributes) in bytes."),
   "maxBatchEntries": u32("Most entries in one batch send."),
   "maxReceiveMessages": u32("Most messages one receive may ask for."),
   "maxWaitSeconds": u32("Longest long-poll wait."),
   "maxVisibilityTimeoutSeconds": u32("Longest visibility timeout."),
   "maxDelaySeconds": u32("Longest delay."),
   "maxAttributes": u32("Most attributes per message."),
   "minRetentionSeconds": u32("Shortest retention."),
   "maxRetentionSeconds": u32("Longest retention."),
   "maxReceivesLimit": u32("Largest maxReceives before dead-lettering.")}),
 "DescribeResponse": obj("The backend behind this proxy.", {
   "backend": s("Backend name, e.g. embedded"),
   "capabilities": {"type": "array", "items": ref("QueueCapability")},
   "limits": ref("Limits"),
   "topicLimits": ref("TopicLimits")}),
 "QueueOptions": dead_letter_pairing(obj("Per-queue settings; omitted fields take their defaults.", {
   "visibilityTimeoutSeconds": u32("How long a received message stays hidden (default 30; at most Limits.maxVisibilityTimeoutSeconds).", maximum=43200),
   "retentionSeconds": {"type": "integer", "format": "int32", "description": "How long an unacknowledged message is kept (0 = default, 4 days; else Limits.minRetentionSeconds .. maxRetentionSeconds).",
                        "anyOf": [{"const": 0}, {"minimum": 1, "maximum": 1209600}]},
   "delaySeconds": u32("Delay for messages sent without their own (default 0; at most Limits.maxDelaySeconds).", maximum=900),
   "maxReceives": u32("Receives before a message moves to deadLetterQueue (0 = never; at most Limits.maxReceivesLimit); set together with deadLetterQueue.", maximum=1000),
   "deadLetterQueue": s("Existing queue (not this one) that takes dead-lettered messages; set together with maxReceives.", maxLength=63)})),
 "CreateQueueRequest": obj("Creates a queue; idempotent for identical options.", {
   "name": s("Portable queue name: 3-63 of a-z 0-9 '-', starting and ending alphanumeric, no '--'.", **NAME),
   "options": ref("QueueOptions")}, ["name"]),
 "QueueInfo": obj("A queue's options and approximate counts.", {
   "name": s("Queue name"), "options": ref("QueueOptions"),
   "visibleMessages": u64d("Messages receivable now."),
   "inFlightMessages": u64d("Received, not yet acknowledged."),
   "delayedMessages": u64d("Sent with a delay not yet over."),
   "createdAtMs": u64d("Creation time, ms since the Unix epoch.")}),
 "CreateQueueResponse": obj("Result of a create.", {"created": {"type": "boolean", "description": "False if it already existed with the same options."}, "info": ref("QueueInfo")}),
 "GetQueueInfoResponse": obj("Queue info.", {"info": ref("QueueInfo")}),
 "ListQueuesResponse": obj("A page of queue names.", {"names": {"type": "array", "items": {"type": "string"}}, "nextPageToken": s("Pass as pageToken for the next page; empty on the last page.")}),
 "Empty": obj("No content.", {}),
 "OutgoingMessage": obj("A message to send.", {
   "body": s("Opaque bytes, base64-encoded (standard alphabet).", format="byte"),
   "attributes": {**ATTRIBUTES, "description": "String attributes (at most Limits.maxAttributes); names 1-128 of A-Z a-z 0-9 _ - . (not starting exo./aws./amazon.), values non-empty. Body plus attributes at most Limits.maxMessageBytes (413 above)."},
   "delaySeconds": u32("Overrides the queue's delay (at most Limits.maxDelaySeconds).", maximum=900)}),
 "SendRequest": obj("Sends one message to the queue in the path.", {"message": ref("OutgoingMessage")}, ["message"]),
 "SendResponse": obj("The new message's id.", {"messageId": s("Message id")}),
 "SendBatchEntry": obj("One batch entry. Its message follows OutgoingMessage; one that is missing or breaks its rules fails on its own (its result says why) while the others are sent.", {"id": s("Caller's id, unique in the batch (defaults to the index)."), "message": entry_message("An OutgoingMessage (its rules checked per entry).", delay=True)}),
 "SendBatchRequest": obj("Sends many messages; each entry succeeds or fails on its own (entry ids unique).", {"entries": {"type": "array", "items": ref("SendBatchEntry"), "minItems": 1, "maxItems": 100}}, ["entries"]),
 "EntryError": obj("Why one entry failed; nothing of it was written.", {"reason": s("Stable reason, e.g. MESSAGE_TOO_LARGE"), "message": s("Explanation"), "retryable": {"type": "boolean"}}),
 "SendBatchResult": obj("One entry's outcome: messageId or error.", {"id": s("The entry's id"), "messageId": s("Id of the sent message"), "error": ref("EntryError")}),
 "SendBatchResponse": obj("One result per entry, in request order.", {"results": {"type": "array", "items": ref("SendBatchResult")}}),
 "ReceiveRequest": obj("Receives messages from the queue in the path.", {
   "maxMessages": u32("At most this many (default 1; at most Limits.maxReceiveMessages).", maximum=32),
   "waitSeconds": u32("Long-poll wait for a first message (at most Limits.maxWaitSeconds).", maximum=20),
   "visibilityTimeoutSeconds": u32("Overrides the queue's visibility timeout (at most Limits.maxVisibilityTimeoutSeconds).", maximum=43200)}),
 "Message": obj("A received message.", {
   "messageId": s("Id given at send"), "receipt": s("Opaque token for ack and visibility changes"),
   "body": s("Opaque bytes, base64-encoded.", format="byte"),
   "attributes": {"type": "object", "additionalProperties": {"type": "string"}},
   "dequeueCount": u32("Deliveries so far, this one included."),
   "enqueuedAtMs": u64d("Send time, ms since the Unix epoch.")}),
 "ReceiveResponse": obj("Zero or more messages, in no guaranteed order.", {"messages": {"type": "array", "items": ref("Message")}}),
 "AckRequest": obj("Acknowledges (deletes) a received message.", {"receipt": s("Receipt from receive", minLength=1, maxLength=1024)}, ["receipt"]),
 "ChangeVisibilityRequest": obj("Sets a received message's remaining visibility; 0 releases it.", {"receipt": s("Receipt from receive", minLength=1, maxLength=1024), "visibilityTimeoutSeconds": u32("Seconds from now (at most Limits.maxVisibilityTimeoutSeconds).", maximum=43200)}, ["receipt"]),
}
# Topics (eqs's TopicService). Filters: clauses joined by `and` (see Subscription.filter).
schemas.update({
 "TopicLimits": obj("Limits every topic request is checked against (set when TOPICS is declared).", {
   "maxMessageBytes": u64d("Largest published message (body plus attributes): the queues' limit less what each copy's own attributes take."),
   "maxAttributes": u32("Most attributes on a published message (the queues' limit less the two each copy gets)."),
   "maxBatchEntries": u32("Most entries in one publish batch."),
   "maxSubscriptions": u32("Most subscriptions on one topic."),
   "maxFilterBytes": u32("Longest filter expression in bytes.")}),
 "CreateTopicRequest": obj("Creates a topic; idempotent.", {"name": s("Portable topic name (same rules as queue names).", **NAME)}, ["name"]),
 "Subscription": obj("A subscription: which queue gets the topic's messages, and which of them.", {
   "name": s("Unique within the topic."), "queue": s("The queue each matching message is delivered into."),
   "filter": s("Which messages it gets; empty for all (see CreateSubscriptionRequest.filter)."),
   "createdAtMs": u64d("Creation time, ms since the Unix epoch.")}),
 "TopicInfo": obj("A topic and its subscriptions.", {
   "name": s("Topic name"), "createdAtMs": u64d("Creation time, ms since the Unix epoch."),
   "subscriptions": {"type": "array", "items": ref("Subscription"), "description": "By name"}}),
 "CreateTopicResponse": obj("Result of a create.", {"created": {"type": "boolean", "description": "False if it already existed."}, "info": ref("TopicInfo")}),
 "GetTopicInfoResponse": obj("Topic info.", {"info": ref("TopicInfo")}),
 "ListTopicsResponse": obj("A page of topic names.", {"names": {"type": "array", "items": {"type": "string"}}, "nextPageToken": s("Pass as pageToken for the next page; empty on the last page.")}),
 "CreateSubscriptionRequest": obj("Subscribes a queue to the topic in the path; idempotent for identical settings.", {
   "name": s("Portable subscription name, unique within the topic (same rules as queue names).", **NAME),
   "queue": s("The queue each matching message is delivered into.", **NAME),
   "filter": s("Which messages it gets; empty for all. Clauses joined by `and`: name = 'v', name in ('a', 'b'), name prefix 'p', name exists, name absent (single or double quotes; keywords case-insensitive; one clause per attribute). 400 INVALID_FILTER names the byte position of a mistake.", maxLength=1024),
   "createQueue": ref("QueueOptions")}, ["name", "queue"]),
 "CreateSubscriptionResponse": obj("Result of a subscribe.", {"created": {"type": "boolean", "description": "False if an identical subscription existed."}, "subscription": ref("Subscription")}),
 "PublishedMessage": obj("A message to publish (no delay: give the subscription's queue one).", {
   "body": s("Opaque bytes, base64-encoded (standard alphabet).", format="byte"),
   "attributes": {**ATTRIBUTES, "maxProperties": 8, "description": "String attributes (at most TopicLimits.maxAttributes), the rules of OutgoingMessage; filters match on them. Body plus attributes at most TopicLimits.maxMessageBytes (413 above)."}}),
 "PublishRequest": obj("Publishes one message to the topic in the path.", {"message": ref("PublishedMessage")}, ["message"]),
 "PublishResponse": obj("The publish.", {"publishId": s("Carried by every copy in its exo.publish-id attribute."), "deliveries": u32("Subscriptions that got a copy.")}),
 "PublishBatchEntry": obj("One batch entry. Its message follows PublishedMessage; one that is missing or breaks its rules fails on its own.", {"id": s("Caller's id, unique in the batch (defaults to the index)."), "message": entry_message("A PublishedMessage (its rules checked per entry).")}),
 "PublishBatchRequest": obj("Publishes many messages; each entry succeeds or fails on its own (entry ids unique).", {"entries": {"type": "array", "items": ref("PublishBatchEntry"), "minItems": 1, "maxItems": 100}}, ["entries"]),
 "PublishBatchResult": obj("One entry's outcome: publishId or error.", {"id": s("The entry's id"), "publishId": s("Publish id of a published entry"), "error": ref("EntryError"), "deliveries": u32("Subscriptions that got a published entry.")}),
 "PublishBatchResponse": obj("One result per entry, in request order.", {"results": {"type": "array", "items": ref("PublishBatchResult")}}),
})
kv_caps = enum_values("exo/kv/v1/kv.proto", "KvCapability")
schemas.update({
 "KvCapability": {"type": "string", "enum": kv_caps, "description": "An optional key-value behaviour a backend may declare."},
 "KvLimits": obj("Limits every key-value request is checked against.", {
   "maxKeyBytes": u32("Longest key in bytes (UTF-8)."),
   "maxValueBytes": u64d("Largest value in bytes."),
   "maxBatchKeys": u32("Most keys in one batch get."),
   "maxPageSize": u32("Largest list page."),
   "maxTtlSeconds": u32("Longest time to live."),
   "maxBatchWrites": u32("Most writes in one write batch."),
   "maxBatchBytes": u64d("Largest total of the values in one write batch, in bytes.")}),
 "KvDescribeResponse": obj("The key-value backend behind this proxy.", {
   "backend": s("Backend name"), "capabilities": {"type": "array", "items": ref("KvCapability")}, "limits": ref("KvLimits")}),
 "CreateTableRequest": obj("Creates a table; idempotent.", {"name": s("Portable table name (same rules as queue names).", **NAME)}, ["name"]),
 "CreateTableResponse": obj("Result of a create.", {"created": {"type": "boolean", "description": "False if it already existed."}}),
 "ListTablesResponse": obj("Every table name.", {"names": {"type": "array", "items": {"type": "string"}}}),
 "Entry": obj("One stored key.", {
   "key": s("The key"), "value": s("The value, base64-encoded.", format="byte"),
   "version": s("Opaque version; changes on every write."),
   "expiresAtMs": u64d("Expiry, ms since the Unix epoch; 0 if none.")}),
 "GetResponse": obj("A read entry.", {"entry": ref("Entry")}),
 "Condition": obj("A write precondition: at most one of the fields.", {
   "mustNotExist": {"type": "boolean", "const": True, "description": "Only if the key is absent (must be true when given)."},
   "versionEquals": {**VERSION, "description": "Only if the current version equals this."}}) | at_most_one("mustNotExist", "versionEquals"),
 "PutRequest": obj("Writes the key in the path.", {
   "value": s("The value, base64-encoded (at most Limits.maxValueBytes; 413 above).", format="byte", contentEncoding="base64"), "condition": ref("Condition"),
   "ttlSeconds": u32("Time to live; 0 = forever (at most Limits.maxTtlSeconds).", maximum=31536000)}),
 "PutResponse": obj("The new version.", {"version": s("New version")}),
 "DeleteResponse": obj("Result of a delete.", {"deleted": {"type": "boolean", "description": "False if the key did not exist."}}),
 "ListResponse": obj("A page of entries in key order.", {"entries": {"type": "array", "items": ref("Entry")}, "nextPageToken": s("Empty on the last page.")}),
 "BatchGetRequest": obj("Reads many keys of the table in the path.", {"keys": {"type": "array", "items": KV_KEY, "minItems": 1, "maxItems": 100, "uniqueItems": True, "description": "1 to Limits.maxBatchKeys distinct keys"}}, ["keys"]),
 "BatchGetResponse": obj("Found entries in request order, and the missing keys.", {"entries": {"type": "array", "items": ref("Entry")}, "missing": {"type": "array", "items": {"type": "string"}}}),
 "IncrementRequest": obj("Adds to the counter under the key, in the table in the path.", {
   "key": {**KV_KEY, "description": "The key"},
   "delta": {"anyOf": [{"type": "integer", "minimum": -9223372036854775808, "maximum": 9223372036854775807}, {"type": "string", "pattern": "^-?[0-9]{1,18}$"}],
             "description": "Added to the counter (negative subtracts; 0 reads it, creating it at 0). A 64-bit signed integer, as a number or a decimal string (proto3 JSON mapping); the string pattern states the 18-digit values every client can parse, and the proxy takes any 64-bit value."},
   "ttlSeconds": u32("Time to live of a counter this increment creates; 0 = forever (at most Limits.maxTtlSeconds). An existing counter keeps its expiry.", maximum=31536000)}, ["key"]),
 "BatchWrite": obj("One write of a batch: a put, or a delete with `delete: true`.", {
   "key": {**KV_KEY, "description": "The key (each key at most once per batch)"},
   "value": s("The value to put, base64-encoded (at most Limits.maxValueBytes); empty for a delete.", format="byte", contentEncoding="base64"),
   "delete": {"type": "boolean", "description": "Delete the key instead of putting a value."},
   "condition": ref("Condition"),
   "ttlSeconds": u32("Time to live of a put; 0 = forever (and 0 for a delete).", maximum=31536000)}, ["key"]),
 "WriteBatchRequest": obj("Writes several keys of the table in the path, all or none.", {
   "writes": {"type": "array", "items": ref("BatchWrite"), "minItems": 1, "maxItems": 100, "description": "1 to Limits.maxBatchWrites writes, each to a different key"}}, ["writes"]),
 "WriteBatchResponse": obj("Every write applied.", {"versions": {"type": "array", "items": {"type": "string"}, "description": "Per write in request order: the new version of a put, empty for a delete."}}),
 "IncrementResponse": obj("The counter after the increment.", {
   "value": s("The new value: a 64-bit signed integer as a decimal string (proto3 JSON mapping, which leaves the field out when it is 0); Get returns the same text as the entry's value.", pattern="^-?[0-9]+$"),
   "version": s("The entry's new version")}),
})

obj_caps = enum_values("exo/object/v1/object.proto", "ObjectCapability")
object_info = obj("An object's attributes.", {
   "bucket": s("Bucket"), "key": s("Key"), "size": u64d("Size in bytes."), "etag": s("Opaque version tag; changes whenever the bytes change (may be derived from content)."),
   "contentType": s("MIME type"), "metadata": {"type": "object", "additionalProperties": {"type": "string"}, "description": "User metadata (names lowercase)."},
   "lastModifiedMs": u64d("Last write, ms since the Unix epoch.")})
schemas.update({
 "ObjectCapability": {"type": "string", "enum": obj_caps, "description": "An optional object behaviour a backend may declare."},
 "ObjectLimits": obj("Limits every object request is checked against.", {
   "maxObjectBytes": u64d("Largest object (0 = no limit of the proxy's own)."),
   "maxKeyBytes": u32("Longest key in bytes."), "maxMetadataEntries": u32("Most metadata entries."),
   "maxMetadataBytes": u32("Largest total metadata size."), "maxPageSize": u32("Largest list page."),
   "maxPresignSeconds": u32("Longest presign expiry.")}),
 "ObjectDescribeResponse": obj("The object backend behind this proxy.", {
   "backend": s("Backend name"), "capabilities": {"type": "array", "items": ref("ObjectCapability")}, "limits": ref("ObjectLimits")}),
 "CreateBucketRequest": obj("Creates a bucket; idempotent.", {"name": s("Portable bucket name (same rules as queue names).", **NAME)}, ["name"]),
 "CreateBucketResponse": obj("Result of a create.", {"created": {"type": "boolean", "description": "False if it already existed."}}),
 "ListBucketsResponse": obj("Every bucket name.", {"names": {"type": "array", "items": {"type": "string"}}}),
 "ObjectInfo": object_info,
 "ObjectPutResponse": obj("The stored object.", {"info": ref("ObjectInfo")}),
 "ObjectListResponse": obj("A page of a listing in key order.", {
   "objects": {"type": "array", "items": ref("ObjectInfo")},
   "commonPrefixes": {"type": "array", "items": {"type": "string"}, "description": "Groups of keys under the delimiter."},
   "nextPageToken": s("Empty on the last page.")}),
 "ObjectCondition": obj("A write precondition: at most one field.", {
   "createOnly": {"type": "boolean", "const": True, "description": "Only if no object exists (must be true when given)."},
   "ifMatch": {**ETAG, "description": "Only if the current ETag equals this."}}) | at_most_one("createOnly", "ifMatch"),
 "CopyRequest": obj("Copies an object into the bucket in the path.", {
   "sourceBucket": s("Source bucket", **NAME), "sourceKey": {**OBJECT_KEY, "description": "Source key"}, "key": {**OBJECT_KEY, "description": "Destination key"}, "condition": ref("ObjectCondition")},
   ["sourceBucket", "sourceKey", "key"]),
 "CopyResponse": obj("The copy.", {"info": ref("ObjectInfo")}),
 "PresignRequest": obj("Asks for a presigned URL for a key of the bucket in the path.", {
   "key": {**OBJECT_KEY, "description": "Key"}, "method": {"type": "string", "enum": ["GET", "PUT"], "description": "Allowed method"},
   "expiresInSeconds": u32("Validity (1 .. Limits.maxPresignSeconds).", minimum=1, maximum=604800)}, ["key", "method", "expiresInSeconds"]),
 "PresignResponse": obj("A URL signed by the backend.", {"url": s("The URL"), "expiresAtMs": u64d("Expiry, ms since the Unix epoch."), "headers": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Headers the request must carry besides the URL (Azure Blob PUT: x-ms-blob-type); usually empty."}}),
 "DeleteBatchRequest": obj("Deletes many keys of the bucket in the path.", {"keys": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 1000, "description": "1 to 1000 keys; an invalid key is reported in its result"}}, ["keys"]),
 "DeleteResult": obj("One key's outcome.", {"key": s("Key"), "errorReason": s("Empty on success, else the stable reason."), "errorMessage": s("Explanation of a failure.")}),
 "DeleteBatchResponse": obj("One result per key, in request order.", {"results": {"type": "array", "items": ref("DeleteResult")}}),
})

def problem_responses(*codes):
    out = {}
    text = {"400": "Invalid request (INVALID_ARGUMENT, INVALID_NAME, INVALID_ATTRIBUTE, INVALID_RECEIPT, INVALID_FILTER, MALFORMED_REQUEST)",
            "404": "QUEUE_NOT_FOUND, TOPIC_NOT_FOUND, SUBSCRIPTION_NOT_FOUND, TABLE_NOT_FOUND or KEY_NOT_FOUND", "409": "QUEUE_ALREADY_EXISTS, SUBSCRIPTION_ALREADY_EXISTS, TOO_MANY_SUBSCRIPTIONS, NOT_A_COUNTER or COUNTER_OVERFLOW", "429": "THROTTLED (retryable: an increment lost the race for its counter too many times in a row)", "412": "RECEIPT_STALE or CONDITION_FAILED", "403": "PERMISSION_DENIED (presigned URL altered or expired)", "416": "RANGE_NOT_SATISFIABLE",
            "413": "MESSAGE_TOO_LARGE, VALUE_TOO_LARGE or REQUEST_TOO_LARGE", "501": "UNSUPPORTED: the backend lacks a needed capability",
            "401": "UNAUTHENTICATED: the proxy requires a bearer token (server.auth-token)",
            "503": "BACKEND_UNAVAILABLE or SHUTTING_DOWN (retryable)", "504": "TIMEOUT (retryable)",
            "507": "STORAGE_FULL: an embedded backend's disk is full (not retryable until space is freed)"}
    for c in codes + ("401", "503", "504", "507"):
        out[c] = {"description": text[c], "content": {"application/problem+json": {"schema": ref("Problem")}}}
    return out
def ok(schema, desc="OK", code="200"):
    return {code: {"description": desc, "content": {"application/json": {"schema": ref(schema)}}}}
def body(schema, required=True):
    return {"required": required, "content": {"application/json": {"schema": ref(schema)}}}
qp = [{"name": "queue", "in": "path", "required": True, "schema": {"type": "string", **NAME}, "description": "Queue name"}]
def op(opid, summary, responses, req=None, params=None, tag="queues"):
    o = {"operationId": opid, "summary": summary, "tags": [tag], "responses": responses}
    if req: o["requestBody"] = req
    if params: o["parameters"] = params
    return o
paths = {
 "/api/v1/openapi.json": {"get": {"operationId": "openapi", "summary": "This document", "tags": ["meta"], "responses": {"200": {"description": "OpenAPI 3 document", "content": {"application/json": {"schema": {"type": "object"}}}}}}},
 "/api/v1/describe": {"get": op("describe", "Backend name, capabilities and limits of this proxy's service (eqs: DescribeResponse, eos: ObjectDescribeResponse, ekv: KvDescribeResponse)", {"200": {"description": "OK", "content": {"application/json": {"schema": {"oneOf": [ref("DescribeResponse"), ref("ObjectDescribeResponse"), ref("KvDescribeResponse")]}}}}}, tag="meta")},
 "/api/v1/queues": {
   "get": op("listQueues", "List queue names by prefix, a page at a time", {**ok("ListQueuesResponse"), **problem_responses("400")}, params=[
      {"name": "prefix", "in": "query", "schema": {"type": "string", "pattern": "^[a-z0-9-]*$", "maxLength": 63}, "description": "Only names with this prefix"},
      {"name": "pageSize", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 1000}, "description": "Page size (0 = default and maximum 1000)"},
      {"name": "pageToken", "in": "query", "schema": TOKEN, "description": "nextPageToken of the previous page"}]),
   "post": op("createQueue", "Create a queue (idempotent for identical options)", {**ok("CreateQueueResponse", "Already existed with the same options"), **ok("CreateQueueResponse", "Created", "201"), **problem_responses("400", "404", "409", "501")}, body("CreateQueueRequest"))},
 "/api/v1/queues/{queue}": {
   "get": op("getQueueInfo", "A queue's options and approximate counts", {**ok("GetQueueInfoResponse"), **problem_responses("400", "404")}, params=qp),
   "delete": op("deleteQueue", "Delete a queue and its messages", {**ok("Empty"), **problem_responses("400", "404")}, params=qp)},
 "/api/v1/queues/{queue}/purge": {"post": op("purge", "Delete every message; the queue stays", {**ok("Empty"), **problem_responses("400", "404", "501")}, params=qp)},
 "/api/v1/queues/{queue}/messages": {"post": op("send", "Send one message (acknowledged once durable)", {**ok("SendResponse"), **problem_responses("400", "404", "413", "501")}, body("SendRequest"), qp)},
 "/api/v1/queues/{queue}/messages/batch": {"post": op("sendBatch", "Send many messages with per-entry results", {**ok("SendBatchResponse"), **problem_responses("400", "404", "413")}, body("SendBatchRequest"), qp)},
 "/api/v1/queues/{queue}/messages/receive": {"post": op("receive", "Receive messages, long-polling up to waitSeconds", {**ok("ReceiveResponse"), **problem_responses("400", "404", "501")}, body("ReceiveRequest", False), qp)},
 "/api/v1/queues/{queue}/messages/ack": {"post": op("ack", "Acknowledge (delete) a received message", {**ok("Empty"), **problem_responses("400", "404", "412")}, body("AckRequest"), qp)},
 "/api/v1/queues/{queue}/messages/visibility": {"post": op("changeVisibility", "Change a received message's visibility (0 releases it)", {**ok("Empty"), **problem_responses("400", "404", "412", "501")}, body("ChangeVisibilityRequest"), qp)},
}
topp = [{"name": "topic", "in": "path", "required": True, "schema": {"type": "string", **NAME}, "description": "Topic name"}]
paths.update({
 "/api/v1/topics": {
   "get": op("listTopics", "List topic names by prefix, a page at a time", {**ok("ListTopicsResponse"), **problem_responses("400", "501")}, params=[
      {"name": "prefix", "in": "query", "schema": {"type": "string", "pattern": "^[a-z0-9-]*$", "maxLength": 63}, "description": "Only names with this prefix"},
      {"name": "pageSize", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 1000}, "description": "Page size (0 = default and maximum 1000)"},
      {"name": "pageToken", "in": "query", "schema": TOKEN, "description": "nextPageToken of the previous page"}], tag="topics"),
   "post": op("createTopic", "Create a topic (idempotent)", {**ok("CreateTopicResponse", "Already existed"), **ok("CreateTopicResponse", "Created", "201"), **problem_responses("400", "501")}, body("CreateTopicRequest"), tag="topics")},
 "/api/v1/topics/{topic}": {
   "get": op("getTopicInfo", "A topic and its subscriptions", {**ok("GetTopicInfoResponse"), **problem_responses("400", "404", "501")}, params=topp, tag="topics"),
   "delete": op("deleteTopic", "Delete a topic and its subscriptions (their queues and messages stay)", {**ok("Empty"), **problem_responses("400", "404", "501")}, params=topp, tag="topics")},
 "/api/v1/topics/{topic}/publish": {"post": op("publish", "Publish one message to every matching subscription (acknowledged once every copy is durable)", {**ok("PublishResponse"), **problem_responses("400", "404", "413", "501")}, body("PublishRequest"), topp, tag="topics")},
 "/api/v1/topics/{topic}/publish/batch": {"post": op("publishBatch", "Publish many messages with per-entry results", {**ok("PublishBatchResponse"), **problem_responses("400", "404", "501")}, body("PublishBatchRequest"), topp, tag="topics")},
 "/api/v1/topics/{topic}/subscriptions": {"post": op("createSubscription", "Subscribe a queue (created with createQueue options if given); idempotent for identical settings", {**ok("CreateSubscriptionResponse", "Already existed"), **ok("CreateSubscriptionResponse", "Created", "201"), **problem_responses("400", "404", "409", "501")}, body("CreateSubscriptionRequest"), topp, tag="topics")},
 "/api/v1/topics/{topic}/subscriptions/{name}": {"delete": op("deleteSubscription", "Delete a subscription (its queue stays)", {**ok("Empty"), **problem_responses("400", "404", "501")}, params=topp + [{"name": "name", "in": "path", "required": True, "schema": {"type": "string", **NAME}, "description": "Subscription name"}], tag="topics")},
})
tp = [{"name": "table", "in": "path", "required": True, "schema": {"type": "string", **NAME}, "description": "Table name"}]
kp = tp + [{"name": "key", "in": "path", "required": True, "schema": KV_KEY, "description": "The key, percent-encoded ('/' may stay literal)"}]
paths.update({
 "/api/v1/tables": {
   "get": op("listTables", "List table names", {**ok("ListTablesResponse")}, tag="kv"),
   "post": op("createTable", "Create a table (idempotent)", {**ok("CreateTableResponse", "Already existed"), **ok("CreateTableResponse", "Created", "201"), **problem_responses("400")}, body("CreateTableRequest"), tag="kv")},
 "/api/v1/tables/{table}": {
   "delete": op("deleteTable", "Delete a table and its keys", {**ok("Empty"), **problem_responses("400", "404")}, params=tp, tag="kv")},
 "/api/v1/tables/{table}/entries": {
   "get": op("listEntries", "List entries by key prefix, a page at a time", {**ok("ListResponse"), **problem_responses("400", "404", "501")}, params=tp + [
      {"name": "prefix", "in": "query", "schema": {"type": "string", "maxLength": 1024}, "description": "Only keys with this prefix"},
      {"name": "pageSize", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 1000}, "description": "Page size (0 = the maximum, Limits.maxPageSize)"},
      {"name": "pageToken", "in": "query", "schema": TOKEN, "description": "nextPageToken of the previous page"},
      {"name": "keysOnly", "in": "query", "schema": {"type": "boolean"}, "description": "Omit values"}], tag="kv")},
 "/api/v1/tables/{table}/batch-get": {
   "post": op("batchGet", "Read many keys", {**ok("BatchGetResponse"), **problem_responses("400", "404")}, body("BatchGetRequest"), tp, tag="kv")},
 "/api/v1/tables/{table}/increment": {
   "post": op("increment", "Add to a counter atomically", {**ok("IncrementResponse"), **problem_responses("400", "404", "409", "429", "501")}, body("IncrementRequest"), tp, tag="kv")},
 "/api/v1/tables/{table}/write-batch": {
   "post": op("writeBatch", "Write several keys all or none (a failed condition names its write and changes nothing)", {**ok("WriteBatchResponse"), **problem_responses("400", "404", "412", "413", "501")}, body("WriteBatchRequest"), tp, tag="kv")},
 "/api/v1/tables/{table}/entries/{key}": {
   "get": op("getEntry", "Read a key", {**ok("GetResponse"), **problem_responses("400", "404")}, params=kp, tag="kv"),
   "put": op("putEntry", "Write a key, optionally conditionally and with a TTL", {**ok("PutResponse"), **problem_responses("400", "404", "412", "413", "501")}, body("PutRequest", False), kp, tag="kv"),
   "delete": op("deleteEntry", "Delete a key, optionally only at a version", {**ok("DeleteResponse"), **problem_responses("400", "404", "412", "501")}, params=kp + [
      {"name": "versionEquals", "in": "query", "schema": {"type": "string", "maxLength": 256}, "description": "Delete only at this version (empty: unconditionally)"}], tag="kv")},
})

bp = [{"name": "bucket", "in": "path", "required": True, "schema": {"type": "string", **NAME}, "description": "Bucket name"}]
okp = bp + [{"name": "key", "in": "path", "required": True, "schema": OBJECT_KEY, "description": "Object key, percent-encoded ('/' may stay literal)"}]
def hdr(name, desc, schema=None):
    return {"name": name, "in": "header", "required": False, "schema": schema or {"type": "string"}, "description": desc}
CONTENT_TYPE = {"type": "string", "maxLength": 255, "pattern": "^[ -~]*$"}
RANGE = {"type": "string", "pattern": "^bytes=([0-9]{1,19}-[0-9]{0,19}|-[0-9]{1,19})$"}
binary = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
obj_headers = {
  "ETag": {"description": "Quoted ETag", "schema": {"type": "string"}},
  "Content-Length": {"description": "Bytes in this response", "schema": {"type": "integer"}},
  "Last-Modified": {"description": "Last write (HTTP date)", "schema": {"type": "string"}},
}
paths.update({
 "/api/v1/buckets": {
   "get": op("listBuckets", "List bucket names", {**ok("ListBucketsResponse")}, tag="objects"),
   "post": op("createBucket", "Create a bucket (idempotent)", {**ok("CreateBucketResponse", "Already existed"), **ok("CreateBucketResponse", "Created", "201"), **problem_responses("400")}, body("CreateBucketRequest"), tag="objects")},
 "/api/v1/buckets/{bucket}": {
   "delete": op("deleteBucket", "Delete an empty bucket", {**ok("Empty"), **problem_responses("400", "404", "409")}, params=bp, tag="objects")},
 "/api/v1/buckets/{bucket}/objects": {
   "get": op("listObjects", "List objects by prefix, grouping by delimiter, a page at a time", {**ok("ObjectListResponse"), **problem_responses("400", "404")}, params=bp + [
      {"name": "prefix", "in": "query", "schema": {"type": "string", "maxLength": 1024}, "description": "Only keys with this prefix"},
      {"name": "delimiter", "in": "query", "schema": {"type": "string", "maxLength": 16}, "description": "Group keys containing this after the prefix (usually /)"},
      {"name": "pageSize", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 1000}, "description": "Page size (0 = the maximum, Limits.maxPageSize)"},
      {"name": "pageToken", "in": "query", "schema": TOKEN, "description": "nextPageToken of the previous page"}], tag="objects")},
 "/api/v1/buckets/{bucket}/objects/{key}": {
   "put": op("putObject", "Upload an object (raw body, streamed; stored atomically when complete). User metadata goes in x-exo-meta-<name> headers.",
             {**ok("ObjectPutResponse"), **problem_responses("400", "404", "412", "413", "501")},
             {"required": False, "content": binary},
             okp + [hdr("Content-Type", "MIME type stored with the object (at most 255 printable ASCII)", CONTENT_TYPE), hdr("If-None-Match", "* = create only", {"type": "string", "enum": ["*", ""]}), hdr("If-Match", "Replace only at this ETag (with If-None-Match: * the write fails 412: both cannot hold)", ETAG_HEADER)], tag="objects"),
   "get": op("getObject", "Download an object or a byte range (streamed)",
             {"200": {"description": "The object", "headers": obj_headers, "content": binary},
              "206": {"description": "The requested range (Content-Range)", "headers": obj_headers, "content": binary},
              "304": {"description": "Not modified (If-None-Match matched); no body"},
              **problem_responses("400", "404", "412", "416")},
             params=okp + [hdr("Range", "bytes=a-b (a <= b), bytes=a- or bytes=-n (one range); any other value is ignored (RFC 9110 §14.2): the whole object, 200"), hdr("If-Match", "Fail with 412 unless the ETag matches", ETAG_HEADER), hdr("If-None-Match", "304 if the ETag matches", ETAG_HEADER)], tag="objects"),
   "head": op("headObject", "An object's attributes as headers (an error has no body: HEAD)", {"200": {"description": "Attributes", "headers": obj_headers}, "400": {"description": "Invalid bucket name or key"}, "401": {"description": "UNAUTHENTICATED"}, "404": {"description": "OBJECT_NOT_FOUND or BUCKET_NOT_FOUND"}, "503": {"description": "BACKEND_UNAVAILABLE"}, "504": {"description": "TIMEOUT"}}, params=okp, tag="objects"),
   "delete": op("deleteObject", "Delete an object (idempotent unless If-Match is given)", {**ok("Empty"), **problem_responses("400", "404", "412")}, params=okp + [hdr("If-Match", "Delete only at this ETag", ETAG_HEADER)], tag="objects")},
 "/api/v1/buckets/{bucket}/copy": {
   "post": op("copyObject", "Copy an object into this bucket", {**ok("CopyResponse"), **problem_responses("400", "404", "412", "501")}, body("CopyRequest"), bp, tag="objects")},
 "/api/v1/buckets/{bucket}/presign": {
   "post": op("presignObject", "A URL allowing one method on one key until it expires", {**ok("PresignResponse"), **problem_responses("400", "404", "501")}, body("PresignRequest"), bp, tag="objects")},
 "/api/v1/buckets/{bucket}/delete": {
   "post": op("deleteObjects", "Delete many keys with per-key results", {**ok("DeleteBatchResponse"), **problem_responses("400", "404")}, body("DeleteBatchRequest"), bp, tag="objects")},
 "/api/v1/presigned/{bucket}/{key}": {
   "get": op("presignedGet", "Download through a presigned URL of a local backend", {"200": {"description": "The object", "content": binary}, **problem_responses("403", "404")},
             params=okp + [{"name": n, "in": "query", "required": True, "schema": {"type": "string"}, "description": d} for n, d in [("method", "GET"), ("expires", "Expiry, ms since the Unix epoch"), ("signature", "HMAC-SHA256, hex")]], tag="objects"),
   "put": op("presignedPut", "Upload through a presigned URL of a local backend", {**ok("ObjectPutResponse"), **problem_responses("403", "404")}, {"required": True, "content": binary},
             okp + [{"name": n, "in": "query", "required": True, "schema": {"type": "string"}, "description": d} for n, d in [("method", "PUT"), ("expires", "Expiry, ms since the Unix epoch"), ("signature", "HMAC-SHA256, hex")]], tag="objects")},
})

def message_of(schema_name):
    """The proto message a schema documents (names clashing across packages are prefixed)."""
    for pkg, prefix in [("kv", "Kv"), ("object", "Object")]:
        if schema_name.startswith(prefix) and schema_name[len(prefix):] in PROTO[pkg]:
            return PROTO[pkg][schema_name[len(prefix):]]
    for pkg in ("queue", "kv", "object"):
        if schema_name in PROTO[pkg]:
            return PROTO[pkg][schema_name]
    return {}
def allow_null(schema):
    if "$ref" in schema:
        return {"anyOf": [schema, {"type": "null"}]}
    if "anyOf" in schema:
        return {**schema, "anyOf": schema["anyOf"] + [{"type": "null"}]}
    return {**schema, "type": [schema["type"], "null"]}
for name, schema in schemas.items():
    fields = message_of(name)
    for prop, value in schema.get("properties", {}).items():
        if prop in fields and prop not in schema.get("required", []):
            schema["properties"][prop] = allow_null(value)

info = {"title": "ExoFlow API", "version": "v1",
    "description": "HTTP/JSON side of the ExoFlow contract. Every route mirrors a gRPC method of its proxy's service on the same port (queues: eqs, exo.queue.v1.QueueService; topics: eqs, exo.queue.v1.TopicService; buckets: eos, exo.object.v1.ObjectService; tables: ekv, exo.kv.v1.KvService); bodies use the canonical proto3 JSON mapping (lowerCamelCase names, bytes as base64, 64-bit integers as strings, null for a field's default). Errors are RFC 9457 problem+json. Object bodies are raw bytes with HTTP headers (Content-Type, Range, ETag, If-Match, If-None-Match, x-exo-meta-*)."}
tags = [{"name": "queues", "description": "eqs: portable queues"}, {"name": "topics", "description": "eqs: topics fanning out to subscription queues"}, {"name": "objects", "description": "eos: portable object storage"}, {"name": "kv", "description": "ekv: portable key-value tables"}, {"name": "meta", "description": "About this proxy; served by every proxy"}]
doc = {"openapi": "3.1.0", "info": info,
  "servers": [{"url": "http://127.0.0.1:7401", "description": "eqs sidecar (queues)"}, {"url": "http://127.0.0.1:7402", "description": "eos sidecar (buckets)"}, {"url": "http://127.0.0.1:7403", "description": "ekv sidecar (tables)"}],
  "tags": tags, "paths": paths, "components": {"schemas": schemas}}

# One document per proxy: its own routes, the meta routes, its own describe schema, and only
# the schemas those reach.
PROXIES = {"eqs": (("queues", "topics"), "DescribeResponse", 7401), "eos": (("objects",), "ObjectDescribeResponse", 7402), "ekv": (("kv",), "KvDescribeResponse", 7403)}
def refs(value):
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "$ref":
                yield v.rsplit("/", 1)[-1]
            else:
                yield from refs(v)
    elif isinstance(value, list):
        for v in value:
            yield from refs(v)
def proxy_doc(proxy):
    own_tags, describe, port = PROXIES[proxy]
    own = {}
    for path, item in paths.items():
        ops = {m: o for m, o in item.items() if o["tags"][0] in own_tags + ("meta",)}
        if ops:
            own[path] = json.loads(json.dumps(ops))
    own["/api/v1/describe"]["get"]["summary"] = "Backend name, capabilities and limits of this proxy"
    own["/api/v1/describe"]["get"]["responses"] = ok(describe)
    reached, todo = set(), list(refs(own))
    while todo:
        name = todo.pop()
        if name not in reached:
            reached.add(name)
            todo.extend(refs(schemas[name]))
    return {"openapi": "3.1.0", "info": {**info, "title": f"ExoFlow {proxy} API"},
            "servers": [{"url": f"http://127.0.0.1:{port}", "description": f"{proxy} sidecar"}],
            "tags": [t for t in tags if t["name"] in own_tags + ("meta",)], "paths": own,
            "components": {"schemas": {k: v for k, v in schemas.items() if k in reached}}}

out = sys.argv[1] if len(sys.argv) > 1 else None
if out is None:
    print(json.dumps(doc, indent=2))
else:
    for name, document in [("openapi.json", doc)] + [(f"openapi-{p}.json", proxy_doc(p)) for p in PROXIES]:
        with open(os.path.join(out, name), "w") as f:
            f.write(json.dumps(document, indent=2) + "\n")
