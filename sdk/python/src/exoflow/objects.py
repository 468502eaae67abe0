"""Objects: :class:`ObjectClient` and :class:`AsyncObjectClient`, the app's handles on an eos
proxy.

Uploads and downloads stream in chunks, so objects of any size pass in bounded memory: an
upload reads its source (bytes, a binary file object, an iterable of chunks; async: an async
iterable too) :data:`UPLOAD_CHUNK` bytes at a time, and a download yields the bytes as they
arrive. A source that fails midway cuts the upload and nothing is stored. Uploads and downloads
are never retried; every other call follows the client's :class:`~exoflow.RetryPolicy`.
"""

from __future__ import annotations

import asyncio
import email.utils
import inspect
import io
import os
import stat
from collections.abc import AsyncIterable, AsyncIterator, Generator, Iterable, Iterator, Mapping
from types import TracebackType
from typing import IO, Any, Literal, Protocol

import httpx

from ._client import AsyncClient, Call, SyncClient, ignore
from ._contract import operation, path
from ._errors import ExoError, Reason, error
from ._models import (
    ByteRange,
    DeleteResult,
    GetHeader,
    Listing,
    ObjectBackend,
    ObjectInfo,
    ObjectPage,
    Presigned,
    objects_of,
    str_of,
    strings_of,
)
from ._transport import AsyncTransport, Request, SyncTransport, json_body

#: Environment variable naming the eos endpoint.
EOS_ENDPOINT_ENV = "EXO_EOS_ENDPOINT"
#: Where the eos sidecar listens unless told otherwise.
DEFAULT_EOS_ENDPOINT = "http://127.0.0.1:7402"
#: Bytes read from an upload's source at a time.
UPLOAD_CHUNK = 256 * 1024
#: Prefix of the HTTP headers carrying user metadata.
META_PREFIX = "x-exo-meta-"

_S = "eos"


class _Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


class _Writable(Protocol):
    def write(self, data: bytes, /) -> Any: ...


#: What an upload reads: bytes (``str`` as UTF-8), a binary file object, or an iterable of chunks.
Source = bytes | bytearray | memoryview | str | _Readable | Iterable[bytes]
#: What an async upload reads: a :data:`Source`, or an async iterable of chunks.
AsyncSource = Source | AsyncIterable[bytes]


class _SourceFailed(Exception):
    """Reading an upload's source failed with ``error`` (kept here: the HTTP stack re-raises
    what passes through it without its cause)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


def _cancelled(failed: _SourceFailed) -> ExoError:
    return error(
        Reason.INVALID_ARGUMENT,
        f"upload cancelled, nothing stored: reading the source failed: {failed.error!r}",
    )


def _file_chunks(file: _Readable) -> Iterator[bytes]:
    while True:
        chunk = file.read(UPLOAD_CHUNK)
        if not chunk:
            return
        yield bytes(chunk)


class _Counted:
    """Counts the bytes of an upload against the length it announced: a source that gives
    fewer or more fails the upload (nothing is stored) instead of a request the server cuts."""

    def __init__(self, expected: int | None) -> None:
        self.expected = expected
        self.sent = 0

    def add(self, chunk: bytes) -> None:
        self.sent += len(chunk)
        if self.expected is not None and self.sent > self.expected:
            raise _SourceFailed(ValueError(f"the source gave more than the {self.expected} bytes announced"))

    def end(self) -> None:
        if self.expected is not None and self.sent != self.expected:
            raise _SourceFailed(
                ValueError(f"the source ended after {self.sent} of the {self.expected} bytes announced")
            )


def _guarded(chunks: Iterable[bytes], expected: int | None = None) -> Iterator[bytes]:
    """The chunks of a source; a failure of the source is told apart from the transport's."""
    counted = _Counted(expected)
    it = iter(chunks)
    while True:
        try:
            chunk = next(it)
        except StopIteration:
            counted.end()
            return
        except Exception as err:
            raise _SourceFailed(err) from err
        if chunk:
            chunk = bytes(chunk)
            counted.add(chunk)
            yield chunk


async def _aguarded(
    chunks: AsyncIterable[bytes] | Iterable[bytes] | _Readable, expected: int | None = None
) -> AsyncIterator[bytes]:
    """:func:`_guarded` for async uploads: file objects are read in a worker thread."""
    counted = _Counted(expected)
    if isinstance(chunks, AsyncIterable):
        it = chunks.__aiter__()
        while True:
            try:
                chunk = await it.__anext__()
            except StopAsyncIteration:
                break
            except Exception as err:
                raise _SourceFailed(err) from err
            if chunk:
                chunk = bytes(chunk)
                counted.add(chunk)
                yield chunk
    elif hasattr(chunks, "read"):
        file: _Readable = chunks  # type: ignore[assignment]
        while True:
            try:
                chunk = await asyncio.to_thread(file.read, UPLOAD_CHUNK)
            except Exception as err:
                raise _SourceFailed(err) from err
            if not chunk:
                break
            chunk = bytes(chunk)
            counted.add(chunk)
            yield chunk
    else:
        for chunk in _guarded(chunks):
            counted.add(chunk)
            yield chunk
    counted.end()


