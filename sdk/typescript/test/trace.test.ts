/**
 * W3C trace context with `@opentelemetry/api` installed: a send made inside the app's span is
 * continued by the proxy. The eqs proxy ci.sh starts for push delivery has traces on (an OTLP
 * endpoint set), and with traces on eqs stamps each sent message with the send's `traceparent`
 * (the proxy's span, in the caller's trace): the received message must carry the app's trace id.
 *
 * The app side is what an app's OpenTelemetry setup registers, kept minimal here (only the API
 * package is installed): an AsyncLocalStorage context manager and a W3C `traceparent` propagator.
 */

import assert from "node:assert/strict";
import { AsyncLocalStorage } from "node:async_hooks";
import { randomBytes } from "node:crypto";
import { after, before, test } from "node:test";

import {
  ROOT_CONTEXT,
  TraceFlags,
  context,
  propagation,
  trace,
  type Context,
  type ContextManager,
  type TextMapPropagator,
} from "@opentelemetry/api";

import { QueueClient } from "@exoflow/sdk";
import { required, unique } from "./helpers.js";

class StorageContextManager implements ContextManager {
  private readonly storage = new AsyncLocalStorage<Context>();
  active(): Context {
    return this.storage.getStore() ?? ROOT_CONTEXT;
  }
  with<A extends unknown[], F extends (...args: A) => ReturnType<F>>(ctx: Context, fn: F, thisArg?: ThisParameterType<F>, ...args: A): ReturnType<F> {
    return this.storage.run(ctx, () => fn.call(thisArg, ...args));
  }
  bind<T>(_context: Context, target: T): T {
    return target;
  }
  enable(): this {
    return this;
  }
  disable(): this {
    this.storage.disable();
    return this;
  }
}

const w3c: TextMapPropagator = {
  inject(ctx, carrier, setter) {
    const span = trace.getSpanContext(ctx);
    if (span !== undefined && trace.isSpanContextValid(span)) {
      setter.set(carrier, "traceparent", `00-${span.traceId}-${span.spanId}-0${String(span.traceFlags & 1)}`);
    }
  },
  extract(ctx) {
    return ctx;
  },
  fields() {
    return ["traceparent"];
  },
};

let queues: QueueClient;
let queue: string;

before(async () => {
  queues = new QueueClient(required("EXO_TEST_PUSH_ENDPOINT"));
  queue = unique("ts-trace");
  await queues.createQueue(queue);
  context.setGlobalContextManager(new StorageContextManager());
  propagation.setGlobalPropagator(w3c);
});

after(async () => {
  await queues.deleteQueue(queue);
  queues.close();
  context.disable();
  propagation.disable();
});

test("a send inside the app's span is continued by the proxy (same trace id, the proxy's span)", async () => {
  const traceId = randomBytes(16).toString("hex");
  const spanId = randomBytes(8).toString("hex");
  const inSpan = trace.setSpanContext(ROOT_CONTEXT, { traceId, spanId, traceFlags: TraceFlags.SAMPLED });
  await context.with(inSpan, () => queues.send(queue, "traced"));
  // The same client outside any span: the proxy starts a trace of its own.
  await queues.send(queue, "untraced");

  const messages = await queues.receive(queue, { maxMessages: 10, waitSeconds: 1 });
  const byBody = new Map(messages.map((m) => [m.body.toString(), m.attributes.traceparent ?? ""]));
  const traced = byBody.get("traced") ?? "";
  const [version, gotTrace, gotSpan] = traced.split("-");
  assert.equal(version, "00", `traceparent ${traced}`);
  assert.equal(gotTrace, traceId, "the proxy continued the app's trace");
  assert.notEqual(gotSpan, spanId, "under the proxy's own span");
  const untraced = byBody.get("untraced") ?? "";
  assert.match(untraced, /^00-[0-9a-f]{32}-/, "traces are on at the proxy");
  assert.notEqual(untraced.split("-")[1], traceId);
});
