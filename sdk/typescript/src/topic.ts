/**
 * {@link TopicClient}: publish once, every subscription gets its own copy (eqs's topics).
 *
 * A subscription delivers into an ordinary queue, read with {@link QueueClient.receive} and acked
 * as any other; each delivered copy carries the published body and attributes plus
 * {@link TOPIC_ATTRIBUTE} and {@link PUBLISH_ID_ATTRIBUTE} (the same on every copy of one
 * publish, so a consumer can drop duplicates).
 */

import { ProxyClient, endpointFromEnv, withEnvToken } from "./client.js";
import { arr, base64, bool, defined, num, obj, str, strings, type BytesLike } from "./codec.js";
import { ExoError } from "./errors.js";
import { EQS_OPERATIONS as OPS } from "./operations.js";
import {
  DEFAULT_EQS_ENDPOINT,
  EQS_ENDPOINT_ENV,
  entryError,
  queueOptionsJson,
  type BatchResult,
  type QueueOptions,
} from "./queue.js";
import type { CallOptions, ClientOptions } from "./transport.js";

/** Attribute of every delivered copy: the topic's name. */
export const TOPIC_ATTRIBUTE = "exo.topic";
/** Attribute of every delivered copy: the publish id (the same on every copy of one publish). */
export const PUBLISH_ID_ATTRIBUTE = "exo.publish-id";

/** A message to publish (a published message takes no delay: give the subscription's queue one). */
export interface PublishedMessage {
  /** Opaque bytes (a string is sent as UTF-8). */
  readonly body: BytesLike;
  /** String attributes; subscription filters match on them. */
  readonly attributes?: Readonly<Record<string, string>> | undefined;
}

/** One published message's outcome. */
export interface Published {
  /** The id each copy carries in {@link PUBLISH_ID_ATTRIBUTE}. */
  readonly publishId: string;
  /** How many subscriptions got a copy (those whose filter matched). */
  readonly deliveries: number;
}

/** A subscription: which queue gets the topic's messages, and which of them. */
export interface Subscription {
  readonly name: string;
  readonly queue: string;
  /** Empty for every message. */
  readonly filter: string;
  readonly createdAtMs: number;
}

/** A topic and its subscriptions. */
export interface TopicInfo {
  readonly name: string;
  readonly createdAtMs: number;
  readonly subscriptions: readonly Subscription[];
}

/** How to subscribe. */
export interface SubscribeOptions {
  /**
   * Which messages the subscription gets; empty for all. Clauses joined by `and`:
   * `name = 'v'`, `name in ('a', 'b')`, `name prefix 'p'`, `name exists`, `name absent`.
   */
  readonly filter?: string | undefined;
  /** Create the queue with these options if it does not exist. */
  readonly createQueue?: QueueOptions | undefined;
}

function decodeSubscription(value: unknown): Subscription {
  const o = obj(value);
  return { name: str(o.name), queue: str(o.queue), filter: str(o.filter), createdAtMs: num(o.createdAtMs) };
}

function decodeTopicInfo(value: unknown): TopicInfo {
  const o = obj(value);
  return { name: str(o.name), createdAtMs: num(o.createdAtMs), subscriptions: arr(o.subscriptions).map(decodeSubscription) };
}

function publishedJson(message: PublishedMessage): Record<string, unknown> {
  if ((message as { delaySeconds?: unknown }).delaySeconds !== undefined) {
    throw ExoError.client(
      "INVALID_ARGUMENT",
      "a published message takes no delay: give the subscription's queue a delay instead",
      false,
    );
  }
  return defined({ body: base64(message.body), attributes: message.attributes === undefined ? undefined : { ...message.attributes } });
}

/**
 * A client of an eqs proxy's topics. A publish retried after a timeout may be delivered twice;
 * copies of one publish share a publish id, so consumers can tell.
 */
export class TopicClient extends ProxyClient {
  /** The contract's operations (OpenAPI `operationId`) and the method making each. */
  static readonly operations = Object.freeze({
    listTopics: "listTopicsPage",
    createTopic: "createTopic",
    getTopicInfo: "topicInfo",
    deleteTopic: "deleteTopic",
    publish: "publish",
    publishBatch: "publishBatch",
    createSubscription: "subscribe",
    deleteSubscription: "unsubscribe",
  } as const);

  /** A client for the eqs proxy at `endpoint`. */
  constructor(endpoint: string = DEFAULT_EQS_ENDPOINT, options: ClientOptions = {}) {
    super(endpoint, options);
  }