def _known_length(source: object) -> int | None:
    """The bytes left in a regular file opened for reading, if ``source`` is one."""
    try:
        fd = source.fileno()  # type: ignore[attr-defined]
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            return None
        return max(status.st_size - int(source.tell()), 0)  # type: ignore[attr-defined]
    except (OSError, ValueError, TypeError, AttributeError, io.UnsupportedOperation):
        return None


def _put_headers(
    content_type: str | None,
    metadata: Mapping[str, str] | None,
    create_only: bool,
    if_match: str | None,
    content_length: int | None,
) -> dict[str, str]:
    headers: dict[str, str] = {}
    if content_type:
        headers["content-type"] = content_type
    for name, value in (metadata or {}).items():
        if not _header_safe(name) or not _header_safe(value):
            raise error(
                Reason.INVALID_ARGUMENT,
                f"metadata {name!r} travels in an HTTP header: its name and value must be printable ASCII",
                field="metadata",
            )
        headers[META_PREFIX + name.lower()] = value
    if create_only:
        headers["if-none-match"] = "*"
    if if_match is not None:
        headers["if-match"] = _quoted(if_match)
    if content_length is not None:
        headers["content-length"] = str(content_length)
    return headers


def _header_safe(text: str) -> bool:
    return all(" " <= c <= "~" for c in text)


def _quoted(etag: str) -> str:
    return etag if etag == "*" or etag.startswith(('"', "W/")) else f'"{etag}"'


def _unquoted(etag: str) -> str:
    etag = etag.strip()
    if etag.startswith("W/"):
        etag = etag[2:]
    return etag.strip('"')


def _info_from_headers(bucket: str, key: str, headers: httpx.Headers, size: int) -> ObjectInfo:
    last_modified_ms = 0
    if "last-modified" in headers:
        try:
            last_modified_ms = int(email.utils.parsedate_to_datetime(headers["last-modified"]).timestamp() * 1000)
        except (TypeError, ValueError):
            last_modified_ms = 0
    return ObjectInfo(
        bucket=bucket,
        key=key,
        size=size,
        etag=_unquoted(headers.get("etag", "")),
        content_type=headers.get("content-type", ""),
        metadata={
            name[len(META_PREFIX) :]: value for name, value in headers.items() if name.lower().startswith(META_PREFIX)
        },
        last_modified_ms=last_modified_ms,
    )


def _get_header(bucket: str, key: str, response: httpx.Response) -> GetHeader:
    """The header of a download from its answer's headers (Content-Range for a range)."""
    length_text = response.headers.get("content-length")
    length = int(length_text) if length_text and length_text.isdigit() else -1
    offset, size = 0, length
    content_range = response.headers.get("content-range", "")
    if response.status_code == 206 and content_range.startswith("bytes "):
        span, _, total = content_range[len("bytes ") :].partition("/")
        first, _, last = span.partition("-")
        try:
            offset = int(first)
            length = int(last) - offset + 1
            size = int(total) if total != "*" else -1
        except ValueError as err:
            raise error(Reason.INTERNAL, f"the proxy sent an unreadable Content-Range {content_range!r}") from err
    return GetHeader(info=_info_from_headers(bucket, key, response.headers, size), offset=offset, length=length)


def _get_request(
    bucket: str,
    key: str,
    range: ByteRange | None,
    if_match: str | None,
    if_none_match: str | None,
) -> Request:
    headers = {"accept-encoding": "identity"}
    if range is not None:
        headers["range"] = range.header()
    if if_match is not None:
        headers["if-match"] = _quoted(if_match)
    if if_none_match is not None:
        headers["if-none-match"] = _quoted(if_none_match)
    return Request(
        "GET",
        path(_S, "getObject", bucket=bucket, key=key),
        headers=headers,
        not_found=Reason.OBJECT_NOT_FOUND,
        resource=f"{bucket}/{key}",
        repeatable=False,
    )


def _presigned_request(method: str, presigned: Presigned | str, headers: Mapping[str, str]) -> Request:
    url = presigned.url if isinstance(presigned, Presigned) else presigned
    sent = dict(presigned.headers) if isinstance(presigned, Presigned) else {}
    sent.update(headers)
    return Request(method, "", url=url, headers=sent, not_found=Reason.OBJECT_NOT_FOUND, repeatable=False)


def _presigned_put_info(response: httpx.Response) -> ObjectInfo | None:
    """The stored object, when the URL was the proxy's own (a cloud answers in its own way)."""
    if not response.headers.get("content-type", "").startswith("application/json"):
        return None
    info = json_body(response).get("info")
    return None if info is None else ObjectInfo.from_json(info)


