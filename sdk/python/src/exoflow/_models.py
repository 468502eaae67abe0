"""The values the clients take and return, and their proto3 JSON forms.

The proxy's HTTP/JSON bodies use the canonical proto3 JSON mapping: lowerCamelCase names, bytes
as base64, 64-bit integers as decimal strings, and a field at its default either absent or null.
Every decoder here reads a missing or null field as its default.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from ._errors import ExoError, Reason, error

#: Bytes a call takes as a body: ``str`` is sent as UTF-8.
Body = bytes | bytearray | memoryview | str

JsonObject = dict[str, Any]


def to_bytes(body: Body) -> bytes:
    """``body`` as bytes (``str`` as UTF-8)."""
    if isinstance(body, str):
        return body.encode()
    return bytes(body)


def b64(data: Body) -> str:
    """Standard base64 of ``data``, as the proto3 JSON mapping writes bytes."""
    return base64.b64encode(to_bytes(data)).decode("ascii")


def _obj(value: object) -> JsonObject:
    return value if isinstance(value, dict) else {}


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _int(value: object) -> int:
    """A proto3 JSON integer: a number, or a decimal string for 64-bit ones."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    if isinstance(value, str) and value.strip():
        try:
            return int(value)
        except ValueError:
            return 0
    return 0


def _bytes(value: object) -> bytes:
    """proto3 JSON bytes: standard or URL-safe base64, padded or not."""
    if not isinstance(value, str) or not value:
        return b""
    text = value.replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as err:
        raise error(Reason.INTERNAL, f"the proxy sent bytes that are not base64: {err}") from err


def _strings(value: object) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _string_map(value: object) -> dict[str, str]:
    return {k: v for k, v in value.items() if isinstance(v, str)} if isinstance(value, dict) else {}


def _objects(value: object) -> list[JsonObject]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def entry_error(value: object, resource: str) -> ExoError:
    """The error of one failed batch entry (``EntryError``)."""
    err = _obj(value)
    return error(
        Reason.parse(_str(err.get("reason"))),
        _str(err.get("message")),
        retryable=err.get("retryable") is True,
        resource=resource,
    )


# ---------------------------------------------------------------------------------------------
# Queues


@dataclass(frozen=True)
class QueueOptions:
    """Per-queue settings; fields left at their defaults take the proxy's defaults."""

    #: How long a received message stays hidden (``None``: the default, 30 s).
    visibility_timeout_seconds: int | None = None
    #: How long an unacknowledged message is kept (0: the default, 4 days).
    retention_seconds: int = 0
    #: Delay of messages sent without their own.
    delay_seconds: int = 0
    #: Receives before a message moves to ``dead_letter_queue`` (0: never); set both together.
    max_receives: int = 0
    #: An existing queue (not this one) that takes dead-lettered messages.
    dead_letter_queue: str = ""

    def to_json(self) -> JsonObject:
        out: JsonObject = {}
        if self.visibility_timeout_seconds is not None:
            out["visibilityTimeoutSeconds"] = self.visibility_timeout_seconds
        if self.retention_seconds:
            out["retentionSeconds"] = self.retention_seconds
        if self.delay_seconds:
            out["delaySeconds"] = self.delay_seconds
        if self.max_receives:
            out["maxReceives"] = self.max_receives
        if self.dead_letter_queue:
            out["deadLetterQueue"] = self.dead_letter_queue
        return out

    @classmethod
    def from_json(cls, value: object) -> QueueOptions:
        d = _obj(value)
        visibility = d.get("visibilityTimeoutSeconds")
        return cls(
            visibility_timeout_seconds=None if visibility is None else _int(visibility),
            retention_seconds=_int(d.get("retentionSeconds")),
            delay_seconds=_int(d.get("delaySeconds")),
            max_receives=_int(d.get("maxReceives")),
            dead_letter_queue=_str(d.get("deadLetterQueue")),
        )


