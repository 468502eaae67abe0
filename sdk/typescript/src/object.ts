/**
 * {@link ObjectClient}: the app's handle on an eos proxy. Uploads and downloads stream (Node
 * streams, web `ReadableStream`s, async iterables), so objects of any size pass in bounded memory.
 */

import { createReadStream, createWriteStream } from "node:fs";
import { stat } from "node:fs/promises";
import type http from "node:http";
import { Readable, Transform, type TransformCallback, pipeline as streamPipeline } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { ReadableStream as WebReadableStream } from "node:stream/web";

import { ProxyClient, endpointFromEnv, withEnvToken } from "./client.js";
import { arr, bool, defined, num, obj, str, stringMap, strings, toBuffer } from "./codec.js";
import { ExoError, toReason, type Reason } from "./errors.js";
import { EOS_OPERATIONS as OPS, type Route } from "./operations.js";
import { runWithRetry } from "./retry.js";
import {
  CountedBody,
  answerError,
  readAll,
  type Answer,
  type CallOptions,
  type ClientOptions,
  type RequestBody,
} from "./transport.js";

/** Environment variable naming the eos endpoint. */
export const EOS_ENDPOINT_ENV = "EXO_EOS_ENDPOINT";
/** Where the eos sidecar listens unless told otherwise. */
export const DEFAULT_EOS_ENDPOINT = "http://127.0.0.1:7402";
/** Prefix of the headers carrying user metadata. */
export const META_HEADER_PREFIX = "x-exo-meta-";

/** An object's attributes. */
export interface ObjectInfo {
  readonly bucket: string;
  readonly key: string;
  readonly size: number;
  /** Opaque version tag (unquoted); changes whenever the bytes change. */
  readonly etag: string;
  readonly contentType: string;
  /** User metadata (names lowercase). */
  readonly metadata: Readonly<Record<string, string>>;
  /**
   * Last write, ms since the Unix epoch (from {@link ObjectClient.head} and downloads: whole
   * seconds, as HTTP dates carry it).
   */
  readonly lastModifiedMs: number;
}

/** What an upload reads: bytes, a string (UTF-8), a Node stream, a web stream, or an (async) iterable of chunks. */
export type UploadSource =
  | Uint8Array
  | string
  | Readable
  | WebReadableStream<Uint8Array>
  | globalThis.ReadableStream<Uint8Array>
  | AsyncIterable<Uint8Array | string>
  | Iterable<Uint8Array>;

/** Options of an upload. */
export interface PutObjectOptions {
  /** MIME type (default application/octet-stream). */
  readonly contentType?: string | undefined;
  /** User metadata (printable ASCII; names are stored lowercase). */
  readonly metadata?: Readonly<Record<string, string>> | undefined;
  /** Only if no object exists under the key. */
  readonly ifAbsent?: boolean | undefined;
  /** Only if the current object's ETag is this. */
  readonly ifMatch?: string | undefined;
  /** Exact size, if known (a `Uint8Array` or a file announces its own); the proxy refuses the upload if the bytes differ. */
  readonly contentLength?: number | undefined;
}

/** Which bytes to read: `[start, end)`, from `start` to the end, or the last `suffix` bytes. */
export type ByteRange = { readonly start: number; readonly end?: number | undefined } | { readonly suffix: number };

/** Options of a download. */
export interface GetObjectOptions {
  /** Only these bytes. */
  readonly range?: ByteRange | undefined;
  /** Fail with CONDITION_FAILED unless the ETag matches. */
  readonly ifMatch?: string | undefined;
  /** Fail with NOT_MODIFIED if the ETag matches. */
  readonly ifNoneMatch?: string | undefined;
}

/** An open download: the object's attributes, where the bytes sit, and the bytes as a stream. */
export interface Download {
  readonly info: ObjectInfo;
  /** Offset of the first byte sent. */
  readonly offset: number;
  /** Bytes sent. */
  readonly length: number;
  /**
   * The bytes. Fails (BACKEND_UNAVAILABLE, retryable) if fewer than `length` arrive; destroy it
   * to stop early (the connection is then closed).
   */
  readonly body: Readable;
  /** The bytes as a web `ReadableStream`. */
  stream(): WebReadableStream<Uint8Array>;
}

