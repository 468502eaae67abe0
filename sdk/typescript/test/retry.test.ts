/**
 * The retry policy (the Rust SDK's cases, plus the rule for connections lost after the request
 * was sent, against a server that drops them; an increment's narrower rule, against a scripted
 * server), endpoint parsing and push decoding — the parts that need no proxy.
 */

import assert from "node:assert/strict";
import http from "node:http";
import net from "node:net";
import { test } from "node:test";

import { ExoError, KvClient, QueueClient, decodePushed, parseEndpoint, runWithRetry, type RetryPolicy } from "@exoflow/sdk";

import { rejectsWith } from "./helpers.js";

const policy: RetryPolicy = { maxAttempts: 3, initialBackoffMs: 1, maxBackoffMs: 2 };
const readOnly = { readOnly: true };

test("retries retryable errors until attempts run out", async () => {
  let calls = 0;
  await assert.rejects(
    runWithRetry(policy, readOnly, () => {
      calls++;
      return Promise.reject(ExoError.client("BACKEND_UNAVAILABLE", "down", true));
    }),
    (err: unknown) => err instanceof ExoError && err.reason === "BACKEND_UNAVAILABLE",
  );
  assert.equal(calls, 3);
});

test("never retries a rejected request", async () => {
  let calls = 0;
  await assert.rejects(
    runWithRetry(policy, readOnly, () => {
      calls++;
      return Promise.reject(ExoError.client("INVALID_NAME", "bad", false));
    }),
  );
  assert.equal(calls, 1);
});

test("waits at least as long as the proxy asked", async () => {
  let calls = 0;
  const started = Date.now();
  const result = await runWithRetry(policy, readOnly, () => {
    calls++;
    if (calls === 1) {
      return Promise.reject(new ExoError({ reason: "BACKEND_UNAVAILABLE", message: "circuit open", retryable: true, retryAfterMs: 200 }));
    }
    return Promise.resolve(calls);
  });
  assert.equal(result, 2);
  // The policy's own back-off is at most 2 ms: the wait is the hint's.
  assert.ok(Date.now() - started >= 195, `waited only ${Date.now() - started} ms`);
});

test("stops at the first success", async () => {
  let calls = 0;
  const result = await runWithRetry(policy, readOnly, () => {
    calls++;
    return calls === 1 ? Promise.reject(ExoError.client("TIMEOUT", "slow", true)) : Promise.resolve(calls);
  });
  assert.equal(result, 2);
});

test("back-off is full jitter under a doubling ceiling capped at maxBackoffMs", async () => {
  const waits: number[] = [];
  let last = Date.now();
  const slow: RetryPolicy = { maxAttempts: 5, initialBackoffMs: 40, maxBackoffMs: 80 };
  // random() = 1 waits the whole ceiling each time: 40, 80, 80, 80.
  await assert.rejects(
    runWithRetry(slow, { readOnly: true, random: () => 1 }, () => {
      const now = Date.now();
      waits.push(now - last);
      last = now;
      return Promise.reject(ExoError.client("THROTTLED", "busy", true));
    }),
  );
  const [, first, second, third, fourth] = waits;
  assert.ok(first !== undefined && first >= 38 && first < 75, `first wait ${String(first)}`);
  for (const wait of [second, third, fourth]) {
    assert.ok(wait !== undefined && wait >= 78 && wait < 140, `capped wait ${String(wait)} (${waits.join(",")})`);
  }
  // random() = 0 retries at once.
  const started = Date.now();
  await assert.rejects(
    runWithRetry(slow, { readOnly: true, random: () => 0 }, () => Promise.reject(ExoError.client("THROTTLED", "busy", true))),
  );
  assert.ok(Date.now() - started < 40, "zero jitter should not wait");
});

