/**
 * ObjectClient against the eos proxy of `$EXO_EOS_ENDPOINT` (a real proxy): buckets, uploads from
 * every kind of source, downloads (ranges, conditions, streams), head, copy, listing, batch
 * delete, presigned URLs, a failing source storing nothing, deadlines.
 */

import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { after, before, test } from "node:test";

import { ExoError, ObjectClient } from "@exoflow/sdk";
import { rejectsWith, required, unique } from "./helpers.js";

let objects: ObjectClient;
let bucket: string;
let dir: string;

before(async () => {
  required("EXO_EOS_ENDPOINT");
  objects = ObjectClient.fromEnv();
  bucket = unique("ts-objects");
  assert.equal(await objects.createBucket(bucket), true);
  dir = await mkdtemp(join(tmpdir(), "exo-ts-objects-"));
});

after(async () => {
  const { objects: left } = await objects.list(bucket);
  await objects.deleteBatch(
    bucket,
    left.map((o) => o.key),
  );
  await objects.deleteBucket(bucket);
  objects.close();
  await rm(dir, { recursive: true, force: true });
});

async function text(key: string): Promise<string> {
  return (await objects.getBytes(bucket, key)).data.toString("utf8");
}

test("describe, openapi, buckets", async () => {
  const described = await objects.describe();
  assert.notEqual(described.backend, "");
  assert.ok(described.capabilities.includes("RANGE_READ"), described.capabilities.join(","));
  assert.equal(((await objects.openapi()).info as { title: string }).title, "ExoFlow eos API");
  assert.equal(await objects.createBucket(bucket), false);
  assert.ok((await objects.listBuckets()).includes(bucket));
  const other = unique("ts-empty");
  await objects.createBucket(other);
  await objects.deleteBucket(other);
  await rejectsWith(objects.deleteBucket(other), "BUCKET_NOT_FOUND");
});

test("uploads from bytes, strings, Node streams, web streams, generators and files; metadata and type", async () => {
  const bytes = Buffer.from([0, 1, 2, 255]);
  const info = await objects.put(bucket, "kinds/bytes", bytes, { contentType: "application/x-test", metadata: { Owner: "ts", n: "1" } });
  assert.equal(info.size, 4);
  assert.notEqual(info.etag, "");
  const got = await objects.getBytes(bucket, "kinds/bytes");
  assert.deepEqual(got.data, bytes);
  assert.equal(got.info.contentType, "application/x-test");
  assert.deepEqual(got.info.metadata, { owner: "ts", n: "1" });
  assert.equal(got.info.etag, info.etag);
  assert.equal(got.info.size, 4);

  await objects.put(bucket, "kinds/string", "héllo");
  assert.equal(await text("kinds/string"), "héllo");
  await objects.put(bucket, "kinds/node-stream", Readable.from([Buffer.from("node "), Buffer.from("stream")]));
  assert.equal(await text("kinds/node-stream"), "node stream");
  const web = new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(new TextEncoder().encode("web "));
      controller.enqueue(new TextEncoder().encode("stream"));
      controller.close();
    },
  });
  await objects.put(bucket, "kinds/web-stream", web);
  assert.equal(await text("kinds/web-stream"), "web stream");
  async function* generate(): AsyncGenerator<Uint8Array> {
    for (let i = 0; i < 3; i++) {
      await Promise.resolve();
      yield Buffer.from(`part${i};`);
    }
  }
  await objects.put(bucket, "kinds/generator", generate(), { contentLength: 18 });
  assert.equal(await text("kinds/generator"), "part0;part1;part2;");
  const file = join(dir, "upload.bin");
  await writeFile(file, Buffer.alloc(300_000, 7));
  const fromFile = await objects.putFile(bucket, "kinds/file", file);
  assert.equal(fromFile.size, 300_000);
  const back = join(dir, "download.bin");
  const written = await objects.getToFile(bucket, "kinds/file", back);
  assert.equal(written.size, 300_000);
  assert.deepEqual(await readFile(back), await readFile(file));
});

test("a wrong announced length is refused and stores nothing", async () => {
  const short = await rejectsWith(objects.put(bucket, "kinds/short", Readable.from([Buffer.from("abc")]), { contentLength: 10 }), "INVALID_ARGUMENT");
  assert.match(short.message, /nothing stored.*ended after 3 of the announced 10 bytes/);
  const long = await rejectsWith(objects.put(bucket, "kinds/short", Readable.from([Buffer.alloc(20)]), { contentLength: 10 }), "INVALID_ARGUMENT");
  assert.match(long.message, /more than the announced 10 bytes/);
  await rejectsWith(objects.head(bucket, "kinds/short"), "OBJECT_NOT_FOUND");
});