/** Options of a listing. */
export interface ListObjectsOptions {
  /** Only keys with this prefix. */
  readonly prefix?: string | undefined;
  /** Group keys containing this after the prefix (usually `/`) into common prefixes. */
  readonly delimiter?: string | undefined;
}

/** A URL allowing one method on one key until it expires. */
export interface Presigned {
  readonly url: string;
  /** Headers the request must carry besides the URL (Azure Blob PUT: `x-ms-blob-type`); usually empty. */
  readonly headers: Readonly<Record<string, string>>;
  /** When the URL stops working, in ms since the Unix epoch. */
  readonly expiresAtMs: number;
}

/** One key's outcome in {@link ObjectClient.deleteBatch}. */
export interface DeleteResult {
  readonly key: string;
  /** Absent on success. */
  readonly reason?: Reason;
  readonly message?: string;
}

/** The backend behind an eos proxy. */
export interface ObjectBackendDescription {
  readonly backend: string;
  readonly capabilities: readonly string[];
  readonly limits: {
    readonly maxObjectBytes: number;
    readonly maxKeyBytes: number;
    readonly maxMetadataEntries: number;
    readonly maxMetadataBytes: number;
    readonly maxPageSize: number;
    readonly maxPresignSeconds: number;
  };
}

export function decodeObjectInfo(value: unknown): ObjectInfo {
  const o = obj(value);
  return {
    bucket: str(o.bucket),
    key: str(o.key),
    size: num(o.size),
    etag: str(o.etag),
    contentType: str(o.contentType),
    metadata: stringMap(o.metadata),
    lastModifiedMs: num(o.lastModifiedMs),
  };
}

function first(headers: http.IncomingHttpHeaders, name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value[0] : value;
}

function unquote(etag: string): string {
  return etag.trim().replace(/^W\//, "").replace(/^"(.*)"$/, "$1");
}

/** An object's attributes from the headers of a GET or HEAD answer. */
function infoFromHeaders(bucket: string, key: string, headers: http.IncomingHttpHeaders, size: number): ObjectInfo {
  const metadata: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (name.startsWith(META_HEADER_PREFIX) && value !== undefined) {
      metadata[name.slice(META_HEADER_PREFIX.length)] = Array.isArray(value) ? value.join(", ") : value;
    }
  }
  const modified = Date.parse(first(headers, "last-modified") ?? "");
  return {
    bucket,
    key,
    size,
    etag: unquote(first(headers, "etag") ?? ""),
    contentType: first(headers, "content-type") ?? "",
    metadata,
    lastModifiedMs: Number.isNaN(modified) ? 0 : modified,
  };
}

/** The `Range` header of a byte range (HTTP ends are inclusive). */
function rangeHeader(range: ByteRange): string {
  const whole = (n: number, what: string): number => {
    if (!Number.isSafeInteger(n) || n < 0) {
      throw ExoError.client("INVALID_ARGUMENT", `range ${what} must be a non-negative integer, got ${n}`, false);
    }
    return n;
  };
  if ("suffix" in range) {
    return `bytes=-${whole(range.suffix, "suffix")}`;
  }
  const start = whole(range.start, "start");
  if (range.end === undefined) {
    return `bytes=${start}-`;
  }
  const end = whole(range.end, "end");
  if (end <= start) {
    // HTTP has no empty range: a server would answer the whole object instead.
    throw ExoError.client("INVALID_ARGUMENT", `range [${start}, ${end}) selects no byte`, false);
  }
  return `bytes=${start}-${end - 1}`;
}

function isWebStream(source: unknown): source is WebReadableStream<Uint8Array> {
  return typeof (source as { getReader?: unknown }).getReader === "function";
}

/**
 * Passes a stream through, failing it when it yields more or fewer bytes than announced: the
 * upload is then cut before its end, so the proxy stores nothing (instead of waiting for bytes
 * that never come).
 */
class LengthCheck extends Transform {
  private seen = 0;

