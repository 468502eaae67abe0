/** {@link QueueClient}: the app's handle on an eqs proxy's queues. */

import { ProxyClient, endpointFromEnv, withEnvToken } from "./client.js";
import { arr, base64, bool, defined, num, obj, str, stringMap, strings, bytes, type BytesLike, type Json } from "./codec.js";
import { ExoError, toReason } from "./errors.js";
import { EQS_OPERATIONS as OPS } from "./operations.js";
import type { CallOptions, ClientOptions } from "./transport.js";

/** Environment variable naming the eqs endpoint. */
export const EQS_ENDPOINT_ENV = "EXO_EQS_ENDPOINT";
/** Where the eqs sidecar listens unless told otherwise. */
export const DEFAULT_EQS_ENDPOINT = "http://127.0.0.1:7401";

/** Per-queue settings; omitted ones take their defaults. */
export interface QueueOptions {
  /** How long a received message stays hidden (default 30). */
  readonly visibilityTimeoutSeconds?: number | undefined;
  /** How long an unacknowledged message is kept (0 = the default, 4 days). */
  readonly retentionSeconds?: number | undefined;
  /** Delay of messages sent without their own. */
  readonly delaySeconds?: number | undefined;
  /** Receives before a message moves to `deadLetterQueue` (0 = never). */
  readonly maxReceives?: number | undefined;
  /** An existing queue taking dead-lettered messages (with `maxReceives`). */
  readonly deadLetterQueue?: string | undefined;
}

/** A queue's options and approximate counts. */
export interface QueueInfo {
  readonly name: string;
  readonly options: Required<QueueOptions>;
  readonly visibleMessages: number;
  readonly inFlightMessages: number;
  readonly delayedMessages: number;
  readonly createdAtMs: number;
}

/** A message to send. */
export interface OutgoingMessage {
  /** Opaque bytes (a string is sent as UTF-8). */
  readonly body: BytesLike;
  /** String attributes. */
  readonly attributes?: Readonly<Record<string, string>> | undefined;
  /** Overrides the queue's delay (whole seconds). */
  readonly delaySeconds?: number | undefined;
}

/** A received message. */
export interface Message {
  readonly messageId: string;
  /** For {@link QueueClient.ack} and {@link QueueClient.changeVisibility}. */
  readonly receipt: string;
  readonly body: Buffer;
  readonly attributes: Readonly<Record<string, string>>;
  /** Deliveries so far, this one included. */
  readonly dequeueCount: number;
  /** Send time, ms since the Unix epoch. */
  readonly enqueuedAtMs: number;
}

/** How to receive. */
export interface ReceiveOptions {
  /** At most this many messages (default 1). */
  readonly maxMessages?: number | undefined;
  /** Long-poll up to this long for a first message (whole seconds, at most 20). */
  readonly waitSeconds?: number | undefined;
  /** Hide the received messages this long instead of the queue's default. */
  readonly visibilityTimeoutSeconds?: number | undefined;
}

/** The limits every queue request is checked against. */
export interface QueueLimits {
  readonly maxMessageBytes: number;
  readonly maxBatchEntries: number;
  readonly maxReceiveMessages: number;
  readonly maxWaitSeconds: number;
  readonly maxVisibilityTimeoutSeconds: number;
  readonly maxDelaySeconds: number;
  readonly maxAttributes: number;
  readonly minRetentionSeconds: number;
  readonly maxRetentionSeconds: number;
  readonly maxReceivesLimit: number;
}

/** The limits every topic request is checked against. */
export interface TopicLimits {
  readonly maxMessageBytes: number;
  readonly maxAttributes: number;
  readonly maxBatchEntries: number;
  readonly maxSubscriptions: number;
  readonly maxFilterBytes: number;
}

/** The backend behind an eqs proxy. */
export interface QueueBackendDescription {
  readonly backend: string;
  readonly capabilities: readonly string[];
  readonly limits: QueueLimits;
  readonly topicLimits: TopicLimits;
}

/** One entry of a batch: its outcome. */
export type BatchResult<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly error: ExoError };

export function queueOptionsJson(options: QueueOptions | undefined): Json | undefined {
  return options === undefined ? undefined : defined({ ...options });
}

export function decodeQueueOptions(value: unknown): Required<QueueOptions> {
  const o = obj(value);
  return {
    visibilityTimeoutSeconds: num(o.visibilityTimeoutSeconds),
    retentionSeconds: num(o.retentionSeconds),
    delaySeconds: num(o.delaySeconds),
    maxReceives: num(o.maxReceives),
    deadLetterQueue: str(o.deadLetterQueue),
  };
}

