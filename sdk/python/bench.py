"""What the Python SDK costs over a bare HTTP request, measured in one run against the same proxy.

* Unary latency: ``KvClient.get`` of a 1 KiB value, one call at a time, against a bare
  ``http.client`` GET of the same route on a kept-alive connection (and a bare ``httpx.Client``
  GET), interleaved in rounds so drift hits every client alike. The SDK also decodes the JSON
  and the base64 value into an ``Entry``; the bare requests read the bytes only.
* Calls in flight: ``AsyncKvClient.get`` with 16 calls at a time, over HTTP/1.1 and HTTP/2.
* Object throughput: ``ObjectClient.get`` of one object, every chunk taken, against a bare
  ``http.client`` GET of the same object read in 1 MiB pieces (and ``httpx`` streaming it);
  uploads the same way (``ObjectClient.put`` from an iterator against ``http.client`` sending
  the same chunks).

Run against the proxies of ``exo up``::

    EXO_EKV_ENDPOINT=http://127.0.0.1:7403 EXO_EOS_ENDPOINT=http://127.0.0.1:7402 \\
        .tools/sdk-python/bin/python sdk/python/bench.py

It prints one line per measurement and, with ``--markdown``, a table for benches/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import secrets
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import httpx

import exoflow

MIB = 1024 * 1024


def connection(endpoint: str) -> http.client.HTTPConnection:
    parts = urlsplit(endpoint)
    return http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80)


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def unary(ekv: str, calls: int, rounds: int) -> dict[str, list[float]]:
    """Per client: its CPU seconds per call, then the seconds each call took; ``calls`` in all,
    interleaved over ``rounds``."""
    table, key = "bench-" + secrets.token_hex(4), "k"
    kv = exoflow.KvClient(ekv, token="")
    kv.create_table(table)
    kv.put(table, key, os.urandom(1024))
    route = f"/api/v1/tables/{table}/entries/{key}"
    bare = connection(ekv)
    plain_httpx = httpx.Client(base_url=ekv, trust_env=False)
    kv_h2 = exoflow.KvClient(ekv, token="", http2=True)

    def bare_get() -> None:
        bare.request("GET", route)
        response = bare.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"bare GET answered {response.status}")

    def httpx_get() -> None:
        httpx_response = plain_httpx.get(route)
        if httpx_response.status_code != 200:
            raise RuntimeError(f"httpx GET answered {httpx_response.status_code}")

    def sdk_get() -> None:
        kv.get(table, key)

    def sdk_h2_get() -> None:
        kv_h2.get(table, key)

    async_kv = exoflow.AsyncKvClient(ekv, token="")
    async_httpx = httpx.AsyncClient(base_url=ekv, trust_env=False)
    loop = asyncio.new_event_loop()

    def timed_async(make: Callable[[], object], n: int) -> list[float]:
        async def run() -> list[float]:
            out = []
            for _ in range(n):
                started = time.perf_counter()
                await make()  # type: ignore[misc]
                out.append(time.perf_counter() - started)
            return out

        return loop.run_until_complete(run())

    clients: dict[str, Callable[[], None]] = {
        "bare http.client": bare_get,
        "bare httpx.Client": httpx_get,
        "SDK KvClient.get": sdk_get,
        "SDK KvClient.get, http2=True": sdk_h2_get,
    }
    samples: dict[str, list[float]] = {name: [] for name in clients}
    samples["bare httpx.AsyncClient"] = []
    samples["SDK AsyncKvClient.get"] = []
    # The client process's own CPU per call: what the client costs whatever else the machine
    # runs (the proxy's share is the same for every client).
    cpu_seconds = dict.fromkeys(samples, 0.0)
    per_round = max(calls // rounds, 1)
    # Warm every connection up first.
    for fn in clients.values():
        for _ in range(50):
            fn()
    timed_async(lambda: async_kv.get(table, key), 50)
    timed_async(lambda: async_httpx.get(route), 50)
    for _ in range(rounds):
        for name, fn in clients.items():
            cpu = time.process_time()
            for _ in range(per_round):
                started = time.perf_counter()
                fn()
                samples[name].append(time.perf_counter() - started)
            cpu_seconds[name] += time.process_time() - cpu
        for name, make in (
            ("bare httpx.AsyncClient", lambda: async_httpx.get(route)),
            ("SDK AsyncKvClient.get", lambda: async_kv.get(table, key)),
        ):
            cpu = time.process_time()
            samples[name] += timed_async(make, per_round)
            cpu_seconds[name] += time.process_time() - cpu
    loop.run_until_complete(async_kv.close())
    loop.run_until_complete(async_httpx.aclose())
    loop.close()
    kv.delete_table(table)
    return {name: [cpu_seconds[name] / len(samples[name]), *samples[name]] for name in samples}


def concurrent(ekv: str, calls: int, in_flight: int, runs: int) -> dict[str, list[float]]:
    """Calls per second of ``AsyncKvClient.get`` with ``in_flight`` calls at a time, over
    HTTP/1.1 (a connection per call in flight) and HTTP/2 (one connection)."""
    table, key = "bench-" + secrets.token_hex(4), "k"

    async def main() -> dict[str, list[float]]:
        rates: dict[str, list[float]] = {}
        async with exoflow.AsyncKvClient(ekv, token="") as setup:
            await setup.create_table(table)
            await setup.put(table, key, os.urandom(1024))
            for http2 in (False, True):
                name = f"SDK AsyncKvClient.get at {in_flight}, " + ("HTTP/2" if http2 else "HTTP/1.1")
                rates[name] = []
                async with exoflow.AsyncKvClient(ekv, token="", http2=http2) as kv:

                    async def worker(n: int) -> None:
                        for _ in range(n):
                            await kv.get(table, key)

                    await asyncio.gather(*(worker(20) for _ in range(in_flight)))  # warm up
                    for _ in range(runs):
                        started = time.perf_counter()
                        await asyncio.gather(*(worker(calls // in_flight) for _ in range(in_flight)))
                        rates[name].append(calls // in_flight * in_flight / (time.perf_counter() - started))
            await setup.delete_table(table)
        return rates

    return asyncio.run(main())


def objects(eos: str, size_mib: int, runs: int) -> dict[str, list[float]]:
    """MiB/s of each way to move one ``size_mib`` MiB object, ``runs`` times interleaved."""
    bucket, key = "bench-" + secrets.token_hex(4), "big.bin"
    client = exoflow.ObjectClient(eos, token="")
    client.create_bucket(bucket)
    chunk = os.urandom(MIB)
    size = size_mib * MIB
    route = f"/api/v1/buckets/{bucket}/objects/{key}"
    plain_httpx = httpx.Client(base_url=eos, trust_env=False, timeout=None)

    def chunks() -> Iterator[bytes]:
        for _ in range(size_mib):
            yield chunk

    def sdk_put() -> None:
        client.put(bucket, key, chunks(), content_length=size)

    def bare_put() -> None:
        bare = connection(eos)
        bare.putrequest("PUT", route)
        bare.putheader("content-length", str(size))
        bare.endheaders()
        for part in chunks():
            bare.send(part)
        response = bare.getresponse()
        response.read()
        bare.close()
        if response.status != 200:
            raise RuntimeError(f"bare PUT answered {response.status}")

    def sdk_get() -> None:
        received = 0
        with client.get(bucket, key) as download:
            for part in download:
                received += len(part)
        if received != size:
            raise RuntimeError(f"SDK GET read {received} bytes")

    def bare_get() -> None:
        bare = connection(eos)
        bare.request("GET", route)
        response = bare.getresponse()
        received = 0
        while part := response.read(MIB):
            received += len(part)
        bare.close()
        if received != size:
            raise RuntimeError(f"bare GET read {received} bytes")

    def httpx_get() -> None:
        received = 0
        with plain_httpx.stream("GET", route) as response:
            for part in response.iter_raw():
                received += len(part)
        if received != size:
            raise RuntimeError(f"httpx GET read {received} bytes")

    ways: dict[str, Callable[[], None]] = {
        "PUT bare http.client": bare_put,
        "PUT SDK ObjectClient.put": sdk_put,
        "GET bare http.client": bare_get,
        "GET bare httpx stream": httpx_get,
        "GET SDK ObjectClient.get": sdk_get,
    }
    rates: dict[str, list[float]] = {name: [] for name in ways}
    sdk_put()
    for fn in ways.values():  # warm up
        fn()
    for _ in range(runs):
        for name, fn in ways.items():
            started = time.perf_counter()
            fn()
            rates[name].append(size_mib / (time.perf_counter() - started))
    client.delete(bucket, key)
    client.delete_bucket(bucket)
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ekv", default=os.environ.get("EXO_EKV_ENDPOINT", exoflow.DEFAULT_EKV_ENDPOINT))
    parser.add_argument("--eos", default=os.environ.get("EXO_EOS_ENDPOINT", exoflow.DEFAULT_EOS_ENDPOINT))
    parser.add_argument("--calls", type=int, default=3000, help="unary calls per client")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--object-mib", type=int, default=128)
    parser.add_argument("--runs", type=int, default=5, help="transfers per way")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()

    latency = unary(args.ekv, args.calls, args.rounds)
    floor = statistics.median(latency["bare http.client"][1:])
    floor_p99 = percentile(latency["bare http.client"][1:], 99)
    floor_cpu = latency["bare http.client"][0]
    rows = []
    for name, (cpu, *samples) in latency.items():
        p50, p99 = statistics.median(samples), percentile(samples, 99)
        rows.append((name, p50 * 1e6, p99 * 1e6, p50 / floor, p99 / floor_p99, cpu * 1e6, cpu / floor_cpu))
        print(
            f"{name:32} p50 {p50 * 1e6:7.1f} µs  p99 {p99 * 1e6:7.1f} µs  "
            f"{p50 / floor:5.2f}× p50  {p99 / floor_p99:5.2f}× p99  client CPU {cpu * 1e6:6.1f} µs/call "
            f"{cpu / floor_cpu:5.2f}×"
        )
    throughput = concurrent(args.ekv, args.calls, 16, args.runs)
    for name, values in throughput.items():
        print(f"{name:40} {statistics.median(values):8.0f} calls/s (median of {len(values)})")
    rates = objects(args.eos, args.object_mib, args.runs)
    get_floor = statistics.median(rates["GET bare http.client"])
    put_floor = statistics.median(rates["PUT bare http.client"])
    moves = []
    for name, values in rates.items():
        rate = statistics.median(values)
        base = get_floor if name.startswith("GET") else put_floor
        moves.append((name, rate, min(values), max(values), rate / base))
        print(
            f"{name:32} {rate:8.0f} MiB/s (median of {len(values)}; "
            f"{min(values):.0f}–{max(values):.0f})  {rate / base:5.2f}×"
        )

    if args.markdown:
        print()
        print(
            "| unary call, one at a time (ekv get, 1 KiB value) | p50 | p99 | p50 vs bare http.client "
            "| p99 vs bare | client CPU per call | vs bare |"
        )
        print("|---|---|---|---|---|---|---|")
        for name, p50_us, p99_us, r50, r99, cpu_us, rcpu in rows:
            print(
                f"| {name} | {p50_us:.1f} µs | {p99_us:.1f} µs | {r50:.2f}× | {r99:.2f}× "
                f"| {cpu_us:.1f} µs | {rcpu:.2f}× |"
            )
        print()
        print("| calls in flight | calls/s (median) |")
        print("|---|---|")
        for name, values in throughput.items():
            print(f"| {name} | {statistics.median(values):.0f} |")
        print()
        print(f"| {args.object_mib} MiB object | MiB/s (median) | range | vs bare http.client |")
        print("|---|---|---|---|")
        for name, rate, low, high, ratio in moves:
            print(f"| {name} | {rate:.0f} | {low:.0f}–{high:.0f} | {ratio:.2f}× |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