  constructor(private readonly announced: number) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.seen += chunk.length;
    if (this.seen > this.announced) {
      callback(new Error(`the source gave more than the announced ${this.announced} bytes`));
      return;
    }
    callback(null, chunk);
  }

  override _flush(callback: TransformCallback): void {
    callback(this.seen === this.announced ? null : new Error(`the source ended after ${this.seen} of the announced ${this.announced} bytes`));
  }
}

/** An upload source as a request body: bytes as they are, everything else as a Node stream. */
function uploadBody(source: UploadSource, contentLength: number | undefined): RequestBody {
  if (typeof source === "string" || source instanceof Uint8Array) {
    const bytes = toBuffer(source);
    if (contentLength !== undefined && contentLength !== bytes.length) {
      throw ExoError.client("INVALID_ARGUMENT", `contentLength ${contentLength} is not the ${bytes.length} bytes given`, false);
    }
    return bytes;
  }
  const stream =
    source instanceof Readable
      ? source
      : isWebStream(source)
        ? Readable.fromWeb(source)
        : Readable.from(source as AsyncIterable<Uint8Array | string>, { objectMode: false });
  if (contentLength === undefined) {
    return stream;
  }
  const checked = new LengthCheck(contentLength);
  streamPipeline(stream, checked, () => {
    // Failures reach `checked`, which the upload watches.
  });
  return checked;
}

function putHeaders(options: PutObjectOptions, body: RequestBody): Record<string, string> {
  const headers: Record<string, string> = {};
  if (options.contentType !== undefined && options.contentType !== "") {
    headers["content-type"] = options.contentType;
  }
  for (const [name, value] of Object.entries(options.metadata ?? {})) {
    headers[`${META_HEADER_PREFIX}${name.toLowerCase()}`] = value;
  }
  if (options.ifAbsent === true) {
    headers["if-none-match"] = "*";
  }
  if (options.ifMatch !== undefined) {
    headers["if-match"] = `"${options.ifMatch}"`;
  }
  if (!Buffer.isBuffer(body)) {
    if (options.contentLength !== undefined) {
      headers["content-length"] = String(options.contentLength);
    } else {
      headers["transfer-encoding"] = "chunked";
    }
  }
  return headers;
}

/** The open download of a successful GET answer. */
function download(bucket: string, key: string, answer: Answer): Download {
  const headers = answer.headers;
  const length = Number(first(headers, "content-length") ?? Number.NaN);
  const range = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(first(headers, "content-range") ?? "");
  const offset = range !== null ? Number(range[1]) : 0;
  const size = range !== null ? Number(range[3]) : length;
  const body = new CountedBody(Number.isNaN(length) ? undefined : length);
  const source = answer.body;
  source.on("error", (err) => {
    body.destroy(
      err instanceof ExoError || (err as { name?: string }).name === "AbortError"
        ? err
        : ExoError.client("BACKEND_UNAVAILABLE", `download interrupted: ${err.message}`, true, err),
    );
  });
  body.on("close", () => {
    if (!source.readableEnded) {
      source.destroy();
    }
  });
  source.pipe(body);
  return {
    info: infoFromHeaders(bucket, key, headers, Number.isNaN(size) ? 0 : size),
    offset,
    length: Number.isNaN(length) ? 0 : length,
    body,
    stream: () => Readable.toWeb(body) as WebReadableStream<Uint8Array>,
  };
}

/**
 * A client of an eos object proxy. Uploads and downloads are never retried (their bodies are
 * streams); every other call follows the retry policy.
 */
export class ObjectClient extends ProxyClient {
  /** The contract's operations (OpenAPI `operationId`) and the method making each. */
  static readonly operations = Object.freeze({
    openapi: "openapi",
    describe: "describe",
    listBuckets: "listBuckets",
    createBucket: "createBucket",
    deleteBucket: "deleteBucket",
    listObjects: "listPage",
    putObject: "put",
    getObject: "get",
    headObject: "head",
    deleteObject: "delete",
    copyObject: "copy",
    presignObject: "presign",
    deleteObjects: "deleteBatch",
    presignedGet: "presignedGet",
    presignedPut: "presignedPut",
  } as const);

  /** A client for the eos proxy at `endpoint` (`http://`, `https://` or `unix:`). */
  constructor(endpoint: string = DEFAULT_EOS_ENDPOINT, options: ClientOptions = {}) {
    super(endpoint, options);
  }