def _ended_early(received: int, header: GetHeader) -> ExoError:
    return error(
        Reason.BACKEND_UNAVAILABLE,
        f"download ended after {received} of {header.length} bytes",
        retryable=True,
        resource=f"{header.info.bucket}/{header.info.key}",
    )


# Unary calls as a request and a decoder, shared by the sync and async clients.


def _describe() -> Call[ObjectBackend]:
    return Request("GET", path(_S, "describe")), lambda r: ObjectBackend.from_json(json_body(r))


def _openapi() -> Call[dict[str, Any]]:
    return Request("GET", path(_S, "openapi")), json_body


def _create_bucket(name: str) -> Call[bool]:
    return (
        Request("POST", path(_S, "createBucket"), json={"name": name}, resource=name),
        lambda r: json_body(r).get("created") is True,
    )


def _delete_bucket(name: str) -> Call[None]:
    return Request("DELETE", path(_S, "deleteBucket", bucket=name), resource=name), ignore


def _list_buckets() -> Call[list[str]]:
    return Request("GET", path(_S, "listBuckets")), lambda r: strings_of(json_body(r).get("names"))


def _head(bucket: str, key: str) -> Call[ObjectInfo]:
    def decode(r: httpx.Response) -> ObjectInfo:
        length = r.headers.get("content-length", "0")
        return _info_from_headers(bucket, key, r.headers, int(length) if length.isdigit() else 0)

    req = Request(
        "HEAD",
        path(_S, "headObject", bucket=bucket, key=key),
        not_found=Reason.OBJECT_NOT_FOUND,
        resource=f"{bucket}/{key}",
    )
    return req, decode


def _delete(bucket: str, key: str, if_match: str | None) -> Call[None]:
    headers = {"if-match": _quoted(if_match)} if if_match is not None else None
    req = Request(
        "DELETE",
        path(_S, "deleteObject", bucket=bucket, key=key),
        headers=headers,
        not_found=Reason.OBJECT_NOT_FOUND,
        resource=f"{bucket}/{key}",
    )
    return req, ignore


def _delete_batch(bucket: str, keys: Iterable[str]) -> Call[list[DeleteResult]]:
    body = {"keys": list(keys)}
    req = Request("POST", path(_S, "deleteObjects", bucket=bucket), json=body, resource=bucket)
    return req, lambda r: [DeleteResult.from_json(d) for d in objects_of(json_body(r).get("results"))]


def _list_page(bucket: str, prefix: str, delimiter: str, page_size: int, page_token: str) -> Call[ObjectPage]:
    params = {
        "prefix": prefix,
        "delimiter": delimiter,
        "pageSize": str(page_size) if page_size else "",
        "pageToken": page_token,
    }

    def decode(r: httpx.Response) -> ObjectPage:
        d = json_body(r)
        return ObjectPage(
            [ObjectInfo.from_json(o) for o in objects_of(d.get("objects"))],
            strings_of(d.get("commonPrefixes")),
            str_of(d.get("nextPageToken")),
        )

    req = Request(
        "GET",
        path(_S, "listObjects", bucket=bucket),
        params={k: v for k, v in params.items() if v},
        resource=bucket,
    )
    return req, decode


def _copy(
    source_bucket: str, source_key: str, bucket: str, key: str, create_only: bool, if_match: str | None
) -> Call[ObjectInfo]:
    body: dict[str, Any] = {"sourceBucket": source_bucket, "sourceKey": source_key, "key": key}
    if create_only:
        body["condition"] = {"createOnly": True}
    elif if_match is not None:
        body["condition"] = {"ifMatch": _unquoted(if_match)}
    req = Request("POST", path(_S, "copyObject", bucket=bucket), json=body, resource=f"{bucket}/{key}")
    return req, lambda r: ObjectInfo.from_json(json_body(r).get("info"))


def _presign(bucket: str, key: str, method: str, expires_in: float) -> Call[Presigned]:
    if method not in ("GET", "PUT"):
        raise error(Reason.INVALID_ARGUMENT, f"a presigned URL allows GET or PUT, not {method!r}", field="method")
    body = {"key": key, "method": method, "expiresInSeconds": int(expires_in)}
    req = Request("POST", path(_S, "presignObject", bucket=bucket), json=body, resource=f"{bucket}/{key}")
    return req, lambda r: Presigned.from_json(json_body(r))


def _upload_request(
    bucket: str,
    key: str,
    content: bytes | Iterator[bytes] | AsyncIterator[bytes],
    headers: dict[str, str],
) -> Request:
    return Request(
        "PUT",
        path(_S, "putObject", bucket=bucket, key=key),
        content=content,
        headers=headers,
        not_found=Reason.BUCKET_NOT_FOUND,
        resource=f"{bucket}/{key}",
        repeatable=False,
    )


