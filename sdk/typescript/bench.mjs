// What the TypeScript SDK costs over a bare request, in one run against the same proxies:
//
//   - a unary call (ekv get of a 100-byte value): `KvClient.get` against a bare `node:http`
//     GET of the same route on a keep-alive agent (body collected into one buffer, as the SDK
//     does, not decoded), and against Node's built-in `fetch` (undici) for the transport
//     choice; latency percentiles and the ratios;
//   - object GET throughput (a 64 MiB object): `ObjectClient.get`'s body piped into a counting
//     sink against a bare `node:http` GET of the same object piped the same way, MiB/s.
//
// Rounds alternate between the clients so drift on a shared VM hits all of them alike.
//
//   EXO_EKV_ENDPOINT=http://127.0.0.1:7403 EXO_EOS_ENDPOINT=http://127.0.0.1:7402 node bench.mjs
//   options (environment): BENCH_CALLS (per round, default 2000), BENCH_ROUNDS (default 5),
//   BENCH_OBJECT_MIB (default 64)
import http from "node:http";
import { Writable } from "node:stream";
import { pipeline } from "node:stream/promises";

import { KvClient, ObjectClient } from "./dist/index.js";

const kvEndpoint = process.env.EXO_EKV_ENDPOINT ?? "http://127.0.0.1:7403";
const eosEndpoint = process.env.EXO_EOS_ENDPOINT ?? "http://127.0.0.1:7402";
const calls = Number(process.env.BENCH_CALLS ?? 2000);
const rounds = Number(process.env.BENCH_ROUNDS ?? 5);
const objectMiB = Number(process.env.BENCH_OBJECT_MIB ?? 64);
for (const endpoint of [kvEndpoint, eosEndpoint]) {
  if (!endpoint.startsWith("http://")) {
    throw new Error(`bench.mjs compares with a bare node:http request: give an http:// endpoint, not ${endpoint}`);
  }
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });

/** A sink counting what is piped into it. */
function counter() {
  const sink = new Writable({
    write(chunk, _encoding, callback) {
      sink.bytes += chunk.length;
      callback();
    },
  });
  sink.bytes = 0;
  return sink;
}

/** Reads a body to the end, piped into a counting sink (as an app pipes a download somewhere). */
async function drain(body) {
  const sink = counter();
  await pipeline(body, sink);
  return sink.bytes;
}

/** Reads a small body to the end into one buffer (a pipeline costs more than such a body). */
function collect(body) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    body.on("data", (chunk) => chunks.push(chunk));
    body.on("end", () => {
      resolve(Buffer.concat(chunks).length);
    });
    body.on("error", reject);
  });
}

/** A bare GET: resolves with the byte count once the whole body has been read, piped into a
 * counting sink (`read = drain`, for downloads) or collected (`read = collect`, for small bodies). */
function bareGet(url, read = drain) {
  return new Promise((resolve, reject) => {
    const request = http.get(url, { agent }, (response) => {
      if (response.statusCode !== 200) {
        response.resume();
        reject(new Error(`bare GET ${url}: ${response.statusCode}`));
        return;
      }
      read(response).then(resolve, reject);
    });
    request.on("error", reject);
  });
}

function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/** Times `n` sequential calls of `call`; returns each call's latency in µs. */
async function timed(n, call) {
  const out = new Array(n);
  for (let i = 0; i < n; i++) {
    const started = process.hrtime.bigint();
    await call();
    out[i] = Number(process.hrtime.bigint() - started) / 1000;
  }
  return out;
}

const kv = new KvClient(kvEndpoint, { retry: { maxAttempts: 1, initialBackoffMs: 1, maxBackoffMs: 1 } });
const table = `bench-${process.pid}`;
await kv.createTable(table);
await kv.put(table, "k", Buffer.alloc(100, 7));
const entryUrl = `${kvEndpoint}/api/v1/tables/${table}/entries/k`;

const clients = {
  "SDK KvClient.get": () => kv.get(table, "k"),
  "bare node:http GET": () => bareGet(entryUrl, collect),
  "bare fetch GET": async () => {
    const response = await fetch(entryUrl);
    await response.arrayBuffer();
  },
};
const samples = Object.fromEntries(Object.keys(clients).map((name) => [name, []]));
for (const call of Object.values(clients)) {
  await timed(300, call); // warm-up: connections, JIT
}
for (let round = 0; round < rounds; round++) {
  for (const [name, call] of Object.entries(clients)) {
    samples[name].push(...(await timed(calls, call)));
  }
}
const stats = {};
for (const [name, values] of Object.entries(samples)) {
  values.sort((a, b) => a - b);
  stats[name] = {
    p50: percentile(values, 50),
    p99: percentile(values, 99),
    mean: values.reduce((a, b) => a + b, 0) / values.length,
  };
}
const bare = stats["bare node:http GET"];
console.log(`unary: ekv get of a 100-byte value, ${rounds} × ${calls} sequential calls each, one keep-alive connection`);
console.log("| client | p50 µs | p99 µs | mean µs | p50 ratio to bare node:http |");
console.log("|---|---|---|---|---|");
for (const [name, s] of Object.entries(stats)) {
  console.log(`| ${name} | ${s.p50.toFixed(0)} | ${s.p99.toFixed(0)} | ${s.mean.toFixed(0)} | ${(s.p50 / bare.p50).toFixed(2)} |`);
}
await kv.deleteTable(table);
kv.close();

const objects = new ObjectClient(eosEndpoint);
const bucket = `bench-${process.pid}`;
await objects.createBucket(bucket);
const size = objectMiB * 1024 * 1024;
const chunk = Buffer.alloc(1024 * 1024, 0x5a);
async function* body() {
  for (let i = 0; i < objectMiB; i++) {
    yield chunk;
  }
}
await objects.put(bucket, "big", body(), { contentLength: size });
const objectUrl = `${eosEndpoint}/api/v1/buckets/${bucket}/objects/big`;
const getters = {
  "SDK ObjectClient.get (stream)": async () => drain((await objects.get(bucket, "big")).body),
  "bare node:http GET": () => bareGet(objectUrl),
};
const throughput = Object.fromEntries(Object.keys(getters).map((name) => [name, []]));
for (let round = 0; round < rounds; round++) {
  for (const [name, get] of Object.entries(getters)) {
    const started = process.hrtime.bigint();
    const bytes = await get();
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    if (bytes !== size) {
      throw new Error(`${name} read ${bytes} of ${size} bytes`);
    }
    throughput[name].push(objectMiB / seconds);
  }
}
const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
const floor = median(throughput["bare node:http GET"]);
console.log();
console.log(`object GET: ${objectMiB} MiB object, ${rounds} rounds, median`);
console.log("| client | MiB/s | fraction of bare node:http |");
console.log("|---|---|---|");
for (const [name, values] of Object.entries(throughput)) {
  console.log(`| ${name} | ${median(values).toFixed(0)} | ${(median(values) / floor).toFixed(2)} |`);
}
await objects.delete(bucket, "big");
await objects.deleteBucket(bucket);
objects.close();
agent.destroy();
