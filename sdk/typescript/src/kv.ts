/** {@link KvClient}: the app's handle on an ekv proxy. */

import { ProxyClient, endpointFromEnv, withEnvToken } from "./client.js";
import { arr, base64, bool, bytes, defined, num, obj, str, strings, type BytesLike } from "./codec.js";
import { ExoError } from "./errors.js";
import { EKV_OPERATIONS as OPS } from "./operations.js";
import type { CallOptions, ClientOptions } from "./transport.js";

/** Environment variable naming the ekv endpoint. */
export const EKV_ENDPOINT_ENV = "EXO_EKV_ENDPOINT";
/** Where the ekv sidecar listens unless told otherwise. */
export const DEFAULT_EKV_ENDPOINT = "http://127.0.0.1:7403";

/** One stored key. */
export interface Entry {
  readonly key: string;
  /** Empty when listed with `keysOnly`. */
  readonly value: Buffer;
  /** Opaque; changes on every write. */
  readonly version: string;
  /** Expiry, ms since the Unix epoch; 0 if none. */
  readonly expiresAtMs: number;
}

/** Options of a put. */
export interface PutOptions {
  /** Only if the key does not exist (create). */
  readonly mustNotExist?: boolean | undefined;
  /** Only if the key is at this version (compare-and-set). */
  readonly ifVersion?: string | undefined;
  /** Time to live in whole seconds; absent or 0 keeps the value forever. */
  readonly ttlSeconds?: number | undefined;
}

/**
 * A put in a {@link KvClient.writeBatch}: `value` (a string as UTF-8) under `key`, with the
 * conditions and time to live of {@link PutOptions}.
 */
export interface PutWrite extends PutOptions {
  readonly key: string;
  readonly value: BytesLike;
  /** Absent or false: a put. */
  readonly delete?: false | undefined;
}

/**
 * A delete in a {@link KvClient.writeBatch}: `key` removed (an absent key is no failure), only
 * at `ifVersion` when given.
 */
export interface DeleteWrite {
  readonly key: string;
  readonly delete: true;
  /** Only if the key is at this version. */
  readonly ifVersion?: string | undefined;
}

/**
 * One write of a {@link KvClient.writeBatch}, shaped as the contract's `BatchWrite`: a put
 * (`{ key, value, ...PutOptions }`) or a delete (`{ key, delete: true, ifVersion? }`).
 */
export type Write = PutWrite | DeleteWrite;

/** Options of a listing. */
export interface ListOptions {
  /** Only keys with this prefix. */
  readonly prefix?: string | undefined;
  /** Keys and versions only, no values. */
  readonly keysOnly?: boolean | undefined;
}

/** Options of an increment. */
export interface IncrementOptions {
  /**
   * Time to live in whole seconds of a counter this increment creates; absent or 0 keeps it
   * forever. An existing counter keeps its expiry, so a fixed window ends on time however
   * often it is counted in.
   */
  readonly ttlSeconds?: number | undefined;
}

/** A counter after an increment. */
export interface Incremented {
  /** Its new value: a 64-bit signed integer, exact (a `number` is exact only up to 2^53). */
  readonly value: bigint;
  /** The entry's new version (as `put` returns it), for a compare-and-set that follows. */
  readonly version: string;
}

/** The range of a counter and of an increment's delta: a 64-bit signed integer. */
const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;

function invalid(field: string, message: string): ExoError {
  return new ExoError({ reason: "INVALID_ARGUMENT", message, retryable: false, field });
}

/** `delta` as the decimal string proto3 JSON writes an int64 in; refused when it is not one. */
function int64Text(delta: unknown): string {
  if (typeof delta === "bigint") {
    if (delta < INT64_MIN || delta > INT64_MAX) {
      throw invalid("delta", `an increment's delta must fit a 64-bit signed integer, not ${delta.toString()}`);
    }
    return delta.toString();
  }
  if (typeof delta === "number") {
    if (!Number.isSafeInteger(delta)) {
      throw invalid(
        "delta",
        `an increment's delta must be an integer a number holds exactly (at most 2^53 - 1 either way), not ${String(delta)}: pass a bigint`,
      );
    }
    return String(delta);
  }
  throw invalid("delta", `an increment's delta is a number or a bigint, not ${typeof delta}`);
}

