/** {@link KvClient}: the app's handle on an ekv proxy. */

import { ProxyClient, endpointFromEnv, withEnvToken } from "./client.js";
import { arr, base64, bool, bytes, defined, num, obj, str, strings, type BytesLike } from "./codec.js";
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

/** Options of a listing. */
export interface ListOptions {
  /** Only keys with this prefix. */
  readonly prefix?: string | undefined;
  /** Keys and versions only, no values. */
  readonly keysOnly?: boolean | undefined;
}

/** The backend behind an ekv proxy. */
export interface KvBackendDescription {
  readonly backend: string;
  readonly capabilities: readonly string[];
  readonly limits: {
    readonly maxKeyBytes: number;
    readonly maxValueBytes: number;
    readonly maxBatchKeys: number;
    readonly maxPageSize: number;
    readonly maxTtlSeconds: number;
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
}