def _put_info(response: httpx.Response) -> ObjectInfo:
    return ObjectInfo.from_json(json_body(response).get("info"))


class Download:
    """An object being downloaded: :attr:`header` first, then its bytes as they arrive.

    Iterate it for the chunks, or :meth:`read` them all; close it (``with`` does) to release
    the connection early. A download that ends before :attr:`GetHeader.length` bytes fails with
    a retryable BACKEND_UNAVAILABLE instead of ending quietly.
    """

    def __init__(self, transport: SyncTransport, req: Request, response: httpx.Response, header: GetHeader) -> None:
        self._transport = transport
        self._req = req
        self._response = response
        #: The object and which of its bytes follow.
        self.header = header

    def __iter__(self) -> Iterator[bytes]:
        received = 0
        try:
            for chunk in self._transport.chunks(self._response, self._req):
                received += len(chunk)
                yield chunk
        finally:
            self.close()
        if self.header.length >= 0 and received != self.header.length:
            raise _ended_early(received, self.header)

    def read(self) -> bytes:
        """Every remaining byte, in memory."""
        return b"".join(self)

    def close(self) -> None:
        """Stops the download and frees its connection."""
        self._response.close()

    def __enter__(self) -> Download:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncDownload:
    """The asyncio twin of :class:`Download`: ``await`` it (or ``async with`` it) to start, then
    ``async for`` its chunks."""

    def __init__(self, transport: AsyncTransport, req: Request, bucket: str, key: str, timeout: float | None) -> None:
        self._transport = transport
        self._req = req
        self._where = (bucket, key)
        self._timeout = timeout
        self._response: httpx.Response | None = None
        self._header: GetHeader | None = None

    @property
    def header(self) -> GetHeader:
        """The object and which of its bytes follow (once started)."""
        if self._header is None:
            raise RuntimeError("the download has not started: await it first")
        return self._header

    async def start(self) -> AsyncDownload:
        """Sends the request and reads the answer's headers (once)."""
        if self._response is None:
            self._response = await self._transport.open(self._req, self._timeout)
            self._header = _get_header(*self._where, self._response)
        return self

    def __await__(self) -> Generator[Any, None, AsyncDownload]:
        return self.start().__await__()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        await self.start()
        assert self._response is not None
        received = 0
        try:
            async for chunk in self._transport.chunks(self._response, self._req):
                received += len(chunk)
                yield chunk
        finally:
            await self.aclose()
        if self.header.length >= 0 and received != self.header.length:
            raise _ended_early(received, self.header)

    async def read(self) -> bytes:
        """Every remaining byte, in memory."""
        return b"".join([chunk async for chunk in self])

    async def aclose(self) -> None:
        """Stops the download and frees its connection."""
        if self._response is not None:
            await self._response.aclose()

    async def __aenter__(self) -> AsyncDownload:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def _sync_content(data: Source, content_length: int | None) -> tuple[bytes | Iterator[bytes], int | None]:
    """The body of an upload, and its length when known (given, or a regular file's)."""
    if isinstance(data, str):
        data = data.encode()
    if isinstance(data, (bytes, bytearray, memoryview)):
        body = bytes(data)
        if content_length is not None and content_length != len(body):
            raise error(
                Reason.INVALID_ARGUMENT,
                f"content_length {content_length} is not the {len(body)} bytes given",
                field="content_length",
            )
        return body, None
    if hasattr(data, "read"):
        file: _Readable = data  # type: ignore[assignment]
        length = content_length if content_length is not None else _known_length(file)
        return _guarded(_file_chunks(file), length), length
    return _guarded(data, content_length), content_length