@dataclass(frozen=True)
class QueueInfo:
    """A queue's options and approximate counts."""

    name: str
    options: QueueOptions
    visible_messages: int
    in_flight_messages: int
    delayed_messages: int
    #: Creation time, ms since the Unix epoch.
    created_at_ms: int

    @classmethod
    def from_json(cls, value: object) -> QueueInfo:
        d = _obj(value)
        return cls(
            name=_str(d.get("name")),
            options=QueueOptions.from_json(d.get("options")),
            visible_messages=_int(d.get("visibleMessages")),
            in_flight_messages=_int(d.get("inFlightMessages")),
            delayed_messages=_int(d.get("delayedMessages")),
            created_at_ms=_int(d.get("createdAtMs")),
        )


class CreatedQueue(NamedTuple):
    """What ``create_queue`` returns: whether it was created now, and the queue."""

    created: bool
    info: QueueInfo


class NamePage(NamedTuple):
    """One page of names, and the token of the next (empty on the last page)."""

    names: list[str]
    next_page_token: str


@dataclass(frozen=True)
class Outgoing:
    """A message to send: a body, string attributes and an optional delay."""

    body: bytes = b""
    attributes: Mapping[str, str] = field(default_factory=dict)
    #: Overrides the queue's delay (whole seconds); not allowed on a published message.
    delay_seconds: int | None = None

    @classmethod
    def of(cls, message: Outgoing | Body) -> Outgoing:
        """``message`` itself, or a message with just that body."""
        if isinstance(message, Outgoing):
            return message
        return cls(to_bytes(message))

    def to_json(self) -> JsonObject:
        out: JsonObject = {"body": b64(self.body)}
        if self.attributes:
            out["attributes"] = dict(self.attributes)
        if self.delay_seconds is not None:
            out["delaySeconds"] = self.delay_seconds
        return out


@dataclass(frozen=True)
class Message:
    """A received (or pushed) message."""

    message_id: str
    #: Opaque token for :meth:`~exoflow.QueueClient.ack` and visibility changes (empty in a
    #: pushed message: the proxy acknowledges those).
    receipt: str
    body: bytes
    attributes: dict[str, str]
    #: Deliveries so far, this one included.
    dequeue_count: int
    #: Send time, ms since the Unix epoch.
    enqueued_at_ms: int

    @property
    def text(self) -> str:
        """The body as UTF-8 text (undecodable bytes replaced)."""
        return self.body.decode("utf-8", "replace")

    @classmethod
    def from_json(cls, value: object) -> Message:
        d = _obj(value)
        return cls(
            message_id=_str(d.get("messageId")),
            receipt=_str(d.get("receipt")),
            body=_bytes(d.get("body")),
            attributes=_string_map(d.get("attributes")),
            dequeue_count=_int(d.get("dequeueCount")),
            enqueued_at_ms=_int(d.get("enqueuedAtMs")),
        )


@dataclass(frozen=True)
class QueueLimits:
    """Limits every queue request is checked against."""

    max_message_bytes: int
    max_batch_entries: int
    max_receive_messages: int
    max_wait_seconds: int
    max_visibility_timeout_seconds: int
    max_delay_seconds: int
    max_attributes: int
    min_retention_seconds: int
    max_retention_seconds: int
    max_receives_limit: int

    @classmethod
    def from_json(cls, value: object) -> QueueLimits:
        d = _obj(value)
        return cls(
            max_message_bytes=_int(d.get("maxMessageBytes")),
            max_batch_entries=_int(d.get("maxBatchEntries")),
            max_receive_messages=_int(d.get("maxReceiveMessages")),
            max_wait_seconds=_int(d.get("maxWaitSeconds")),
            max_visibility_timeout_seconds=_int(d.get("maxVisibilityTimeoutSeconds")),
            max_delay_seconds=_int(d.get("maxDelaySeconds")),
            max_attributes=_int(d.get("maxAttributes")),
            min_retention_seconds=_int(d.get("minRetentionSeconds")),
            max_retention_seconds=_int(d.get("maxRetentionSeconds")),
            max_receives_limit=_int(d.get("maxReceivesLimit")),
        )