  /** A client for `$EXO_EOS_ENDPOINT` (else the sidecar default), TLS and token from the `EXO_*` variables. */
  static fromEnv(options: ClientOptions = {}): ObjectClient {
    return new ObjectClient(endpointFromEnv(EOS_ENDPOINT_ENV, DEFAULT_EOS_ENDPOINT), withEnvToken(options));
  }

  /** This proxy's OpenAPI document. */
  openapi(call?: CallOptions): Promise<Record<string, unknown>> {
    return this.openapiDocument(OPS.openapi, call);
  }

  /** The backend's name, capabilities and limits. */
  async describe(call?: CallOptions): Promise<ObjectBackendDescription> {
    const { body } = await this.transport.json({ route: OPS.describe }, true, call);
    const l = obj(body.limits);
    return {
      backend: str(body.backend),
      capabilities: strings(body.capabilities),
      limits: {
        maxObjectBytes: num(l.maxObjectBytes),
        maxKeyBytes: num(l.maxKeyBytes),
        maxMetadataEntries: num(l.maxMetadataEntries),
        maxMetadataBytes: num(l.maxMetadataBytes),
        maxPageSize: num(l.maxPageSize),
        maxPresignSeconds: num(l.maxPresignSeconds),
      },
    };
  }

  /** Creates a bucket; whether it was created. */
  async createBucket(name: string, call?: CallOptions): Promise<boolean> {
    const { body } = await this.transport.json({ route: OPS.createBucket, json: { name } }, false, call);
    return bool(body.created);
  }

  /** Deletes an empty bucket. */
  async deleteBucket(name: string, call?: CallOptions): Promise<void> {
    await this.transport.json({ route: OPS.deleteBucket, params: { bucket: name } }, false, call);
  }

  /** Every bucket name. */
  async listBuckets(call?: CallOptions): Promise<string[]> {
    const { body } = await this.transport.json({ route: OPS.listBuckets }, true, call);
    return strings(body.names);
  }

  /** One upload attempt of `source` to `route`; never retried (the source is consumed). */
  private async upload(
    route: Route,
    params: Record<string, string> | undefined,
    url: URL | undefined,
    source: UploadSource,
    headers: Record<string, string>,
    options: PutObjectOptions,
    call: CallOptions | undefined,
  ): Promise<ObjectInfo> {
    const body = uploadBody(source, options.contentLength);
    const answer = await this.transport.attempt(
      { route, params, url, body, headers: { ...headers, ...putHeaders(options, body), accept: "application/json" }, expectContinue: true },
      this.transport.deadline(call),
      call?.signal,
    );
    if (answer.status < 200 || answer.status >= 300) {
      throw await answerError(answer);
    }
    const text = (await readAll(answer.body)).toString("utf8");
    try {
      return decodeObjectInfo(obj(JSON.parse(text)).info);
    } catch (err) {
      throw ExoError.client("INTERNAL", `the proxy answered an upload with a body that is not JSON`, false, err);
    }
  }

  /**
   * Uploads everything `source` yields, streaming (bounded memory whatever the size). If reading
   * the source fails midway, the upload is cancelled and nothing is stored. Never retried.
   */
  put(bucket: string, key: string, source: UploadSource, options: PutObjectOptions = {}, call?: CallOptions): Promise<ObjectInfo> {
    return this.upload(OPS.putObject, { bucket, key }, undefined, source, {}, options, call);
  }

  /** Uploads a file (its size is announced, so a file that changes size midway is refused). */
  async putFile(bucket: string, key: string, path: string, options: PutObjectOptions = {}, call?: CallOptions): Promise<ObjectInfo> {
    let size: number;
    try {
      size = (await stat(path)).size;
    } catch (err) {
      throw ExoError.client("INVALID_ARGUMENT", `cannot open ${path}: ${(err as Error).message}`, false, err);
    }
    return this.put(bucket, key, createReadStream(path), { contentLength: size, ...options }, call);
  }

