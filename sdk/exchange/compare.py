"""The exchange's judge: did every receiver get exactly what was published, and did the large
object come back byte-exact in bounded memory?

``compare.py messages EXPECTED.json NAME=RECEIVED.jsonl...``
    EXPECTED.json is what publish.py wrote; each RECEIVED.jsonl holds one JSON line per message
    a receiver got (``body_hex``, ``attributes``, ...). A message is its body and its whole
    attribute map (the proxy's ``exo.topic`` and ``exo.publish-id`` included); each receiver's
    messages, as a multiset, must equal the published ones: nothing missing, nothing extra, no
    duplicate. Messages without this run's tag (another publisher's, on a shared queue) are
    counted and left out. A received message whose publish id is a published one but whose
    body or attributes differ is shown with where they differ.
``compare.py object UPLOAD.json DOWNLOAD.json MAX_RSS_MIB``
    the uploader's and the downloader's reports (one JSON line each): the same size and SHA-256,
    and each process's peak resident set below MAX_RSS_MIB.

Exits 1 with the differences listed, 0 when everything matches.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from typing import Any

RUN_ATTRIBUTE = "exchange-run"
PUBLISH_ID_ATTRIBUTE = "exo.publish-id"
#: How many differences of one kind are listed in full.
SHOWN = 10

Key = tuple[str, tuple[tuple[str, str], ...]]


def key_of(message: dict[str, Any]) -> Key:
    return message["body_hex"], tuple(sorted(message["attributes"].items()))


def preview(body_hex: str, at: int = 0, width: int = 16) -> str:
    """A few bytes of a body (as hex) around byte `at`, the one at `at` in brackets."""
    start = max(0, at - 4)
    shown = []
    for i in range(start, min(start + width, len(body_hex) // 2)):
        byte = body_hex[2 * i : 2 * i + 2]
        shown.append(f"[{byte}]" if i == at else byte)
    more = "…" if len(body_hex) > 2 * (start + width) else ""
    return f"{'…' if start else ''}{''.join(shown)}{more}"


def body_difference(expected: str, got: str) -> str:
    """Where two bodies (hex) first differ, and their lengths."""
    if expected == got:
        return ""
    n = min(len(expected), len(got)) // 2
    first = next((i for i in range(n) if expected[2 * i : 2 * i + 2] != got[2 * i : 2 * i + 2]), n)
    return (
        f"body differs from byte {first} (published {len(expected) // 2} bytes, received {len(got) // 2}): "
        f"published {preview(expected, first)}, received {preview(got, first)}"
    )


def attribute_difference(expected: dict[str, str], got: dict[str, str]) -> str:
    parts = []
    for name in sorted(expected.keys() - got.keys()):
        parts.append(f"{name!r} missing (published {expected[name]!r})")
    for name in sorted(got.keys() - expected.keys()):
        parts.append(f"{name!r} not published (received {got[name]!r})")
    for name in sorted(expected.keys() & got.keys()):
        if expected[name] != got[name]:
            parts.append(f"{name!r}: published {expected[name]!r}, received {got[name]!r}")
    return "; ".join(parts)


def read_lines(path: str) -> list[dict[str, Any]]:
    # Lines end at "\n" only: JSON text escapes CR and LF, but may carry U+2028 as it is.
    with open(path, encoding="utf-8", newline="\n") as f:
        return [json.loads(line) for line in f if line.strip()]


def check_receiver(name: str, published: list[dict[str, Any]], run: str, received_all: list[dict[str, Any]]) -> bool:
    received = [m for m in received_all if m["attributes"].get(RUN_ATTRIBUTE) == run]
    foreign = len(received_all) - len(received)
    want = Counter(key_of(m) for m in published)
    got = Counter(key_of(m) for m in received)
    by_key = {key_of(m): m for m in published}
    by_publish_id = {m["attributes"][PUBLISH_ID_ATTRIBUTE]: m for m in published}

    missing = want - got
    extra = got - want
    duplicates = {k: n for k, n in got.items() if k in want and n > want[k]}
    # An extra message carrying a published id is that message, altered.
    altered: list[tuple[dict[str, Any], dict[str, Any]]] = []
    unknown: list[dict[str, Any]] = []
    for k, n in extra.items():
        if k in want:
            continue  # more copies of a published message: duplicates
        message: dict[str, Any] = {"body_hex": k[0], "attributes": dict(k[1])}
        original = by_publish_id.get(message["attributes"].get(PUBLISH_ID_ATTRIBUTE, ""))
        if original is None:
            unknown.extend([message] * n)
        else:
            altered.extend([(original, message)] * n)
    altered_keys = {key_of(original) for original, _ in altered}
    lost = [by_key[k] for k in missing.elements() if k not in altered_keys]

    exact = sum(min(n, got[k]) for k, n in want.items())
    ok = not (missing or extra or duplicates)
    verdict = "ok" if ok else "FAILED"
    redelivered = sum(1 for m in received if m.get("dequeue_count", 1) > 1)
    note = f"; {redelivered} came on a later delivery attempt (dequeue count above 1)" if redelivered else ""
    note += f"; {foreign} message(s) of other publishers left out" if foreign else ""
    print(
        f"{name}: {verdict}: {exact} of {len(published)} published messages received byte-exact with "
        f"identical attributes; {len(lost)} missing, {len(altered)} altered, {len(unknown)} unknown, "
        f"{sum(n - want[k] for k, n in duplicates.items())} duplicate(s){note}"
    )
    for original, message in altered[:SHOWN]:
        why = "; ".join(
            d
            for d in (
                body_difference(original["body_hex"], message["body_hex"]),
                attribute_difference(original["attributes"], message["attributes"]),
            )
            if d
        )
        print(f"  altered: {original['label']}: {why}")
    for message in lost[:SHOWN]:
        print(
            f"  missing: {message['label']} (publish id {message['attributes'][PUBLISH_ID_ATTRIBUTE]}, "
            f"{len(message['body_hex']) // 2} bytes)"
        )
    for message in unknown[:SHOWN]:
        print(
            f"  unknown: a message never published: {len(message['body_hex']) // 2} bytes "
            f"{preview(message['body_hex'])}, attributes {message['attributes']!r}"
        )
    for k, n in list(duplicates.items())[:SHOWN]:
        print(f"  duplicate: {by_key[k]['label']} received {n} times")
    shown = max(len(altered), len(lost), len(unknown), len(duplicates))
    if shown > SHOWN:
        print(f"  (the first {SHOWN} of each kind are listed)")
    return ok


def messages(expected_path: str, receivers: list[str]) -> bool:
    with open(expected_path, encoding="utf-8") as f:
        expected = json.load(f)
    ok = True
    for receiver in receivers:
        name, _, path = receiver.partition("=")
        ok = check_receiver(name, expected["messages"], expected["run"], read_lines(path)) and ok
    return ok


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


def object_check(upload_path: str, download_path: str, max_rss_mib: float) -> bool:
    [upload] = read_lines(upload_path)
    [download] = read_lines(download_path)
    size = upload["bytes"] / 1024 / 1024
    print(
        f"object: {size:.0f} MiB uploaded from Node in {upload['seconds']} s ({upload['mib_per_s']} MiB/s), "
        f"peak RSS {mib(upload['peak_rss_kib'])} (at start {mib(upload['start_rss_kib'])}); "
        f"downloaded by Python in {download['seconds']} s ({download['mib_per_s']} MiB/s), "
        f"peak RSS {mib(download['peak_rss_kib'])} (at start {mib(download['start_rss_kib'])})"
    )
    ok = True
    if (download["bytes"], download["sha256"]) != (upload["bytes"], upload["sha256"]):
        print(
            f"  FAILED: uploaded {upload['bytes']} bytes, SHA-256 {upload['sha256']}; "
            f"downloaded {download['bytes']} bytes, SHA-256 {download['sha256']}"
        )
        ok = False
    else:
        print(f"  same {upload['bytes']} bytes both ways, SHA-256 {upload['sha256']}")
    for side, report in (("Node upload", upload), ("Python download", download)):
        if report["peak_rss_kib"] > max_rss_mib * 1024:
            print(f"  FAILED: the {side}'s peak RSS {mib(report['peak_rss_kib'])} is above {max_rss_mib:g} MiB")
            ok = False
    if ok:
        print(f"  both peak RSS below {max_rss_mib:g} MiB")
    return ok


def main() -> None:
    args = sys.argv[1:]
    if len(args) >= 3 and args[0] == "messages":
        ok = messages(args[1], args[2:])
    elif len(args) == 4 and args[0] == "object":
        ok = object_check(args[1], args[2], float(args[3]))
    else:
        sys.exit(
            "usage: compare.py messages EXPECTED.json NAME=RECEIVED.jsonl...\n"
            "       compare.py object UPLOAD.json DOWNLOAD.json MAX_RSS_MIB"
        )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
