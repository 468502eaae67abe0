#!/usr/bin/env python3
"""Test harness only: checks SigV4 presigned URLs the way S3 does, in front of moto.

moto does not verify the signature or the expiry of presigned URLs (its request
authentication reads only the Authorization header), so with moto alone a tampered or expired
URL would still work and the conformance cases `presign.tampered` / `presign.expired` could not
tell a correct S3 backend from a broken one. This gateway recomputes the signature of every
request (SigV4 query signing: canonical request, string to sign, HMAC key chain), refuses a
mismatch or an expired URL with 403 as S3 does, and forwards the rest to moto unchanged.
eos-proxy's `presign.base-url` points at it in the tests; everything else talks to moto directly.

usage: presign_gateway.py PORT UPSTREAM_URL   (secret key from AWS_SECRET_ACCESS_KEY)
"""

import datetime
import hashlib
import hmac
import http.client
import os
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET = os.environ["AWS_SECRET_ACCESS_KEY"]


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def _quote(text: str) -> str:
    return urllib.parse.quote(text, safe="-_.~")


def check(method: str, path: str, query: str, headers) -> str | None:
    """None when the URL is a valid, unexpired presigned URL; else why not."""
    params = urllib.parse.parse_qsl(query, keep_blank_values=True)
    given = dict(params)
    for needed in ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
                   "X-Amz-SignedHeaders", "X-Amz-Signature"):
        if needed not in given:
            return f"missing {needed}"
    try:
        signed_at = datetime.datetime.strptime(given["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(
            tzinfo=datetime.timezone.utc)
        expires = int(given["X-Amz-Expires"])
    except ValueError:
        return "malformed date or expiry"
    if datetime.datetime.now(datetime.timezone.utc) > signed_at + datetime.timedelta(seconds=expires):
        return "expired"
    canonical_query = "&".join(
        f"{k}={v}" for k, v in sorted((_quote(k), _quote(v)) for k, v in params if k != "X-Amz-Signature"))
    signed_headers = given["X-Amz-SignedHeaders"]
    canonical_headers = "".join(
        f"{name}:{(headers.get(name) or '').strip()}\n" for name in signed_headers.split(";"))
    canonical_request = "\n".join(
        [method, path, canonical_query, canonical_headers, signed_headers, "UNSIGNED-PAYLOAD"])
    _, date, region, service, terminal = given["X-Amz-Credential"].split("/")
    scope = f"{date}/{region}/{service}/{terminal}"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", given["X-Amz-Date"], scope,
                         hashlib.sha256(canonical_request.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(_hmac(("AWS4" + SECRET).encode(), date), region), service), terminal)
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, given["X-Amz-Signature"]):
        return "signature does not match"
    return None


class Gateway(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    upstream: urllib.parse.SplitResult

    def _handle(self) -> None:
        path, _, query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        why = check(self.command, path, query, self.headers)
        if why is not None:
            text = f"<Error><Code>AccessDenied</Code><Message>{why}</Message></Error>".encode()
            self.send_response(403)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)
            return
        connection = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=60)
        forwarded = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        connection.request(self.command, self.path, body=body, headers=forwarded)
        response = connection.getresponse()
        data = response.read()
        self.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        connection.close()

    do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = _handle

    def log_message(self, *args) -> None:  # quiet: the test logs are noisy enough
        pass


def main() -> None:
    port, upstream = int(sys.argv[1]), sys.argv[2]
    Gateway.upstream = urllib.parse.urlsplit(upstream)
    ThreadingHTTPServer(("127.0.0.1", port), Gateway).serve_forever()


if __name__ == "__main__":
    main()