@dataclass(frozen=True)
class TopicLimits:
    """Limits every topic request is checked against."""

    max_message_bytes: int
    max_attributes: int
    max_batch_entries: int
    max_subscriptions: int
    max_filter_bytes: int

    @classmethod
    def from_json(cls, value: object) -> TopicLimits:
        d = _obj(value)
        return cls(
            max_message_bytes=_int(d.get("maxMessageBytes")),
            max_attributes=_int(d.get("maxAttributes")),
            max_batch_entries=_int(d.get("maxBatchEntries")),
            max_subscriptions=_int(d.get("maxSubscriptions")),
            max_filter_bytes=_int(d.get("maxFilterBytes")),
        )


@dataclass(frozen=True)
class QueueBackend:
    """The backend behind an eqs proxy: its name, capabilities and limits."""

    backend: str
    #: Capability names, e.g. ``LONG_POLL``, ``TOPICS``.
    capabilities: list[str]
    limits: QueueLimits
    #: Set when the backend declares ``TOPICS``.
    topic_limits: TopicLimits | None

    @classmethod
    def from_json(cls, value: object) -> QueueBackend:
        d = _obj(value)
        topic_limits = d.get("topicLimits")
        return cls(
            backend=_str(d.get("backend")),
            capabilities=_strings(d.get("capabilities")),
            limits=QueueLimits.from_json(d.get("limits")),
            topic_limits=None if topic_limits is None else TopicLimits.from_json(topic_limits),
        )


# ---------------------------------------------------------------------------------------------
# Topics

#: Attribute of every delivered copy: the topic's name.
TOPIC_ATTRIBUTE = "exo.topic"
#: Attribute of every delivered copy: the publish id (the same on every copy of one publish).
PUBLISH_ID_ATTRIBUTE = "exo.publish-id"


@dataclass(frozen=True)
class Subscription:
    """Which queue gets a topic's messages, and which of them."""

    name: str
    queue: str
    #: Empty for every message.
    filter: str
    created_at_ms: int

    @classmethod
    def from_json(cls, value: object) -> Subscription:
        d = _obj(value)
        return cls(
            name=_str(d.get("name")),
            queue=_str(d.get("queue")),
            filter=_str(d.get("filter")),
            created_at_ms=_int(d.get("createdAtMs")),
        )


@dataclass(frozen=True)
class TopicInfo:
    """A topic and its subscriptions (by name)."""

    name: str
    created_at_ms: int
    subscriptions: list[Subscription]

    @classmethod
    def from_json(cls, value: object) -> TopicInfo:
        d = _obj(value)
        return cls(
            name=_str(d.get("name")),
            created_at_ms=_int(d.get("createdAtMs")),
            subscriptions=[Subscription.from_json(s) for s in _objects(d.get("subscriptions"))],
        )


class CreatedSubscription(NamedTuple):
    """What ``subscribe`` returns: whether it was created now, and the subscription."""

    created: bool
    subscription: Subscription


@dataclass(frozen=True)
class Published:
    """One published message's outcome."""

    #: The id every copy carries in :data:`PUBLISH_ID_ATTRIBUTE`.
    publish_id: str
    #: How many subscriptions got a copy (those whose filter matched).
    deliveries: int


@dataclass(frozen=True)
class PushedMessage:
    """What push delivery POSTs to the app for one message of a push subscription."""

    topic: str
    subscription: str
    queue: str
    #: The message as a receive returns it, without a receipt (the proxy acknowledges it
    #: when the app answers 2xx).
    message: Message

    @property
    def publish_id(self) -> str:
        """The publish id (the same on every copy, and on a redelivery, of one publish)."""
        return self.message.attributes.get(PUBLISH_ID_ATTRIBUTE, "")

    @classmethod
    def from_json(cls, value: object) -> PushedMessage:
        d = _obj(value)
        return cls(
            topic=_str(d.get("topic")),
            subscription=_str(d.get("subscription")),
            queue=_str(d.get("queue")),
            message=Message.from_json(d.get("message")),
        )


