/**
 * Push delivery: for a subscription with `push:` in the eqs config, the proxy POSTs each message
 * to the app as an `exo.queue.v1.PushedMessage` in JSON (`{topic, subscription, queue, message}`,
 * the message's body in base64, its publish id also in the `x-exo-publish-id` header). A 2xx
 * answer acknowledges it; any other answer, or none within the subscription's timeout, has it
 * delivered again later (its `dequeueCount` grows; the queue's dead-letter settings apply).
 *
 * {@link decodePushed} reads one; {@link pushListener} (a `node:http` request listener) and
 * {@link expressPushHandler} (Express-style middleware) decode it, run the app's handler and
 * answer: 204 when the handler returned, 400 for a body that is not a pushed message, and a
 * failure status when the handler threw, so the proxy offers it again.
 */

import type { IncomingMessage, ServerResponse } from "node:http";

import { obj, str, type Json } from "./codec.js";
import { ExoError } from "./errors.js";
import { decodeMessage, type Message } from "./queue.js";
import { PUBLISH_ID_ATTRIBUTE } from "./topic.js";

/** The header naming a pushed message's publish id. */
export const PUBLISH_ID_HEADER = "x-exo-publish-id";

/** What push delivery POSTs to the app. */
export interface PushedMessage {
  /** The topic it was published to. */
  readonly topic: string;
  /** The push subscription delivering it. */
  readonly subscription: string;
  /** The subscription's queue. */
  readonly queue: string;
  /** The message (its `receipt` is empty: the proxy acks it when the app answers 2xx). */
  readonly message: Message;
  /** The publish id (the same on every copy and every redelivery of one publish): drop duplicates by it. */
  readonly publishId: string;
}

/**
 * Decodes a pushed message from the POST's body: its bytes, its text, or the object a JSON body
 * parser made of it. Fails with MALFORMED_REQUEST when it is not one.
 */
export function decodePushed(body: Uint8Array | string | object): PushedMessage {
  let value: unknown = body;
  if (typeof body === "string" || body instanceof Uint8Array) {
    try {
      value = JSON.parse(typeof body === "string" ? body : Buffer.from(body).toString("utf8"));
    } catch (err) {
      throw ExoError.client("MALFORMED_REQUEST", `not a pushed message: ${(err as Error).message}`, false, err);
    }
  }
  const envelope: Json = obj(value);
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw ExoError.client("MALFORMED_REQUEST", "not a pushed message: the body is not a JSON object", false);
  }
  if (envelope.message === null || typeof envelope.message !== "object") {
    throw ExoError.client("MALFORMED_REQUEST", "not a pushed message: it has no message", false);
  }
  const message = decodeMessage(envelope.message);
  return {
    topic: str(envelope.topic),
    subscription: str(envelope.subscription),
    queue: str(envelope.queue),
    message,
    publishId: message.attributes[PUBLISH_ID_ATTRIBUTE] ?? "",
  };
}

/** Handles one pushed message; returning acknowledges it, throwing has it delivered again later. */
export type PushHandler = (pushed: PushedMessage, request: IncomingMessage) => void | Promise<void>;

/** Settings of the push helpers. */
export interface PushOptions {
  /** Largest body read (default 64 MiB); a larger one is answered 413. */
  readonly maxBytes?: number | undefined;
  /** Told about each push the handler failed (default: nothing). */
  readonly onError?: ((error: unknown, request: IncomingMessage) => void) | undefined;
}

const DEFAULT_MAX_BYTES = 64 * 1024 * 1024;

/** Reads a request's body, refusing more than `maxBytes`. */
async function readBody(request: IncomingMessage, maxBytes: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request) {
    size += (chunk as Buffer).length;
    if (size > maxBytes) {
      throw ExoError.client("REQUEST_TOO_LARGE", `a pushed message over ${maxBytes} bytes`, false);
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

function answer(response: ServerResponse, status: number, text?: string): void {
  if (response.headersSent) {
    response.end();
    return;
  }
  if (text === undefined) {
    response.writeHead(status).end();
  } else {
    response.writeHead(status, { "content-type": "text/plain; charset=utf-8" }).end(text);
  }
}

/** Decodes the pushed message of `request`, whose body may already have been parsed into `parsed`. */
async function received(request: IncomingMessage, parsed: unknown, maxBytes: number): Promise<PushedMessage> {
  // A body parser that found no body of its kind leaves an empty object: read the stream then.
  if (typeof parsed === "string" || parsed instanceof Uint8Array) {
    return decodePushed(parsed);
  }
  if (typeof parsed === "object" && parsed !== null && Object.keys(parsed).length > 0) {
    return decodePushed(parsed);
  }
  return decodePushed(await readBody(request, maxBytes));
}

/**
 * A `node:http` request listener for a push endpoint: `http.createServer(pushListener(handle))`,
 * or call it from your own listener for the push path. Only POST is accepted (405 otherwise).
 */
export function pushListener(
  handler: PushHandler,
  options: PushOptions = {},
): (request: IncomingMessage, response: ServerResponse) => void {
  const maxBytes = options.maxBytes ?? DEFAULT_MAX_BYTES;
  return (request, response) => {
    void (async () => {
      if (request.method !== "POST") {
        answer(response, 405, "push endpoints take POST\n");
        return;
      }
      let pushed: PushedMessage;
      try {
        pushed = await received(request, undefined, maxBytes);
      } catch (err) {
        const status = err instanceof ExoError && err.reason === "REQUEST_TOO_LARGE" ? 413 : 400;
        answer(response, status, `${(err as Error).message}\n`);
        return;
      }
      try {
        await handler(pushed, request);
        answer(response, 204);
      } catch (err) {
        options.onError?.(err, request);
        // Not acknowledged: the proxy offers the message again after a back-off.
        answer(response, 500, "the push handler failed; it will be delivered again\n");
      }
    })();
  };
}

/** The parts of an Express request the handler uses (Express's own type fits it). */
export interface ExpressLikeRequest extends IncomingMessage {
  /** What a body parser made of the body, if one ran (`express.json()`, `express.raw()`, `express.text()`). */
  body?: unknown;
}

/**
 * Express-style middleware for a push endpoint: `app.post("/events", expressPushHandler(handle))`.
 * Works with or without a body parser in front. A body that is not a pushed message is answered
 * 400; a handler that throws is passed to `next(err)` (Express then answers 500 unless the app's
 * error middleware answers otherwise: a 2xx from it acknowledges the message).
 */
export function expressPushHandler(
  handler: PushHandler,
  options: PushOptions = {},
): (request: ExpressLikeRequest, response: ServerResponse, next: (err?: unknown) => void) => void {
  const maxBytes = options.maxBytes ?? DEFAULT_MAX_BYTES;
  return (request, response, next) => {
    void (async () => {
      let pushed: PushedMessage;
      try {
        pushed = await received(request, request.body, maxBytes);
      } catch (err) {
        const status = err instanceof ExoError && err.reason === "REQUEST_TOO_LARGE" ? 413 : 400;
        answer(response, status, `${(err as Error).message}\n`);
        return;
      }
      try {
        await handler(pushed, request);
        answer(response, 204);
      } catch (err) {
        options.onError?.(err, request);
        next(err);
      }
    })();
  };
}
