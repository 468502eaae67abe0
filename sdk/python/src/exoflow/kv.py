"""Key-value: :class:`KvClient` and :class:`AsyncKvClient`, the app's handles on an ekv proxy."""

from __future__ import annotations

import builtins
import math
from collections.abc import Iterable, Sequence
from typing import Any

import httpx

from ._client import AsyncClient, Call, SyncClient
from ._contract import operation, path
from ._errors import Reason, error
from ._models import (
    INT64_MAX,
    INT64_MIN,
    BatchGot,
    Body,
    Entry,
    EntryPage,
    Incremented,
    KvBackend,
    Write,
    b64,
    objects_of,
    str_of,
    strings_of,
)
from ._transport import Request, json_body

#: Environment variable naming the ekv endpoint.
EKV_ENDPOINT_ENV = "EXO_EKV_ENDPOINT"
#: Where the ekv sidecar listens unless told otherwise.
DEFAULT_EKV_ENDPOINT = "http://127.0.0.1:7403"

_S = "ekv"


def _describe() -> Call[KvBackend]:
    return Request("GET", path(_S, "describe")), lambda r: KvBackend.from_json(json_body(r))


def _openapi() -> Call[dict[str, Any]]:
    return Request("GET", path(_S, "openapi")), json_body


def _create_table(name: str) -> Call[bool]:
    return (
        Request("POST", path(_S, "createTable"), json={"name": name}, resource=name),
        lambda r: json_body(r).get("created") is True,
    )


def _delete_table(name: str) -> Call[None]:
    return Request("DELETE", path(_S, "deleteTable", table=name), resource=name), lambda r: None


def _list_tables() -> Call[list[str]]:
    return Request("GET", path(_S, "listTables")), lambda r: strings_of(json_body(r).get("names"))


def _get(table: str, key: str) -> Call[Entry]:
    def decode(r: httpx.Response) -> Entry:
        entry = json_body(r).get("entry")
        if entry is None:
            raise error(Reason.INTERNAL, "the proxy returned no entry", resource=key)
        return Entry.from_json(entry)

    req = Request(
        "GET", path(_S, "getEntry", table=table, key=key), not_found=Reason.KEY_NOT_FOUND, resource=f"{table}/{key}"
    )
    return req, decode


def _put(
    table: str, key: str, value: Body, create_only: bool, if_version: str | None, ttl_seconds: float | None
) -> Call[str]:
    body: dict[str, Any] = {"value": b64(value)}
    if create_only and if_version is not None:
        raise error(Reason.INVALID_ARGUMENT, "a put is either create-only or at a version, not both", field="condition")
    if create_only:
        body["condition"] = {"mustNotExist": True}
    elif if_version is not None:
        body["condition"] = {"versionEquals": if_version}
    if ttl_seconds:
        if ttl_seconds < 0:
            raise error(Reason.INVALID_ARGUMENT, "a time to live cannot be negative", field="ttl_seconds")
        # Whole seconds, rounded up: a part of a second still expires (0 would mean never).
        body["ttlSeconds"] = math.ceil(ttl_seconds)
    req = Request("PUT", path(_S, "putEntry", table=table, key=key), json=body, resource=f"{table}/{key}")
    return req, lambda r: str_of(json_body(r).get("version"))


def _delete(table: str, key: str, if_version: str | None) -> Call[bool]:
    params = {"versionEquals": if_version} if if_version else None
    req = Request("DELETE", path(_S, "deleteEntry", table=table, key=key), params=params, resource=f"{table}/{key}")
    return req, lambda r: json_body(r).get("deleted") is True