# ---------------------------------------------------------------------------------------------
# Objects


@dataclass(frozen=True)
class ObjectInfo:
    """An object's attributes."""

    bucket: str
    key: str
    size: int
    #: Opaque version tag (unquoted); changes whenever the bytes change.
    etag: str
    content_type: str
    #: User metadata (names lowercase).
    metadata: dict[str, str]
    #: Last write, ms since the Unix epoch (whole seconds when read from HTTP headers).
    last_modified_ms: int

    @classmethod
    def from_json(cls, value: object) -> ObjectInfo:
        d = _obj(value)
        return cls(
            bucket=_str(d.get("bucket")),
            key=_str(d.get("key")),
            size=_int(d.get("size")),
            etag=_str(d.get("etag")),
            content_type=_str(d.get("contentType")),
            metadata=_string_map(d.get("metadata")),
            last_modified_ms=_int(d.get("lastModifiedMs")),
        )


@dataclass(frozen=True)
class GetHeader:
    """What a download starts with: the object, and which of its bytes follow."""

    info: ObjectInfo
    #: Where the bytes start in the object.
    offset: int
    #: How many bytes follow.
    length: int


@dataclass(frozen=True)
class ByteRange:
    """Which bytes of an object to read: build one with :meth:`from_offset`, :meth:`span` or
    :meth:`suffix`."""

    start: int | None = None
    #: Exclusive end.
    end: int | None = None
    last: int | None = None

    @classmethod
    def from_offset(cls, start: int) -> ByteRange:
        """From ``start`` to the end."""
        return cls(start=start)

    @classmethod
    def span(cls, start: int, end: int) -> ByteRange:
        """``[start, end)``."""
        return cls(start=start, end=end)

    @classmethod
    def suffix(cls, n: int) -> ByteRange:
        """The last ``n`` bytes."""
        return cls(last=n)

    def header(self) -> str:
        """The HTTP ``Range`` header (inclusive ends)."""
        if self.last is not None:
            if self.last < 0:
                raise error(Reason.INVALID_ARGUMENT, "a suffix range needs n >= 0", field="range")
            return f"bytes=-{self.last}"
        start = self.start or 0
        if start < 0:
            raise error(Reason.INVALID_ARGUMENT, "a range cannot start before 0", field="range")
        if self.end is None:
            return f"bytes={start}-"
        if self.end <= start:
            # HTTP has no empty range: `bytes=5-4` is ignored by servers (the whole object).
            raise error(
                Reason.INVALID_ARGUMENT,
                f"range [{start}, {self.end}) selects no byte; over HTTP a range must hold at least one",
                field="range",
            )
        return f"bytes={start}-{self.end - 1}"


@dataclass(frozen=True)
class Presigned:
    """A presigned request: send ``headers`` with it (Azure Blob needs ``x-ms-blob-type`` on a
    PUT; S3 and the local backends need none)."""

    url: str
    headers: dict[str, str]
    #: When the URL stops working, ms since the Unix epoch.
    expires_at_ms: int

    @classmethod
    def from_json(cls, value: object) -> Presigned:
        d = _obj(value)
        return cls(
            url=_str(d.get("url")),
            headers=_string_map(d.get("headers")),
            expires_at_ms=_int(d.get("expiresAtMs")),
        )


class ObjectPage(NamedTuple):
    """One page of a listing: objects, common prefixes, the next page's token."""

    objects: list[ObjectInfo]
    common_prefixes: list[str]
    next_page_token: str


class Listing(NamedTuple):
    """A whole listing: every object and common prefix."""

    objects: list[ObjectInfo]
    common_prefixes: list[str]


@dataclass(frozen=True)
class DeleteResult:
    """One key's outcome in a batch delete."""

    key: str
    #: ``None`` on success.
    error_reason: Reason | None
    error_message: str

    @classmethod
    def from_json(cls, value: object) -> DeleteResult:
        d = _obj(value)
        reason = _str(d.get("errorReason"))
        return cls(
            key=_str(d.get("key")),
            error_reason=Reason.parse(reason) if reason else None,
            error_message=_str(d.get("errorMessage")),
        )