  /** One download attempt; never retried. */
  private async fetch(
    route: Route,
    params: Record<string, string> | undefined,
    url: URL | undefined,
    headers: Record<string, string>,
    bucket: string,
    key: string,
    call: CallOptions | undefined,
  ): Promise<Download> {
    const answer = await this.transport.attempt({ route, params, url, headers }, this.transport.deadline(call), call?.signal);
    if (answer.status < 200 || answer.status >= 300) {
      throw await answerError(answer);
    }
    return download(bucket, key, answer);
  }

  /** Opens a download: the object's attributes and a stream of its bytes. */
  async get(bucket: string, key: string, options: GetObjectOptions = {}, call?: CallOptions): Promise<Download> {
    const headers: Record<string, string> = {};
    if (options.range !== undefined) {
      headers.range = rangeHeader(options.range);
    }
    if (options.ifMatch !== undefined) {
      headers["if-match"] = `"${options.ifMatch}"`;
    }
    if (options.ifNoneMatch !== undefined) {
      headers["if-none-match"] = `"${options.ifNoneMatch}"`;
    }
    return await this.fetch(OPS.getObject, { bucket, key }, undefined, headers, bucket, key, call);
  }

  /** Downloads into memory. */
  async getBytes(bucket: string, key: string, options: GetObjectOptions = {}, call?: CallOptions): Promise<{ info: ObjectInfo; data: Buffer }> {
    const opened = await this.get(bucket, key, options, call);
    return { info: opened.info, data: await readAll(opened.body) };
  }

  /** Downloads into a file (written completely, or left incomplete with an error). */
  async getToFile(bucket: string, key: string, path: string, options: GetObjectOptions = {}, call?: CallOptions): Promise<ObjectInfo> {
    const opened = await this.get(bucket, key, options, call);
    await pipeline(opened.body, createWriteStream(path));
    return opened.info;
  }

  /**
   * An object's attributes. HTTP answers a failed HEAD without a body, so on a failure the same
   * request is made once as a one-byte GET to learn the proxy's reason (a 404 alone does not
   * tell a missing bucket from a missing key).
   */
  async head(bucket: string, key: string, call?: CallOptions): Promise<ObjectInfo> {
    const deadline = this.transport.deadline(call);
    return runWithRetry(call?.retry ?? this.transport.retry, { readOnly: true, deadline, signal: call?.signal }, async () => {
      const answer = await this.transport.attempt({ route: OPS.headObject, params: { bucket, key } }, deadline, call?.signal);
      answer.body.resume();
      if (answer.status >= 200 && answer.status < 300) {
        return infoFromHeaders(bucket, key, answer.headers, Number(first(answer.headers, "content-length") ?? 0));
      }
      const bodiless = await answerError(answer);
      let probe: Answer;
      try {
        probe = await this.transport.attempt(
          { route: OPS.getObject, params: { bucket, key }, headers: { range: "bytes=0-0" } },
          deadline,
          call?.signal,
        );
      } catch (err) {
        // The probe could not be made: the status alone is what is known.
        throw err instanceof ExoError ? bodiless : err;
      }
      if (probe.status === answer.status) {
        throw await answerError(probe);
      }
      probe.body.destroy();
      throw bodiless;
    });
  }

  /** Deletes an object, only if its ETag is `ifMatch` when given. */
  async delete(bucket: string, key: string, ifMatch?: string, call?: CallOptions): Promise<void> {
    const headers: Record<string, string> = ifMatch === undefined ? {} : { "if-match": `"${ifMatch}"` };
    await this.transport.json({ route: OPS.deleteObject, params: { bucket, key }, headers }, false, call);
  }

  /** Deletes many keys; one result per key, in order. */
  async deleteBatch(bucket: string, keys: readonly string[], call?: CallOptions): Promise<DeleteResult[]> {
    const { body } = await this.transport.json({ route: OPS.deleteObjects, params: { bucket }, json: { keys } }, false, call);
    return arr(body.results).map((value) => {
      const r = obj(value);
      const reason = str(r.errorReason);
      return reason === "" ? { key: str(r.key) } : { key: str(r.key), reason: toReason(reason), message: str(r.errorMessage) };
    });
  }

