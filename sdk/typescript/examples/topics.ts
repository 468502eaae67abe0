/**
 * Publish once, every subscribed service gets its copy: one publisher, three subscribers, two
 * pulling and one pushed to (the Rust SDK's `topics` example, in Node).
 *
 * Start the proxies with this app's manifest, then run it:
 *
 *     exo up --manifest sdk/rust/examples/topics.yaml
 *     node build/examples/topics.js
 *
 * Billing gets every order; shipping-eu only orders whose `region` attribute is `eu`: each reads
 * its own queue at its own pace and drops duplicates by publish id. Mail is a push subscription
 * (declared in the manifest, since only the proxy's config may name where it sends): the proxy
 * POSTs each order to this app's HTTP endpoint, and a 2xx answer acknowledges it.
 */

import http from "node:http";

import { PUBLISH_ID_ATTRIBUTE, QueueClient, TopicClient, pushListener } from "@exoflow/sdk";

/**
 * Where the manifest's push subscription sends: the app's port (`EXO_EXAMPLE_LISTEN` when the
 * manifest is given another) and the path `/events/orders`.
 */
const PUSH_LISTEN = "127.0.0.1:7480";

/** Reads `queue` until it stays empty, acking each message; returns the bodies, first copies only. */
async function consume(queues: QueueClient, queue: string): Promise<string[]> {
  const seen = new Set<string>();
  const bodies: string[] = [];
  for (;;) {
    const batch = await queues.receive(queue, { maxMessages: 10, waitSeconds: 1 });
    if (batch.length === 0) {
      return bodies;
    }
    for (const message of batch) {
      // At least once: a publish retried after a timeout may arrive twice, with one id.
      const publishId = message.attributes[PUBLISH_ID_ATTRIBUTE] ?? "";
      if (!seen.has(publishId)) {
        seen.add(publishId);
        bodies.push(message.body.toString());
      }
      await queues.ack(queue, message.receipt);
    }
  }
}

const topics = TopicClient.fromEnv();
const queues = QueueClient.fromEnv();

// The mail service listens before anything is published (a push it misses is retried).
const pushed = new Map<string, string>();
const mail = http.createServer((request, response) => {
  if (request.url !== "/events/orders") {
    response.writeHead(404).end();
    return;
  }
  pushListener((push) => {
    // Anything but 2xx (or no answer in time) and the proxy offers it again later.
    pushed.set(push.publishId, push.message.body.toString());
  })(request, response);
});
const listen = process.env.EXO_EXAMPLE_LISTEN ?? PUSH_LISTEN;
const at = listen.lastIndexOf(":");
await new Promise<void>((resolve, reject) => {
  mail.once("error", reject);
  mail.listen(Number(listen.slice(at + 1)), listen.slice(0, at).replace(/^\[(.*)\]$/, "$1"), resolve);
});

try {
  await topics.createTopic("order-events");
  // Each subscription delivers into a queue of its own (made here if missing).
  await topics.subscribe("order-events", "billing", "billing-orders", { createQueue: {} });
  await topics.subscribe("order-events", "shipping-eu", "shipping-eu-orders", { filter: "region = 'eu'", createQueue: {} });

  for (const [n, region] of [
    [1, "eu"],
    [2, "us"],
    [3, "eu"],
  ] as const) {
    const published = await topics.publish("order-events", { body: `order ${n} created`, attributes: { region } });
    console.log(`published order ${n} (${region}) to ${published.deliveries} subscription(s)`);
  }

  // The mail service's copies arrive by themselves.
  let got: string[] = [];
  for (let i = 0; i < 150 && got.length < 3; i++) {
    got = [...pushed.values()].sort();
    if (got.length < 3) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
  console.log(`mail got        ${JSON.stringify(got)} (pushed)`);
  if (JSON.stringify(got) !== JSON.stringify(["order 1 created", "order 2 created", "order 3 created"])) {
    throw new Error(
      `mail should be pushed every order, got ${JSON.stringify(got)}; did the proxies start with ` +
        "`exo up --manifest sdk/rust/examples/topics.yaml` (which declares the push subscription)?",
    );
  }

  const billing = await consume(queues, "billing-orders");
  const shipping = await consume(queues, "shipping-eu-orders");
  console.log(`billing got     ${JSON.stringify(billing)}`);
  console.log(`shipping-eu got ${JSON.stringify(shipping)}`);
  // What the filters promise.
  if (billing.length !== 3) {
    throw new Error(`billing should get every order, got ${JSON.stringify(billing)}`);
  }
  if (JSON.stringify([...shipping].sort()) !== JSON.stringify(["order 1 created", "order 3 created"])) {
    throw new Error(`shipping-eu should get the eu orders only, got ${JSON.stringify(shipping)}`);
  }
} finally {
  mail.closeAllConnections();
  mail.close();
  topics.close();
  queues.close();
}