/** A counter's value as the proxy sends it: a decimal string (proto3 JSON's int64), absent when 0. */
function counterValue(value: unknown, resource: string): bigint {
  if (value === undefined || value === null) {
    return 0n;
  }
  if (typeof value === "string" && /^-?\d+$/.test(value)) {
    return BigInt(value);
  }
  if (typeof value === "number" && Number.isSafeInteger(value)) {
    return BigInt(value);
  }
  throw new ExoError({
    reason: "INTERNAL",
    message: `the proxy answered an increment with the value ${JSON.stringify(value)}`,
    retryable: false,
    resource,
  });
}

/** A time to live as the contract takes it: whole seconds, 0 (forever) left out. */
function ttlField(ttl: number | undefined, field: string): number | undefined {
  if (ttl !== undefined && !(Number.isInteger(ttl) && ttl >= 0 && ttl <= 0xffff_ffff)) {
    throw invalid(field, `a time to live is a whole number of seconds, not ${String(ttl)}`);
  }
  return ttl === 0 ? undefined : ttl;
}

/**
 * Write `index` of a batch as the contract's `BatchWrite`. Refused here, with the field named
 * as the proxy names it (`writes[i]...`): a put with both conditions (`put` would keep one and
 * drop the other silently, a batch should not), and a delete carrying a put's fields (only
 * possible from JavaScript or through a cast; they would otherwise be dropped unseen).
 */
function batchWrite(write: Write, index: number): Record<string, unknown> {
  const at = `writes[${String(index)}]`;
  if (write.delete === true) {
    const given = obj(write);
    for (const field of ["value", "mustNotExist", "ttlSeconds"]) {
      if (given[field] !== undefined) {
        throw invalid(`${at}.${field}`, `a delete has no ${field}`);
      }
    }
    const condition = write.ifVersion !== undefined ? { versionEquals: write.ifVersion } : undefined;
    return defined({ key: write.key, delete: true, condition });
  }
  if (write.mustNotExist === true && write.ifVersion !== undefined) {
    throw invalid(`${at}.condition`, "a write is either mustNotExist or at a version (ifVersion), not both");
  }
  const condition =
    write.mustNotExist === true
      ? { mustNotExist: true }
      : write.ifVersion !== undefined
        ? { versionEquals: write.ifVersion }
        : undefined;
  const ttlSeconds = ttlField(write.ttlSeconds, `${at}.ttlSeconds`);
  return defined({ key: write.key, value: base64(write.value), condition, ttlSeconds });
}

/**
 * The versions a batch was answered with, one per write. proto3 JSON may leave out a field at
 * its default, so a missing list (possible only when every write is a delete) or a null in it
 * reads as empty, what a delete answers.
 */
function batchVersions(versions: unknown, writes: readonly Write[], table: string): string[] {
  if ((versions === undefined || versions === null) && writes.every((w) => w.delete === true)) {
    return writes.map(() => "");
  }
  if (!Array.isArray(versions) || versions.length !== writes.length) {
    throw new ExoError({
      reason: "INTERNAL",
      message: `the proxy answered a batch of ${String(writes.length)} writes with the versions ${JSON.stringify(versions)}`,
      retryable: false,
      resource: table,
    });
  }
  return versions.map(str);
}

/**
 * The one reason an increment is retried for: THROTTLED means the proxy's compare-and-set loop
 * lost too many races and wrote nothing. Any other failure may come after the increment took
 * effect (a timeout, a lost answer), and sending it again would count it twice.
 */
function incrementRetryable(err: ExoError): boolean {
  return err.reason === "THROTTLED";
}

/** The backend behind an ekv proxy. */
export interface KvBackendDescription {
  readonly backend: string;
  /**
   * Capability names (`KvCapability`): `COMPARE_AND_SET`, `TTL`, `LIST`, `INCREMENT`,
   * `ATOMIC_BATCH`; a call needing one the backend lacks fails with UNSUPPORTED.
   */
  readonly capabilities: readonly string[];
  readonly limits: {
    readonly maxKeyBytes: number;
    readonly maxValueBytes: number;
    readonly maxBatchKeys: number;
    readonly maxPageSize: number;
    readonly maxTtlSeconds: number;
    /** Most writes in one {@link KvClient.writeBatch} (0 from a proxy that does not say). */
    readonly maxBatchWrites: number;
    /** Largest total of the values in one {@link KvClient.writeBatch}, in bytes (0 from a proxy that does not say). */
    readonly maxBatchBytes: number;
  };
}

