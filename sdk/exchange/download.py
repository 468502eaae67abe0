"""The exchange's downloader (Python SDK): reads an object back from the eos proxy of
``$EXO_EOS_ENDPOINT`` as a stream through ``ObjectClient.get``, hashing each chunk as it arrives
and keeping none, then deletes the object and its bucket.

    python download.py BUCKET KEY

Prints one JSON line: ``{bytes, sha256, seconds, mib_per_s, peak_rss_kib, start_rss_kib, etag}``.
``peak_rss_kib`` is the process's peak resident set (``resource.getrusage``'s ``ru_maxrss``, KiB
on Linux): everything the process ever held, the interpreter and httpx included.
``delete BUCKET KEY`` only removes them (what a failed run cleans up with).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import resource
import sys
import time

import exoflow

MIB = 1024 * 1024


def peak_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def remove(objects: exoflow.ObjectClient, bucket: str, key: str) -> None:
    with contextlib.suppress(exoflow.NotFoundError):
        objects.delete(bucket, key)
    with contextlib.suppress(exoflow.NotFoundError):
        objects.delete_bucket(bucket)


def download(objects: exoflow.ObjectClient, bucket: str, key: str) -> dict[str, object]:
    start_rss = peak_rss_kib()
    digest = hashlib.sha256()
    received = 0
    started = time.perf_counter()
    with objects.get(bucket, key) as opened:
        announced = opened.header.length
        etag = opened.header.info.etag
        for chunk in opened:
            digest.update(chunk)
            received += len(chunk)
    seconds = time.perf_counter() - started
    if received != announced:
        sys.exit(f"download.py: {received} bytes arrived of the {announced} announced")
    return {
        "bytes": received,
        "sha256": digest.hexdigest(),
        "seconds": round(seconds, 3),
        "mib_per_s": round(received / MIB / seconds, 1),
        "peak_rss_kib": peak_rss_kib(),
        "start_rss_kib": start_rss,
        "etag": etag,
    }


def main() -> None:
    args = sys.argv[1:]
    delete_only = args[:1] == ["delete"]
    if delete_only:
        args = args[1:]
    if len(args) != 2:
        sys.exit("usage: download.py [delete] BUCKET KEY")
    bucket, key = args
    with exoflow.ObjectClient.from_env() as objects:
        try:
            if not delete_only:
                print(json.dumps(download(objects, bucket, key)))
        finally:
            remove(objects, bucket, key)


if __name__ == "__main__":
    main()
