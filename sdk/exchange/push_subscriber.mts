/**
 * The exchange's push subscriber (TypeScript SDK): a `node:http` app whose /events/orders the
 * manifest's push subscription (`mail` on `order-events`) POSTs each message to, decoded and
 * answered by the SDK's `pushListener` (204 acknowledges it).
 *
 *     node push_subscriber.mjs LISTEN OUT RUN COUNT SECONDS
 *
 * Listens on LISTEN (host:port), prints `listening` once it does, and appends one JSON line per
 * pushed message to OUT: `{body_hex, attributes, dequeue_count, topic, subscription, queue}`,
 * every push as it came, duplicates included (the comparator judges them). Once COUNT distinct
 * publish ids tagged `exchange-run: RUN` have arrived it keeps listening one more second (so a
 * duplicate has time to show), then exits 0; when SECONDS pass first it exits 1, saying how many
 * arrived. Pushes of other runs or other publishers are acknowledged and recorded too.
 */

import { appendFileSync, writeFileSync } from "node:fs";
import http from "node:http";

import { pushListener, type PushedMessage } from "@exoflow/sdk";

const RUN_ATTRIBUTE = "exchange-run";
/** How long to keep listening after the last expected message, for duplicates to show. */
const GRACE_MS = 1000;

const args = process.argv.slice(2);
if (args.length !== 5 || !args.slice(3).every((n) => /^[0-9]+$/.test(n))) {
  console.error("usage: push_subscriber LISTEN OUT RUN COUNT SECONDS");
  process.exit(2);
}
const [listen, out, run] = args as [string, string, string];
const count = Number(args[3]);
const seconds = Number(args[4]);

writeFileSync(out, "");
const seen = new Set<string>();
let pushes = 0;
let finishing = false;

const deadline = setTimeout(() => {
  const hint =
    pushes === 0
      ? "; nothing was pushed: is exo up running with --manifest sdk/rust/examples/topics.yaml, its app port where EXO_EXAMPLE_LISTEN says?"
      : "";
  console.error(`push subscriber: ${seen.size} of ${count} messages of run ${run} pushed in ${seconds} s (${pushes} pushes in all)${hint}`);
  process.exit(1);
}, seconds * 1000);

function record(pushed: PushedMessage): void {
  const line = {
    body_hex: pushed.message.body.toString("hex"),
    attributes: pushed.message.attributes,
    dequeue_count: pushed.message.dequeueCount,
    topic: pushed.topic,
    subscription: pushed.subscription,
    queue: pushed.queue,
  };
  // Written before the 204 goes out: a message acknowledged is a message recorded.
  appendFileSync(out, `${JSON.stringify(line)}\n`);
  pushes += 1;
  if (pushed.message.attributes[RUN_ATTRIBUTE] === run) {
    seen.add(pushed.publishId);
  }
  if (!finishing && seen.size >= count) {
    finishing = true;
    setTimeout(() => {
      clearTimeout(deadline);
      server.close();
      server.closeAllConnections();
      console.log(`push subscriber: ${seen.size} messages of run ${run} in ${pushes} pushes`);
    }, GRACE_MS);
  }
}

const onPush = pushListener(record, {
  onError: (err) => {
    console.error(`push subscriber: the handler failed: ${String(err)}`);
  },
});
const server = http.createServer((request, response) => {
  if (request.url !== "/events/orders") {
    response.writeHead(404).end();
    return;
  }
  onPush(request, response);
});

const at = listen.lastIndexOf(":");
server.once("error", (err) => {
  console.error(`push subscriber: cannot listen on ${listen}: ${err.message}`);
  process.exit(1);
});
server.listen(Number(listen.slice(at + 1)), listen.slice(0, at).replace(/^\[(.*)\]$/, "$1"), () => {
  console.log("listening");
});