test("keys with spaces, unicode, slashes and dots round-trip", async () => {
  for (const key of ["a b/ü?#%&=+.txt", "dir/../x", ".", "..", "x//y"]) {
    await objects.put(bucket, key, `k:${key}`);
    assert.equal(await text(key), `k:${key}`, key);
    assert.equal((await objects.head(bucket, key)).key, key);
  }
  const listed = (await objects.list(bucket)).objects.map((o) => o.key);
  assert.ok(listed.includes("dir/../x") && listed.includes(".."), listed.join(" | "));
});

test("ranges: span, from, suffix; an empty span is refused client-side; past the end is 416", async () => {
  await objects.put(bucket, "range", "0123456789");
  const span = await objects.get(bucket, "range", { range: { start: 2, end: 5 } });
  assert.equal(span.offset, 2);
  assert.equal(span.length, 3);
  assert.equal(span.info.size, 10);
  assert.equal((await readAllText(span.body)), "234");
  assert.equal((await objects.getBytes(bucket, "range", { range: { start: 7 } })).data.toString(), "789");
  assert.equal((await objects.getBytes(bucket, "range", { range: { suffix: 4 } })).data.toString(), "6789");
  await rejectsWith(objects.get(bucket, "range", { range: { start: 5, end: 5 } }), "INVALID_ARGUMENT");
  const err = await rejectsWith(objects.get(bucket, "range", { range: { start: 50 } }), "RANGE_NOT_SATISFIABLE");
  assert.equal(err.status, 416);
});

async function readAllText(stream: Readable): Promise<string> {
  let out = "";
  for await (const chunk of stream) {
    out += (chunk as Buffer).toString("utf8");
  }
  return out;
}

test("downloads as a web ReadableStream", async () => {
  await objects.put(bucket, "web-read", "through the web stream");
  const opened = await objects.get(bucket, "web-read");
  const reader = opened.stream().getReader();
  const parts: Uint8Array[] = [];
  for (;;) {
    const { done, value } = await reader.read();
    if (done) {
      break;
    }
    parts.push(value);
  }
  assert.equal(Buffer.concat(parts).toString(), "through the web stream");
});

test("conditional puts and reads", async () => {
  const key = "conditional";
  const first = await objects.put(bucket, key, "v1", { ifAbsent: true });
  await rejectsWith(objects.put(bucket, key, "again", { ifAbsent: true }), "CONDITION_FAILED");
  const second = await objects.put(bucket, key, "v2", { ifMatch: first.etag });
  assert.notEqual(second.etag, first.etag);
  const stale = await rejectsWith(objects.put(bucket, key, "v3", { ifMatch: first.etag }), "CONDITION_FAILED");
  assert.equal(stale.status, 412);
  assert.equal(await text(key), "v2");

  const notModified = await rejectsWith(objects.get(bucket, key, { ifNoneMatch: second.etag }), "NOT_MODIFIED");
  assert.equal(notModified.status, 304);
  assert.equal((await objects.getBytes(bucket, key, { ifNoneMatch: first.etag })).data.toString(), "v2");
  await rejectsWith(objects.get(bucket, key, { ifMatch: first.etag }), "CONDITION_FAILED");
  assert.equal((await objects.getBytes(bucket, key, { ifMatch: second.etag })).data.toString(), "v2");

  await rejectsWith(objects.delete(bucket, key, first.etag), "CONDITION_FAILED");
  await objects.delete(bucket, key, second.etag);
  await rejectsWith(objects.head(bucket, key), "OBJECT_NOT_FOUND");
});

test("head: attributes, and the proxy's reason on failure (missing key vs missing bucket)", async () => {
  const put = await objects.put(bucket, "headed", "12345", { contentType: "text/plain", metadata: { a: "b" } });
  const info = await objects.head(bucket, "headed");
  assert.equal(info.size, 5);
  assert.equal(info.etag, put.etag);
  assert.equal(info.contentType, "text/plain");
  assert.deepEqual(info.metadata, { a: "b" });
  // HTTP dates carry whole seconds.
  assert.ok(Math.abs(info.lastModifiedMs - put.lastModifiedMs) < 1000, `${info.lastModifiedMs} vs ${put.lastModifiedMs}`);
  const missingKey = await rejectsWith(objects.head(bucket, "nothing-here"), "OBJECT_NOT_FOUND");
  assert.equal(missingKey.status, 404);
  await rejectsWith(objects.head(unique("ts-no-bucket"), "k"), "BUCKET_NOT_FOUND");
});

