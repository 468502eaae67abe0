/**
 * QueueClient and TopicClient against the eqs proxy of `$EXO_EQS_ENDPOINT` (a real proxy): every
 * call, typed errors, the caller's deadline reaching the proxy, cancellation.
 */

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { ExoError, NO_RETRY, PUBLISH_ID_ATTRIBUTE, QueueClient, TOPIC_ATTRIBUTE, TopicClient } from "@exoflow/sdk";
import { rejectsWith, required, unique } from "./helpers.js";

let queues: QueueClient;
let topics: TopicClient;

before(() => {
  required("EXO_EQS_ENDPOINT");
  queues = QueueClient.fromEnv();
  topics = TopicClient.fromEnv();
});

after(() => {
  queues.close();
  topics.close();
});

describe("queues", () => {
  test("describe and the served OpenAPI document", async () => {
    const described = await queues.describe();
    assert.notEqual(described.backend, "");
    assert.ok(described.capabilities.includes("LONG_POLL"), described.capabilities.join(","));
    assert.ok(described.limits.maxReceiveMessages >= 10);
    assert.ok(described.limits.maxMessageBytes >= 256 * 1024);
    const document = await queues.openapi();
    assert.equal((document.info as { title: string }).title, "ExoFlow eqs API");
  });

  test("create (idempotent), info, list with paging, delete", async () => {
    const name = unique("ts-q");
    const first = await queues.createQueue(name, { visibilityTimeoutSeconds: 45 });
    assert.equal(first.created, true);
    assert.equal(first.info.name, name);
    assert.equal(first.info.options.visibilityTimeoutSeconds, 45);
    const again = await queues.createQueue(name, { visibilityTimeoutSeconds: 45 });
    assert.equal(again.created, false);
    await rejectsWith(queues.createQueue(name, { visibilityTimeoutSeconds: 46 }), "QUEUE_ALREADY_EXISTS");

    const others = [unique(`${name}-a`), unique(`${name}-b`)];
    for (const other of others) {
      await queues.createQueue(other);
    }
    const page = await queues.listQueuesPage(name, 1);
    assert.equal(page.names.length, 1);
    assert.notEqual(page.nextPageToken, "", "three queues share the prefix: more pages");
    assert.deepEqual((await queues.listQueues(name)).sort(), [name, ...others].sort());

    const info = await queues.queueInfo(name);
    assert.equal(info.visibleMessages, 0);
    assert.ok(info.createdAtMs > Date.now() - 60_000 && info.createdAtMs <= Date.now() + 1000, String(info.createdAtMs));
    for (const queue of [name, ...others]) {
      await queues.deleteQueue(queue);
    }
    const gone = await rejectsWith(queues.queueInfo(name), "QUEUE_NOT_FOUND");
    assert.equal(gone.status, 404);
    assert.equal(gone.retryable, false);
    assert.equal(gone.resource, name);
    assert.ok(gone.isNotFound());
  });

  test("send, batch, receive, visibility, ack, purge: bytes exact", async () => {
    const name = unique("ts-msgs");
    await queues.createQueue(name);
    const binary = Buffer.from([0, 1, 2, 253, 254, 255]);
    const id = await queues.sendMessage(name, { body: binary, attributes: { kind: "binary" } });
    assert.notEqual(id, "");
    const results = await queues.sendBatch(name, [{ body: "one" }, { body: "two", attributes: { n: "2" } }, { body: "three", attributes: { "exo.reserved": "x" } }]);
    assert.equal(results.length, 3);
    assert.ok(results[0]?.ok === true && results[1]?.ok === true);
    const refused = results[2];
    assert.ok(refused !== undefined && !refused.ok);
    assert.equal(refused.error.reason, "INVALID_ATTRIBUTE", "a reserved attribute fails that entry alone");

    const received = await queues.receive(name, { maxMessages: 10, waitSeconds: 1, visibilityTimeoutSeconds: 30 });
    assert.equal(received.length, 3);
    const byBody = new Map(received.map((m) => [m.body.toString("latin1"), m]));
    const first = byBody.get(binary.toString("latin1"));
    assert.ok(first, "the binary message came back byte-exact");
    assert.equal(first.messageId, id);
    assert.deepEqual(first.attributes, { kind: "binary" });
    assert.equal(first.dequeueCount, 1);
    assert.ok(first.enqueuedAtMs > 0);
    assert.equal(byBody.get("two")?.attributes.n, "2");

    // Released at once: received again, with a grown dequeue count.
    await queues.changeVisibility(name, first.receipt, 0);
    const again = await queues.receive(name, { maxMessages: 10, waitSeconds: 1 });
    assert.equal(again.length, 1);
    assert.equal(again[0]?.dequeueCount, 2);
    for (const message of [...received.filter((m) => m !== first), ...again]) {
      await queues.ack(name, message.receipt);
    }
    await rejectsWith(queues.ack(name, "not-a-receipt"), "INVALID_RECEIPT");
    const info = await queues.queueInfo(name);
    assert.equal(info.visibleMessages + info.inFlightMessages, 0);

    await queues.send(name, "to purge");
    await queues.purge(name);
    assert.deepEqual(await queues.receive(name, { maxMessages: 10 }), []);
    await queues.deleteQueue(name);
  });

  test("a delayed message stays hidden until its delay passes", async () => {
    const name = unique("ts-delay");
    await queues.createQueue(name);
    await queues.sendMessage(name, { body: "later", delaySeconds: 1 });
    assert.deepEqual(await queues.receive(name), []);
    const later = await queues.receive(name, { waitSeconds: 3 });
    assert.equal(later[0]?.body.toString(), "later");
    await queues.deleteQueue(name);
  });

  test("errors carry reason, field, status; rejected calls are not retried", async () => {
    const err = await rejectsWith(queues.createQueue("Bad_Name", undefined, { retry: NO_RETRY }), "INVALID_NAME");
    assert.equal(err.status, 400);
    assert.equal(err.retryable, false);
    assert.ok(err.message.length > 0);
    await rejectsWith(queues.send(unique("ts-missing"), "x"), "QUEUE_NOT_FOUND");
  });

  test("the deadline reaches the proxy: a long poll answers empty within it", async () => {
    const name = unique("ts-poll");
    await queues.createQueue(name);
    const started = Date.now();
    // 10 s asked, 1.5 s allowed: the proxy shortens the wait to fit and answers, empty, in time.
    const got = await queues.receive(name, { waitSeconds: 10 }, { timeoutMs: 1500 });
    const took = Date.now() - started;
    assert.deepEqual(got, []);
    assert.ok(took < 1500, `answered after ${took} ms`);
    assert.ok(took > 800, `answered after ${took} ms: the proxy did not wait at all`);
    await queues.deleteQueue(name);
  });

  test("a call past its deadline fails with TIMEOUT, not retried", async () => {
    const name = unique("ts-deadline");
    await queues.createQueue(name);
    const started = Date.now();
    await rejectsWith(queues.send(name, "x", { timeoutMs: 0 }), "TIMEOUT");
    assert.ok(Date.now() - started < 200);
    await queues.deleteQueue(name);
  });

  test("an AbortSignal cancels a call in flight", async () => {
    const name = unique("ts-abort");
    await queues.createQueue(name);
    const controller = new AbortController();
    const started = Date.now();
    setTimeout(() => {
      controller.abort();
    }, 200);
    await assert.rejects(queues.receive(name, { waitSeconds: 10 }, { signal: controller.signal }), (err: unknown) => {
      assert.ok(!(err instanceof ExoError));
      assert.equal((err as Error).name, "AbortError");
      return true;
    });
    assert.ok(Date.now() - started < 2000, "the 10 s long poll was cut short");
    // The client still works afterwards.
    await queues.deleteQueue(name);
  });

  test("an unreachable proxy is a retryable BACKEND_UNAVAILABLE, retried per the policy", async () => {
    const dead = new QueueClient("http://127.0.0.1:1", { retry: { maxAttempts: 3, initialBackoffMs: 100, maxBackoffMs: 100 } });
    const started = Date.now();
    const err = await rejectsWith(dead.listQueues(), "BACKEND_UNAVAILABLE");
    assert.equal(err.retryable, true);
    assert.match(err.message, /ECONNREFUSED/);
    assert.equal(err.status, 0);
    // Two back-offs of up to 100 ms each: retried, but not forever.
    assert.ok(Date.now() - started < 1000);
    dead.close();
  });
});

