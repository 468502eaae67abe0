"""ObjectClient and AsyncObjectClient against the eos proxy `exo up` runs."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

import exoflow
from exoflow import ByteRange, Reason

pytestmark = pytest.mark.proxy

DATA = bytes(range(256)) * 4096  # 1 MiB


@pytest.fixture
def bucket(eos: str, name: str) -> Iterator[str]:
    objects = exoflow.ObjectClient(eos)
    assert objects.create_bucket(name)
    yield name
    for info in objects.list(name).objects:
        objects.delete(name, info.key)
    objects.delete_bucket(name)


def test_describe_and_buckets(eos: str, name: str) -> None:
    objects = exoflow.ObjectClient(eos)
    backend = objects.describe()
    assert backend.backend
    assert "RANGE_READ" in backend.capabilities
    assert objects.openapi()["info"]["title"] == "ExoFlow eos API"
    assert objects.create_bucket(name)
    assert not objects.create_bucket(name)
    assert name in objects.list_buckets()
    objects.put(name, "k", b"x")
    with pytest.raises(exoflow.AlreadyExistsError) as caught:
        objects.delete_bucket(name)
    assert caught.value.reason is Reason.NOT_EMPTY
    objects.delete(name, "k")
    objects.delete_bucket(name)
    assert name not in objects.list_buckets()


def test_put_head_get_with_metadata_and_ranges(eos: str, bucket: str) -> None:
    objects = exoflow.ObjectClient(eos)
    info = objects.put(bucket, "docs/a.bin", DATA, content_type="application/x-test", metadata={"Owner": "ops"})
    assert (info.size, info.key, info.bucket) == (len(DATA), "docs/a.bin", bucket)
    assert info.etag
    head = objects.head(bucket, "docs/a.bin")
    assert (head.size, head.etag, head.content_type) == (len(DATA), info.etag, "application/x-test")
    assert head.metadata == {"owner": "ops"}
    assert head.last_modified_ms // 1000 == info.last_modified_ms // 1000

    header, body = objects.get_bytes(bucket, "docs/a.bin")
    assert body == DATA
    assert (header.offset, header.length, header.info.size, header.info.etag) == (0, len(DATA), len(DATA), info.etag)
    assert header.info.metadata == {"owner": "ops"}

    header, part = objects.get_bytes(bucket, "docs/a.bin", range=ByteRange.span(10, 20))
    assert part == DATA[10:20]
    assert (header.offset, header.length, header.info.size) == (10, 10, len(DATA))
    assert objects.get_bytes(bucket, "docs/a.bin", range=ByteRange.from_offset(len(DATA) - 5))[1] == DATA[-5:]
    header, tail = objects.get_bytes(bucket, "docs/a.bin", range=ByteRange.suffix(7))
    assert tail == DATA[-7:]
    assert header.offset == len(DATA) - 7
    with pytest.raises(exoflow.RangeNotSatisfiableError):
        objects.get_bytes(bucket, "docs/a.bin", range=ByteRange.from_offset(len(DATA) + 1))

    with pytest.raises(exoflow.NotModifiedError) as unchanged:
        objects.get(bucket, "docs/a.bin", if_none_match=info.etag)
    assert unchanged.value.reason is Reason.NOT_MODIFIED
    with pytest.raises(exoflow.ConditionFailedError):
        objects.get(bucket, "docs/a.bin", if_match="not-the-etag")
    assert objects.get_bytes(bucket, "docs/a.bin", if_match=info.etag)[1] == DATA

    with pytest.raises(exoflow.NotFoundError) as missing:
        objects.get(bucket, "nothing-here")
    assert missing.value.reason is Reason.OBJECT_NOT_FOUND
    with pytest.raises(exoflow.NotFoundError) as missing_head:
        objects.head(bucket, "nothing-here")
    assert missing_head.value.reason is Reason.OBJECT_NOT_FOUND


def test_conditional_puts_and_deletes(eos: str, bucket: str) -> None:
    objects = exoflow.ObjectClient(eos)
    first = objects.put(bucket, "c", b"v1", create_only=True)
    with pytest.raises(exoflow.ConditionFailedError) as taken:
        objects.put(bucket, "c", b"v2", create_only=True)
    assert taken.value.reason is Reason.CONDITION_FAILED
    second = objects.put(bucket, "c", b"v2", if_match=first.etag)
    assert second.etag != first.etag
    with pytest.raises(exoflow.ConditionFailedError):
        objects.put(bucket, "c", b"v3", if_match=first.etag)
    with pytest.raises(exoflow.ConditionFailedError):
        objects.delete(bucket, "c", if_match=first.etag)
    objects.delete(bucket, "c", if_match=second.etag)
    objects.delete(bucket, "c")  # a missing key deletes fine
    with pytest.raises(exoflow.NotFoundError):
        objects.head(bucket, "c")


def test_keys_with_any_characters_round_trip(eos: str, bucket: str) -> None:
    objects = exoflow.ObjectClient(eos)
    # Dot segments too: an HTTP client removes `.` and `..` from a path unless they are encoded.
    keys = [
        "a b/c?d#e",
        "ünï/cødé.txt",
        "x/y/z",
        "100%",
        "pct%2Fx",
        "plus+and&amp",
        ".",
        "..",
        "a/./b",
        "a/../b",
        "/lead//x/",
    ]
    for key in keys:
        objects.put(bucket, key, key.encode())
    for key in keys:
        assert objects.get_bytes(bucket, key)[1] == key.encode()
        assert objects.head(bucket, key).key == key
    assert sorted(o.key for o in objects.list(bucket).objects) == sorted(keys)


def test_listing_copy_and_batch_delete(eos: str, bucket: str) -> None:
    objects = exoflow.ObjectClient(eos)
    for key in ["logs/1", "logs/2", "logs/old/3", "top"]:
        objects.put(bucket, key, key.encode())
    listing = objects.list(bucket, prefix="logs/", delimiter="/")
    assert [o.key for o in listing.objects] == ["logs/1", "logs/2"]
    assert listing.common_prefixes == ["logs/old/"]
    page = objects.list_page(bucket, page_size=2)
    assert len(page.objects) == 2
    assert page.next_page_token
    rest = objects.list_page(bucket, page_size=2, page_token=page.next_page_token)
    assert [o.key for o in page.objects + rest.objects] == ["logs/1", "logs/2", "logs/old/3", "top"]

    copied = objects.copy(bucket, "top", bucket, "copy-of-top")
    assert copied.key == "copy-of-top"
    assert objects.get_bytes(bucket, "copy-of-top")[1] == b"top"
    with pytest.raises(exoflow.ConditionFailedError):
        objects.copy(bucket, "top", bucket, "copy-of-top", create_only=True)

    results = objects.delete_batch(bucket, ["logs/1", "logs/2", "never-was"])
    assert [r.key for r in results] == ["logs/1", "logs/2", "never-was"]
    assert all(r.error_reason is None for r in results)
    assert [o.key for o in objects.list(bucket, prefix="logs/").objects] == ["logs/old/3"]


def test_presigned_urls_work_without_the_token(eos: str, bucket: str) -> None:
    objects = exoflow.ObjectClient(eos)
    put_url = objects.presign(bucket, "shared/file.bin", "PUT", expires_in=60)
    assert put_url.url
    assert put_url.expires_at_ms > 0
    stored = objects.put_presigned(put_url, DATA[:1000])
    assert stored is not None
    assert stored.size == 1000
    get_url = objects.presign(bucket, "shared/file.bin", expires_in=60)
    with objects.get_presigned(get_url) as download:
        assert download.read() == DATA[:1000]
    # Any HTTP client can use it.
    assert httpx.get(get_url.url, headers=get_url.headers).content == DATA[:1000]
    # A URL for GET does not allow PUT.
    with pytest.raises(exoflow.PermissionDeniedError):
        objects.put_presigned(get_url.url, b"x")


def test_files_and_streams_in_and_out(eos: str, bucket: str, tmp_path: Path) -> None:
    objects = exoflow.ObjectClient(eos)
    source = tmp_path / "in.bin"
    source.write_bytes(DATA * 3)
    info = objects.put_file(bucket, "file", source, content_type="application/octet-stream")
    assert info.size == 3 * len(DATA)
    target = tmp_path / "out.bin"
    header = objects.get_to_file(bucket, "file", target)
    assert header.length == 3 * len(DATA)
    assert target.read_bytes() == DATA * 3

    with source.open("rb") as f:
        f.seek(100)
        assert objects.put(bucket, "from-offset", f).size == 3 * len(DATA) - 100

    def chunks() -> Iterator[bytes]:
        for i in range(5):
            yield bytes([i]) * 100_000

    assert objects.put(bucket, "generated", chunks()).size == 500_000
    sink = io.BytesIO()
    objects.get_to(bucket, "generated", sink)
    assert sink.getvalue() == b"".join(chunks())

    with objects.get(bucket, "generated") as download:
        first = next(iter(download))
        assert first
    # Closed early: the connection is released and the client goes on.
    assert objects.head(bucket, "generated").size == 500_000


def test_a_source_that_fails_midway_stores_nothing(eos: str, bucket: str) -> None:
    objects = exoflow.ObjectClient(eos)

    def failing() -> Iterator[bytes]:
        yield b"a" * 300_000
        raise OSError("disk went away")

    with pytest.raises(exoflow.InvalidArgumentError, match=r"nothing stored.*disk went away"):
        objects.put(bucket, "partial", failing())
    with pytest.raises(exoflow.InvalidArgumentError, match="nothing stored"):
        objects.put(bucket, "partial", failing(), content_length=1_000_000)
    with pytest.raises(exoflow.NotFoundError):
        objects.head(bucket, "partial")
    # The client is usable afterwards.
    assert objects.put(bucket, "after", b"ok").size == 2

    with pytest.raises(exoflow.ExoError):
        objects.put(bucket, "short", [b"abc"], content_length=10)
    with pytest.raises(exoflow.NotFoundError):
        objects.head(bucket, "short")


def test_large_objects_pass_in_bounded_memory(eos: str, bucket: str) -> None:
    size = 32 * 1024 * 1024
    chunk = os.urandom(256 * 1024)
    digest = hashlib.sha256()

    def generate() -> Iterator[bytes]:
        for _ in range(size // len(chunk)):
            digest.update(chunk)
            yield chunk

    objects = exoflow.ObjectClient(eos)
    tracemalloc.start()
    try:
        assert objects.put(bucket, "big", generate(), content_length=size).size == size
        _, upload_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        received = hashlib.sha256()
        count = 0
        with objects.get(bucket, "big") as download:
            for part in download:
                received.update(part)
                count += len(part)
        _, download_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == size
    assert received.digest() == digest.digest()
    assert upload_peak < 8 * 1024 * 1024, f"upload peak {upload_peak}"
    assert download_peak < 8 * 1024 * 1024, f"download peak {download_peak}"


def test_the_asyncio_client(eos: str, bucket: str, tmp_path: Path) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(4):
            yield bytes([i]) * 70_000
            await asyncio.sleep(0)

    async def failing() -> AsyncIterator[bytes]:
        yield b"x" * 1000
        raise ValueError("producer broke")

    async def main() -> None:
        async with exoflow.AsyncObjectClient(eos) as objects:
            assert (await objects.describe()).backend
            assert bucket in await objects.list_buckets()
            info = await objects.put(bucket, "a/async", chunks(), metadata={"k": "v"})
            assert info.size == 280_000
            download = await objects.get(bucket, "a/async", range=ByteRange.span(69_999, 70_001))
            assert download.header.offset == 69_999
            assert await download.read() == b"\x00\x01"
            async with objects.get(bucket, "a/async") as whole:
                got = b"".join([c async for c in whole])
            assert got == b"".join(bytes([i]) * 70_000 for i in range(4))
            header, body = await objects.get_bytes(bucket, "a/async")
            assert header.info.metadata == {"k": "v"}
            assert len(body) == 280_000
            sink = io.BytesIO()
            await objects.get_to(bucket, "a/async", sink)
            assert sink.getvalue() == body
            path = tmp_path / "async.bin"
            path.write_bytes(DATA)
            assert (await objects.put_file(bucket, "a/file", path)).size == len(DATA)
            with path.open("rb") as f:
                assert (await objects.put(bucket, "a/fileobj", f)).size == len(DATA)
            await objects.get_to_file(bucket, "a/file", tmp_path / "back.bin")
            assert (tmp_path / "back.bin").read_bytes() == DATA
            assert (await objects.head(bucket, "a/file")).size == len(DATA)
            with pytest.raises(exoflow.InvalidArgumentError, match="producer broke"):
                await objects.put(bucket, "a/broken", failing())
            with pytest.raises(exoflow.NotFoundError):
                await objects.head(bucket, "a/broken")
            listing = await objects.list(bucket, prefix="a/")
            assert [o.key for o in listing.objects] == ["a/async", "a/file", "a/fileobj"]
            assert len((await objects.list_page(bucket, prefix="a/", page_size=1)).objects) == 1
            await objects.copy(bucket, "a/file", bucket, "b/copy")
            presigned = await objects.presign(bucket, "b/copy")
            async with objects.get_presigned(presigned) as shared:
                assert await shared.read() == DATA
            put_url = await objects.presign(bucket, "b/put", "PUT")
            assert await objects.put_presigned(put_url, b"via url") is not None
            await objects.delete(bucket, "b/put")
            results = await objects.delete_batch(bucket, ["a/async", "a/file", "a/fileobj", "b/copy"])
            assert all(r.error_reason is None for r in results)
            with pytest.raises(exoflow.NotFoundError):
                await objects.get(bucket, "b/nothing")

    asyncio.run(main())