export function decodeQueueInfo(value: unknown): QueueInfo {
  const o = obj(value);
  return {
    name: str(o.name),
    options: decodeQueueOptions(o.options),
    visibleMessages: num(o.visibleMessages),
    inFlightMessages: num(o.inFlightMessages),
    delayedMessages: num(o.delayedMessages),
    createdAtMs: num(o.createdAtMs),
  };
}

/** A received message from its JSON form. */
export function decodeMessage(value: unknown): Message {
  const o = obj(value);
  return {
    messageId: str(o.messageId),
    receipt: str(o.receipt),
    body: bytes(o.body),
    attributes: stringMap(o.attributes),
    dequeueCount: num(o.dequeueCount),
    enqueuedAtMs: num(o.enqueuedAtMs),
  };
}

export function outgoingJson(message: OutgoingMessage): Json {
  return defined({
    body: base64(message.body),
    attributes: message.attributes === undefined ? undefined : { ...message.attributes },
    delaySeconds: message.delaySeconds,
  });
}

/** A batch entry's error, as the proxy reports it. */
export function entryError(value: unknown, resource: string): ExoError {
  const e = obj(value);
  return new ExoError({
    reason: toReason(e.reason),
    message: str(e.message),
    retryable: bool(e.retryable),
    resource,
  });
}

function decodeTopicLimits(value: unknown): TopicLimits {
  const t = obj(value);
  return {
    maxMessageBytes: num(t.maxMessageBytes),
    maxAttributes: num(t.maxAttributes),
    maxBatchEntries: num(t.maxBatchEntries),
    maxSubscriptions: num(t.maxSubscriptions),
    maxFilterBytes: num(t.maxFilterBytes),
  };
}

/** The eqs backend description from its JSON form. */
export function decodeQueueDescription(value: unknown): QueueBackendDescription {
  const o = obj(value);
  const l = obj(o.limits);
  return {
    backend: str(o.backend),
    capabilities: strings(o.capabilities),
    limits: {
      maxMessageBytes: num(l.maxMessageBytes),
      maxBatchEntries: num(l.maxBatchEntries),
      maxReceiveMessages: num(l.maxReceiveMessages),
      maxWaitSeconds: num(l.maxWaitSeconds),
      maxVisibilityTimeoutSeconds: num(l.maxVisibilityTimeoutSeconds),
      maxDelaySeconds: num(l.maxDelaySeconds),
      maxAttributes: num(l.maxAttributes),
      minRetentionSeconds: num(l.minRetentionSeconds),
      maxRetentionSeconds: num(l.maxRetentionSeconds),
      maxReceivesLimit: num(l.maxReceivesLimit),
    },
    topicLimits: decodeTopicLimits(o.topicLimits),
  };
}

/**
 * A client of an eqs proxy's queues. Connects lazily; one client shares its connections among
 * all calls.
 *
 * Calls are retried with back-off when the proxy says a retry can help (see {@link RetryPolicy}).
 * Delivery is at-least-once: a send retried after a timeout may enqueue the message twice, so
 * consumers should be idempotent.
 */
export class QueueClient extends ProxyClient {
  /** The contract's operations (OpenAPI `operationId`) and the method making each. */
  static readonly operations = Object.freeze({
    openapi: "openapi",
    describe: "describe",
    listQueues: "listQueuesPage",
    createQueue: "createQueue",
    getQueueInfo: "queueInfo",
    deleteQueue: "deleteQueue",
    purge: "purge",
    send: "sendMessage",
    sendBatch: "sendBatch",
    receive: "receive",
    ack: "ack",
    changeVisibility: "changeVisibility",
  } as const);

  /** A client for the eqs proxy at `endpoint` (`http://`, `https://` or `unix:`). */
  constructor(endpoint: string = DEFAULT_EQS_ENDPOINT, options: ClientOptions = {}) {
    super(endpoint, options);
  }

  /** A client for `$EXO_EQS_ENDPOINT` (else the sidecar default), TLS and token from the `EXO_*` variables. */
  static fromEnv(options: ClientOptions = {}): QueueClient {
    return new QueueClient(endpointFromEnv(EQS_ENDPOINT_ENV, DEFAULT_EQS_ENDPOINT), withEnvToken(options));
  }

  /** This proxy's OpenAPI document. */
  openapi(call?: CallOptions): Promise<Record<string, unknown>> {
    return this.openapiDocument(OPS.openapi, call);
  }