def _list_page(table: str, prefix: str, page_size: int, page_token: str, keys_only: bool) -> Call[EntryPage]:
    params = {
        "prefix": prefix,
        "pageSize": str(page_size) if page_size else "",
        "pageToken": page_token,
        "keysOnly": "true" if keys_only else "",
    }

    def decode(r: httpx.Response) -> EntryPage:
        d = json_body(r)
        return EntryPage([Entry.from_json(e) for e in objects_of(d.get("entries"))], str_of(d.get("nextPageToken")))

    req = Request(
        "GET",
        path(_S, "listEntries", table=table),
        params={k: v for k, v in params.items() if v},
        resource=table,
    )
    return req, decode


def _batch_get(table: str, keys: Iterable[str]) -> Call[BatchGot]:
    def decode(r: httpx.Response) -> BatchGot:
        d = json_body(r)
        return BatchGot([Entry.from_json(e) for e in objects_of(d.get("entries"))], strings_of(d.get("missing")))

    req = Request("POST", path(_S, "batchGet", table=table), json={"keys": list(keys)}, resource=table)
    return req, decode


#: The one reason an increment is retried for: THROTTLED means the proxy's compare-and-set loop
#: lost too many races and wrote nothing. Any other failure may come after the increment took
#: effect (a timeout, a lost answer), and sending it again would count it twice.
_INCREMENT_RETRY_REASONS = frozenset({Reason.THROTTLED})


def _increment(table: str, key: str, delta: int, ttl_seconds: float | None) -> Call[Incremented]:
    if isinstance(delta, bool) or not isinstance(delta, int):
        raise error(
            Reason.INVALID_ARGUMENT, f"an increment's delta is an int, not {type(delta).__name__}", field="delta"
        )
    if not INT64_MIN <= delta <= INT64_MAX:
        raise error(
            Reason.INVALID_ARGUMENT,
            f"an increment's delta must fit a 64-bit signed integer ({INT64_MIN} to {INT64_MAX}), not {delta}",
            field="delta",
        )
    # The delta goes as a JSON number: Python writes an int exactly, whatever its size.
    body: dict[str, Any] = {"key": key, "delta": delta}
    if ttl_seconds:
        if ttl_seconds < 0:
            raise error(Reason.INVALID_ARGUMENT, "a time to live cannot be negative", field="ttl_seconds")
        if ttl_seconds < 1:
            # Sent in whole seconds, it would be 0: a counter that never expires.
            raise error(Reason.INVALID_ARGUMENT, "a time to live is at least 1 second", field="ttl_seconds")
        body["ttlSeconds"] = int(ttl_seconds)

    def decode(r: httpx.Response) -> Incremented:
        d = json_body(r)
        return Incremented(_counter_value(d.get("value"), f"{table}/{key}"), str_of(d.get("version")))

    req = Request(
        "POST",
        path(_S, "increment", table=table),
        json=body,
        resource=f"{table}/{key}",
        retry_reasons=_INCREMENT_RETRY_REASONS,
    )
    return req, decode


def _write_batch(table: str, writes: Sequence[Write]) -> Call[list[str]]:
    body = {"writes": [write.to_json(i) for i, write in enumerate(writes)]}

    def decode(r: httpx.Response) -> list[str]:
        # One version per write; proto3 JSON may leave out a field at its default, so a missing
        # list or a null in it reads as empty (what a delete answers).
        versions = json_body(r).get("versions")
        if versions is None and all(w.kind == "delete" for w in writes):
            versions = [""] * len(writes)
        if not isinstance(versions, list) or len(versions) != len(writes):
            raise error(
                Reason.INTERNAL,
                f"the proxy answered a batch of {len(writes)} writes with the versions {versions!r}",
                resource=table,
            )
        return [str_of(v) for v in versions]

    # Retried like a put (the Rust SDK's rule): after a lost answer a batch that applied may be
    # sent again, and then a condition of its own can fail it.
    req = Request("POST", path(_S, "writeBatch", table=table), json=body, resource=table)
    return req, decode


def _counter_value(value: object, resource: str) -> int:
    """A counter's value as the proxy sends it: a decimal string (proto3 JSON's int64), absent
    when 0."""
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
    raise error(Reason.INTERNAL, f"the proxy answered an increment with the value {value!r}", resource=resource)


