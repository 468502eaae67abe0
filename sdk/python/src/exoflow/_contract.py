"""The HTTP routes of the contract (exo-proto/openapi-{eqs,eos,ekv}.json), by operationId.

Every request this SDK makes is built from this table, and every public method that makes one
is marked with :func:`operation`, so ``tests/test_contract.py`` can check both against the
OpenAPI documents: an operation of the contract without a method, or a route that moved, fails
the test.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar
from urllib.parse import quote

F = TypeVar("F", bound=Callable[..., object])

#: (service, operationId) -> (HTTP method, path template).
ROUTES: dict[tuple[str, str], tuple[str, str]] = {
    # eqs: queues
    ("eqs", "openapi"): ("GET", "/api/v1/openapi.json"),
    ("eqs", "describe"): ("GET", "/api/v1/describe"),
    ("eqs", "listQueues"): ("GET", "/api/v1/queues"),
    ("eqs", "createQueue"): ("POST", "/api/v1/queues"),
    ("eqs", "getQueueInfo"): ("GET", "/api/v1/queues/{queue}"),
    ("eqs", "deleteQueue"): ("DELETE", "/api/v1/queues/{queue}"),
    ("eqs", "purge"): ("POST", "/api/v1/queues/{queue}/purge"),
    ("eqs", "send"): ("POST", "/api/v1/queues/{queue}/messages"),
    ("eqs", "sendBatch"): ("POST", "/api/v1/queues/{queue}/messages/batch"),
    ("eqs", "receive"): ("POST", "/api/v1/queues/{queue}/messages/receive"),
    ("eqs", "ack"): ("POST", "/api/v1/queues/{queue}/messages/ack"),
    ("eqs", "changeVisibility"): ("POST", "/api/v1/queues/{queue}/messages/visibility"),
    # eqs: topics
    ("eqs", "listTopics"): ("GET", "/api/v1/topics"),
    ("eqs", "createTopic"): ("POST", "/api/v1/topics"),
    ("eqs", "getTopicInfo"): ("GET", "/api/v1/topics/{topic}"),
    ("eqs", "deleteTopic"): ("DELETE", "/api/v1/topics/{topic}"),
    ("eqs", "publish"): ("POST", "/api/v1/topics/{topic}/publish"),
    ("eqs", "publishBatch"): ("POST", "/api/v1/topics/{topic}/publish/batch"),
    ("eqs", "createSubscription"): ("POST", "/api/v1/topics/{topic}/subscriptions"),
    ("eqs", "deleteSubscription"): ("DELETE", "/api/v1/topics/{topic}/subscriptions/{name}"),
    # eos
    ("eos", "openapi"): ("GET", "/api/v1/openapi.json"),
    ("eos", "describe"): ("GET", "/api/v1/describe"),
    ("eos", "listBuckets"): ("GET", "/api/v1/buckets"),
    ("eos", "createBucket"): ("POST", "/api/v1/buckets"),
    ("eos", "deleteBucket"): ("DELETE", "/api/v1/buckets/{bucket}"),
    ("eos", "listObjects"): ("GET", "/api/v1/buckets/{bucket}/objects"),
    ("eos", "putObject"): ("PUT", "/api/v1/buckets/{bucket}/objects/{key}"),
    ("eos", "getObject"): ("GET", "/api/v1/buckets/{bucket}/objects/{key}"),
    ("eos", "headObject"): ("HEAD", "/api/v1/buckets/{bucket}/objects/{key}"),
    ("eos", "deleteObject"): ("DELETE", "/api/v1/buckets/{bucket}/objects/{key}"),
    ("eos", "copyObject"): ("POST", "/api/v1/buckets/{bucket}/copy"),
    ("eos", "presignObject"): ("POST", "/api/v1/buckets/{bucket}/presign"),
    ("eos", "deleteObjects"): ("POST", "/api/v1/buckets/{bucket}/delete"),
    # A presigned URL is used as given (a cloud backend's URL, or the proxy's own for a local
    # backend): these two are the proxy's side of it.
    ("eos", "presignedGet"): ("GET", "/api/v1/presigned/{bucket}/{key}"),
    ("eos", "presignedPut"): ("PUT", "/api/v1/presigned/{bucket}/{key}"),
    # ekv
    ("ekv", "openapi"): ("GET", "/api/v1/openapi.json"),
    ("ekv", "describe"): ("GET", "/api/v1/describe"),
    ("ekv", "listTables"): ("GET", "/api/v1/tables"),
    ("ekv", "createTable"): ("POST", "/api/v1/tables"),
    ("ekv", "deleteTable"): ("DELETE", "/api/v1/tables/{table}"),
    ("ekv", "listEntries"): ("GET", "/api/v1/tables/{table}/entries"),
    ("ekv", "batchGet"): ("POST", "/api/v1/tables/{table}/batch-get"),
    ("ekv", "getEntry"): ("GET", "/api/v1/tables/{table}/entries/{key}"),
    ("ekv", "putEntry"): ("PUT", "/api/v1/tables/{table}/entries/{key}"),
    ("ekv", "deleteEntry"): ("DELETE", "/api/v1/tables/{table}/entries/{key}"),
    ("ekv", "increment"): ("POST", "/api/v1/tables/{table}/increment"),
    ("ekv", "writeBatch"): ("POST", "/api/v1/tables/{table}/write-batch"),
}

#: The attribute :func:`operation` sets on a method: the (service, operationId) pairs it calls.
OPERATION_ATTRIBUTE = "__exo_operations__"


def operation(service: str, *operation_ids: str) -> Callable[[F], F]:
    """Marks a method as the SDK's way to call ``operation_ids`` of ``service``."""
    pairs = tuple((service, op) for op in operation_ids)
    for pair in pairs:
        if pair not in ROUTES:
            raise KeyError(f"unknown operation {pair!r}")

    def mark(method: F) -> F:
        setattr(method, OPERATION_ATTRIBUTE, pairs)
        return method

    return mark


# Characters left as they are in a key's path segment: unreserved and '/' (the proxy's own
# presigner writes keys the same way; '/' may stay literal in an object or kv key).
_KEY_SAFE = "/-_.~"


def _key_path(key: str) -> str:
    """A key as URL path segments: percent-encoded, slashes kept, and a segment of only dots
    (``.``, ``..``) encoded too, since HTTP clients and servers remove such segments from a
    path (RFC 3986 §5.2.4), which would change the key."""
    segments = quote(key, safe=_KEY_SAFE).split("/")
    return "/".join("%2E" * len(s) if s in (".", "..") else s for s in segments)


def path(service: str, op: str, **params: str) -> str:
    """The path of ``op`` with its parameters percent-encoded (a ``key`` keeps its slashes)."""
    template = ROUTES[(service, op)][1]
    for name, value in params.items():
        encoded = _key_path(value) if name == "key" else quote(value, safe="-_.~")
        template = template.replace("{" + name + "}", encoded)
    return template
