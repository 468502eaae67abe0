/** KvClient against the ekv proxy of `$EXO_EKV_ENDPOINT` (a real proxy): every call and condition. */

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { KvClient, type Write } from "@exoflow/sdk";
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

const INT64_MAX = 2n ** 63n - 1n;

test("counters: from 0, add, subtract, read as decimal text, a version", async () => {
  assert.ok((await kv.describe()).capabilities.includes("INCREMENT"));
  const key = unique("hits");
  assert.equal(await kv.increment(table, key), 1n);
  assert.equal(await kv.increment(table, key, 41), 42n);
  assert.equal(await kv.increment(table, key, -50n), -8n);
  assert.equal(await kv.increment(table, key, 0), -8n);
  assert.equal((await kv.get(table, key)).value.toString(), "-8");
  const counted = await kv.incrementVersioned(table, key, 10);
  assert.equal(counted.value, 2n);
  assert.equal(counted.version, (await kv.get(table, key)).version);
  const fresh = unique("fresh");
  assert.equal(await kv.increment(table, fresh, 0), 0n);
  assert.equal((await kv.get(table, fresh)).value.toString(), "0");
  const typed = unique("typed");
  await kv.put(table, typed, "17"); // a counter written by anyone as decimal text
  assert.equal(await kv.increment(table, typed, 3), 20n);
  await rejectsWith(kv.increment(unique("ts-no-table"), key), "TABLE_NOT_FOUND");
});

test("an increment of a value that is not a counter changes nothing", async () => {
  const key = unique("name");
  const version = await kv.put(table, key, "abc");
  const err = await rejectsWith(kv.increment(table, key), "NOT_A_COUNTER");
  assert.equal(err.status, 409);
  assert.equal(err.retryable, false);
  const entry = await kv.get(table, key);
  assert.equal(entry.value.toString(), "abc");
  assert.equal(entry.version, version);
});

test("counters hold 64 bits exactly; overflow changes nothing", async () => {
  const key = unique("big");
  assert.equal(await kv.increment(table, key, INT64_MAX), INT64_MAX);
  const entry = await kv.get(table, key);
  assert.equal(entry.value.toString(), "9223372036854775807");
  const err = await rejectsWith(kv.increment(table, key, 1), "COUNTER_OVERFLOW");
  assert.equal(err.status, 409);
  const after = await kv.get(table, key);
  assert.equal(after.value.toString(), "9223372036854775807");
  assert.equal(after.version, entry.version);
  assert.equal(await kv.increment(table, key, -INT64_MAX), 0n);
  const small = unique("small");
  assert.equal(await kv.increment(table, small, -INT64_MAX - 1n), -INT64_MAX - 1n);
  await rejectsWith(kv.increment(table, small, -1), "COUNTER_OVERFLOW");
  // Beyond 2^53 a number would lose digits: refused before anything is sent.
  const unsafe = await rejectsWith(kv.increment(table, key, 2 ** 53), "INVALID_ARGUMENT");
  assert.equal(unsafe.field, "delta");
  await rejectsWith(kv.increment(table, key, 1.5), "INVALID_ARGUMENT");
  await rejectsWith(kv.increment(table, key, INT64_MAX + 1n), "INVALID_ARGUMENT");
  const ttl = await rejectsWith(kv.increment(table, key, 1, { ttlSeconds: 0.5 }), "INVALID_ARGUMENT");
  assert.equal(ttl.field, "ttlSeconds");
  assert.equal(await kv.increment(table, key, 0), 0n);
});

test("a counter's time to live is set when it is created, and kept", async () => {
  const key = unique("window");
  const before = Date.now();
  assert.equal(await kv.increment(table, key, 1, { ttlSeconds: 1 }), 1n);
  const expires = (await kv.get(table, key)).expiresAtMs;
  assert.ok(expires >= before + 500 && expires <= before + 3000, String(expires));
  assert.equal(await kv.increment(table, key, 1, { ttlSeconds: 60 }), 2n);
  assert.equal(await kv.increment(table, key), 3n);
  assert.equal((await kv.get(table, key)).expiresAtMs, expires);
  await new Promise((resolve) => setTimeout(resolve, 2100));
  // The window is over: the count starts again, with no expiry this time.
  assert.equal(await kv.increment(table, key), 1n);
  assert.equal((await kv.get(table, key)).expiresAtMs, 0);
});

