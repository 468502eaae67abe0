/**
 * Push delivery from a real eqs proxy to real apps: ci.sh starts an eqs proxy whose config has
 * topic `pushed` with three push subscriptions POSTing to the ports in `$EXO_TEST_PUSH_PORTS`
 * (a `node:http` app, an Express app with `express.json()`, an Express app without a body
 * parser). Each app here decodes with the SDK's helpers and acknowledges; a handler failure has
 * the message delivered again. Also: the SDK over that proxy's Unix socket.
 */

import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, test } from "node:test";

import express from "express";

import {
  PUBLISH_ID_HEADER,
  QueueClient,
  TopicClient,
  expressPushHandler,
  pushListener,
  type PushedMessage,
} from "@exoflow/sdk";
import { eventually, required, unique } from "./helpers.js";

interface Seen {
  readonly pushed: PushedMessage;
  readonly header: string;
}

const seen: Record<"node" | "json" | "raw", Seen[]> = { node: [], json: [], raw: [] };
/** Bodies the node:http app refuses (throws for) once. */
const refuseOnce = new Set<string>();
const servers: http.Server[] = [];
let topics: TopicClient;
let queues: QueueClient;

function listen(server: http.Server, port: number): Promise<void> {
  servers.push(server);
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => {
      resolve();
    });
  });
}

before(async () => {
  const endpoint = required("EXO_TEST_PUSH_ENDPOINT");
  const ports = required("EXO_TEST_PUSH_PORTS").split(",").map(Number);
  topics = new TopicClient(endpoint);
  queues = new QueueClient(endpoint);

  const nodeApp = http.createServer(
    pushListener((pushed, request) => {
      const text = pushed.message.body.toString("latin1");
      if (refuseOnce.delete(text)) {
        throw new Error("not now");
      }
      seen.node.push({ pushed, header: String(request.headers[PUBLISH_ID_HEADER]) });
    }),
  );
  const jsonApp = express();
  jsonApp.post(
    "/events",
    express.json({ limit: "8mb" }),
    expressPushHandler((pushed, request) => {
      seen.json.push({ pushed, header: String(request.headers[PUBLISH_ID_HEADER]) });
    }),
  );
  const rawApp = express();
  rawApp.post(
    "/events",
    expressPushHandler(async (pushed, request) => {
      await new Promise((resolve) => setTimeout(resolve, 5));
      seen.raw.push({ pushed, header: String(request.headers[PUBLISH_ID_HEADER]) });
    }),
  );
  await listen(nodeApp, ports[0] ?? 0);
  await listen(http.createServer(jsonApp), ports[1] ?? 0);
  await listen(http.createServer(rawApp), ports[2] ?? 0);
  for (const server of servers) {
    assert.ok((server.address() as AddressInfo).port > 0);
  }
});

after(async () => {
  topics.close();
  queues.close();
  await Promise.all(
    servers.map(
      (server) =>
        new Promise((resolve) => {
          server.closeAllConnections();
          server.close(resolve);
        }),
    ),
  );
});

test("every push subscription's app gets every message byte-exact and acknowledges it", { timeout: 60_000 }, async () => {
  const tag = unique("run");
  const bodies = [Buffer.from(`${tag}:text`), Buffer.from([0, 1, 2, 254, 255, ...Buffer.from(tag)]), Buffer.alloc(200_000, 0xab)];
  refuseOnce.add(bodies[0]?.toString("latin1") ?? "");
  const ids: string[] = [];
  for (const body of bodies) {
    const published = await topics.publish("pushed", { body, attributes: { run: tag } });
    assert.equal(published.deliveries, 3, "three push subscriptions");
    ids.push(published.publishId);
  }
  for (const app of ["node", "json", "raw"] as const) {
    const mine = await eventually(`${app} app got all three`, 30_000, () => {
      const got = seen[app].filter((s) => s.pushed.message.attributes.run === tag);
      return got.length >= 3 ? got : undefined;
    });
    for (const [i, body] of bodies.entries()) {
      const copy = mine.find((s) => s.pushed.publishId === ids[i]);
      assert.ok(copy, `${app}: publish ${i} arrived`);
      assert.deepEqual(copy.pushed.message.body, body, `${app}: publish ${i} byte-exact`);
      assert.equal(copy.header, ids[i], `${app}: the header names the publish id`);
      assert.equal(copy.pushed.topic, "pushed");
      assert.equal(copy.pushed.message.receipt, "", "the app never sees a receipt");
    }
  }
  // The refused one came back: the second delivery was the one acknowledged.
  const redelivered = seen.node.find((s) => s.pushed.publishId === ids[0]);
  assert.equal(redelivered?.pushed.message.dequeueCount, 2);
  // Every POST acknowledged: the subscriptions' queues drain.
  for (const queue of ["push-node-http", "push-express-json", "push-express-raw"]) {
    await eventually(`${queue} drained`, 10_000, async () => {
      const info = await queues.queueInfo(queue);
      return info.visibleMessages + info.inFlightMessages + info.delayedMessages === 0 ? true : undefined;
    });
  }
});

test("a body that is not a pushed message is answered 400", async () => {
  const port = (servers[0]?.address() as AddressInfo).port;
  const status = await new Promise<number>((resolve, reject) => {
    const request = http.request({ host: "127.0.0.1", port, method: "POST", path: "/events" }, (response) => {
      response.resume();
      resolve(response.statusCode ?? 0);
    });
    request.on("error", reject);
    request.end("{not json");
  });
  assert.equal(status, 400);
});

test("the SDK over the proxy's Unix socket (unix: endpoint)", async () => {
  const socket = required("EXO_TEST_PUSH_SOCKET");
  for (const spelling of [`unix:${socket}`, `unix://${socket}`]) {
    const overSocket = new QueueClient(spelling);
    const name = unique("ts-unix");
    await overSocket.createQueue(name);
    await overSocket.send(name, "through the socket");
    const [message] = await overSocket.receive(name, { waitSeconds: 1 });
    assert.equal(message?.body.toString(), "through the socket");
    await overSocket.deleteQueue(name);
    overSocket.close();
  }
});
