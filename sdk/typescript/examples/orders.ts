/**
 * A tiny order-processing app on ExoFlow queues (the Rust SDK's `orders` example, in Node).
 *
 * Start the proxies (`exo up`), build (`npm run build:test`), then run
 * `node build/examples/orders.js`. Set EXO_EQS_ENDPOINT to use another proxy.
 */

import { QueueClient } from "@exoflow/sdk";

const queues = QueueClient.fromEnv();
const backend = await queues.describe();
console.log(`connected to eqs backed by '${backend.backend}'`);

await queues.createQueue("orders-dead");
await queues.createQueue("orders", { maxReceives: 5, deadLetterQueue: "orders-dead" });

for (let n = 1; n <= 3; n++) {
  const id = await queues.sendMessage("orders", { body: `order ${n}`, attributes: { customer: `c${n}` } });
  console.log(`sent order ${n} as ${id}`);
}

let handled = 0;
while (handled < 3) {
  const batch = await queues.receive("orders", { maxMessages: 10, waitSeconds: 2 });
  if (batch.length === 0) {
    break;
  }
  for (const message of batch) {
    console.log(
      `handling ${JSON.stringify(message.body.toString())} for ${message.attributes.customer ?? "?"} (delivery #${message.dequeueCount})`,
    );
    await queues.ack("orders", message.receipt);
    handled++;
  }
}
console.log(`handled ${handled} orders`);
queues.close();
if (handled < 3) {
  throw new Error(`only ${handled} of the 3 orders came back`);
}
