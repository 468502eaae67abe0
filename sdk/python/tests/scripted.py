"""A real HTTP server on loopback that answers from a script and records every request.

For what a proxy does not do on demand (answer 503 twice, then succeed; hint a retry delay),
so the client's behaviour on the wire can be checked: which headers it sends, how often it
tries, how long it waits.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Answer:
    status: int = 200
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=lambda: {"content-type": "application/json"})
    delay: float = 0.0


def problem(status: int, reason: str, *, retryable: bool, retry_after_ms: int | None = None) -> Answer:
    document: dict[str, object] = {
        "type": f"urn:exoflow:error:{reason}",
        "title": "Error",
        "status": status,
        "detail": f"scripted {reason}",
        "reason": reason,
        "backend": "scripted",
        "retryable": retryable,
        "field": "",
        "resource": "thing",
    }
    if retry_after_ms is not None:
        document["retryAfterMs"] = retry_after_ms
    return Answer(status, json.dumps(document).encode(), {"content-type": "application/problem+json"})


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


class Scripted:
    """Answers each request with the next :class:`Answer` (the last one repeats)."""

    def __init__(self, answers: list[Answer]) -> None:
        self.answers = answers
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def _next(self) -> Answer:
        with self._lock:
            index = min(len(self.requests) - 1, len(self.answers) - 1)
            return self.answers[index]

    @contextmanager
    def running(self) -> Iterator[Scripted]:
        script = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("transfer-encoding", "").lower() == "chunked":
                    out = bytearray()
                    while True:
                        size = int(self.rfile.readline().strip() or b"0", 16)
                        if size == 0:
                            self.rfile.readline()
                            return bytes(out)
                        out += self.rfile.read(size)
                        self.rfile.readline()
                length = int(self.headers.get("content-length") or 0)
                return self.rfile.read(length) if length else b""

            def _answer(self) -> None:
                body = self._body()
                with script._lock:
                    script.requests.append(
                        Recorded(
                            self.command,
                            self.path,
                            {k.lower(): v for k, v in self.headers.items()},
                            body,
                            time.monotonic(),
                        )
                    )
                answer = script._next()
                if answer.delay:
                    time.sleep(answer.delay)
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(answer.body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(answer.body)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _answer

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: object, client_address: object) -> None:
                # A client that gave up (its own timer) closed the connection: expected here.
                pass

        self._server = Server(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
            thread.join()
