/**
 * `@exoflow/sdk`: typed Node clients for ExoFlow proxies — {@link QueueClient} and
 * {@link TopicClient} (eqs), {@link ObjectClient} (eos), {@link KvClient} (ekv).
 *
 * App code talks to a sidecar proxy on loopback and never to a cloud SDK, so the same code runs
 * on any backend the proxy is configured with.
 *
 * ```ts
 * import { QueueClient } from "@exoflow/sdk";
 *
 * const queues = QueueClient.fromEnv(); // $EXO_EQS_ENDPOINT or http://127.0.0.1:7401
 * await queues.createQueue("orders");
 * await queues.send("orders", "order 42");
 * for (const message of await queues.receive("orders", { maxMessages: 10, waitSeconds: 5 })) {
 *   // ... handle message.body ...
 *   await queues.ack("orders", message.receipt);
 * }
 * ```
 */

export { ExoError, REASONS, type Reason } from "./errors.js";
export { DEFAULT_RETRY, NO_RETRY, MAX_HINTED_WAIT_MS, runWithRetry, type RetryPolicy } from "./retry.js";
export {
  CA_FILE_ENV,
  CLIENT_CERT_FILE_ENV,
  CLIENT_KEY_FILE_ENV,
  TIMEOUT_HEADER,
  TOKEN_ENV,
  parseEndpoint,
  tlsFromEnv,
  type CallOptions,
  type ClientOptions,
  type Endpoint,
  type TlsOptions,
} from "./transport.js";
export { EKV_OPERATIONS, EOS_OPERATIONS, EQS_OPERATIONS, type HttpMethod, type Route } from "./operations.js";
export type { BytesLike } from "./codec.js";
export {
  DEFAULT_EQS_ENDPOINT,
  EQS_ENDPOINT_ENV,
  QueueClient,
  type BatchResult,
  type Message,
  type OutgoingMessage,
  type QueueBackendDescription,
  type QueueInfo,
  type QueueLimits,
  type QueueOptions,
  type ReceiveOptions,
  type TopicLimits,
} from "./queue.js";
export {
  PUBLISH_ID_ATTRIBUTE,
  TOPIC_ATTRIBUTE,
  TopicClient,
  type Published,
  type PublishedMessage,
  type SubscribeOptions,
  type Subscription,
  type TopicInfo,
} from "./topic.js";
export {
  DEFAULT_EOS_ENDPOINT,
  EOS_ENDPOINT_ENV,
  META_HEADER_PREFIX,
  ObjectClient,
  type ByteRange,
  type DeleteResult,
  type Download,
  type GetObjectOptions,
  type ListObjectsOptions,
  type ObjectBackendDescription,
  type ObjectInfo,
  type Presigned,
  type PutObjectOptions,
  type UploadSource,
} from "./object.js";
export {
  DEFAULT_EKV_ENDPOINT,
  EKV_ENDPOINT_ENV,
  KvClient,
  type DeleteWrite,
  type Entry,
  type IncrementOptions,
  type Incremented,
  type KvBackendDescription,
  type ListOptions,
  type PutOptions,
  type PutWrite,
  type Write,
} from "./kv.js";
export {
  PUBLISH_ID_HEADER,
  decodePushed,
  expressPushHandler,
  pushListener,
  type ExpressLikeRequest,
  type PushHandler,
  type PushOptions,
  type PushedMessage,
} from "./push.js";