  /** A client for `$EXO_EQS_ENDPOINT` (else the sidecar default), TLS and token from the `EXO_*` variables. */
  static fromEnv(options: ClientOptions = {}): TopicClient {
    return new TopicClient(endpointFromEnv(EQS_ENDPOINT_ENV, DEFAULT_EQS_ENDPOINT), withEnvToken(options));
  }

  /** Creates a topic (idempotent); whether it was created. */
  async createTopic(name: string, call?: CallOptions): Promise<boolean> {
    const { body } = await this.transport.json({ route: OPS.createTopic, json: { name } }, false, call);
    return bool(body.created);
  }

  /** Deletes a topic and its subscriptions; their queues and messages stay. */
  async deleteTopic(name: string, call?: CallOptions): Promise<void> {
    await this.transport.json({ route: OPS.deleteTopic, params: { topic: name } }, false, call);
  }

  /** One page of topic names; pass `nextPageToken` back for the next (empty on the last page). */
  async listTopicsPage(
    prefix = "",
    pageSize = 0,
    pageToken = "",
    call?: CallOptions,
  ): Promise<{ names: string[]; nextPageToken: string }> {
    const query = { prefix, pageSize, pageToken };
    const { body } = await this.transport.json({ route: OPS.listTopics, query }, true, call);
    return { names: strings(body.names), nextPageToken: str(body.nextPageToken) };
  }

  /** Every topic name with `prefix`, following pages. */
  async listTopics(prefix = "", call?: CallOptions): Promise<string[]> {
    const names: string[] = [];
    let token = "";
    do {
      const page = await this.listTopicsPage(prefix, 0, token, call);
      names.push(...page.names);
      token = page.nextPageToken;
    } while (token !== "");
    return names;
  }

  /** A topic and its subscriptions. */
  async topicInfo(name: string, call?: CallOptions): Promise<TopicInfo> {
    const { body } = await this.transport.json({ route: OPS.getTopicInfo, params: { topic: name } }, true, call);
    return decodeTopicInfo(body.info);
  }

  /**
   * Subscribes `queue` to `topic` as `name` (idempotent for identical settings); whether it was
   * created, and the subscription.
   */
  async subscribe(
    topic: string,
    name: string,
    queue: string,
    options: SubscribeOptions = {},
    call?: CallOptions,
  ): Promise<{ created: boolean; subscription: Subscription }> {
    const json = defined({ name, queue, filter: options.filter, createQueue: queueOptionsJson(options.createQueue) });
    const { body } = await this.transport.json({ route: OPS.createSubscription, params: { topic }, json }, false, call);
    if (body.subscription === undefined || body.subscription === null) {
      throw ExoError.client("INTERNAL", "proxy returned no subscription", false);
    }
    return { created: bool(body.created), subscription: decodeSubscription(body.subscription) };
  }

  /** Deletes a subscription; its queue stays. */
  async unsubscribe(topic: string, name: string, call?: CallOptions): Promise<void> {
    await this.transport.json({ route: OPS.deleteSubscription, params: { topic, name } }, false, call);
  }

  /** Publishes a message (body and attributes). */
  async publish(topic: string, message: PublishedMessage, call?: CallOptions): Promise<Published> {
    const json = { message: publishedJson(message) };
    const { body } = await this.transport.json({ route: OPS.publish, params: { topic }, json }, false, call);
    return { publishId: str(body.publishId), deliveries: num(body.deliveries) };
  }

  /** Publishes many messages; one result per message, in order. Entries fail on their own. */
  async publishBatch(topic: string, messages: readonly PublishedMessage[], call?: CallOptions): Promise<BatchResult<Published>[]> {
    const entries = messages.map((message, i) => ({ id: String(i), message: publishedJson(message) }));
    const { body } = await this.transport.json({ route: OPS.publishBatch, params: { topic }, json: { entries } }, false, call);
    return arr(body.results).map((value): BatchResult<Published> => {
      const result = obj(value);
      if (result.error !== undefined && result.error !== null) {
        return { ok: false, error: entryError(result.error, topic) };
      }
      if (typeof result.publishId === "string") {
        return { ok: true, value: { publishId: result.publishId, deliveries: num(result.deliveries) } };
      }
      return { ok: false, error: ExoError.client("INTERNAL", "proxy returned an empty batch result", false) };
    });
  }
}