@dataclass(frozen=True)
class ObjectLimits:
    """Limits every object request is checked against."""

    max_object_bytes: int
    max_key_bytes: int
    max_metadata_entries: int
    max_metadata_bytes: int
    max_page_size: int
    max_presign_seconds: int

    @classmethod
    def from_json(cls, value: object) -> ObjectLimits:
        d = _obj(value)
        return cls(
            max_object_bytes=_int(d.get("maxObjectBytes")),
            max_key_bytes=_int(d.get("maxKeyBytes")),
            max_metadata_entries=_int(d.get("maxMetadataEntries")),
            max_metadata_bytes=_int(d.get("maxMetadataBytes")),
            max_page_size=_int(d.get("maxPageSize")),
            max_presign_seconds=_int(d.get("maxPresignSeconds")),
        )


@dataclass(frozen=True)
class ObjectBackend:
    """The backend behind an eos proxy."""

    backend: str
    capabilities: list[str]
    limits: ObjectLimits

    @classmethod
    def from_json(cls, value: object) -> ObjectBackend:
        d = _obj(value)
        return cls(
            backend=_str(d.get("backend")),
            capabilities=_strings(d.get("capabilities")),
            limits=ObjectLimits.from_json(d.get("limits")),
        )


# ---------------------------------------------------------------------------------------------
# Key-value


@dataclass(frozen=True)
class Entry:
    """One stored key."""

    key: str
    #: Empty when listed with ``keys_only``.
    value: bytes
    #: Opaque version; changes on every write.
    version: str
    #: Expiry, ms since the Unix epoch; 0 if none.
    expires_at_ms: int

    @classmethod
    def from_json(cls, value: object) -> Entry:
        d = _obj(value)
        return cls(
            key=_str(d.get("key")),
            value=_bytes(d.get("value")),
            version=_str(d.get("version")),
            expires_at_ms=_int(d.get("expiresAtMs")),
        )


class EntryPage(NamedTuple):
    """One page of entries, and the next page's token (empty on the last page)."""

    entries: list[Entry]
    next_page_token: str


class BatchGot(NamedTuple):
    """What ``batch_get`` returns: found entries in request order, and the missing keys."""

    entries: list[Entry]
    missing: list[str]


@dataclass(frozen=True)
class Incremented:
    """A counter after an increment."""

    #: Its new value.
    value: int
    #: The entry's new version (as ``put`` returns it), for a compare-and-set that follows.
    version: str


