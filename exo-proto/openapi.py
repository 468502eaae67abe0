"""Generates openapi.json, the HTTP/JSON side of the ExoFlow contract.

    python3 exo-proto/openapi.py > exo-proto/openapi.json

scripts/test fails when the committed openapi.json differs from this script's output, and the
exo-proto tests check every schema against the proto message of the same name.
"""
import json
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

caps = ["LONG_POLL","DELAY","RETENTION","DEAD_LETTER","CHANGE_VISIBILITY","PURGE","DURABLE"]
schemas = {
 "Problem": {"type": "object", "description": "RFC 9457 problem details, with ExoFlow's stable error fields.",
   "properties": {
     "type": s("urn:exoflow:error:<REASON>"), "title": s("HTTP reason phrase"), "status": {"type": "integer"},
     "detail": s("What went wrong, for a human"), "reason": s("Stable error reason, e.g. QUEUE_NOT_FOUND"),
     "backend": s("Backend that answered; empty if the proxy rejected the request itself"),
     "retryable": {"type": "boolean", "description": "Whether retrying later may succeed"},
     "field": s("Request field at fault, if any"), "resource": s("Queue or other resource concerned, if any")},
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
   "limits": ref("Limits")}),
 "QueueOptions": obj("Per-queue settings; omitted fields take their defaults.", {
   "visibilityTimeoutSeconds": u32("How long a received message stays hidden (default 30)."),
   "retentionSeconds": u32("How long an unacknowledged message is kept (0 = default, 4 days)."),
   "delaySeconds": u32("Delay for messages sent without their own (default 0)."),
   "maxReceives": u32("Receives before a message moves to deadLetterQueue (0 = never)."),
   "deadLetterQueue": s("Existing queue that takes dead-lettered messages.")}),
 "CreateQueueRequest": obj("Creates a queue; idempotent for identical options.", {
   "name": s("Portable queue name: 3-63 of a-z 0-9 '-', starting and ending alphanumeric, no '--'.", pattern="^[a-z0-9](?:[a-z0-9]|-(?!-))*[a-z0-9]$", minLength=3, maxLength=63),
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
   "attributes": {"type": "object", "additionalProperties": {"type": "string"}, "description": "String attributes; names 1-128 of A-Z a-z 0-9 _ - . (not starting exo./aws./amazon.), values non-empty."},
   "delaySeconds": u32("Overrides the queue's delay.")}),
 "SendRequest": obj("Sends one message to the queue in the path.", {"message": ref("OutgoingMessage")}, ["message"]),
 "SendResponse": obj("The new message's id.", {"messageId": s("Message id")}),
 "SendBatchEntry": obj("One batch entry.", {"id": s("Caller's id, unique in the batch (defaults to the index)."), "message": ref("OutgoingMessage")}, ["message"]),
 "SendBatchRequest": obj("Sends many messages; each entry succeeds or fails on its own.", {"entries": {"type": "array", "items": ref("SendBatchEntry")}}, ["entries"]),
 "EntryError": obj("Why one entry failed; nothing of it was written.", {"reason": s("Stable reason, e.g. MESSAGE_TOO_LARGE"), "message": s("Explanation"), "retryable": {"type": "boolean"}}),
 "SendBatchResult": obj("One entry's outcome: messageId or error.", {"id": s("The entry's id"), "messageId": s("Id of the sent message"), "error": ref("EntryError")}),
 "SendBatchResponse": obj("One result per entry, in request order.", {"results": {"type": "array", "items": ref("SendBatchResult")}}),
 "ReceiveRequest": obj("Receives messages from the queue in the path.", {
   "maxMessages": u32("At most this many (default 1)."),
   "waitSeconds": u32("Long-poll wait for a first message (0-20)."),
   "visibilityTimeoutSeconds": u32("Overrides the queue's visibility timeout.")}),
 "Message": obj("A received message.", {
   "messageId": s("Id given at send"), "receipt": s("Opaque token for ack and visibility changes"),
   "body": s("Opaque bytes, base64-encoded.", format="byte"),
   "attributes": {"type": "object", "additionalProperties": {"type": "string"}},
   "dequeueCount": u32("Deliveries so far, this one included."),
   "enqueuedAtMs": u64d("Send time, ms since the Unix epoch.")}),
 "ReceiveResponse": obj("Zero or more messages, in no guaranteed order.", {"messages": {"type": "array", "items": ref("Message")}}),
 "AckRequest": obj("Acknowledges (deletes) a received message.", {"receipt": s("Receipt from receive")}, ["receipt"]),
 "ChangeVisibilityRequest": obj("Sets a received message's remaining visibility; 0 releases it.", {"receipt": s("Receipt from receive"), "visibilityTimeoutSeconds": u32("Seconds from now.")}, ["receipt"]),
}
kv_caps = ["COMPARE_AND_SET", "TTL", "LIST"]
schemas.update({
 "KvCapability": {"type": "string", "enum": kv_caps, "description": "An optional key-value behaviour a backend may declare."},
 "KvLimits": obj("Limits every key-value request is checked against.", {
   "maxKeyBytes": u32("Longest key in bytes (UTF-8)."),
   "maxValueBytes": u64d("Largest value in bytes."),
   "maxBatchKeys": u32("Most keys in one batch get."),
   "maxPageSize": u32("Largest list page."),
   "maxTtlSeconds": u32("Longest time to live.")}),
 "KvDescribeResponse": obj("The key-value backend behind this proxy.", {
   "backend": s("Backend name"), "capabilities": {"type": "array", "items": ref("KvCapability")}, "limits": ref("KvLimits")}),
 "CreateTableRequest": obj("Creates a table; idempotent.", {"name": s("Portable table name (same rules as queue names).")}, ["name"]),
 "CreateTableResponse": obj("Result of a create.", {"created": {"type": "boolean", "description": "False if it already existed."}}),
 "ListTablesResponse": obj("Every table name.", {"names": {"type": "array", "items": {"type": "string"}}}),
 "Entry": obj("One stored key.", {
   "key": s("The key"), "value": s("The value, base64-encoded.", format="byte"),
   "version": s("Opaque version; changes on every write."),
   "expiresAtMs": u64d("Expiry, ms since the Unix epoch; 0 if none.")}),
 "GetResponse": obj("A read entry.", {"entry": ref("Entry")}),
 "Condition": obj("A write precondition: at most one of the fields.", {
   "mustNotExist": {"type": "boolean", "description": "Only if the key is absent (must be true when given)."},
   "versionEquals": s("Only if the current version equals this.")}),
 "PutRequest": obj("Writes the key in the path.", {
   "value": s("The value, base64-encoded.", format="byte"), "condition": ref("Condition"),
   "ttlSeconds": u32("Time to live; 0 = forever.")}),
 "PutResponse": obj("The new version.", {"version": s("New version")}),
 "DeleteResponse": obj("Result of a delete.", {"deleted": {"type": "boolean", "description": "False if the key did not exist."}}),
 "ListResponse": obj("A page of entries in key order.", {"entries": {"type": "array", "items": ref("Entry")}, "nextPageToken": s("Empty on the last page.")}),
 "BatchGetRequest": obj("Reads many keys of the table in the path.", {"keys": {"type": "array", "items": {"type": "string"}}}, ["keys"]),
 "BatchGetResponse": obj("Found entries in request order, and the missing keys.", {"entries": {"type": "array", "items": ref("Entry")}, "missing": {"type": "array", "items": {"type": "string"}}}),
})