  /** The backend's name, capabilities and limits. */
  async describe(call?: CallOptions): Promise<QueueBackendDescription> {
    const { body } = await this.transport.json({ route: OPS.describe }, true, call);
    return decodeQueueDescription(body);
  }

  /** Creates a queue (idempotent for identical options); whether it was created, and its info. */
  async createQueue(name: string, options?: QueueOptions, call?: CallOptions): Promise<{ created: boolean; info: QueueInfo }> {
    const json = defined({ name, options: queueOptionsJson(options) });
    const { body } = await this.transport.json({ route: OPS.createQueue, json }, false, call);
    return { created: bool(body.created), info: decodeQueueInfo(body.info) };
  }

  /** Deletes a queue and its messages. */
  async deleteQueue(name: string, call?: CallOptions): Promise<void> {
    await this.transport.json({ route: OPS.deleteQueue, params: { queue: name } }, false, call);
  }

  /** One page of queue names; pass `nextPageToken` back for the next (empty on the last page). */
  async listQueuesPage(
    prefix = "",
    pageSize = 0,
    pageToken = "",
    call?: CallOptions,
  ): Promise<{ names: string[]; nextPageToken: string }> {
    const query = { prefix, pageSize, pageToken };
    const { body } = await this.transport.json({ route: OPS.listQueues, query }, true, call);
    return { names: strings(body.names), nextPageToken: str(body.nextPageToken) };
  }

  /** Every queue name with `prefix`, following pages. */
  async listQueues(prefix = "", call?: CallOptions): Promise<string[]> {
    const names: string[] = [];
    let token = "";
    do {
      const page = await this.listQueuesPage(prefix, 0, token, call);
      names.push(...page.names);
      token = page.nextPageToken;
    } while (token !== "");
    return names;
  }

  /** A queue's options and approximate counts. */
  async queueInfo(name: string, call?: CallOptions): Promise<QueueInfo> {
    const { body } = await this.transport.json({ route: OPS.getQueueInfo, params: { queue: name } }, true, call);
    return decodeQueueInfo(body.info);
  }

  /** Sends a body; returns the message id. */
  send(queue: string, body: BytesLike, call?: CallOptions): Promise<string> {
    return this.sendMessage(queue, { body }, call);
  }

  /** Sends a message with attributes or a delay; returns the message id. */
  async sendMessage(queue: string, message: OutgoingMessage, call?: CallOptions): Promise<string> {
    const json = { message: outgoingJson(message) };
    const { body } = await this.transport.json({ route: OPS.send, params: { queue }, json }, false, call);
    return str(body.messageId);
  }

  /** Sends many messages; one result per message, in order. Entries fail on their own. */
  async sendBatch(queue: string, messages: readonly OutgoingMessage[], call?: CallOptions): Promise<BatchResult<string>[]> {
    const entries = messages.map((message, i) => ({ id: String(i), message: outgoingJson(message) }));
    const { body } = await this.transport.json({ route: OPS.sendBatch, params: { queue }, json: { entries } }, false, call);
    return arr(body.results).map((value): BatchResult<string> => {
      const result = obj(value);
      if (result.error !== undefined && result.error !== null) {
        return { ok: false, error: entryError(result.error, queue) };
      }
      if (typeof result.messageId === "string") {
        return { ok: true, value: result.messageId };
      }
      return { ok: false, error: ExoError.client("INTERNAL", "proxy returned an empty batch result", false) };
    });
  }

  /** Receives messages; each stays hidden until acked or its visibility timeout runs out. */
  async receive(queue: string, options: ReceiveOptions = {}, call?: CallOptions): Promise<Message[]> {
    const json = defined({ ...options });
    const { body } = await this.transport.json({ route: OPS.receive, params: { queue }, json }, false, call);
    return arr(body.messages).map(decodeMessage);
  }

  /** Acknowledges (deletes) a received message. */
  async ack(queue: string, receipt: string, call?: CallOptions): Promise<void> {
    await this.transport.json({ route: OPS.ack, params: { queue }, json: { receipt } }, false, call);
  }

  /** Sets a received message's remaining visibility in seconds (0 releases it now). */
  async changeVisibility(queue: string, receipt: string, visibilityTimeoutSeconds: number, call?: CallOptions): Promise<void> {
    const json = { receipt, visibilityTimeoutSeconds };
    await this.transport.json({ route: OPS.changeVisibility, params: { queue }, json }, false, call);
  }

  /** Deletes every message in a queue. */
  async purge(queue: string, call?: CallOptions): Promise<void> {
    await this.transport.json({ route: OPS.purge, params: { queue } }, false, call);
  }
}
