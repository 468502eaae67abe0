/** KvClient against the ekv proxy of `$EXO_EKV_ENDPOINT` (a real proxy): every call and condition. */

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { KvClient } from "@exoflow/sdk";
import { rejectsWith, required, unique } from "./helpers.js";

let kv: KvClient;
let table: string;

before(async () => {
  required("EXO_EKV_ENDPOINT");
  kv = KvClient.fromEnv();
  table = unique("ts-kv");
  assert.equal(await kv.createTable(table), true);
});

after(async () => {
  await kv.deleteTable(table);
  kv.close();
});

test("describe, openapi, tables", async () => {
  const described = await kv.describe();
  assert.notEqual(described.backend, "");
  assert.ok(described.limits.maxValueBytes > 0);
  assert.equal(((await kv.openapi()).info as { title: string }).title, "ExoFlow ekv API");
  assert.equal(await kv.createTable(table), false);
  assert.ok((await kv.listTables()).includes(table));
  await rejectsWith(kv.get(unique("ts-no-table"), "k"), "TABLE_NOT_FOUND");
});

test("put, get (bytes exact, keys with any character), versions, delete", async () => {
  const key = "users/42 ü?#%";
  const value = Buffer.from([0, 10, 200, 255]);
  const version = await kv.put(table, key, value);
  assert.notEqual(version, "");
  const entry = await kv.get(table, key);
  assert.equal(entry.key, key);
  assert.deepEqual(entry.value, value);
  assert.equal(entry.version, version);
  assert.equal(entry.expiresAtMs, 0);
  const next = await kv.put(table, key, "v2");
  assert.notEqual(next, version);
  assert.equal((await kv.get(table, key)).value.toString(), "v2");
  assert.equal(await kv.delete(table, key), true);
  assert.equal(await kv.delete(table, key), false);
  const missing = await rejectsWith(kv.get(table, key), "KEY_NOT_FOUND");
  assert.ok(missing.isNotFound());
});

test("conditions: create only, compare-and-set, delete at a version", async () => {
  const key = unique("cas");
  const v1 = await kv.put(table, key, "a", { mustNotExist: true });
  await rejectsWith(kv.put(table, key, "b", { mustNotExist: true }), "CONDITION_FAILED");
  const v2 = await kv.put(table, key, "b", { ifVersion: v1 });
  await rejectsWith(kv.put(table, key, "c", { ifVersion: v1 }), "CONDITION_FAILED");
  await rejectsWith(kv.delete(table, key, v1), "CONDITION_FAILED");
  assert.equal(await kv.delete(table, key, v2), true);
});

test("a value with a time to live expires", async () => {
  const key = unique("ttl");
  await kv.put(table, key, "brief", { ttlSeconds: 1 });
  const entry = await kv.get(table, key);
  assert.ok(entry.expiresAtMs > Date.now() - 1000 && entry.expiresAtMs <= Date.now() + 2000, String(entry.expiresAtMs));
  await new Promise((resolve) => setTimeout(resolve, 2100));
  await rejectsWith(kv.get(table, key), "KEY_NOT_FOUND");
});

test("list by prefix across pages, keys only; batch get", async () => {
  const prefix = `${unique("list")}/`;
  const keys = ["a", "b", "c", "d", "e"].map((k) => `${prefix}${k}`);
  for (const key of keys) {
    await kv.put(table, key, `value of ${key}`);
  }
  await kv.put(table, "elsewhere", "x");
  const page = await kv.listPage(table, { prefix, pageSize: 2 });
  assert.deepEqual(
    page.entries.map((e) => e.key),
    keys.slice(0, 2),
  );
  assert.notEqual(page.nextPageToken, "");
  const all = await kv.list(table, { prefix });
  assert.deepEqual(
    all.map((e) => e.key),
    keys,
  );
  assert.equal(all[2]?.value.toString(), `value of ${keys[2] ?? ""}`);
  const bare = await kv.list(table, { prefix, keysOnly: true });
  assert.deepEqual(
    bare.map((e) => [e.key, e.value.length]),
    keys.map((k) => [k, 0]),
  );
  const batch = await kv.batchGet(table, [keys[3] ?? "", `${prefix}missing`, keys[0] ?? ""]);
  assert.deepEqual(
    batch.entries.map((e) => e.key),
    [keys[3], keys[0]],
  );
  assert.deepEqual(batch.missing, [`${prefix}missing`]);
});

test("bad arguments are typed errors", async () => {
  const err = await rejectsWith(kv.createTable("NO"), "INVALID_NAME");
  assert.equal(err.status, 400);
  await rejectsWith(kv.batchGet(table, []), "INVALID_ARGUMENT");
});