obj_caps = ["CONDITIONAL_CREATE", "CONDITIONAL_REPLACE", "PRESIGN", "COPY", "RANGE_READ", "IDEMPOTENT_DELETE"]
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
 "CreateBucketRequest": obj("Creates a bucket; idempotent.", {"name": s("Portable bucket name (same rules as queue names).")}, ["name"]),
 "CreateBucketResponse": obj("Result of a create.", {"created": {"type": "boolean", "description": "False if it already existed."}}),
 "ListBucketsResponse": obj("Every bucket name.", {"names": {"type": "array", "items": {"type": "string"}}}),
 "ObjectInfo": object_info,
 "ObjectPutResponse": obj("The stored object.", {"info": ref("ObjectInfo")}),
 "ObjectListResponse": obj("A page of a listing in key order.", {
   "objects": {"type": "array", "items": ref("ObjectInfo")},
   "commonPrefixes": {"type": "array", "items": {"type": "string"}, "description": "Groups of keys under the delimiter."},
   "nextPageToken": s("Empty on the last page.")}),
 "ObjectCondition": obj("A write precondition: at most one field.", {
   "createOnly": {"type": "boolean", "description": "Only if no object exists (must be true when given)."},
   "ifMatch": s("Only if the current ETag equals this.")}),
 "CopyRequest": obj("Copies an object into the bucket in the path.", {
   "sourceBucket": s("Source bucket"), "sourceKey": s("Source key"), "key": s("Destination key"), "condition": ref("ObjectCondition")},
   ["sourceBucket", "sourceKey", "key"]),
 "CopyResponse": obj("The copy.", {"info": ref("ObjectInfo")}),
 "PresignRequest": obj("Asks for a presigned URL for a key of the bucket in the path.", {
   "key": s("Key"), "method": {"type": "string", "enum": ["GET", "PUT"], "description": "Allowed method"},
   "expiresInSeconds": u32("Validity (1 .. maxPresignSeconds).")}, ["key", "method", "expiresInSeconds"]),
 "PresignResponse": obj("A URL signed by the backend.", {"url": s("The URL"), "expiresAtMs": u64d("Expiry, ms since the Unix epoch."), "headers": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Headers the request must carry besides the URL (Azure Blob PUT: x-ms-blob-type); usually empty."}}),
 "DeleteBatchRequest": obj("Deletes many keys of the bucket in the path.", {"keys": {"type": "array", "items": {"type": "string"}}}, ["keys"]),
 "DeleteResult": obj("One key's outcome.", {"key": s("Key"), "errorReason": s("Empty on success, else the stable reason."), "errorMessage": s("Explanation of a failure.")}),
 "DeleteBatchResponse": obj("One result per key, in request order.", {"results": {"type": "array", "items": ref("DeleteResult")}}),
})