class KvClient(SyncClient):
    """A blocking client of the ekv key-value proxy (``$EXO_EKV_ENDPOINT``, else
    ``http://127.0.0.1:7403``).

    >>> kv = KvClient()
    >>> kv.create_table("carts")
    >>> version = kv.put("carts", "u1", b"token", ttl_seconds=3600)
    >>> kv.put("carts", "u1", b"token2", if_version=version)  # compare-and-set
    >>> kv.get("carts", "u1").value
    >>> kv.increment("carts", "checkouts")  # an atomic counter
    >>> kv.write_batch("carts", [Write.put("u2", b"t"), Write.delete("u1")])  # all or none
    """

    ENDPOINT_ENV = EKV_ENDPOINT_ENV
    DEFAULT_ENDPOINT = DEFAULT_EKV_ENDPOINT

    @operation(_S, "describe")
    def describe(self, *, timeout: float | None = None) -> KvBackend:
        """The backend's name, capabilities and limits."""
        return self._call(_describe(), timeout)

    @operation(_S, "openapi")
    def openapi(self, *, timeout: float | None = None) -> dict[str, Any]:
        """The proxy's OpenAPI document, with this backend's limits."""
        return self._call(_openapi(), timeout)

    @operation(_S, "createTable")
    def create_table(self, name: str, *, timeout: float | None = None) -> bool:
        """Creates a table (idempotent); whether it was created now."""
        return self._call(_create_table(name), timeout)

    @operation(_S, "deleteTable")
    def delete_table(self, name: str, *, timeout: float | None = None) -> None:
        """Deletes a table and its keys."""
        self._call(_delete_table(name), timeout)

    @operation(_S, "listTables")
    def list_tables(self, *, timeout: float | None = None) -> list[str]:
        """Every table name."""
        return self._call(_list_tables(), timeout)

    @operation(_S, "getEntry")
    def get(self, table: str, key: str, *, timeout: float | None = None) -> Entry:
        """Reads a key: KEY_NOT_FOUND (:class:`~exoflow.NotFoundError`) for a missing or
        expired one."""
        return self._call(_get(table, key), timeout)

    @operation(_S, "putEntry")
    def put(
        self,
        table: str,
        key: str,
        value: Body,
        *,
        create_only: bool = False,
        if_version: str | None = None,
        ttl_seconds: float | None = None,
        timeout: float | None = None,
    ) -> str:
        """Writes a key (``str`` values as UTF-8); returns its new version.

        ``create_only``: only if absent; ``if_version``: only at that version (compare-and-set);
        CONDITION_FAILED otherwise. ``ttl_seconds``: expire after that many seconds (rounded up to
        whole seconds).
        """
        return self._call(_put(table, key, value, create_only, if_version, ttl_seconds), timeout)

    @operation(_S, "deleteEntry")
    def delete(self, table: str, key: str, *, if_version: str | None = None, timeout: float | None = None) -> bool:
        """Deletes a key, optionally only at ``if_version``; whether it existed."""
        return self._call(_delete(table, key, if_version), timeout)

    @operation(_S, "listEntries")
    def list_page(
        self,
        table: str,
        prefix: str = "",
        page_size: int = 0,
        page_token: str = "",
        keys_only: bool = False,
        *,
        timeout: float | None = None,
    ) -> EntryPage:
        """One page of entries with ``prefix``, in key order (values left out with ``keys_only``)."""
        return self._call(_list_page(table, prefix, page_size, page_token, keys_only), timeout)

    def list(
        self, table: str, prefix: str = "", *, keys_only: bool = False, timeout: float | None = None
    ) -> list[Entry]:
        """Every entry with ``prefix``, following pages (``timeout`` is per page)."""
        entries: list[Entry] = []
        token = ""
        while True:
            page = self.list_page(table, prefix, 0, token, keys_only, timeout=timeout)
            entries.extend(page.entries)
            if not page.next_page_token:
                return entries
            token = page.next_page_token

    @operation(_S, "batchGet")
    def batch_get(self, table: str, keys: Iterable[str], *, timeout: float | None = None) -> BatchGot:
        """Reads many keys: ``(found entries in request order, missing keys)``."""
        return self._call(_batch_get(table, keys), timeout)

    @operation(_S, "increment")
    def increment(
        self,
        table: str,
        key: str,
        delta: int = 1,
        *,
        ttl_seconds: float | None = None,
        timeout: float | None = None,
    ) -> int:
        """Adds ``delta`` (negative subtracts) to the counter under ``key`` atomically and
        returns its new value; an absent or expired key counts from 0.

        A counter is stored as the decimal text of a 64-bit signed integer, so :meth:`get`
        reads it as e.g. ``b"42"``. NOT_A_COUNTER (:class:`~exoflow.NotACounterError`) when the
        key holds anything else, COUNTER_OVERFLOW (:class:`~exoflow.CounterOverflowError`) past
        the 64-bit range; either way nothing is written. ``ttl_seconds``: the time to live of a
        counter this call creates; an existing counter keeps its expiry (a fixed window).

        Repeating an increment that took effect would count it twice, so only THROTTLED (the
        proxy wrote nothing) is retried; any other failure, retryable or not, is raised as the
        proxy gave it.
        """
        return self._call(_increment(table, key, delta, ttl_seconds), timeout).value

    @operation(_S, "increment")
    def increment_versioned(
        self,
        table: str,
        key: str,
        delta: int = 1,
        *,
        ttl_seconds: float | None = None,
        timeout: float | None = None,
    ) -> Incremented:
        """:meth:`increment`, returning the counter's new value and its entry's version."""
        return self._call(_increment(table, key, delta, ttl_seconds), timeout)

    # ``builtins.list``: in the class, ``list`` is the method above.
    @operation(_S, "writeBatch")
    def write_batch(self, table: str, writes: Sequence[Write], *, timeout: float | None = None) -> builtins.list[str]:
        """Writes several keys of ``table`` all or none (the backend's ``ATOMIC_BATCH``): every
        :meth:`Write.put <exoflow.Write.put>` and :meth:`Write.delete <exoflow.Write.delete>`
        applies, or none does. Returns one version per write, in order: the new version of a
        put, ``""`` for a delete.

        A failed condition raises CONDITION_FAILED (:class:`~exoflow.ConditionFailedError`)
        whose ``field`` names the write (``"writes[1]"``), and nothing is written. An empty
        batch, a key named twice (``field="writes[i].key"``), a delete with a put's fields, or
        more than ``describe().limits.max_batch_writes`` writes raise INVALID_ARGUMENT; values
        over ``max_batch_bytes`` in all raise VALUE_TOO_LARGE; a backend without
        ``ATOMIC_BATCH`` raises UNSUPPORTED. Retried as a put is: a batch resent after a lost
        answer may fail its own conditions.
        """
        return self._call(_write_batch(table, writes), timeout)