  /** One page of a listing in key order; pass `nextPageToken` back for the next (empty on the last page). */
  async listPage(
    bucket: string,
    options: ListObjectsOptions & { readonly pageSize?: number | undefined; readonly pageToken?: string | undefined } = {},
    call?: CallOptions,
  ): Promise<{ objects: ObjectInfo[]; commonPrefixes: string[]; nextPageToken: string }> {
    const query = { prefix: options.prefix, delimiter: options.delimiter, pageSize: options.pageSize, pageToken: options.pageToken };
    const { body } = await this.transport.json({ route: OPS.listObjects, params: { bucket }, query }, true, call);
    return {
      objects: arr(body.objects).map(decodeObjectInfo),
      commonPrefixes: strings(body.commonPrefixes),
      nextPageToken: str(body.nextPageToken),
    };
  }

  /** Every object and common prefix, following pages. */
  async list(bucket: string, options: ListObjectsOptions = {}, call?: CallOptions): Promise<{ objects: ObjectInfo[]; commonPrefixes: string[] }> {
    const objects: ObjectInfo[] = [];
    const commonPrefixes: string[] = [];
    let pageToken = "";
    do {
      const page = await this.listPage(bucket, { ...options, pageToken }, call);
      objects.push(...page.objects);
      commonPrefixes.push(...page.commonPrefixes);
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
    return { objects, commonPrefixes };
  }

  /** Copies an object server-side into `bucket`/`key`, under the same conditions a put takes. */
  async copy(
    sourceBucket: string,
    sourceKey: string,
    bucket: string,
    key: string,
    when: Pick<PutObjectOptions, "ifAbsent" | "ifMatch"> = {},
    call?: CallOptions,
  ): Promise<ObjectInfo> {
    const condition =
      when.ifAbsent === true ? { createOnly: true } : when.ifMatch !== undefined ? { ifMatch: when.ifMatch } : undefined;
    const json = defined({ sourceBucket, sourceKey, key, condition });
    const { body } = await this.transport.json({ route: OPS.copyObject, params: { bucket }, json }, false, call);
    return decodeObjectInfo(body.info);
  }

  /** A URL allowing a GET or a PUT of one object for `expiresInSeconds`. */
  async presign(
    bucket: string,
    key: string,
    options: { readonly method: "GET" | "PUT"; readonly expiresInSeconds: number },
    call?: CallOptions,
  ): Promise<Presigned> {
    const json = { key, method: options.method, expiresInSeconds: options.expiresInSeconds };
    const { body } = await this.transport.json({ route: OPS.presignObject, params: { bucket }, json }, true, call);
    return { url: str(body.url), headers: stringMap(body.headers), expiresAtMs: num(body.expiresAtMs) };
  }

  /**
   * Downloads through a presigned URL (from {@link presign}; the proxy's own, or a cloud
   * backend's): no token is sent, the URL is the authorisation.
   */
  async presignedGet(presigned: Presigned, call?: CallOptions): Promise<Download> {
    const url = presignedUrl(presigned);
    const [bucket, key] = bucketAndKey(url);
    return await this.fetch(OPS.presignedGet, undefined, url, { ...presigned.headers }, bucket, key, call);
  }

  /** Uploads through a presigned URL (replacing any object there); no token is sent. */
  async presignedPut(presigned: Presigned, source: UploadSource, options: Omit<PutObjectOptions, "ifAbsent" | "ifMatch"> = {}, call?: CallOptions): Promise<ObjectInfo> {
    const url = presignedUrl(presigned);
    return await this.upload(OPS.presignedPut, undefined, url, source, { ...presigned.headers }, options, call);
  }
}

function presignedUrl(presigned: Presigned): URL {
  try {
    return new URL(presigned.url);
  } catch (err) {
    throw ExoError.client("INVALID_ARGUMENT", `not a presigned URL: ${JSON.stringify(presigned.url)}`, false, err);
  }
}

/** The bucket and key a presigned URL of a local backend names (empty for other URLs). */
function bucketAndKey(url: URL): [string, string] {
  const match = /\/api\/v1\/presigned\/([^/]+)\/(.+)$/.exec(url.pathname);
  if (match === null) {
    return ["", ""];
  }
  return [decodeURIComponent(match[1] ?? ""), decodeURIComponent(match[2] ?? "")];
}
