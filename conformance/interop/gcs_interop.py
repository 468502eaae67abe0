"""eos `gcs` against fake-gcs-server, as Google's own Python client (google-cloud-storage) sees it:
an object eos wrote is read natively with its content type, metadata and generation (= eos's
ETag); an object and a bucket made natively before eos touches them are served by eos; a compare-
and-set at a generation a native writer has replaced fails; the keys `.` and `..` are stored under
their documented escapes; eos's V4 signed URLs are byte for byte the URLs google-cloud-storage
signs with the same key and time; a large object goes through eos in a resumable upload with
bounded memory and reads back natively.

    gcs_interop.py --eos URL --eos-pid PID --endpoint http://127.0.0.1:PORT --project P \
        --key-file sa.json [--name-prefix P] [--large-mib N]
"""

import argparse
import urllib.error
import urllib.parse
import urllib.request
import uuid

from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from google.cloud.storage import _signing
from google.oauth2 import service_account

from common import call, check, finish, get_object, large_round_trip, put_object

RUN = uuid.uuid4().hex[:8]


def status_of(method, url, body=None, headers=None):
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--eos", required=True)
    parser.add_argument("--eos-pid", required=True, type=int)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--project", required=True)
    parser.add_argument("--key-file", required=True)
    parser.add_argument("--name-prefix", default="")
    parser.add_argument("--large-mib", type=int, default=24)
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

    for name in (bucket, premade):
        for native in gcs.list_blobs(prefix + name):
            native.delete()
        gcs.bucket(prefix + name).delete()
    finish()


if __name__ == "__main__":
    main()