class ObjectClient(SyncClient):
    """A blocking client of the eos object proxy (``$EXO_EOS_ENDPOINT``, else
    ``http://127.0.0.1:7402``).

    >>> objects = ObjectClient()
    >>> objects.create_bucket("photos")
    >>> with open("cat.jpg", "rb") as f:
    ...     objects.put("photos", "cats/1.jpg", f, content_type="image/jpeg")
    >>> with objects.get("photos", "cats/1.jpg") as download:
    ...     for chunk in download: ...
    """

    ENDPOINT_ENV = EOS_ENDPOINT_ENV
    DEFAULT_ENDPOINT = DEFAULT_EOS_ENDPOINT

    @operation(_S, "describe")
    def describe(self, *, timeout: float | None = None) -> ObjectBackend:
        """The backend's name, capabilities and limits."""
        return self._call(_describe(), timeout)

    @operation(_S, "openapi")
    def openapi(self, *, timeout: float | None = None) -> dict[str, Any]:
        """The proxy's OpenAPI document, with this backend's limits."""
        return self._call(_openapi(), timeout)

    @operation(_S, "createBucket")
    def create_bucket(self, name: str, *, timeout: float | None = None) -> bool:
        """Creates a bucket (idempotent); whether it was created now."""
        return self._call(_create_bucket(name), timeout)

    @operation(_S, "deleteBucket")
    def delete_bucket(self, name: str, *, timeout: float | None = None) -> None:
        """Deletes an empty bucket."""
        self._call(_delete_bucket(name), timeout)

    @operation(_S, "listBuckets")
    def list_buckets(self, *, timeout: float | None = None) -> list[str]:
        """Every bucket name."""
        return self._call(_list_buckets(), timeout)

    @operation(_S, "putObject")
    def put(
        self,
        bucket: str,
        key: str,
        data: Source,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        create_only: bool = False,
        if_match: str | None = None,
        content_length: int | None = None,
        timeout: float | None = None,
    ) -> ObjectInfo:
        """Uploads ``data`` (bytes, a binary file object read in chunks, or an iterable of
        chunks), stored atomically once complete.

        ``create_only``: only if no object exists under the key; ``if_match``: only if the
        current ETag is this (CONDITION_FAILED otherwise). ``content_length``: the exact size,
        if known (a regular file's is found by itself); the proxy refuses an upload whose bytes
        differ. If reading ``data`` fails midway, the upload is cut and nothing is stored.
        """
        content, length = _sync_content(data, content_length)
        headers = _put_headers(content_type, metadata, create_only, if_match, length)
        try:
            return _put_info(self._transport.call(_upload_request(bucket, key, content, headers), timeout))
        except _SourceFailed as failed:
            raise _cancelled(failed) from failed.error

    def put_file(
        self,
        bucket: str,
        key: str,
        file_path: str | os.PathLike[str],
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        create_only: bool = False,
        if_match: str | None = None,
        timeout: float | None = None,
    ) -> ObjectInfo:
        """Uploads a file (its size is announced, so a file that changes size midway is refused)."""
        try:
            file = open(file_path, "rb")  # noqa: SIM115 - closed below
        except OSError as err:
            raise error(Reason.INVALID_ARGUMENT, f"cannot open {file_path}: {err}") from err
        with file:
            return self.put(
                bucket,
                key,
                file,
                content_type=content_type,
                metadata=metadata,
                create_only=create_only,
                if_match=if_match,
                content_length=os.fstat(file.fileno()).st_size,
                timeout=timeout,
            )

    @operation(_S, "getObject")
    def get(
        self,
        bucket: str,
        key: str,
        *,
        range: ByteRange | None = None,
        if_match: str | None = None,
        if_none_match: str | None = None,
        timeout: float | None = None,
    ) -> Download:
        """Opens a download: its :class:`~exoflow.GetHeader`, then its bytes as they arrive.

        ``range``: only those bytes; ``if_match``: CONDITION_FAILED unless the ETag matches;
        ``if_none_match``: NOT_MODIFIED (:class:`~exoflow.NotModifiedError`) if it matches.
        ``timeout`` is the call's deadline sent to the proxy, and bounds each wait for bytes.
        """
        req = _get_request(bucket, key, range, if_match, if_none_match)
        response = self._transport.open(req, timeout)
        try:
            header = _get_header(bucket, key, response)
        except ExoError:
            response.close()
            raise
        return Download(self._transport, req, response, header)

    def get_bytes(
        self,
        bucket: str,
        key: str,
        *,
        range: ByteRange | None = None,
        if_match: str | None = None,
        if_none_match: str | None = None,
        timeout: float | None = None,
    ) -> tuple[GetHeader, bytes]:
        """Downloads into memory: ``(header, bytes)``."""
        with self.get(
            bucket, key, range=range, if_match=if_match, if_none_match=if_none_match, timeout=timeout
        ) as download:
            return download.header, download.read()

    def get_to(
        self,
        bucket: str,
        key: str,
        writer: _Writable,
        *,
        range: ByteRange | None = None,
        if_match: str | None = None,
        if_none_match: str | None = None,
        timeout: float | None = None,
    ) -> GetHeader:
        """Downloads into ``writer`` (anything with ``write(bytes)``, e.g. a binary file);
        returns the header. Fails if fewer bytes arrive than announced."""
        with self.get(
            bucket, key, range=range, if_match=if_match, if_none_match=if_none_match, timeout=timeout
        ) as download:
            for chunk in download:
                writer.write(chunk)
            return download.header

    def get_to_file(
        self,
        bucket: str,
        key: str,
        file_path: str | os.PathLike[str],
        *,
        range: ByteRange | None = None,
        if_match: str | None = None,
        if_none_match: str | None = None,
        timeout: float | None = None,
    ) -> GetHeader:
        """Downloads into a file (written completely, or left incomplete with an error)."""
        with self.get(
            bucket, key, range=range, if_match=if_match, if_none_match=if_none_match, timeout=timeout
        ) as download:
            try:
                file: IO[bytes] = open(file_path, "wb")  # noqa: SIM115 - closed below
            except OSError as err:
                raise error(Reason.INVALID_ARGUMENT, f"cannot create {file_path}: {err}") from err
            with file:
                for chunk in download:
                    file.write(chunk)
            return download.header

    @operation(_S, "headObject")
    def head(self, bucket: str, key: str, *, timeout: float | None = None) -> ObjectInfo:
        """An object's attributes. A HEAD answer has no body: a missing bucket is reported as
        OBJECT_NOT_FOUND too."""
        return self._call(_head(bucket, key), timeout)

    @operation(_S, "deleteObject")
    def delete(self, bucket: str, key: str, *, if_match: str | None = None, timeout: float | None = None) -> None:
        """Deletes an object (a missing one too), or with ``if_match`` only at that ETag."""
        self._call(_delete(bucket, key, if_match), timeout)

    @operation(_S, "deleteObjects")
    def delete_batch(self, bucket: str, keys: Iterable[str], *, timeout: float | None = None) -> list[DeleteResult]:
        """Deletes many keys; one result per key, in order."""
        return self._call(_delete_batch(bucket, keys), timeout)

    @operation(_S, "listObjects")
    def list_page(
        self,
        bucket: str,
        prefix: str = "",
        delimiter: str = "",
        page_size: int = 0,
        page_token: str = "",
        *,
        timeout: float | None = None,
    ) -> ObjectPage:
        """One page of a listing in key order: objects, common prefixes, next page token."""
        return self._call(_list_page(bucket, prefix, delimiter, page_size, page_token), timeout)

    def list(self, bucket: str, prefix: str = "", delimiter: str = "", *, timeout: float | None = None) -> Listing:
        """Every object and common prefix, following pages (``timeout`` is per page)."""
        objects: list[ObjectInfo] = []
        prefixes: list[str] = []
        token = ""
        while True:
            page = self.list_page(bucket, prefix, delimiter, 0, token, timeout=timeout)
            objects.extend(page.objects)
            prefixes.extend(page.common_prefixes)
            if not page.next_page_token:
                return Listing(objects, prefixes)
            token = page.next_page_token

    @operation(_S, "copyObject")
    def copy(
        self,
        source_bucket: str,
        source_key: str,
        bucket: str,
        key: str,
        *,
        create_only: bool = False,
        if_match: str | None = None,
        timeout: float | None = None,
    ) -> ObjectInfo:
        """Copies an object server-side, optionally only if the destination is absent
        (``create_only``) or at an ETag (``if_match``)."""
        return self._call(_copy(source_bucket, source_key, bucket, key, create_only, if_match), timeout)

    @operation(_S, "presignObject")
    def presign(
        self,
        bucket: str,
        key: str,
        method: Literal["GET", "PUT"] = "GET",
        expires_in: float = 3600,
        *,
        timeout: float | None = None,
    ) -> Presigned:
        """A URL allowing ``method`` on one object for ``expires_in`` seconds, usable without
        other credentials (:meth:`get_presigned` / :meth:`put_presigned`, or any HTTP client
        sending :attr:`Presigned.headers`)."""
        return self._call(_presign(bucket, key, method, expires_in), timeout)

    @operation(_S, "presignedGet")
    def get_presigned(self, presigned: Presigned | str, *, timeout: float | None = None) -> Download:
        """Downloads through a presigned GET URL (the bearer token is not sent with it)."""
        req = _presigned_request("GET", presigned, {"accept-encoding": "identity"})
        response = self._transport.open(req, timeout)
        return Download(self._transport, req, response, _get_header("", "", response))

    @operation(_S, "presignedPut")
    def put_presigned(
        self,
        presigned: Presigned | str,
        data: Source,
        *,
        content_type: str | None = None,
        content_length: int | None = None,
        timeout: float | None = None,
    ) -> ObjectInfo | None:
        """Uploads through a presigned PUT URL; the stored object when the URL is the proxy's
        own (a local backend), else ``None``."""
        content, length = _sync_content(data, content_length)
        headers: dict[str, str] = {}
        if content_type:
            headers["content-type"] = content_type
        if length is not None:
            headers["content-length"] = str(length)
        req = _presigned_request("PUT", presigned, headers)
        req.content = content
        try:
            return _presigned_put_info(self._transport.call(req, timeout))
        except _SourceFailed as failed:
            raise _cancelled(failed) from failed.error