test("list with prefix, delimiter and pages; copy; batch delete", async () => {
  for (const key of ["tree/a/1", "tree/a/2", "tree/b/1", "tree/c"]) {
    await objects.put(bucket, key, key);
  }
  const grouped = await objects.list(bucket, { prefix: "tree/", delimiter: "/" });
  assert.deepEqual(
    grouped.objects.map((o) => o.key),
    ["tree/c"],
  );
  assert.deepEqual(grouped.commonPrefixes, ["tree/a/", "tree/b/"]);
  const page = await objects.listPage(bucket, { prefix: "tree/", pageSize: 2 });
  assert.equal(page.objects.length, 2);
  assert.notEqual(page.nextPageToken, "");
  assert.equal((await objects.list(bucket, { prefix: "tree/" })).objects.length, 4);

  const copied = await objects.copy(bucket, "tree/c", bucket, "tree/copy");
  assert.equal(copied.key, "tree/copy");
  assert.equal(await text("tree/copy"), "tree/c");
  await rejectsWith(objects.copy(bucket, "tree/c", bucket, "tree/copy", { ifAbsent: true }), "CONDITION_FAILED");
  await rejectsWith(objects.copy(bucket, "nope", bucket, "x"), "OBJECT_NOT_FOUND");

  const results = await objects.deleteBatch(bucket, ["tree/a/1", "tree/a/2", "tree/b/1", "tree/c", "tree/copy", ""]);
  assert.equal(results.length, 6);
  assert.deepEqual(
    results.slice(0, 5).map((r) => r.reason),
    [undefined, undefined, undefined, undefined, undefined],
  );
  assert.equal(results[5]?.reason, "INVALID_ARGUMENT");
  assert.deepEqual((await objects.list(bucket, { prefix: "tree/" })).objects, []);
});

test("presigned URLs: GET and PUT without the token; a PUT URL does not allow GET", async () => {
  await objects.put(bucket, "signed", "signed bytes");
  const get = await objects.presign(bucket, "signed", { method: "GET", expiresInSeconds: 60 });
  assert.ok(get.expiresAtMs > Date.now() && get.expiresAtMs <= Date.now() + 61_000);
  const opened = await objects.presignedGet(get);
  assert.equal(await readAllText(opened.body), "signed bytes");
  assert.equal(opened.info.size, 12);

  const put = await objects.presign(bucket, "signed-upload", { method: "PUT", expiresInSeconds: 60 });
  const stored = await objects.presignedPut(put, Readable.from([Buffer.from("via "), Buffer.from("presigned PUT")]));
  assert.equal(stored.size, 17);
  assert.equal(await text("signed-upload"), "via presigned PUT");
  await rejectsWith(objects.presignedGet(put), "PERMISSION_DENIED");
});

test("a source failing midway cancels the upload and stores nothing", async () => {
  let sent = 0;
  async function* failing(): AsyncGenerator<Uint8Array> {
    for (let i = 0; i < 8; i++) {
      sent++;
      yield Buffer.alloc(64 * 1024, i);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    throw new Error("disk read failed");
  }
  for (const contentLength of [undefined, 10 * 64 * 1024]) {
    sent = 0;
    const err = await rejectsWith(objects.put(bucket, "half", failing(), { contentLength }), "INVALID_ARGUMENT");
    assert.match(err.message, /nothing stored.*disk read failed/);
    assert.equal(sent, 8, "the source was read up to its failure");
    await rejectsWith(objects.head(bucket, "half"), "OBJECT_NOT_FOUND");
  }
});

test("an upload whose source stalls fails at its deadline and stores nothing", async () => {
  const stalled = new Readable({ read() { /* never more than the first chunk */ } });
  stalled.push(Buffer.alloc(1024, 1));
  const started = Date.now();
  const err = await rejectsWith(objects.put(bucket, "stalled", stalled, { contentLength: 4096 }, { timeoutMs: 500 }), "TIMEOUT");
  assert.ok(Date.now() - started < 3000);
  assert.ok(err instanceof ExoError);
  await new Promise((resolve) => setTimeout(resolve, 200));
  await rejectsWith(objects.head(bucket, "stalled"), "OBJECT_NOT_FOUND");
});

test("an upload refused up front reports the proxy's reason, and its body is never sent", async () => {
  // 64 MiB offered; the proxy refuses on the headers alone (no bucket, a failed condition), so
  // the SDK, which waits for 100 Continue, reads next to nothing of the source.
  let read = 0;
  function* large(): Generator<Uint8Array> {
    const chunk = Buffer.alloc(1024 * 1024, 3);
    for (let i = 0; i < 64; i++) {
      read += chunk.length;
      yield chunk;
    }
  }
  await rejectsWith(objects.put(unique("ts-nob"), "k", large(), { contentLength: 64 * 1024 * 1024 }), "BUCKET_NOT_FOUND");
  assert.ok(read <= 2 * 1024 * 1024, `${read} bytes of the source were read`);
  read = 0;
  await objects.put(bucket, "exists", "already");
  await rejectsWith(objects.put(bucket, "exists", large(), { ifAbsent: true }), "CONDITION_FAILED");
  assert.ok(read <= 2 * 1024 * 1024, `${read} bytes of the source were read`);
  assert.equal(await text("exists"), "already");
});

test("a missing object or bucket on download is a typed error", async () => {
  await rejectsWith(objects.get(bucket, "absent"), "OBJECT_NOT_FOUND");
  await rejectsWith(objects.get(unique("ts-nob"), "absent"), "BUCKET_NOT_FOUND");
  await rejectsWith(objects.put(unique("ts-nob"), "k", "x"), "BUCKET_NOT_FOUND");
});
