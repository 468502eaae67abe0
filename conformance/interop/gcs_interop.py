"""eos `gcs` against fake-gcs-server, as Google's own Python client (google-cloud-storage) sees it:
an object eos wrote is read natively with its content type, metadata and generation (= eos's
ETag); an object and a bucket made natively before eos touches them are served by eos; a compare-
and-set at a generation a native writer has replaced fails; the keys `.` and `..` are stored under
their documented escapes; eos's V4 signed URLs are byte for byte the URLs google-cloud-storage
signs with the same key and time; a large object goes through eos in a resumable upload with
bounded memory and reads back natively; eos gets its tokens from a service-account key (a JWT
google-auth verifies) and from the metadata server (GCE_METADATA_HOST).

    gcs_interop.py --eos URL --eos-pid PID --endpoint http://127.0.0.1:PORT --project P \
        --key-file sa.json [--name-prefix P] [--large-mib N]
"""

import argparse
import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from google.cloud.storage import _signing
from google.oauth2 import service_account

from common import call, check, finish, free_port, get_object, large_round_trip, put_object, wait_for_port

RUN = uuid.uuid4().hex[:8]


def status_of(method, url, body=None, headers=None):
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


class TokenServer:
    """Stands in for Google's OAuth token endpoint and a VM's metadata server, only to see what eos
    sends them: the JWT assertion is verified with google-auth against the key's public half."""

    def __init__(self, key_file):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from google.auth import crypt, jwt
        with open(key_file) as f:
            self.signer = crypt.RSASigner.from_service_account_info(json.load(f))
        self.seen = []
        server_self = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                form = dict(urllib.parse.parse_qsl(self.rfile.read(int(self.headers["content-length"])).decode()))
                try:
                    claims = jwt.decode(form.get("assertion", ""), certs=server_self.public_pem,
                                        audience=f"http://127.0.0.1:{server_self.port}/token")
                    server_self.seen.append(("jwt", claims))
                    self.reply(200, {"access_token": "token-from-key", "expires_in": 3600, "token_type": "Bearer"})
                except Exception as err:  # noqa: BLE001 - any refusal is the finding
                    server_self.seen.append(("bad-jwt", str(err)))
                    self.reply(400, {"error": "invalid_grant", "error_description": str(err)})

            def do_GET(self):
                flavored = self.headers.get("Metadata-Flavor") == "Google"
                server_self.seen.append(("metadata", flavored))
                if flavored:
                    self.reply(200, {"access_token": "token-from-metadata", "expires_in": 3600})
                else:
                    self.reply(403, {})

        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.serialization import load_pem_private_key
        with open(key_file) as f:
            private = load_pem_private_key(json.load(f)["private_key"].encode(), None)
        self.public_pem = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def token_sources(eos_proxy, endpoint, project, key_file, scratch):
    """eos with a service-account key, then with the metadata server, asks for tokens as Google
    expects; both are ready and serve calls."""
    print("tokens: from a service-account key (JWT bearer grant) and from the metadata server")
    tokens = TokenServer(key_file)
    with open(key_file) as f:
        key = json.load(f)
    key["token_uri"] = f"http://127.0.0.1:{tokens.port}/token"
    local_key = os.path.join(scratch, "key-local-token-uri.json")
    with open(local_key, "w") as f:
        json.dump(key, f)
    for name, credentials, env in (
            ("key", f"  credentials:\n    service-account-key: file:{local_key}\n", {}),
            ("metadata", "", {"GCE_METADATA_HOST": f"127.0.0.1:{tokens.port}"})):
        config = os.path.join(scratch, f"eos-{name}.yaml")
        with open(config, "w") as f:
            f.write(f"backend:\n  kind: gcs\n  project: {project}\n  endpoint: {endpoint}\n{credentials}")
        port = free_port()
        log = open(os.path.join(scratch, f"eos-{name}.log"), "ab")
        proxy = subprocess.Popen([eos_proxy, "--config", config, "--listen", f"127.0.0.1:{port}"],
                                 stdout=log, stderr=log, env={**os.environ, **env})
        try:
            wait_for_port(port, f"eos-proxy ({name} tokens)")
            status = 0
            for _ in range(50):
                status, _ = status_of("GET", f"http://127.0.0.1:{port}/readyz")
                if status == 200:
                    break
                time.sleep(0.1)
            bucket = f"gi-{RUN}-{name}"
            call("POST", f"http://127.0.0.1:{port}/api/v1/buckets", {"name": bucket})
            call("DELETE", f"http://127.0.0.1:{port}/api/v1/buckets/{bucket}")
            check(status == 200, f"with the {name} token source eos is ready and serves calls")
        finally:
            proxy.terminate()
            proxy.wait()
    jwts = [claims for kind, claims in tokens.seen if kind == "jwt"]
    check(len(jwts) == 1 and not any(kind == "bad-jwt" for kind, _ in tokens.seen)
          and jwts[0].get("iss") == key["client_email"]
          and jwts[0].get("scope") == "https://www.googleapis.com/auth/devstorage.full_control",
          f"one token request from the key, a JWT google-auth verifies, reused after ({tokens.seen[:1]})")
    check(("metadata", True) in tokens.seen and ("metadata", False) not in tokens.seen,
          "the metadata server is asked with Metadata-Flavor: Google")
    tokens.server.shutdown()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--eos", required=True)
    parser.add_argument("--eos-pid", required=True, type=int)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--project", required=True)
    parser.add_argument("--key-file", required=True)
    parser.add_argument("--name-prefix", default="")
    parser.add_argument("--large-mib", type=int, default=24)
    parser.add_argument("--eos-proxy", required=True, help="the eos-proxy binary, for the token checks")
    parser.add_argument("--scratch", required=True)
    args = parser.parse_args()
    eos, prefix = args.eos, args.name_prefix
    gcs = storage.Client(project=args.project, credentials=AnonymousCredentials(),
                         client_options=ClientOptions(api_endpoint=args.endpoint))

    print("eos writes, google-cloud-storage reads")
    bucket = f"gi-{RUN}"
    call("POST", f"{eos}/api/v1/buckets", {"name": bucket})
    native_bucket = gcs.bucket(prefix + bucket)
    check(native_bucket.exists(), "a bucket created through eos is a GCS bucket named name-prefix + name")
    put_object(eos, bucket, "docs/report.txt", b"quarterly numbers", "text/plain", {"owner": "finance"})
    blob = native_bucket.get_blob("docs/report.txt")
    check(blob is not None and blob.download_as_bytes() == b"quarterly numbers", "the bytes are the object's")
    check(blob is not None and blob.content_type == "text/plain", "the content type is GCS's contentType")
    check(blob is not None and (blob.metadata or {}).get("owner") == "finance",
          "user metadata is GCS's custom metadata")
    _, headers = get_object(eos, bucket, "docs/report.txt")
    etag = (headers.get("etag") or "").strip('"')
    check(blob is not None and etag == str(blob.generation),
          f"eos's ETag is the object's generation ({etag} = {blob.generation if blob else None})")

    print("google-cloud-storage writes, eos reads")
    native_bucket.blob("native/made-by-hand.json").upload_from_string(b'{"a": 1}', content_type="application/json")
    body, headers = get_object(eos, bucket, "native/made-by-hand.json")
    check(body == b'{"a": 1}' and headers.get("content-type") == "application/json",
          "an object uploaded natively reads through eos with its content type")
    listed = call("GET", f"{eos}/api/v1/buckets/{bucket}/objects?prefix=native%2F")
    check([o["key"] for o in listed.get("objects", [])] == ["native/made-by-hand.json"],
          "and lists through eos")
    premade = f"gi-{RUN}-premade"
    gcs.create_bucket(prefix + premade)
    gcs.bucket(prefix + premade).blob("seed").upload_from_string(b"seeded before eos")
    body, _ = get_object(eos, premade, "seed")
    check(body == b"seeded before eos", "a bucket made natively before eos touched it is served by eos")
    check(premade in call("GET", f"{eos}/api/v1/buckets").get("names", []), "and is listed by eos")

    print("compare-and-set against a native writer")
    _, headers = get_object(eos, bucket, "docs/report.txt")
    before = (headers.get("etag") or "").strip('"')
    native_bucket.blob("docs/report.txt").upload_from_string(b"native rewrite")
    status, _ = status_of("PUT", f"{eos}/api/v1/buckets/{bucket}/objects/docs%2Freport.txt", b"stale",
                          {"content-type": "text/plain", "if-match": f'"{before}"'})
    check(status == 412, f"a write conditioned on the generation before a native rewrite fails ({status})")
    check(native_bucket.blob("docs/report.txt").download_as_bytes() == b"native rewrite",
          "and the native write stands")

    print("keys GCS cannot hold, as stored")
    for key, stored in ((".", "%2E"), ("..", "%2E%2E"), ("%2E", "%25%2E")):
        put_object(eos, bucket, key, f"key {key}".encode(), "text/plain", {})
        native = native_bucket.get_blob(stored)
        check(native is not None and native.download_as_bytes() == f"key {key}".encode(),
              f"key {key!r} is stored as {stored!r}")
        body, _ = get_object(eos, bucket, key)
        check(body == f"key {key}".encode(), f"and {key!r} reads back through eos")

    print("V4 signed URLs match google-cloud-storage's")
    credentials = service_account.Credentials.from_service_account_file(args.key_file)
    for method in ("GET", "PUT"):
        signed = call("POST", f"{eos}/api/v1/buckets/{bucket}/presign",
                      {"key": "docs/report.txt", "method": method, "expiresInSeconds": 600})
        url = urllib.parse.urlsplit(signed["url"])
        query = dict(urllib.parse.parse_qsl(url.query))
        theirs = _signing.generate_signed_url_v4(
            credentials, url.path, int(query["X-Goog-Expires"]),
            api_access_endpoint=f"{url.scheme}://{url.netloc}", method=method,
            _request_timestamp=query["X-Goog-Date"])
        check(signed["url"] == theirs, f"the {method} URL is the one google-cloud-storage signs: {signed['url'][:90]}…")
    check(status_of("GET", signed_get := call("POST", f"{eos}/api/v1/buckets/{bucket}/presign",
                                               {"key": "docs/report.txt", "method": "GET",
                                                "expiresInSeconds": 60})["url"])[1] == b"native rewrite",
          f"a signed GET URL reads the object ({signed_get[:60]}…)")

    print(f"a {args.large_mib} MiB object through eos (a resumable upload)")
    large_round_trip(
        eos, args.eos_pid, bucket, args.large_mib,
        native_size=lambda: native_bucket.get_blob("large.bin").size,
        native_chunks=lambda: [native_bucket.blob("large.bin").download_as_bytes()])

    token_sources(args.eos_proxy, args.endpoint, args.project, args.key_file, args.scratch)

    for name in (bucket, premade):
        for native in gcs.list_blobs(prefix + name):
            native.delete()
        gcs.bucket(prefix + name).delete()
    finish()


if __name__ == "__main__":
    main()