function decodeEntry(value: unknown): Entry {
  const o = obj(value);
  return { key: str(o.key), value: bytes(o.value), version: str(o.version), expiresAtMs: num(o.expiresAtMs) };
}

/** A client of an ekv key-value proxy. Connects lazily; every call is retried per the policy. */
export class KvClient extends ProxyClient {
  /** The contract's operations (OpenAPI `operationId`) and the method making each. */
  static readonly operations = Object.freeze({
    openapi: "openapi",
    describe: "describe",
    listTables: "listTables",
    createTable: "createTable",
    deleteTable: "deleteTable",
    listEntries: "listPage",
    batchGet: "batchGet",
    getEntry: "get",
    putEntry: "put",
    deleteEntry: "delete",
    increment: "increment",
    writeBatch: "writeBatch",
  } as const);

  /** A client for the ekv proxy at `endpoint` (`http://`, `https://` or `unix:`). */
  constructor(endpoint: string = DEFAULT_EKV_ENDPOINT, options: ClientOptions = {}) {
    super(endpoint, options);
  }

  /** A client for `$EXO_EKV_ENDPOINT` (else the sidecar default), TLS and token from the `EXO_*` variables. */
  static fromEnv(options: ClientOptions = {}): KvClient {
    return new KvClient(endpointFromEnv(EKV_ENDPOINT_ENV, DEFAULT_EKV_ENDPOINT), withEnvToken(options));
  }

  /** This proxy's OpenAPI document. */
  openapi(call?: CallOptions): Promise<Record<string, unknown>> {
    return this.openapiDocument(OPS.openapi, call);
  }

  /** The backend's name, capabilities and limits. */
  async describe(call?: CallOptions): Promise<KvBackendDescription> {
    const { body } = await this.transport.json({ route: OPS.describe }, true, call);
    const l = obj(body.limits);
    return {
      backend: str(body.backend),
      capabilities: strings(body.capabilities),
      limits: {
        maxKeyBytes: num(l.maxKeyBytes),
        maxValueBytes: num(l.maxValueBytes),
        maxBatchKeys: num(l.maxBatchKeys),
        maxPageSize: num(l.maxPageSize),
        maxTtlSeconds: num(l.maxTtlSeconds),
        maxBatchWrites: num(l.maxBatchWrites),
        maxBatchBytes: num(l.maxBatchBytes),
      },
    };
  }

  /** Creates a table; whether it was created. */
  async createTable(name: string, call?: CallOptions): Promise<boolean> {
    const { body } = await this.transport.json({ route: OPS.createTable, json: { name } }, false, call);
    return bool(body.created);
  }

  /** Deletes a table and its keys. */
  async deleteTable(name: string, call?: CallOptions): Promise<void> {
    await this.transport.json({ route: OPS.deleteTable, params: { table: name } }, false, call);
  }

  /** Every table name. */
  async listTables(call?: CallOptions): Promise<string[]> {
    const { body } = await this.transport.json({ route: OPS.listTables }, true, call);
    return strings(body.names);
  }

  /** Reads a key (fails with KEY_NOT_FOUND for a missing or expired one). */
  async get(table: string, key: string, call?: CallOptions): Promise<Entry> {
    const { body } = await this.transport.json({ route: OPS.getEntry, params: { table, key } }, true, call);
    return decodeEntry(body.entry);
  }

  /** Writes a key; returns the new version. */
  async put(table: string, key: string, value: BytesLike, options: PutOptions = {}, call?: CallOptions): Promise<string> {
    const condition =
      options.mustNotExist === true
        ? { mustNotExist: true }
        : options.ifVersion !== undefined
          ? { versionEquals: options.ifVersion }
          : undefined;
    const json = defined({ value: base64(value), condition, ttlSeconds: options.ttlSeconds });
    const { body } = await this.transport.json({ route: OPS.putEntry, params: { table, key }, json }, false, call);
    return str(body.version);
  }

  /** Deletes a key, only at `ifVersion` when given; whether it existed. */
  async delete(table: string, key: string, ifVersion?: string, call?: CallOptions): Promise<boolean> {
    const query = { versionEquals: ifVersion };
    const { body } = await this.transport.json({ route: OPS.deleteEntry, params: { table, key }, query }, false, call);
    return bool(body.deleted);
  }