test("concurrent increments count exactly", async () => {
  const key = unique("total");
  const seen = await Promise.all(
    Array.from({ length: 8 }, async (_, task) => {
      const values: bigint[] = [];
      for (let i = 0; i < 10; i++) {
        values.push(await kv.increment(table, key, task + 1));
      }
      return values;
    }),
  );
  // Each task adds its own delta 10 times: 10 * (1 + ... + 8).
  assert.equal((await kv.get(table, key)).value.toString(), "360");
  const values = seen.flat();
  assert.equal(new Set(values).size, 80, "every increment saw a value of its own");
  assert.equal(values.reduce((a, b) => (a > b ? a : b)), 360n);
});

test("a write batch applies its puts and deletes and resolves with their versions in order", async () => {
  const described = await kv.describe();
  assert.ok(described.capabilities.includes("ATOMIC_BATCH"));
  assert.ok(described.limits.maxBatchWrites > 0);
  assert.ok(described.limits.maxBatchBytes > 0);
  const p = `${unique("batch")}/`;
  const old = await kv.put(table, `${p}old`, "stale");
  const kept = await kv.put(table, `${p}kept`, "1");
  const writes: Write[] = [
    { key: `${p}new`, value: Buffer.from([0, 255, 1]) },
    { key: `${p}old`, delete: true, ifVersion: old },
    { key: `${p}kept`, value: "2", ifVersion: kept },
    { key: `${p}created`, value: "c", mustNotExist: true },
    { key: `${p}never-there`, delete: true }, // deleting an absent key is no failure
  ];
  const versions = await kv.writeBatch(table, writes);
  assert.equal(versions.length, 5);
  assert.equal(versions[1], "");
  assert.equal(versions[4], "");
  for (const [i, key, value] of [
    [0, `${p}new`, Buffer.from([0, 255, 1])],
    [2, `${p}kept`, Buffer.from("2")],
    [3, `${p}created`, Buffer.from("c")],
  ] as const) {
    const entry = await kv.get(table, key);
    assert.deepEqual(entry.value, value);
    assert.equal(entry.version, versions[i]);
    assert.equal(entry.expiresAtMs, 0);
  }
  assert.notEqual(versions[2], kept);
  await rejectsWith(kv.get(table, `${p}old`), "KEY_NOT_FOUND");
  // A batch of deletes answers an empty version for each.
  assert.deepEqual(
    await kv.writeBatch(table, [
      { key: `${p}new`, delete: true },
      { key: `${p}created`, delete: true },
    ]),
    ["", ""],
  );
  assert.deepEqual(
    (await kv.list(table, { prefix: p })).map((e) => e.key),
    [`${p}kept`],
  );
});

test("a write batch is all or nothing: a stale version in the middle writes nothing", async () => {
  const p = `${unique("all-or-none")}/`;
  const first = await kv.put(table, `${p}a`, "100");
  const current = await kv.put(table, `${p}a`, "90", { ifVersion: first });
  await kv.put(table, `${p}b`, "10");
  const batch = (version: string): Write[] => [
    { key: `${p}audit`, value: "moved 10" },
    { key: `${p}a`, value: "80", ifVersion: version },
    { key: `${p}b`, delete: true },
  ];
  const stale = await rejectsWith(kv.writeBatch(table, batch(first)), "CONDITION_FAILED");
  assert.equal(stale.status, 412);
  assert.equal(stale.field, "writes[1]");
  assert.equal(stale.retryable, false);
  await rejectsWith(kv.get(table, `${p}audit`), "KEY_NOT_FOUND");
  const a = await kv.get(table, `${p}a`);
  assert.equal(a.value.toString(), "90");
  assert.equal(a.version, current);
  assert.equal((await kv.get(table, `${p}b`)).value.toString(), "10");
  // A create-only put of a key that exists fails the same way.
  const taken = await rejectsWith(
    kv.writeBatch(table, [
      { key: `${p}b`, delete: true },
      { key: `${p}a`, value: "0", mustNotExist: true },
    ]),
    "CONDITION_FAILED",
  );
  assert.equal(taken.field, "writes[1]");
  assert.equal((await kv.get(table, `${p}b`)).value.toString(), "10");
  // At the current version the same batch applies whole.
  const versions = await kv.writeBatch(table, batch(current));
  assert.equal(versions[2], "");
  assert.equal((await kv.get(table, `${p}a`)).version, versions[1]);
  assert.deepEqual((await kv.batchGet(table, [`${p}audit`, `${p}a`, `${p}b`])).missing, [`${p}b`]);
});

