"""Key-value: :class:`KvClient` and :class:`AsyncKvClient`, the app's handles on an ekv proxy."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import httpx

from ._client import AsyncClient, Call, SyncClient
from ._contract import operation, path
from ._errors import Reason, error
from ._models import (
    BatchGot,
    Body,
    Entry,
    EntryPage,
    KvBackend,
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
        body["ttlSeconds"] = int(ttl_seconds)
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


class KvClient(SyncClient):
    """A blocking client of the ekv key-value proxy (``$EXO_EKV_ENDPOINT``, else
    ``http://127.0.0.1:7403``).

    >>> kv = KvClient()
    >>> kv.create_table("carts")
    >>> version = kv.put("carts", "u1", b"token", ttl_seconds=3600)
    >>> kv.put("carts", "u1", b"token2", if_version=version)  # compare-and-set
    >>> kv.get("carts", "u1").value
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
        CONDITION_FAILED otherwise. ``ttl_seconds``: expire after that many whole seconds.
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


__all__ = ["DEFAULT_EKV_ENDPOINT", "EKV_ENDPOINT_ENV", "AsyncKvClient", "KvClient"]
