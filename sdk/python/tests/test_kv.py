"""KvClient and AsyncKvClient against the ekv proxy `exo up` runs."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

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


INT64_MAX = 2**63 - 1


def test_counters(ekv: str, name: str) -> None:
    kv = exoflow.KvClient(ekv)
    assert "INCREMENT" in kv.describe().capabilities
    kv.create_table(name)
    assert kv.increment(name, "hits") == 1  # an absent key counts from 0
    assert kv.increment(name, "hits", 41) == 42
    assert kv.increment(name, "hits", -50) == -8
    assert kv.increment(name, "hits", 0) == -8
    assert kv.get(name, "hits").value == b"-8"  # the decimal text of the counter
    counted = kv.increment_versioned(name, "hits", 10)
    assert counted.value == 2
    assert counted.version == kv.get(name, "hits").version
    assert kv.increment(name, "fresh", 0) == 0  # created at 0
    assert kv.get(name, "fresh").value == b"0"
    kv.put(name, "typed", b"17")  # a counter written by anyone as decimal text
    assert kv.increment(name, "typed", 3) == 20

    version = kv.put(name, "name", b"abc")
    with pytest.raises(exoflow.NotACounterError) as not_a_counter:
        kv.increment(name, "name")
    assert not_a_counter.value.reason is Reason.NOT_A_COUNTER
    assert not_a_counter.value.status == 409
    assert not not_a_counter.value.retryable
    unchanged = kv.get(name, "name")
    assert (unchanged.value, unchanged.version) == (b"abc", version)

    # i64::MAX round-trips digit for digit, and one more overflows without a write.
    assert kv.increment(name, "big", INT64_MAX) == INT64_MAX
    assert kv.get(name, "big").value == str(INT64_MAX).encode()
    version = kv.get(name, "big").version
    with pytest.raises(exoflow.CounterOverflowError) as overflow:
        kv.increment(name, "big")
    assert overflow.value.reason is Reason.COUNTER_OVERFLOW
    assert overflow.value.status == 409
    assert (kv.get(name, "big").value, kv.get(name, "big").version) == (str(INT64_MAX).encode(), version)
    assert kv.increment(name, "big", -INT64_MAX) == 0
    assert kv.increment(name, "small", -INT64_MAX - 1) == -INT64_MAX - 1
    with pytest.raises(exoflow.CounterOverflowError):
        kv.increment(name, "small", -1)

    with pytest.raises(exoflow.NotFoundError) as no_table:
        kv.increment(name + "-none", "hits")
    assert no_table.value.reason is Reason.TABLE_NOT_FOUND
    kv.delete_table(name)


def test_a_counters_time_to_live_is_set_when_it_is_created(ekv: str, name: str) -> None:
    kv = exoflow.KvClient(ekv)
    kv.create_table(name)
    before = int(time.time() * 1000)
    assert kv.increment(name, "window", ttl_seconds=1) == 1
    expires = kv.get(name, "window").expires_at_ms
    assert before + 500 <= expires <= before + 3000
    # An existing counter keeps its expiry, whatever the next increment says.
    assert kv.increment(name, "window", ttl_seconds=60) == 2
    assert kv.increment(name, "window") == 3
    assert kv.get(name, "window").expires_at_ms == expires
    time.sleep(2.1)
    # Expired: the window is over and the count starts again.
    assert kv.increment(name, "window") == 1
    assert kv.get(name, "window").expires_at_ms == 0
    kv.delete_table(name)


def test_concurrent_increments_count_exactly(ekv: str, name: str) -> None:
    async def main() -> None:
        async with exoflow.AsyncKvClient(ekv) as kv:
            await kv.create_table(name)

            async def count(task: int) -> list[int]:
                return [await kv.increment(name, "total", task + 1) for _ in range(10)]

            seen = await asyncio.gather(*(count(task) for task in range(8)))
            # Each task adds its own delta 10 times: 10 * (1 + ... + 8).
            assert (await kv.get(name, "total")).value == b"360"
            values = [v for values in seen for v in values]
            assert len(set(values)) == 80, "every increment saw a value of its own"
            assert max(values) == 360
            counted = await kv.increment_versioned(name, "total", -360)
            assert counted.value == 0
            assert counted.version == (await kv.get(name, "total")).version
            await kv.delete_table(name)

    asyncio.run(main())
    # The same from threads, with the blocking client.
    kv = exoflow.KvClient(ekv)
    kv.create_table(name)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: [kv.increment(name, "threads") for _ in range(10)], range(8)))
    assert kv.increment(name, "threads", 0) == 80
    kv.delete_table(name)


def test_a_write_batch_applies_its_puts_and_deletes_and_returns_their_versions(ekv: str, name: str) -> None:
    kv = exoflow.KvClient(ekv)
    backend = kv.describe()
    assert "ATOMIC_BATCH" in backend.capabilities
    assert backend.limits.max_batch_writes > 0
    assert backend.limits.max_batch_bytes > 0
    kv.create_table(name)
    old = kv.put(name, "cart/old", b"stale")
    kept = kv.put(name, "cart/kept", b"1")

    versions = kv.write_batch(
        name,
        [
            exoflow.Write.put("cart/new", b"\x00\xffbytes"),
            exoflow.Write.delete("cart/old", if_version=old),
            exoflow.Write.put("cart/kept", "2", if_version=kept),
            exoflow.Write.put("cart/created", b"c", create_only=True),
            exoflow.Write.delete("cart/never-there"),  # deleting an absent key is no failure
        ],
    )
    assert len(versions) == 5
    assert versions[1] == versions[4] == ""
    for key, version, value in [
        ("cart/new", versions[0], b"\x00\xffbytes"),
        ("cart/kept", versions[2], b"2"),
        ("cart/created", versions[3], b"c"),
    ]:
        entry = kv.get(name, key)
        assert (entry.value, entry.version, entry.expires_at_ms) == (value, version, 0)
    assert versions[2] != kept
    with pytest.raises(exoflow.NotFoundError):
        kv.get(name, "cart/old")
    # A batch of deletes answers an empty version for each.
    assert kv.write_batch(name, [exoflow.Write.delete("cart/new"), exoflow.Write.delete("cart/created")]) == ["", ""]
    assert [e.key for e in kv.list(name)] == ["cart/kept"]
    kv.delete_table(name)


def test_a_write_batch_is_all_or_nothing(ekv: str, name: str) -> None:
    kv = exoflow.KvClient(ekv)
    kv.create_table(name)
    first = kv.put(name, "balance/a", b"100")
    current = kv.put(name, "balance/a", b"90", if_version=first)
    kv.put(name, "balance/b", b"10")

    # The middle write's version is stale: the call fails naming it, and neither the write
    # before it nor the one after it is applied.
    with pytest.raises(exoflow.ConditionFailedError) as stale:
        kv.write_batch(
            name,
            [
                exoflow.Write.put("audit/1", b"moved 10"),
                exoflow.Write.put("balance/a", b"80", if_version=first),
                exoflow.Write.delete("balance/b"),
            ],
        )
    assert stale.value.reason is Reason.CONDITION_FAILED
    assert stale.value.status == 412
    assert stale.value.field == "writes[1]"
    assert not stale.value.retryable
    with pytest.raises(exoflow.NotFoundError):
        kv.get(name, "audit/1")
    assert (kv.get(name, "balance/a").value, kv.get(name, "balance/a").version) == (b"90", current)
    assert kv.get(name, "balance/b").value == b"10"

    # A create-only put of a key that exists fails the same way.
    with pytest.raises(exoflow.ConditionFailedError) as taken:
        kv.write_batch(
            name, [exoflow.Write.delete("balance/b"), exoflow.Write.put("balance/a", b"0", create_only=True)]
        )
    assert taken.value.field == "writes[1]"
    assert kv.get(name, "balance/b").value == b"10"

    # With the current version the same batch applies whole.
    versions = kv.write_batch(
        name,
        [
            exoflow.Write.put("audit/1", b"moved 10"),
            exoflow.Write.put("balance/a", b"80", if_version=current),
            exoflow.Write.delete("balance/b"),
        ],
    )
    assert versions[2] == ""
    assert kv.get(name, "balance/a").version == versions[1]
    assert kv.batch_get(name, ["audit/1", "balance/a", "balance/b"]).missing == ["balance/b"]
    kv.delete_table(name)


def test_a_write_batch_that_is_not_valid_is_refused_whole(ekv: str, name: str) -> None:
    kv = exoflow.KvClient(ekv)
    limits = kv.describe().limits
    kv.create_table(name)

    with pytest.raises(exoflow.InvalidArgumentError) as twice:
        kv.write_batch(
            name, [exoflow.Write.put("k", b"1"), exoflow.Write.put("other", b"2"), exoflow.Write.delete("k")]
        )
    assert twice.value.reason is Reason.INVALID_ARGUMENT
    assert twice.value.status == 400
    assert twice.value.field == "writes[2].key"
    assert kv.list(name) == []

    with pytest.raises(exoflow.InvalidArgumentError) as empty:
        kv.write_batch(name, [])
    assert empty.value.field == "writes"
    with pytest.raises(exoflow.InvalidArgumentError) as too_many:
        kv.write_batch(name, [exoflow.Write.put(f"k{i}", b"") for i in range(limits.max_batch_writes + 1)])
    assert too_many.value.field == "writes"
    # Every value within max_value_bytes, their total over max_batch_bytes.
    count = limits.max_batch_bytes // limits.max_value_bytes + 1
    assert count <= limits.max_batch_writes
    with pytest.raises(exoflow.TooLargeError) as too_large:
        kv.write_batch(name, [exoflow.Write.put(f"big{i}", bytes(limits.max_value_bytes)) for i in range(count)])
    assert too_large.value.reason is Reason.VALUE_TOO_LARGE
    assert too_large.value.status == 413
    assert kv.list(name, keys_only=True) == []

    # Refused before anything is sent: two conditions, or a delete carrying a put's fields.
    with pytest.raises(exoflow.InvalidArgumentError) as both:
        kv.write_batch(
            name, [exoflow.Write.put("a", b""), exoflow.Write.put("b", b"", create_only=True, if_version="v")]
        )
    assert (both.value.field, both.value.status) == ("writes[1].condition", 0)
    with pytest.raises(exoflow.InvalidArgumentError) as delete_value:
        kv.write_batch(name, [exoflow.Write("a", "delete", b"value")])
    assert (delete_value.value.field, delete_value.value.status) == ("writes[0]", 0)
    with pytest.raises(exoflow.InvalidArgumentError) as negative:
        kv.write_batch(name, [exoflow.Write.put("a", b"", ttl_seconds=-1)])
    assert negative.value.field == "writes[0].ttl_seconds"

    with pytest.raises(exoflow.NotFoundError) as no_table:
        kv.write_batch(name + "-none", [exoflow.Write.put("k", b"1")])
    assert no_table.value.reason is Reason.TABLE_NOT_FOUND
    kv.delete_table(name)


def test_a_put_in_a_write_batch_takes_a_time_to_live(ekv: str, name: str) -> None:
    kv = exoflow.KvClient(ekv)
    kv.create_table(name)
    before = int(time.time() * 1000)
    kv.write_batch(
        name,
        [
            exoflow.Write.put("brief", b"s", ttl_seconds=1),
            exoflow.Write.put("lasting", b"l"),
            # A fraction of a second is rounded up to a whole one, not down to "never".
            exoflow.Write.put("fraction", b"f", ttl_seconds=0.5),
        ],
    )
    brief = kv.get(name, "brief").expires_at_ms
    assert before + 500 <= brief <= before + 3000
    fraction = kv.get(name, "fraction").expires_at_ms
    assert before + 500 <= fraction <= before + 3000
    assert kv.get(name, "lasting").expires_at_ms == 0
    time.sleep(2.1)
    assert kv.batch_get(name, ["brief", "lasting", "fraction"]).missing == ["brief", "fraction"]
    kv.delete_table(name)


def test_the_asyncio_client_writes_batches(ekv: str, name: str) -> None:
    async def main() -> None:
        async with exoflow.AsyncKvClient(ekv) as kv:
            await kv.create_table(name)
            version = await kv.put(name, "a", b"1")
            versions = await kv.write_batch(
                name, [exoflow.Write.put("a", b"2", if_version=version), exoflow.Write.put("b", "text", ttl_seconds=60)]
            )
            assert [(await kv.get(name, k)).version for k in ("a", "b")] == versions
            with pytest.raises(exoflow.ConditionFailedError) as stale:
                await kv.write_batch(name, [exoflow.Write.delete("b"), exoflow.Write.delete("a", if_version=version)])
            assert stale.value.field == "writes[1]"
            assert (await kv.get(name, "b")).value == b"text"
            assert await kv.write_batch(name, [exoflow.Write.delete("a", if_version=versions[0])]) == [""]
            await kv.delete_table(name)

    asyncio.run(main())
