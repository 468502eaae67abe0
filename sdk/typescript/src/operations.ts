/**
 * Every HTTP route of the contract this SDK calls, by the `operationId` of the proxies' OpenAPI
 * documents (`exo-proto/openapi-{eqs,eos,ekv}.json`). Requests are built from this table only;
 * `test/contract.test.ts` checks it against the documents, so the two cannot drift.
 */

/** HTTP methods the contract uses. */
export type HttpMethod = "GET" | "POST" | "PUT" | "DELETE" | "HEAD";

/** One route: method and path template (`{name}` parameters). */
export interface Route {
  readonly method: HttpMethod;
  readonly path: string;
}

function route(method: HttpMethod, path: string): Route {
  return Object.freeze({ method, path });
}

/** eqs (queues and topics). */
export const EQS_OPERATIONS = Object.freeze({
  openapi: route("GET", "/api/v1/openapi.json"),
  describe: route("GET", "/api/v1/describe"),
  listQueues: route("GET", "/api/v1/queues"),
  createQueue: route("POST", "/api/v1/queues"),
  getQueueInfo: route("GET", "/api/v1/queues/{queue}"),
  deleteQueue: route("DELETE", "/api/v1/queues/{queue}"),
  purge: route("POST", "/api/v1/queues/{queue}/purge"),
  send: route("POST", "/api/v1/queues/{queue}/messages"),
  sendBatch: route("POST", "/api/v1/queues/{queue}/messages/batch"),
  receive: route("POST", "/api/v1/queues/{queue}/messages/receive"),
  ack: route("POST", "/api/v1/queues/{queue}/messages/ack"),
  changeVisibility: route("POST", "/api/v1/queues/{queue}/messages/visibility"),
  listTopics: route("GET", "/api/v1/topics"),
  createTopic: route("POST", "/api/v1/topics"),
  getTopicInfo: route("GET", "/api/v1/topics/{topic}"),
  deleteTopic: route("DELETE", "/api/v1/topics/{topic}"),
  publish: route("POST", "/api/v1/topics/{topic}/publish"),
  publishBatch: route("POST", "/api/v1/topics/{topic}/publish/batch"),
  createSubscription: route("POST", "/api/v1/topics/{topic}/subscriptions"),
  deleteSubscription: route("DELETE", "/api/v1/topics/{topic}/subscriptions/{name}"),
});

/** eos (objects). */
export const EOS_OPERATIONS = Object.freeze({
  openapi: route("GET", "/api/v1/openapi.json"),
  describe: route("GET", "/api/v1/describe"),
  listBuckets: route("GET", "/api/v1/buckets"),
  createBucket: route("POST", "/api/v1/buckets"),
  deleteBucket: route("DELETE", "/api/v1/buckets/{bucket}"),
  listObjects: route("GET", "/api/v1/buckets/{bucket}/objects"),
  putObject: route("PUT", "/api/v1/buckets/{bucket}/objects/{key}"),
  getObject: route("GET", "/api/v1/buckets/{bucket}/objects/{key}"),
  headObject: route("HEAD", "/api/v1/buckets/{bucket}/objects/{key}"),
  deleteObject: route("DELETE", "/api/v1/buckets/{bucket}/objects/{key}"),
  copyObject: route("POST", "/api/v1/buckets/{bucket}/copy"),
  presignObject: route("POST", "/api/v1/buckets/{bucket}/presign"),
  deleteObjects: route("POST", "/api/v1/buckets/{bucket}/delete"),
  presignedGet: route("GET", "/api/v1/presigned/{bucket}/{key}"),
  presignedPut: route("PUT", "/api/v1/presigned/{bucket}/{key}"),
});

/** ekv (key-value). */
export const EKV_OPERATIONS = Object.freeze({
  openapi: route("GET", "/api/v1/openapi.json"),
  describe: route("GET", "/api/v1/describe"),
  listTables: route("GET", "/api/v1/tables"),
  createTable: route("POST", "/api/v1/tables"),
  deleteTable: route("DELETE", "/api/v1/tables/{table}"),
  listEntries: route("GET", "/api/v1/tables/{table}/entries"),
  batchGet: route("POST", "/api/v1/tables/{table}/batch-get"),
  getEntry: route("GET", "/api/v1/tables/{table}/entries/{key}"),
  putEntry: route("PUT", "/api/v1/tables/{table}/entries/{key}"),
  deleteEntry: route("DELETE", "/api/v1/tables/{table}/entries/{key}"),
  increment: route("POST", "/api/v1/tables/{table}/increment"),
  writeBatch: route("POST", "/api/v1/tables/{table}/write-batch"),
});

/**
 * A path parameter, percent-encoded: every reserved character, `/` included, so a key is one
 * path segment whatever it holds; a key of dots only has them encoded too, so it is never read
 * as a `.`/`..` segment.
 */
export function encodeSegment(value: string): string {
  const encoded = encodeURIComponent(value);
  return /^\.+$/.test(encoded) ? encoded.replaceAll(".", "%2E") : encoded;
}

/** The path of `route` with its parameters filled in (each must be given). */
export function fillPath(template: string, params: Readonly<Record<string, string>>): string {
  return template.replace(/\{([A-Za-z]+)\}/g, (_, name: string) => {
    const value = params[name];
    if (value === undefined) {
      throw new Error(`missing path parameter ${name} for ${template}`);
    }
    return encodeSegment(value);
  });
}