class AsyncKvClient(AsyncClient):
    """The asyncio twin of :class:`KvClient`."""

    ENDPOINT_ENV = EKV_ENDPOINT_ENV
    DEFAULT_ENDPOINT = DEFAULT_EKV_ENDPOINT

    @operation(_S, "describe")
    async def describe(self, *, timeout: float | None = None) -> KvBackend:
        """The backend's name, capabilities and limits."""
        return await self._call(_describe(), timeout)

    @operation(_S, "openapi")
    async def openapi(self, *, timeout: float | None = None) -> dict[str, Any]:
        """The proxy's OpenAPI document, with this backend's limits."""
        return await self._call(_openapi(), timeout)

    @operation(_S, "createTable")
    async def create_table(self, name: str, *, timeout: float | None = None) -> bool:
        """Creates a table (idempotent); whether it was created now."""
        return await self._call(_create_table(name), timeout)

    @operation(_S, "deleteTable")
    async def delete_table(self, name: str, *, timeout: float | None = None) -> None:
        """Deletes a table and its keys."""
        await self._call(_delete_table(name), timeout)

    @operation(_S, "listTables")
    async def list_tables(self, *, timeout: float | None = None) -> list[str]:
        """Every table name."""
        return await self._call(_list_tables(), timeout)

    @operation(_S, "getEntry")
    async def get(self, table: str, key: str, *, timeout: float | None = None) -> Entry:
        """Reads a key: KEY_NOT_FOUND for a missing or expired one."""
        return await self._call(_get(table, key), timeout)

    @operation(_S, "putEntry")
    async def put(
        self,
        table: str,
        key: str,
        value: Body,
        *,
        create_only: bool = False,
        if_version: str | None = None,
        ttl_seconds: float | None = None,
        timeout: float | None = None,
    ) -> str:
        """Writes a key; returns its new version (see :meth:`KvClient.put`)."""
        return await self._call(_put(table, key, value, create_only, if_version, ttl_seconds), timeout)

    @operation(_S, "deleteEntry")
    async def delete(
        self, table: str, key: str, *, if_version: str | None = None, timeout: float | None = None
    ) -> bool:
        """Deletes a key, optionally only at ``if_version``; whether it existed."""
        return await self._call(_delete(table, key, if_version), timeout)

    @operation(_S, "listEntries")
    async def list_page(
        self,
        table: str,
        prefix: str = "",
        page_size: int = 0,
        page_token: str = "",
        keys_only: bool = False,
        *,
        timeout: float | None = None,
    ) -> EntryPage:
        """One page of entries with ``prefix``, in key order."""
        return await self._call(_list_page(table, prefix, page_size, page_token, keys_only), timeout)

    async def list(
        self, table: str, prefix: str = "", *, keys_only: bool = False, timeout: float | None = None
    ) -> list[Entry]:
        """Every entry with ``prefix``, following pages."""
        entries: list[Entry] = []
        token = ""
        while True:
            page = await self.list_page(table, prefix, 0, token, keys_only, timeout=timeout)
            entries.extend(page.entries)
            if not page.next_page_token:
                return entries
            token = page.next_page_token

    @operation(_S, "batchGet")
    async def batch_get(self, table: str, keys: Iterable[str], *, timeout: float | None = None) -> BatchGot:
        """Reads many keys: ``(found entries in request order, missing keys)``."""
        return await self._call(_batch_get(table, keys), timeout)

    @operation(_S, "increment")
    async def increment(
        self,
        table: str,
        key: str,
        delta: int = 1,
        *,
        ttl_seconds: float | None = None,
        timeout: float | None = None,
    ) -> int:
        """Adds ``delta`` to a counter atomically; its new value (see :meth:`KvClient.increment`:
        only THROTTLED is retried)."""
        return (await self._call(_increment(table, key, delta, ttl_seconds), timeout)).value

    @operation(_S, "increment")
    async def increment_versioned(
        self,
        table: str,
        key: str,
        delta: int = 1,
        *,
        ttl_seconds: float | None = None,
        timeout: float | None = None,
    ) -> Incremented:
        """:meth:`increment`, returning the counter's new value and its entry's version."""
        return await self._call(_increment(table, key, delta, ttl_seconds), timeout)

    @operation(_S, "writeBatch")
    async def write_batch(
        self, table: str, writes: Sequence[Write], *, timeout: float | None = None
    ) -> builtins.list[str]:
        """Writes several keys of ``table`` all or none; one version per write, ``""`` for a
        delete (see :meth:`KvClient.write_batch`)."""
        return await self._call(_write_batch(table, writes), timeout)


__all__ = ["DEFAULT_EKV_ENDPOINT", "EKV_ENDPOINT_ENV", "AsyncKvClient", "KvClient"]