describe("topics", () => {
  test("publish once, every matching subscription gets a copy; filters; batch; info; delete", async () => {
    const topic = unique("ts-topic");
    const all = unique("ts-all");
    const eu = unique("ts-eu");
    assert.equal(await topics.createTopic(topic), true);
    assert.equal(await topics.createTopic(topic), false);
    const first = await topics.subscribe(topic, "all-orders", all, { createQueue: {} });
    assert.equal(first.created, true);
    assert.equal(first.subscription.queue, all);
    assert.equal((await topics.subscribe(topic, "all-orders", all, { createQueue: {} })).created, false);
    await topics.subscribe(topic, "eu-only", eu, { filter: "region = 'eu'", createQueue: {} });
    await rejectsWith(topics.subscribe(topic, "broken", eu, { filter: "region ==" }), "INVALID_FILTER");

    const published = await topics.publish(topic, { body: Buffer.from([9, 8, 7]), attributes: { region: "eu" } });
    assert.equal(published.deliveries, 2);
    assert.notEqual(published.publishId, "");
    const batch = await topics.publishBatch(topic, [{ body: "us order", attributes: { region: "us" } }, { body: "eu order", attributes: { region: "eu" } }]);
    assert.deepEqual(
      batch.map((r) => (r.ok ? r.value.deliveries : -1)),
      [1, 2],
    );

    const allGot = await queues.receive(all, { maxMessages: 10, waitSeconds: 1 });
    assert.equal(allGot.length, 3);
    const euGot = await queues.receive(eu, { maxMessages: 10, waitSeconds: 1 });
    assert.deepEqual(euGot.map((m) => m.body.toString("latin1")).sort(), [Buffer.from([9, 8, 7]).toString("latin1"), "eu order"].sort());
    const copy = euGot.find((m) => m.body.length === 3);
    assert.ok(copy);
    assert.equal(copy.attributes[TOPIC_ATTRIBUTE], topic);
    assert.equal(copy.attributes[PUBLISH_ID_ATTRIBUTE], published.publishId);

    const info = await topics.topicInfo(topic);
    assert.deepEqual(info.subscriptions.map((s) => s.name).sort(), ["all-orders", "eu-only"]);
    assert.equal(info.subscriptions.find((s) => s.name === "eu-only")?.filter, "region = 'eu'");
    const page = await topics.listTopicsPage(topic, 10);
    assert.deepEqual(page.names, [topic]);
    assert.ok((await topics.listTopics()).includes(topic));

    await topics.unsubscribe(topic, "eu-only");
    await rejectsWith(topics.unsubscribe(topic, "eu-only"), "SUBSCRIPTION_NOT_FOUND");
    assert.equal((await topics.publish(topic, { body: "after", attributes: { region: "eu" } })).deliveries, 1);
    await topics.deleteTopic(topic);
    await rejectsWith(topics.topicInfo(topic), "TOPIC_NOT_FOUND");
    // The subscriptions' queues stay.
    assert.ok((await queues.queueInfo(all)).visibleMessages >= 1);
    await queues.deleteQueue(all);
    await queues.deleteQueue(eu);
  });

  test("a published message takes no delay", async () => {
    await rejectsWith(topics.publish("any-topic", { body: "x", delaySeconds: 3 } as never), "INVALID_ARGUMENT");
  });
});