def problem_responses(*codes):
    out = {}
    text = {"400": "Invalid request (INVALID_ARGUMENT, INVALID_NAME, INVALID_ATTRIBUTE, INVALID_RECEIPT, MALFORMED_REQUEST)",
            "404": "QUEUE_NOT_FOUND, TABLE_NOT_FOUND or KEY_NOT_FOUND", "409": "QUEUE_ALREADY_EXISTS", "412": "RECEIPT_STALE or CONDITION_FAILED", "403": "PERMISSION_DENIED (presigned URL altered or expired)", "416": "RANGE_NOT_SATISFIABLE",
            "413": "MESSAGE_TOO_LARGE, VALUE_TOO_LARGE or REQUEST_TOO_LARGE", "501": "UNSUPPORTED: the backend lacks a needed capability",
            "503": "BACKEND_UNAVAILABLE or SHUTTING_DOWN (retryable)", "504": "TIMEOUT (retryable)"}
    for c in codes + ("503", "504"):
        out[c] = {"description": text[c], "content": {"application/problem+json": {"schema": ref("Problem")}}}
    return out
def ok(schema, desc="OK", code="200"):
    return {code: {"description": desc, "content": {"application/json": {"schema": ref(schema)}}}}
def body(schema, required=True):
    return {"required": required, "content": {"application/json": {"schema": ref(schema)}}}
qp = [{"name": "queue", "in": "path", "required": True, "schema": {"type": "string"}, "description": "Queue name"}]
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
      {"name": "prefix", "in": "query", "schema": {"type": "string"}, "description": "Only names with this prefix"},
      {"name": "pageSize", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 1000}, "description": "Page size (default and maximum 1000)"},
      {"name": "pageToken", "in": "query", "schema": {"type": "string"}, "description": "nextPageToken of the previous page"}]),
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
tp = [{"name": "table", "in": "path", "required": True, "schema": {"type": "string"}, "description": "Table name"}]
kp = tp + [{"name": "key", "in": "path", "required": True, "schema": {"type": "string"}, "description": "The key, percent-encoded ('/' may stay literal)"}]
paths.update({
 "/api/v1/tables": {
   "get": op("listTables", "List table names", {**ok("ListTablesResponse")}, tag="kv"),
   "post": op("createTable", "Create a table (idempotent)", {**ok("CreateTableResponse", "Already existed"), **ok("CreateTableResponse", "Created", "201"), **problem_responses("400")}, body("CreateTableRequest"), tag="kv")},
 "/api/v1/tables/{table}": {
   "delete": op("deleteTable", "Delete a table and its keys", {**ok("Empty"), **problem_responses("400", "404")}, params=tp, tag="kv")},
 "/api/v1/tables/{table}/entries": {
   "get": op("listEntries", "List entries by key prefix, a page at a time", {**ok("ListResponse"), **problem_responses("400", "404", "501")}, params=tp + [
      {"name": "prefix", "in": "query", "schema": {"type": "string"}, "description": "Only keys with this prefix"},
      {"name": "pageSize", "in": "query", "schema": {"type": "integer", "minimum": 0}, "description": "Page size (0 = the maximum)"},
      {"name": "pageToken", "in": "query", "schema": {"type": "string"}, "description": "nextPageToken of the previous page"},
      {"name": "keysOnly", "in": "query", "schema": {"type": "boolean"}, "description": "Omit values"}], tag="kv")},
 "/api/v1/tables/{table}/batch-get": {
   "post": op("batchGet", "Read many keys", {**ok("BatchGetResponse"), **problem_responses("400", "404")}, body("BatchGetRequest"), tp, tag="kv")},
 "/api/v1/tables/{table}/entries/{key}": {
   "get": op("getEntry", "Read a key", {**ok("GetResponse"), **problem_responses("400", "404")}, params=kp, tag="kv"),
   "put": op("putEntry", "Write a key, optionally conditionally and with a TTL", {**ok("PutResponse"), **problem_responses("400", "404", "412", "413", "501")}, body("PutRequest"), kp, tag="kv"),
   "delete": op("deleteEntry", "Delete a key, optionally only at a version", {**ok("DeleteResponse"), **problem_responses("400", "404", "412", "501")}, params=kp + [
      {"name": "versionEquals", "in": "query", "schema": {"type": "string"}, "description": "Delete only at this version"}], tag="kv")},
})