test("a connection lost after the request was sent is retried only for read-only calls", async () => {
  // A server that reads each whole request, then drops the connection without answering: the
  // proxy may have applied such a request, so only a call that changes nothing is sent again.
  let requests = 0;
  const server = net.createServer((socket) => {
    let seen = "";
    socket.on("data", (chunk: Buffer) => {
      seen += chunk.toString("latin1");
      const headEnd = seen.indexOf("\r\n\r\n");
      const length = Number(/content-length: *(\d+)/i.exec(seen)?.[1] ?? 0);
      if (headEnd >= 0 && seen.length >= headEnd + 4 + length) {
        requests++;
        socket.destroy();
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const endpoint = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  const retry: RetryPolicy = { maxAttempts: 3, initialBackoffMs: 1, maxBackoffMs: 2 };
  const kv = new KvClient(endpoint, { retry });
  const queues = new QueueClient(endpoint, { retry });
  try {
    const read = await rejectsWith(kv.get("table", "key"), "BACKEND_UNAVAILABLE");
    assert.match(read.message, /may have applied/);
    assert.equal(requests, 3, "a read is sent again");
    requests = 0;
    await rejectsWith(queues.send("queue", "body"), "BACKEND_UNAVAILABLE");
    assert.equal(requests, 1, "a send the proxy may have applied is not sent again");
  } finally {
    kv.close();
    queues.close();
    server.close();
  }
});

/** One scripted answer: a status and a JSON body. */
interface Answer {
  readonly status: number;
  readonly body: unknown;
}

function problem(status: number, reason: string, retryable: boolean): Answer {
  return { status, body: { type: `urn:exoflow:error:${reason}`, title: "Error", status, detail: `scripted ${reason}`, reason, retryable } };
}

const incremented: Answer = { status: 200, body: { value: "5", version: "v5" } };

/**
 * Runs `body` against an HTTP server on loopback that answers each request with the next of
 * `answers` (the last repeats), and returns the requests it got (path and body).
 */
async function scripted(answers: readonly Answer[], body: (endpoint: string) => Promise<void>): Promise<{ path: string; body: string }[]> {
  const seen: { path: string; body: string }[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      seen.push({ path: req.url ?? "", body: Buffer.concat(chunks).toString("utf8") });
      const answer = answers[Math.min(seen.length, answers.length) - 1] ?? incremented;
      const type = answer.status >= 300 ? "application/problem+json" : "application/json";
      res.writeHead(answer.status, { "content-type": type }).end(JSON.stringify(answer.body));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  try {
    await body(`http://127.0.0.1:${(server.address() as net.AddressInfo).port}`);
  } finally {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
  return seen;
}

test("an increment is not retried on a retryable error it may have taken effect before", async () => {
  for (const [status, reason] of [
    [503, "BACKEND_UNAVAILABLE"],
    [504, "TIMEOUT"],
    [503, "SHUTTING_DOWN"],
  ] as const) {
    const seen = await scripted([problem(status, reason, true), incremented], async (endpoint) => {
      const kv = new KvClient(endpoint, { retry: policy });
      const err = await rejectsWith(kv.increment("t", "hits"), reason);
      // Rejected as the proxy gave it: still marked retryable, but sent once.
      assert.equal(err.retryable, true);
      kv.close();
    });
    assert.equal(seen.length, 1, `${reason}: sent once`);
  }
});

test("an increment is retried when throttled: the proxy wrote nothing", async () => {
  const throttled = problem(429, "THROTTLED", true);
  const seen = await scripted([throttled, throttled, incremented], async (endpoint) => {
    const kv = new KvClient(endpoint, { retry: policy });
    assert.equal(await kv.increment("t", "hits", 2n, { ttlSeconds: 60 }), 5n);
    kv.close();
  });
  assert.equal(seen.length, 3);
  const [first, , third] = seen;
  assert.ok(first !== undefined && third !== undefined);
  assert.equal(first.path, "/api/v1/tables/t/increment");
  assert.deepEqual(JSON.parse(first.body), { key: "hits", delta: "2", ttlSeconds: 60 });
  assert.equal(third.body, first.body);
  // Attempts still run out.
  const exhausted = await scripted([throttled], async (endpoint) => {
    const kv = new KvClient(endpoint, { retry: policy });
    await rejectsWith(kv.increment("t", "hits"), "THROTTLED");
    kv.close();
  });
  assert.equal(exhausted.length, 3);
});

test("increment values are exact 64-bit integers, sent as decimal strings", async () => {
  const answers: Answer[] = [
    { status: 200, body: { value: "9223372036854775807", version: "v1" } },
    { status: 200, body: { version: "v2" } },
    { status: 200, body: { value: "-9223372036854775808", version: "v3" } },
    { status: 200, body: { value: "twelve", version: "v4" } },
  ];
  const seen = await scripted(answers, async (endpoint) => {
    const kv = new KvClient(endpoint);
    assert.deepEqual(await kv.incrementVersioned("t", "k", 2n ** 63n - 1n), { value: 2n ** 63n - 1n, version: "v1" });
    assert.equal(await kv.increment("t", "k", 0), 0n, "proto3 JSON leaves a 0 out");
    assert.equal(await kv.increment("t", "k", -(2n ** 63n)), -(2n ** 63n));
    await rejectsWith(kv.increment("t", "k"), "INTERNAL");
    for (const [delta, field] of [
      [2n ** 63n, "delta"],
      [-(2n ** 63n) - 1n, "delta"],
      [Number.MAX_SAFE_INTEGER + 1, "delta"],
      [0.5, "delta"],
      [Number.NaN, "delta"],
    ] as const) {
      const err = await rejectsWith(kv.increment("t", "k", delta), "INVALID_ARGUMENT");
      assert.equal(err.field, field);
    }
    const err = await rejectsWith(kv.increment("t", "k", 1, { ttlSeconds: -1 }), "INVALID_ARGUMENT");
    assert.equal(err.field, "ttlSeconds");
    kv.close();
  });
  assert.equal(seen.length, 4, "refused arguments are never sent");
  assert.equal((JSON.parse(seen[0]?.body ?? "") as { delta: string }).delta, "9223372036854775807");
  assert.equal((JSON.parse(seen[2]?.body ?? "") as { delta: string }).delta, "-9223372036854775808");
});

test("a write batch is retried as a put is, and sent as the contract's BatchWrite", async () => {
  const answers = [problem(503, "BACKEND_UNAVAILABLE", true), { status: 200, body: { versions: ["v1", ""] } }];
  const seen = await scripted(answers, async (endpoint) => {
    const kv = new KvClient(endpoint, { retry: policy });
    const versions = await kv.writeBatch("t", [
      { key: "a", value: Buffer.from([0, 120]), ifVersion: "v0", ttlSeconds: 2 },
      { key: "b", delete: true, ifVersion: "v9" },
    ]);
    assert.deepEqual(versions, ["v1", ""]);
    kv.close();
  });
  assert.equal(seen.length, 2);
  const [first, second] = seen;
  assert.ok(first !== undefined && second !== undefined);
  assert.equal(first.path, "/api/v1/tables/t/write-batch");
  assert.equal(second.body, first.body);
  assert.deepEqual(JSON.parse(first.body), {
    writes: [
      { key: "a", value: "AHg=", condition: { versionEquals: "v0" }, ttlSeconds: 2 },
      { key: "b", delete: true, condition: { versionEquals: "v9" } },
    ],
  });
});

test("write batch answers are read as proto3 JSON writes them", async () => {
  const answers: Answer[] = [
    { status: 200, body: {} }, // every write a delete: the list of empty versions may be left out
    { status: 200, body: { versions: ["v1", null] } },
    { status: 200, body: { versions: ["v1"] } },
  ];
  const seen = await scripted(answers, async (endpoint) => {
    const kv = new KvClient(endpoint);
    assert.deepEqual(
      await kv.writeBatch("t", [
        { key: "a", delete: true },
        { key: "b", delete: true },
      ]),
      ["", ""],
    );
    assert.deepEqual(
      await kv.writeBatch("t", [
        { key: "a", value: "" },
        { key: "b", delete: true },
      ]),
      ["v1", ""],
    );
    // One version for two writes.
    await rejectsWith(
      kv.writeBatch("t", [
        { key: "a", value: "" },
        { key: "b", value: "" },
      ]),
      "INTERNAL",
    );
    kv.close();
  });
  assert.equal(seen.length, 3);
});

test("counter errors are told apart by reason, not status", async () => {
  const answers = [problem(409, "NOT_A_COUNTER", false), problem(409, "COUNTER_OVERFLOW", false)];
  const seen = await scripted(answers, async (endpoint) => {
    const kv = new KvClient(endpoint, { retry: policy });
    assert.equal((await rejectsWith(kv.increment("t", "k"), "NOT_A_COUNTER")).status, 409);
    assert.equal((await rejectsWith(kv.increment("t", "k"), "COUNTER_OVERFLOW")).status, 409);
    kv.close();
  });
  assert.equal(seen.length, 2);
});

test("no retry starts past the deadline, and an abort stops the back-off", async () => {
  let calls = 0;
  const longWaits: RetryPolicy = { maxAttempts: 10, initialBackoffMs: 1000, maxBackoffMs: 1000 };
  const started = Date.now();
  await assert.rejects(
    runWithRetry(longWaits, { readOnly: true, deadline: Date.now() + 100, random: () => 1 }, () => {
      calls++;
      return Promise.reject(ExoError.client("TIMEOUT", "slow", true));
    }),
  );
  assert.equal(calls, 1, "a 1 s back-off does not fit a 100 ms deadline");
  assert.ok(Date.now() - started < 100);

  const controller = new AbortController();
  setTimeout(() => {
    controller.abort(new Error("stop"));
  }, 50);
  await assert.rejects(
    runWithRetry(longWaits, { readOnly: true, signal: controller.signal, random: () => 1 }, () =>
      Promise.reject(ExoError.client("TIMEOUT", "slow", true)),
    ),
    /stop/,
  );
  assert.ok(Date.now() - started < 600, "the abort ended the 1 s back-off");
});

test("endpoints: http, https, unix (both spellings); others refused", () => {
  assert.deepEqual(parseEndpoint("http://127.0.0.1:7401"), {
    protocol: "http:",
    hostname: "127.0.0.1",
    port: 7401,
    display: "http://127.0.0.1:7401",
  });
  assert.equal(parseEndpoint("https://localhost").port, 443);
  assert.equal(parseEndpoint("http://[::1]:9").hostname, "::1");
  assert.equal(parseEndpoint("unix:/run/exo/eqs.sock").socketPath, "/run/exo/eqs.sock");
  assert.equal(parseEndpoint("unix:///run/exo/eqs.sock").socketPath, "/run/exo/eqs.sock");
  for (const bad of ["unix:relative.sock", "ftp://host", "not a url"]) {
    assert.throws(() => parseEndpoint(bad), (err: unknown) => err instanceof ExoError && err.reason === "INVALID_ARGUMENT", bad);
  }
});

test("decodePushed reads the proxy's JSON envelope and refuses anything else", () => {
  const body = JSON.stringify({
    topic: "orders",
    subscription: "mail",
    queue: "mail-orders",
    message: {
      messageId: "m1",
      body: Buffer.from([0, 255, 1]).toString("base64"),
      attributes: { "exo.publish-id": "p1", region: "eu" },
      dequeueCount: 2,
      enqueuedAtMs: "1700000000000",
    },
  });
  for (const form of [body, Buffer.from(body), JSON.parse(body) as object]) {
    const pushed = decodePushed(form);
    assert.equal(pushed.topic, "orders");
    assert.equal(pushed.publishId, "p1");
    assert.deepEqual([...pushed.message.body], [0, 255, 1]);
    assert.equal(pushed.message.dequeueCount, 2);
    assert.equal(pushed.message.enqueuedAtMs, 1_700_000_000_000);
  }
  for (const bad of ["", "[]", "{}", "not json", '{"message": 3}']) {
    assert.throws(() => decodePushed(bad), (err: unknown) => err instanceof ExoError && err.reason === "MALFORMED_REQUEST", bad);
  }
});