  /** One page of entries; pass `nextPageToken` back for the next (empty on the last page). */
  async listPage(
    table: string,
    options: ListOptions & { readonly pageSize?: number | undefined; readonly pageToken?: string | undefined } = {},
    call?: CallOptions,
  ): Promise<{ entries: Entry[]; nextPageToken: string }> {
    const query = {
      prefix: options.prefix,
      pageSize: options.pageSize,
      pageToken: options.pageToken,
      keysOnly: options.keysOnly,
    };
    const { body } = await this.transport.json({ route: OPS.listEntries, params: { table }, query }, true, call);
    return { entries: arr(body.entries).map(decodeEntry), nextPageToken: str(body.nextPageToken) };
  }

  /** Every entry with `prefix`, following pages. */
  async list(table: string, options: ListOptions = {}, call?: CallOptions): Promise<Entry[]> {
    const entries: Entry[] = [];
    let pageToken = "";
    do {
      const page = await this.listPage(table, { ...options, pageToken }, call);
      entries.push(...page.entries);
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
    return entries;
  }

  /** Reads many keys: the found entries in request order, and the missing keys. */
  async batchGet(table: string, keys: readonly string[], call?: CallOptions): Promise<{ entries: Entry[]; missing: string[] }> {
    const { body } = await this.transport.json({ route: OPS.batchGet, params: { table }, json: { keys } }, true, call);
    return { entries: arr(body.entries).map(decodeEntry), missing: strings(body.missing) };
  }
  /**
   * Adds `delta` (negative subtracts) to the counter under `key` atomically and resolves with its
   * new value; an absent or expired key counts from 0. Values are 64-bit signed integers, so the
   * value is a `bigint` (`Number(value)` when it is known to stay within 2^53); `delta` is a
   * safe-integer `number` or a `bigint`.
   *
   * A counter is stored as its decimal text, so `get` reads it as e.g. `"42"`. Fails with
   * NOT_A_COUNTER when the key holds anything else and COUNTER_OVERFLOW past the 64-bit range;
   * either way nothing is written. Repeating an increment that took effect would count it twice,
   * so only THROTTLED (the proxy wrote nothing) is retried; any other failure, retryable or not,
   * rejects as the proxy gave it.
   */
  async increment(
    table: string,
    key: string,
    delta: number | bigint = 1,
    options: IncrementOptions = {},
    call?: CallOptions,
  ): Promise<bigint> {
    return (await this.incrementVersioned(table, key, delta, options, call)).value;
  }

  /** {@link increment}, resolving with the counter's new value and its entry's version. */
  async incrementVersioned(
    table: string,
    key: string,
    delta: number | bigint = 1,
    options: IncrementOptions = {},
    call?: CallOptions,
  ): Promise<Incremented> {
    const json = defined({ key, delta: int64Text(delta), ttlSeconds: ttlField(options.ttlSeconds, "ttlSeconds") });
    const { body } = await this.transport.json(
      { route: OPS.increment, params: { table }, json },
      false,
      call,
      incrementRetryable,
    );
    return { value: counterValue(body.value, `${table}/${key}`), version: str(body.version) };
  }

  /**
   * Writes several keys of `table` all or none (the backend's `ATOMIC_BATCH`): every put and
   * delete applies, or none does. Resolves with one version per write, in order: the new version
   * of a put, `""` for a delete.
   *
   * A failed condition rejects with CONDITION_FAILED whose `field` names the write (`writes[1]`),
   * and nothing is written. An empty batch, a key named twice (`field` `writes[i].key`), or more
   * than `describe().limits.maxBatchWrites` writes reject with INVALID_ARGUMENT; values over
   * `maxBatchBytes` in all with VALUE_TOO_LARGE; a backend without `ATOMIC_BATCH` with
   * UNSUPPORTED. Retried as a put is (the Rust SDK's rule): a batch resent after a lost answer
   * may fail its own conditions.
   *
   * ```ts
   * await kv.writeBatch("carts", [
   *   { key: "u1/items", value: "[]", ifVersion: version },
   *   { key: "u1/coupon", delete: true },
   * ]);
   * ```
   */
  async writeBatch(table: string, writes: readonly Write[], call?: CallOptions): Promise<string[]> {
    const json = { writes: writes.map(batchWrite) };
    const { body } = await this.transport.json({ route: OPS.writeBatch, params: { table }, json }, false, call);
    return batchVersions(body.versions, writes, table);
  }
}
