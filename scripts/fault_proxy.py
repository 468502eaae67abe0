#!/usr/bin/env python3
"""A TCP proxy for outage and fault-injection tests: forwards 127.0.0.1:LISTEN to TARGET and can,
on command, reset every connection (an outage that answers at once), blackhole them (accept,
never answer: a hung backend), reset half of the requests at random (flaky: a request here is
one burst of bytes from the client, which is one HTTP/1.1 request for the small calls the tests
make), delay every burst in both directions (latency), or pass traffic again. Modes are set over
HTTP on the control port; GET /stats counts what came in from clients:
  POST http://127.0.0.1:CONTROL/mode/{pass,reset,blackhole,flaky}
  POST http://127.0.0.1:CONTROL/mode/latency/MILLISECONDS
  GET  http://127.0.0.1:CONTROL/stats   -> {"connections": N, "requests": N, "reset": N}
Test harness only (scripts/outage.py, scripts/faults.py); stops with its parent."""

import argparse
import asyncio
import json
import random
import socket
import struct

MODE = {"now": "pass", "latency": 0.0}
CONNECTIONS = set()
# "requests": bursts of client bytes that reached the proxy (forwarded, reset or swallowed).
STATS = {"connections": 0, "requests": 0, "reset": 0}


async def pipe(reader, writer, upstream, peer):
    """Forwards one direction; in blackhole mode swallows what arrives (the peer waits forever),
    in reset mode ends the connection with an RST, in flaky mode does so for half of the
    client's bursts, in latency mode holds each burst first."""
    try:
        while data := await reader.read(65536):
            if upstream:
                STATS["requests"] += 1
            if MODE["now"] == "reset":
                break
            if MODE["now"] == "blackhole":
                continue
            if upstream and MODE["now"] == "flaky" and random.random() < 0.5:
                STATS["reset"] += 1
                hard_close(peer)
                break
            if MODE["now"] == "latency":
                await asyncio.sleep(MODE["latency"])
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        hard_close(writer)


def hard_close(writer):
    """Closes with an RST (SO_LINGER 0), as a crashed or reset server does."""
    try:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    writer.close()


async def handle(reader, writer, target_port):
    mode = MODE["now"]
    STATS["connections"] += 1
    if mode == "reset":
        hard_close(writer)
        return
    if mode == "blackhole":
        CONNECTIONS.add(writer)
        try:
            while await reader.read(65536):
                STATS["requests"] += 1
        except ConnectionError:
            pass
        return
    try:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
    except OSError:
        hard_close(writer)
        return
    CONNECTIONS.add(writer)
    CONNECTIONS.add(up_writer)
    await asyncio.gather(pipe(reader, up_writer, True, writer), pipe(up_reader, writer, False, up_writer))


async def control(reader, writer):
    line = (await reader.readline()).decode(errors="replace")
    while (await reader.readline()) not in (b"\r\n", b"\n", b""):
        pass
    parts = line.split()
    status = "404 Not Found"
    body = b""
    if len(parts) >= 2 and parts[1] == "/stats":
        body = json.dumps(STATS).encode()
        status = "200 OK"
    elif len(parts) >= 2 and parts[1].startswith("/mode/latency/"):
        MODE["latency"] = int(parts[1].rsplit("/", 1)[1]) / 1000
        MODE["now"] = "latency"
        status = "200 OK"
    elif len(parts) >= 2 and parts[1].startswith("/mode/") and parts[1][6:] in ("pass", "reset", "blackhole", "flaky"):
        MODE["now"] = parts[1][6:]
        if MODE["now"] == "reset":
            # Established connections fail the way new ones would.
            for conn in list(CONNECTIONS):
                hard_close(conn)
            CONNECTIONS.clear()
        status = "200 OK"
    writer.write(f"HTTP/1.1 {status}\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n".encode() + body)
    await writer.drain()
    writer.close()


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", type=int, required=True)
    parser.add_argument("--target", type=int, required=True)
    parser.add_argument("--control", type=int, required=True)
    args = parser.parse_args()
    proxy = await asyncio.start_server(lambda r, w: handle(r, w, args.target), "127.0.0.1", args.listen)
    ctl = await asyncio.start_server(control, "127.0.0.1", args.control)
    async with proxy, ctl:
        await asyncio.gather(proxy.serve_forever(), ctl.serve_forever())


if __name__ == "__main__":
    asyncio.run(main())