#: The range of a counter and of an increment's delta: a 64-bit signed integer.
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class Write:
    """One write of a :meth:`~exoflow.KvClient.write_batch`: a put or a delete of one key. Build
    one with :meth:`put` or :meth:`delete`; a batch may name each key once."""

    key: str
    kind: Literal["put", "delete"] = "put"
    #: The value a put stores (empty for a delete).
    value: bytes = b""
    #: Put only if the key is absent.
    create_only: bool = False
    #: Write only if the key is at this version (compare-and-set).
    if_version: str | None = None
    #: A put's time to live in seconds; ``None`` keeps the value forever.
    ttl_seconds: float | None = None

    @classmethod
    def put(
        cls,
        key: str,
        value: Body,
        *,
        create_only: bool = False,
        if_version: str | None = None,
        ttl_seconds: float | None = None,
    ) -> Write:
        """Puts ``value`` (``str`` as UTF-8) under ``key``, with the conditions and time to live
        :meth:`~exoflow.KvClient.put` takes."""
        return cls(key, "put", to_bytes(value), create_only, if_version, ttl_seconds)

    @classmethod
    def delete(cls, key: str, *, if_version: str | None = None) -> Write:
        """Deletes ``key`` (an absent key is no failure), only at ``if_version`` when given."""
        return cls(key, "delete", if_version=if_version)

    def to_json(self, index: int) -> JsonObject:
        """The ``BatchWrite`` this is, as write ``index`` of its batch (named in a refusal, as
        the proxy names its writes: ``writes[i].field``)."""
        at = f"writes[{index}]"
        if self.create_only and self.if_version is not None:
            raise error(
                Reason.INVALID_ARGUMENT,
                "a write is either create-only or at a version, not both",
                field=f"{at}.condition",
            )
        out: JsonObject = {"key": self.key}
        if self.kind == "delete":
            # Checked here and not left to the proxy, so a Write built by hand that carries a
            # put's fields is refused rather than sent with them silently dropped.
            if self.value or self.create_only or self.ttl_seconds:
                raise error(
                    Reason.INVALID_ARGUMENT,
                    "a delete carries no value, no create-only condition and no time to live",
                    field=at,
                )
            out["delete"] = True
        elif self.kind == "put":
            out["value"] = b64(self.value)
        else:
            raise error(Reason.INVALID_ARGUMENT, f"a write is a put or a delete, not {self.kind!r}", field=at)
        if self.create_only:
            out["condition"] = {"mustNotExist": True}
        elif self.if_version is not None:
            out["condition"] = {"versionEquals": self.if_version}
        if self.ttl_seconds:
            if self.ttl_seconds < 0:
                raise error(Reason.INVALID_ARGUMENT, "a time to live cannot be negative", field=f"{at}.ttl_seconds")
            # Whole seconds rounded up, as the Rust SDK sends them: a fraction of a second still
            # expires (truncated to 0 it would mean never).
            out["ttlSeconds"] = math.ceil(self.ttl_seconds)
        return out


@dataclass(frozen=True)
class KvLimits:
    """Limits every key-value request is checked against."""

    max_key_bytes: int
    max_value_bytes: int
    max_batch_keys: int
    max_page_size: int
    max_ttl_seconds: int
    #: Most writes in one ``write_batch`` (0 from a proxy that does not say).
    max_batch_writes: int = 0
    #: Largest total of the values in one ``write_batch``, in bytes (0 from a proxy that does
    #: not say).
    max_batch_bytes: int = 0

    @classmethod
    def from_json(cls, value: object) -> KvLimits:
        d = _obj(value)
        return cls(
            max_key_bytes=_int(d.get("maxKeyBytes")),
            max_value_bytes=_int(d.get("maxValueBytes")),
            max_batch_keys=_int(d.get("maxBatchKeys")),
            max_page_size=_int(d.get("maxPageSize")),
            max_ttl_seconds=_int(d.get("maxTtlSeconds")),
            max_batch_writes=_int(d.get("maxBatchWrites")),
            max_batch_bytes=_int(d.get("maxBatchBytes")),
        )


@dataclass(frozen=True)
class KvBackend:
    """The backend behind an ekv proxy."""

    backend: str
    #: Capability names (``KvCapability``): ``COMPARE_AND_SET``, ``TTL``, ``LIST``, ``INCREMENT``,
    #: ``ATOMIC_BATCH``; a call needing one the backend lacks fails with UNSUPPORTED.
    capabilities: list[str]
    limits: KvLimits

    @classmethod
    def from_json(cls, value: object) -> KvBackend:
        d = _obj(value)
        return cls(
            backend=_str(d.get("backend")),
            capabilities=_strings(d.get("capabilities")),
            limits=KvLimits.from_json(d.get("limits")),
        )


def objects_of(value: object) -> list[JsonObject]:
    """The JSON objects of an array (anything else: none)."""
    return _objects(value)


def strings_of(value: object) -> list[str]:
    """The strings of an array (anything else: none)."""
    return _strings(value)


def str_of(value: object) -> str:
    """A string field (anything else: empty)."""
    return _str(value)


def int_of(value: object) -> int:
    """An integer field (a number or a decimal string)."""
    return _int(value)


def obj_of(value: object) -> JsonObject:
    """An object field (anything else: empty)."""
    return _obj(value)