bp = [{"name": "bucket", "in": "path", "required": True, "schema": {"type": "string"}, "description": "Bucket name"}]
okp = bp + [{"name": "key", "in": "path", "required": True, "schema": {"type": "string"}, "description": "Object key, percent-encoded ('/' may stay literal)"}]
def hdr(name, desc):
    return {"name": name, "in": "header", "required": False, "schema": {"type": "string"}, "description": desc}
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
      {"name": "prefix", "in": "query", "schema": {"type": "string"}, "description": "Only keys with this prefix"},
      {"name": "delimiter", "in": "query", "schema": {"type": "string"}, "description": "Group keys containing this after the prefix (usually /)"},
      {"name": "pageSize", "in": "query", "schema": {"type": "integer", "minimum": 0}, "description": "Page size (0 = the maximum)"},
      {"name": "pageToken", "in": "query", "schema": {"type": "string"}, "description": "nextPageToken of the previous page"}], tag="objects")},
 "/api/v1/buckets/{bucket}/objects/{key}": {
   "put": op("putObject", "Upload an object (raw body, streamed; stored atomically when complete). User metadata goes in x-exo-meta-<name> headers.",
             {**ok("ObjectPutResponse"), **problem_responses("400", "404", "412", "413", "501")},
             {"required": True, "content": binary},
             okp + [hdr("Content-Type", "MIME type stored with the object"), hdr("If-None-Match", "* = create only"), hdr("If-Match", "Replace only at this ETag")], tag="objects"),
   "get": op("getObject", "Download an object or a byte range (streamed)",
             {"200": {"description": "The object", "headers": obj_headers, "content": binary},
              "206": {"description": "The requested range (Content-Range)", "headers": obj_headers, "content": binary},
              "304": {"description": "Not modified (If-None-Match matched); no body"},
              **problem_responses("400", "404", "412", "416")},
             params=okp + [hdr("Range", "bytes=a-b, bytes=a- or bytes=-n (one range)"), hdr("If-Match", "Fail with 412 unless the ETag matches"), hdr("If-None-Match", "304 if the ETag matches")], tag="objects"),
   "head": op("headObject", "An object's attributes as headers", {"200": {"description": "Attributes", "headers": obj_headers}, "404": {"description": "OBJECT_NOT_FOUND or BUCKET_NOT_FOUND"}}, params=okp, tag="objects"),
   "delete": op("deleteObject", "Delete an object (idempotent unless If-Match is given)", {**ok("Empty"), **problem_responses("400", "404", "412")}, params=okp + [hdr("If-Match", "Delete only at this ETag")], tag="objects")},
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

doc = {"openapi": "3.0.3",
  "info": {"title": "ExoFlow API", "version": "v1",
    "description": "HTTP/JSON side of the ExoFlow contract. Every route mirrors a gRPC method of its proxy's service on the same port (queues: eqs, exo.queue.v1.QueueService; buckets: eos, exo.object.v1.ObjectService; tables: ekv, exo.kv.v1.KvService); bodies use the canonical proto3 JSON mapping (lowerCamelCase names, bytes as base64, 64-bit integers as strings). Errors are RFC 9457 problem+json. Object bodies are raw bytes with HTTP headers (Content-Type, Range, ETag, If-Match, If-None-Match, x-exo-meta-*)."},
  "servers": [{"url": "http://127.0.0.1:7401", "description": "eqs sidecar (queues)"}, {"url": "http://127.0.0.1:7402", "description": "eos sidecar (buckets)"}, {"url": "http://127.0.0.1:7403", "description": "ekv sidecar (tables)"}],
  "tags": [{"name": "queues", "description": "eqs: portable queues"}, {"name": "objects", "description": "eos: portable object storage"}, {"name": "kv", "description": "ekv: portable key-value tables"}, {"name": "meta", "description": "About this proxy; served by every proxy"}],
  "paths": paths, "components": {"schemas": schemas}}
print(json.dumps(doc, indent=2))
