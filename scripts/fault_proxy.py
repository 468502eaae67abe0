#!/usr/bin/env python3
"""A TCP proxy for outage tests: forwards 127.0.0.1:LISTEN to TARGET and can, on command, reset
every connection (an outage that answers at once), blackhole them (accept, never answer: a hung
backend), or pass traffic again. The mode is set over HTTP on the control port:
  POST http://127.0.0.1:CONTROL/mode/{pass,reset,blackhole}
Test harness only (scripts/outage.py); stops with its parent."""

import argparse
import asyncio
import socket
import struct

MODE = {"now": "pass"}
CONNECTIONS = set()


async def pipe(reader, writer):
    """Forwards one direction; in blackhole mode swallows what arrives (the peer waits forever),
    in reset mode ends the connection with an RST."""
    try:
        while data := await reader.read(65536):
            if MODE["now"] == "reset":
                break
            if MODE["now"] == "blackhole":
                continue
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
    if mode == "reset":
        hard_close(writer)
        return
    if mode == "blackhole":
        CONNECTIONS.add(writer)
        try:
            while await reader.read(65536):
                pass
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
    await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def control(reader, writer):
    line = (await reader.readline()).decode(errors="replace")
    while (await reader.readline()) not in (b"\r\n", b"\n", b""):
        pass
    parts = line.split()
    status = "404 Not Found"
    if len(parts) >= 2 and parts[1].startswith("/mode/") and parts[1][6:] in ("pass", "reset", "blackhole"):
        MODE["now"] = parts[1][6:]
        if MODE["now"] == "reset":
            # Established connections fail the way new ones would.
            for conn in list(CONNECTIONS):
                hard_close(conn)
            CONNECTIONS.clear()
        status = "200 OK"
    writer.write(f"HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".encode())
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