def _async_content(data: AsyncSource, content_length: int | None) -> tuple[bytes | AsyncIterator[bytes], int | None]:
    """:func:`_sync_content` for async uploads."""
    if isinstance(data, (str, bytes, bytearray, memoryview)):
        return _sync_content(data, content_length)  # type: ignore[return-value]
    length = content_length
    if length is None and hasattr(data, "read"):
        length = _known_length(data)
    return _aguarded(data, length), length


class AsyncObjectClient(AsyncClient):
    """The asyncio twin of :class:`ObjectClient`. Uploads also take async iterables; file
    objects are read, and files written, in worker threads."""

    ENDPOINT_ENV = EOS_ENDPOINT_ENV
    DEFAULT_ENDPOINT = DEFAULT_EOS_ENDPOINT

    @operation(_S, "describe")
    async def describe(self, *, timeout: float | None = None) -> ObjectBackend:
        """The backend's name, capabilities and limits."""
        return await self._call(_describe(), timeout)

    @operation(_S, "openapi")
    async def openapi(self, *, timeout: float | None = None) -> dict[str, Any]:
        """The proxy's OpenAPI document, with this backend's limits."""
        return await self._call(_openapi(), timeout)

    @operation(_S, "createBucket")
    async def create_bucket(self, name: str, *, timeout: float | None = None) -> bool:
        """Creates a bucket (idempotent); whether it was created now."""
        return await self._call(_create_bucket(name), timeout)

    @operation(_S, "deleteBucket")
    async def delete_bucket(self, name: str, *, timeout: float | None = None) -> None:
        """Deletes an empty bucket."""
        await self._call(_delete_bucket(name), timeout)

    @operation(_S, "listBuckets")
    async def list_buckets(self, *, timeout: float | None = None) -> list[str]:
        """Every bucket name."""
        return await self._call(_list_buckets(), timeout)

    @operation(_S, "putObject")
    async def put(
        self,
        bucket: str,
        key: str,
        data: AsyncSource,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        create_only: bool = False,
        if_match: str | None = None,
        content_length: int | None = None,
        timeout: float | None = None,
    ) -> ObjectInfo:
        """Uploads ``data`` (bytes, a file object, an iterable or async iterable of chunks); see
        :meth:`ObjectClient.put`."""
        content, length = _async_content(data, content_length)
        headers = _put_headers(content_type, metadata, create_only, if_match, length)
        try:
            return _put_info(await self._transport.call(_upload_request(bucket, key, content, headers), timeout))
        except _SourceFailed as failed:
            raise _cancelled(failed) from failed.error

    async def put_file(
        self,
        bucket: str,
        key: str,
        file_path: str | os.PathLike[str],
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        create_only: bool = False,
        if_match: str | None = None,
        timeout: float | None = None,
    ) -> ObjectInfo:
        """Uploads a file (its size is announced, so a file that changes size midway is refused)."""
        try:
            file = await asyncio.to_thread(open, file_path, "rb")
        except OSError as err:
            raise error(Reason.INVALID_ARGUMENT, f"cannot open {file_path}: {err}") from err
        try:
            return await self.put(
                bucket,
                key,
                file,
                content_type=content_type,
                metadata=metadata,
                create_only=create_only,
                if_match=if_match,
                content_length=os.fstat(file.fileno()).st_size,
                timeout=timeout,
            )
        finally:
            file.close()

    @operation(_S, "getObject")
    def get(
        self,
        bucket: str,
        key: str,
        *,
        range: ByteRange | None = None,
        if_match: str | None = None,
        if_none_match: str | None = None,
        timeout: float | None = None,
    ) -> AsyncDownload:
        """A download, started by ``await`` or ``async with``; see :meth:`ObjectClient.get`."""
        req = _get_request(bucket, key, range, if_match, if_none_match)
        return AsyncDownload(self._transport, req, bucket, key, timeout)

    async def get_bytes(
        self,
        bucket: str,
        key: str,
        *,
        range: ByteRange | None = None,
        if_match: str | None = None,
        if_none_match: str | None = None,
        timeout: float | None = None,
    ) -> tuple[GetHeader, bytes]:
        """Downloads into memory: ``(header, bytes)``."""
        async with self.get(
            bucket, key, range=range, if_match=if_match, if_none_match=if_none_match, timeout=timeout
        ) as download:
            return download.header, await download.read()

    async def get_to(
        self,
        bucket: str,
        key: str,
        writer: _Writable,
        *,
        range: ByteRange | None = None,
        if_match: str | None = None,
        if_none_match: str | None = None,
        timeout: float | None = None,
    ) -> GetHeader:
        """Downloads into ``writer``: its ``write(bytes)`` is called for each chunk, and
        awaited when it returns an awaitable (an async file)."""
        async with self.get(
            bucket, key, range=range, if_match=if_match, if_none_match=if_none_match, timeout=timeout
        ) as download:
            async for chunk in download:
                written = writer.write(chunk)
                if inspect.isawaitable(written):
                    await written
            return download.header

    async def get_to_file(
        self,
        bucket: str,
        key: str,
        file_path: str | os.PathLike[str],
        *,
        range: ByteRange | None = None,
        if_match: str | None = None,
        if_none_match: str | None = None,
        timeout: float | None = None,
    ) -> GetHeader:
        """Downloads into a file, written in a worker thread a few chunks at a time."""
        async with self.get(
            bucket, key, range=range, if_match=if_match, if_none_match=if_none_match, timeout=timeout
        ) as download:
            try:
                file: IO[bytes] = await asyncio.to_thread(open, file_path, "wb")
            except OSError as err:
                raise error(Reason.INVALID_ARGUMENT, f"cannot create {file_path}: {err}") from err
            try:
                pending = bytearray()
                async for chunk in download:
                    pending += chunk
                    if len(pending) >= 4 * UPLOAD_CHUNK:
                        await asyncio.to_thread(file.write, bytes(pending))
                        pending.clear()
                if pending:
                    await asyncio.to_thread(file.write, bytes(pending))
            finally:
                await asyncio.to_thread(file.close)
            return download.header

    @operation(_S, "headObject")
    async def head(self, bucket: str, key: str, *, timeout: float | None = None) -> ObjectInfo:
        """An object's attributes (a missing bucket is reported as OBJECT_NOT_FOUND too)."""
        return await self._call(_head(bucket, key), timeout)

    @operation(_S, "deleteObject")
    async def delete(self, bucket: str, key: str, *, if_match: str | None = None, timeout: float | None = None) -> None:
        """Deletes an object (a missing one too), or with ``if_match`` only at that ETag."""
        await self._call(_delete(bucket, key, if_match), timeout)

    @operation(_S, "deleteObjects")
    async def delete_batch(
        self, bucket: str, keys: Iterable[str], *, timeout: float | None = None
    ) -> list[DeleteResult]:
        """Deletes many keys; one result per key, in order."""
        return await self._call(_delete_batch(bucket, keys), timeout)

    @operation(_S, "listObjects")
    async def list_page(
        self,
        bucket: str,
        prefix: str = "",
        delimiter: str = "",
        page_size: int = 0,
        page_token: str = "",
        *,
        timeout: float | None = None,
    ) -> ObjectPage:
        """One page of a listing in key order."""
        return await self._call(_list_page(bucket, prefix, delimiter, page_size, page_token), timeout)

    async def list(
        self, bucket: str, prefix: str = "", delimiter: str = "", *, timeout: float | None = None
    ) -> Listing:
        """Every object and common prefix, following pages."""
        objects: list[ObjectInfo] = []
        prefixes: list[str] = []
        token = ""
        while True:
            page = await self.list_page(bucket, prefix, delimiter, 0, token, timeout=timeout)
            objects.extend(page.objects)
            prefixes.extend(page.common_prefixes)
            if not page.next_page_token:
                return Listing(objects, prefixes)
            token = page.next_page_token

    @operation(_S, "copyObject")
    async def copy(
        self,
        source_bucket: str,
        source_key: str,
        bucket: str,
        key: str,
        *,
        create_only: bool = False,
        if_match: str | None = None,
        timeout: float | None = None,
    ) -> ObjectInfo:
        """Copies an object server-side."""
        return await self._call(_copy(source_bucket, source_key, bucket, key, create_only, if_match), timeout)

    @operation(_S, "presignObject")
    async def presign(
        self,
        bucket: str,
        key: str,
        method: Literal["GET", "PUT"] = "GET",
        expires_in: float = 3600,
        *,
        timeout: float | None = None,
    ) -> Presigned:
        """A URL allowing ``method`` on one object for ``expires_in`` seconds."""
        return await self._call(_presign(bucket, key, method, expires_in), timeout)

    @operation(_S, "presignedGet")
    def get_presigned(self, presigned: Presigned | str, *, timeout: float | None = None) -> AsyncDownload:
        """A download through a presigned GET URL, started by ``await`` or ``async with``."""
        req = _presigned_request("GET", presigned, {"accept-encoding": "identity"})
        return AsyncDownload(self._transport, req, "", "", timeout)

    @operation(_S, "presignedPut")
    async def put_presigned(
        self,
        presigned: Presigned | str,
        data: AsyncSource,
        *,
        content_type: str | None = None,
        content_length: int | None = None,
        timeout: float | None = None,
    ) -> ObjectInfo | None:
        """Uploads through a presigned PUT URL; the stored object when the URL is the proxy's
        own, else ``None``."""
        content, length = _async_content(data, content_length)
        headers: dict[str, str] = {}
        if content_type:
            headers["content-type"] = content_type
        if length is not None:
            headers["content-length"] = str(length)
        req = _presigned_request("PUT", presigned, headers)
        req.content = content
        try:
            return _presigned_put_info(await self._transport.call(req, timeout))
        except _SourceFailed as failed:
            raise _cancelled(failed) from failed.error


__all__ = [
    "DEFAULT_EOS_ENDPOINT",
    "EOS_ENDPOINT_ENV",
    "UPLOAD_CHUNK",
    "AsyncDownload",
    "AsyncObjectClient",
    "AsyncSource",
    "Download",
    "ObjectClient",
    "Source",
]