test("a write batch that is not valid is refused whole", async () => {
  const limits = (await kv.describe()).limits;
  const p = `${unique("invalid")}/`;
  const twice = await rejectsWith(
    kv.writeBatch(table, [
      { key: `${p}k`, value: "1" },
      { key: `${p}other`, value: "2" },
      { key: `${p}k`, delete: true },
    ]),
    "INVALID_ARGUMENT",
  );
  assert.equal(twice.status, 400);
  assert.equal(twice.field, "writes[2].key");
  assert.deepEqual(await kv.list(table, { prefix: p }), []);
  const empty = await rejectsWith(kv.writeBatch(table, []), "INVALID_ARGUMENT");
  assert.equal(empty.field, "writes");
  const many = Array.from({ length: limits.maxBatchWrites + 1 }, (_, i): Write => ({ key: `${p}${String(i)}`, value: "" }));
  assert.equal((await rejectsWith(kv.writeBatch(table, many), "INVALID_ARGUMENT")).field, "writes");
  // Every value within maxValueBytes, their total over maxBatchBytes.
  const count = Math.floor(limits.maxBatchBytes / limits.maxValueBytes) + 1;
  assert.ok(count <= limits.maxBatchWrites);
  const big = Array.from({ length: count }, (_, i): Write => ({ key: `${p}big${String(i)}`, value: Buffer.alloc(limits.maxValueBytes) }));
  assert.equal((await rejectsWith(kv.writeBatch(table, big), "VALUE_TOO_LARGE")).status, 413);
  assert.deepEqual(await kv.list(table, { prefix: p, keysOnly: true }), []);
  // Refused before anything is sent: two conditions, a fraction of a second, a delete with a value.
  const both = await rejectsWith(
    kv.writeBatch(table, [
      { key: `${p}a`, value: "" },
      { key: `${p}b`, value: "", mustNotExist: true, ifVersion: "v" },
    ]),
    "INVALID_ARGUMENT",
  );
  assert.equal(both.field, "writes[1].condition");
  assert.equal(both.status, 0);
  const ttl = await rejectsWith(kv.writeBatch(table, [{ key: `${p}a`, value: "", ttlSeconds: 0.5 }]), "INVALID_ARGUMENT");
  assert.equal(ttl.field, "writes[0].ttlSeconds");
  const loose = { key: `${p}a`, delete: true, value: "x" } as unknown as Write; // as JavaScript may pass it
  assert.equal((await rejectsWith(kv.writeBatch(table, [loose]), "INVALID_ARGUMENT")).field, "writes[0].value");
  await rejectsWith(kv.writeBatch(unique("ts-no-table"), [{ key: "k", value: "1" }]), "TABLE_NOT_FOUND");
});

test("a put in a write batch takes a time to live", async () => {
  const p = `${unique("batch-ttl")}/`;
  const before = Date.now();
  await kv.writeBatch(table, [
    { key: `${p}brief`, value: "s", ttlSeconds: 1 },
    { key: `${p}lasting`, value: "l" },
  ]);
  const expires = (await kv.get(table, `${p}brief`)).expiresAtMs;
  assert.ok(expires >= before + 500 && expires <= before + 3000, String(expires));
  assert.equal((await kv.get(table, `${p}lasting`)).expiresAtMs, 0);
  await new Promise((resolve) => setTimeout(resolve, 2100));
  assert.deepEqual((await kv.batchGet(table, [`${p}brief`, `${p}lasting`])).missing, [`${p}brief`]);
});
