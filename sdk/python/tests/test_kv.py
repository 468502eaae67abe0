"""KvClient and AsyncKvClient against the ekv proxy `exo up` runs."""

from __future__ import annotations

import asyncio
import time

import pytest

import exoflow
from exoflow import Reason

pytestmark = pytest.mark.proxy


def test_a_table_from_creation_to_deletion(ekv: str, name: str) -> None:
    kv = exoflow.KvClient(ekv)
    backend = kv.describe()
    assert backend.backend
    assert "COMPARE_AND_SET" in backend.capabilities
    assert backend.limits.max_value_bytes > 0
    assert kv.openapi()["info"]["title"] == "ExoFlow ekv API"
    assert kv.create_table(name)
    assert not kv.create_table(name)
    assert name in kv.list_tables()

    value = b"\x00\x01binary\xff"
    v1 = kv.put(name, "user/1", value)
    entry = kv.get(name, "user/1")
    assert (entry.key, entry.value, entry.version, entry.expires_at_ms) == ("user/1", value, v1, 0)

    with pytest.raises(exoflow.ConditionFailedError) as taken:
        kv.put(name, "user/1", b"other", create_only=True)
    assert taken.value.reason is Reason.CONDITION_FAILED
    v2 = kv.put(name, "user/1", "text value", if_version=v1)
    assert v2 != v1
    assert kv.get(name, "user/1").value == b"text value"
    with pytest.raises(exoflow.ConditionFailedError):
        kv.put(name, "user/1", b"stale", if_version=v1)
    with pytest.raises(exoflow.ConditionFailedError):
        kv.delete(name, "user/1", if_version=v1)
    assert kv.delete(name, "user/1", if_version=v2)
    assert not kv.delete(name, "user/1")
    with pytest.raises(exoflow.NotFoundError) as missing:
        kv.get(name, "user/1")
    assert missing.value.reason is Reason.KEY_NOT_FOUND

    kv.delete_table(name)
    with pytest.raises(exoflow.NotFoundError) as gone:
        kv.get(name, "user/1")
    assert gone.value.reason is Reason.TABLE_NOT_FOUND


def test_time_to_live(ekv: str, name: str) -> None:
    kv = exoflow.KvClient(ekv)
    kv.create_table(name)
    before = int(time.time() * 1000)
    kv.put(name, "login-token", b"s", ttl_seconds=1)
    entry = kv.get(name, "login-token")
    assert before + 500 <= entry.expires_at_ms <= before + 3000
    time.sleep(2.1)
    with pytest.raises(exoflow.NotFoundError):
        kv.get(name, "login-token")
    kv.delete_table(name)


def test_listing_and_batch_reads(ekv: str, name: str) -> None:
    kv = exoflow.KvClient(ekv)
    kv.create_table(name)
    keys = ["a/1", "a/2", "a/3", "b/1", "ü/ñ key", "..", "c/../d", "e/./f", "%2F"]
    for key in keys:
        kv.put(name, key, key.encode())
    assert [e.key for e in kv.list(name)] == sorted(keys, key=str.encode)
    for key in keys:
        assert kv.get(name, key).value == key.encode()
    assert [e.key for e in kv.list(name, prefix="a/")] == ["a/1", "a/2", "a/3"]
    keys_only = kv.list(name, prefix="a/", keys_only=True)
    assert all(e.value == b"" and e.version for e in keys_only)
    page = kv.list_page(name, prefix="a/", page_size=2)
    assert [e.key for e in page.entries] == ["a/1", "a/2"]
    assert page.next_page_token
    rest = kv.list_page(name, prefix="a/", page_size=2, page_token=page.next_page_token)
    assert [e.key for e in rest.entries] == ["a/3"]
    assert not rest.next_page_token
    got = kv.batch_get(name, ["b/1", "nope", "ü/ñ key"])
    assert [e.key for e in got.entries] == ["b/1", "ü/ñ key"]
    assert got.entries[1].value == "ü/ñ key".encode()
    assert got.missing == ["nope"]
    kv.delete_table(name)


def test_the_asyncio_client(ekv: str, name: str) -> None:
    async def main() -> None:
        async with exoflow.AsyncKvClient(ekv) as kv:
            assert (await kv.describe()).backend
            assert await kv.create_table(name)
            assert name in await kv.list_tables()
            versions = await asyncio.gather(*(kv.put(name, f"k{i:02}", f"v{i}") for i in range(20)))
            assert len(set(versions)) == 20
            assert (await kv.get(name, "k07")).value == b"v7"
            with pytest.raises(exoflow.ConditionFailedError):
                await kv.put(name, "k07", b"x", create_only=True)
            await kv.put(name, "k07", b"new", if_version=versions[7])
            assert len(await kv.list(name, prefix="k0")) == 10
            assert len((await kv.list_page(name, page_size=5)).entries) == 5
            got = await kv.batch_get(name, ["k01", "zz"])
            assert [e.key for e in got.entries] == ["k01"]
            assert got.missing == ["zz"]
            assert await kv.delete(name, "k01")
            await kv.delete_table(name)
            with pytest.raises(exoflow.NotFoundError):
                await kv.get(name, "k02")

    asyncio.run(main())
