/**
 * The transport under every client: HTTP/1.1 with keep-alive from `node:http` / `node:https`
 * (no runtime dependency), to `http://`, `https://` (TLS, optional client certificate) or
 * `unix:/path` endpoints; bearer token, caller's deadline (`x-exo-timeout-ms`), trace context,
 * AbortSignal, retries (see {@link runWithRetry}), and the proxy's errors decoded.
 */

import { readFileSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import { Readable, Transform, type TransformCallback } from "node:stream";
import tls from "node:tls";

import { ExoError, errorFromResponse } from "./errors.js";
import { fillPath, type Route } from "./operations.js";
import { DEFAULT_RETRY, markMayHaveApplied, runWithRetry, type RetryPolicy } from "./retry.js";
import { traceHeaders } from "./trace.js";

/** Environment variable with the bearer token for proxies that require one (`server.auth-token`). */
export const TOKEN_ENV = "EXO_PROXY_TOKEN";
/** Extra certificate authorities (PEM) for `https://` endpoints. */
export const CA_FILE_ENV = "EXO_CA_FILE";
/** The client certificate (PEM) for proxies that ask for one (mTLS). */
export const CLIENT_CERT_FILE_ENV = "EXO_CLIENT_CERT_FILE";
/** Its private key (PEM). */
export const CLIENT_KEY_FILE_ENV = "EXO_CLIENT_KEY_FILE";

/** The header carrying the caller's deadline, in milliseconds (read by every proxy). */
export const TIMEOUT_HEADER = "x-exo-timeout-ms";

const USER_AGENT = "exoflow-sdk-typescript/0.1.0";

/**
 * TLS for `https://` endpoints: Node's bundled roots plus `caFile`, and a client certificate when
 * the proxy asks for one. The server's certificate is checked against the endpoint's host, or
 * `serverName` when given (an endpoint given by the address a name resolved to).
 */
export interface TlsOptions {
  /** Extra certificate authorities (PEM bundle), e.g. a private CA that signed the proxy's. */
  readonly caFile?: string | undefined;
  /** Client certificate chain (PEM), with `clientKeyFile`. */
  readonly clientCertFile?: string | undefined;
  /** The client certificate's key (PEM). */
  readonly clientKeyFile?: string | undefined;
  /** The name the server's certificate must carry (and the SNI sent). */
  readonly serverName?: string | undefined;
}

/** `$EXO_CA_FILE`, `$EXO_CLIENT_CERT_FILE` and `$EXO_CLIENT_KEY_FILE` (each optional). */
export function tlsFromEnv(env: NodeJS.ProcessEnv = process.env): TlsOptions {
  const path = (name: string): string | undefined => {
    const value = env[name];
    return value === undefined || value === "" ? undefined : value;
  };
  return {
    caFile: path(CA_FILE_ENV),
    clientCertFile: path(CLIENT_CERT_FILE_ENV),
    clientKeyFile: path(CLIENT_KEY_FILE_ENV),
  };
}

/** `$EXO_PROXY_TOKEN` if set and not empty. */
export function tokenFromEnv(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const token = env[TOKEN_ENV];
  return token === undefined || token === "" ? undefined : token;
}

/** How a client is made. */
export interface ClientOptions {
  /** TLS settings for an `https://` endpoint; read from the `EXO_*` variables when absent. */
  readonly tls?: TlsOptions | undefined;
  /** Sent as `authorization: Bearer <token>` with every call (`fromEnv` reads `$EXO_PROXY_TOKEN`). */
  readonly token?: string | undefined;
  /** How failed calls are retried (default {@link DEFAULT_RETRY}). */
  readonly retry?: RetryPolicy | undefined;
  /** Deadline of every call, in ms, unless the call gives its own (default: none). */
  readonly timeoutMs?: number | undefined;
  /** Most connections to the proxy at once (default 64). */
  readonly maxSockets?: number | undefined;
}

/** Per-call settings. */
export interface CallOptions {
  /**
   * The call's deadline, in ms from now, retries included: sent to the proxy (which then starts
   * no backend call once it passed, and shortens a long poll to fit), and the call fails with
   * TIMEOUT when it passes.
   */
  readonly timeoutMs?: number | undefined;
  /** Cancels the call (and any back-off wait); the call rejects with the signal's reason. */
  readonly signal?: AbortSignal | undefined;
  /** Replaces the client's retry policy for this call. */
  readonly retry?: RetryPolicy | undefined;
}

/** Where a proxy listens. */
export interface Endpoint {
  readonly protocol: "http:" | "https:";
  readonly hostname: string;
  readonly port: number;
  /** The Unix socket of a `unix:` endpoint. */
  readonly socketPath?: string | undefined;
  /** The endpoint as given. */
  readonly display: string;
}

/**
 * Parses `http://host:port`, `https://host:port`, or `unix:/path/to/proxy.sock` (also gRPC's
 * spelling `unix:///path`, so one value serves clients in every language).
 */
export function parseEndpoint(url: string): Endpoint {
  if (url.startsWith("unix:")) {
    const rest = url.slice("unix:".length);
    const path = rest.startsWith("//") ? rest.slice(2) : rest;
    if (!path.startsWith("/")) {
      throw ExoError.client(
        "INVALID_ARGUMENT",
        `invalid endpoint ${JSON.stringify(url)}: a unix: endpoint needs an absolute path, e.g. unix:/run/exo/eqs.sock`,
        false,
      );
    }
    return { protocol: "http:", hostname: "localhost", port: 80, socketPath: path, display: url };
  }
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw ExoError.client("INVALID_ARGUMENT", `invalid endpoint ${JSON.stringify(url)}`, false);
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    throw ExoError.client(
      "INVALID_ARGUMENT",
      `invalid endpoint ${JSON.stringify(url)}: use http://, https:// or unix:`,
      false,
    );
  }
  const port = parsed.port === "" ? (parsed.protocol === "https:" ? 443 : 80) : Number(parsed.port);
  return {
    protocol: parsed.protocol,
    hostname: parsed.hostname.replace(/^\[(.*)\]$/, "$1"),
    port,
    display: url,
  };
}

function readPem(what: string, path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw ExoError.client("INVALID_ARGUMENT", `cannot read the ${what} ${path}: ${(err as Error).message}`, false, err);
  }
}

/** The connection options for TLS settings (files read now). */
function tlsAgentOptions(settings: TlsOptions): https.AgentOptions {
  const options: https.AgentOptions = {};
  if (settings.caFile !== undefined) {
    // Added to the bundled roots, not instead of them (as the Rust SDK does with webpki roots).
    options.ca = [...tls.rootCertificates, readPem("CA file", settings.caFile).toString("utf8")];
  }
  const { clientCertFile: cert, clientKeyFile: key } = settings;
  if (cert !== undefined && key !== undefined) {
    options.cert = readPem("client certificate", cert);
    options.key = readPem("client key", key);
  } else if (cert !== undefined || key !== undefined) {
    throw ExoError.client("INVALID_ARGUMENT", "a client certificate needs both its file and its key file", false);
  }
  const name = settings.serverName;
  if (name !== undefined) {
    options.servername = name;
    options.checkServerIdentity = (_host, certificate) => tls.checkServerIdentity(name, certificate);
  }
  return options;
}

/** An error's message (or the value itself, for something thrown that is not an Error). */
function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Error codes of a TLS handshake that failed on a certificate: retrying cannot help. */
const CERTIFICATE_CODES = new Set([
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "CERT_HAS_EXPIRED",
  "CERT_NOT_YET_VALID",
  "CERT_REVOKED",
  "CERT_UNTRUSTED",
  "CERT_REJECTED",
  "CERT_SIGNATURE_FAILURE",
  "HOSTNAME_MISMATCH",
  "ERR_TLS_CERT_ALTNAME_INVALID",
]);

/** Where a failed attempt had got to. */
interface AttemptState {
  /** The whole request had been handed to the OS. */
  finished: boolean;
  /** The response's head had arrived. */
  responded: boolean;
  /** The request went out on a kept-alive connection. */
  reusedSocket: boolean;
}

/**
 * A transport failure as an {@link ExoError}: certificate problems (not retryable), failures
 * before the whole request left (retryable: the proxy cannot have acted on it), and failures
 * after (retryable, but marked: the proxy may have applied the request).
 */
function transportError(err: unknown, endpoint: Endpoint, state: AttemptState): ExoError {
  if (err instanceof ExoError) {
    return err;
  }
  const code = (err as { code?: unknown }).code;
  const text = typeof code === "string" ? `${code}: ${(err as Error).message}` : String(err);
  if (typeof code === "string" && (CERTIFICATE_CODES.has(code) || code.startsWith("ERR_SSL_") || code.startsWith("ERR_TLS_"))) {
    return ExoError.client("BACKEND_UNAVAILABLE", `TLS with ${endpoint.display} failed: ${text}`, false, err);
  }
  // A kept-alive connection the proxy closed as idle just as this request went out: a closed
  // idle connection had no request in progress, so the proxy never saw this one.
  const staleConnection = state.reusedSocket && !state.responded && code === "ECONNRESET";
  if (!state.finished || staleConnection) {
    return ExoError.client("BACKEND_UNAVAILABLE", `cannot reach the proxy at ${endpoint.display}: ${text}`, true, err);
  }
  return markMayHaveApplied(
    ExoError.client(
      "BACKEND_UNAVAILABLE",
      `connection to ${endpoint.display} lost ${state.responded ? "during the answer" : "after the request was sent"} (the proxy may have applied it): ${text}`,
      true,
      err,
    ),
  );
}

/** A request body: bytes, or a stream of bytes (uploaded as it is read). */
export type RequestBody = Buffer | Readable;

/** One HTTP exchange to make. */
export interface RequestSpec {
  readonly route: Route;
  readonly params?: Readonly<Record<string, string>> | undefined;
  readonly query?: Readonly<Record<string, string | number | boolean | undefined>> | undefined;
  readonly headers?: Readonly<Record<string, string>> | undefined;
  readonly body?: RequestBody | undefined;
  /** An absolute URL to call instead of the endpoint (a presigned URL); no token is sent. */
  readonly url?: URL | undefined;
  /**
   * Send `expect: 100-continue` and hold the body until the server asks for it (uploads): a
   * server that refuses the request up front (no bucket, a failed condition) answers before
   * any byte of the body is sent, instead of closing a connection being written to — which
   * would turn its answer into a broken pipe.
   */
  readonly expectContinue?: boolean | undefined;
}

/** How long an upload waits for `100 Continue` before sending its body anyway (RFC 9110 §10.1.1). */
const CONTINUE_WAIT_MS = 1000;

/** An answer whose head has arrived; its body streams in `body`. */
export interface Answer {
  readonly status: number;
  readonly statusText: string;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: http.IncomingMessage;
  /** Whether the request went out on a kept-alive connection. */
  readonly reusedSocket: boolean;
}

/** Reads a whole stream (events rather than an async iterator: fewer promises per chunk). */
export function readAll(stream: Readable): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    stream.on("data", (chunk: Buffer) => {
      chunks.push(chunk);
    });
    stream.once("end", () => {
      resolve(chunks.length === 1 && chunks[0] !== undefined ? chunks[0] : Buffer.concat(chunks));
    });
    stream.once("error", reject);
    stream.once("close", () => {
      if (!stream.readableEnded) {
        reject(stream.errored ?? new Error("the stream closed before its end"));
      }
    });
  });
}

function header(headers: http.IncomingHttpHeaders, name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value[0] : value;
}

/** The failed answer `answer` as an error (its body read). */
export async function answerError(answer: Answer): Promise<ExoError> {
  let body: Buffer;
  try {
    body = await readAll(answer.body);
  } catch {
    body = Buffer.alloc(0);
  }
  return errorFromResponse(answer.status, body, header(answer.headers, "retry-after"), answer.statusText);
}

/** The client side of one proxy: connections, settings, and the calls built on them. */
export class Transport {
  readonly endpoint: Endpoint;
  readonly retry: RetryPolicy;
  private readonly token: string | undefined;
  private readonly timeoutMs: number | undefined;
  private readonly agent: http.Agent;
  private readonly tlsOptions: https.AgentOptions;

  constructor(url: string, options: ClientOptions = {}) {
    this.endpoint = parseEndpoint(url);
    this.retry = options.retry ?? DEFAULT_RETRY;
    this.timeoutMs = options.timeoutMs;
    if (options.token !== undefined && !/^[\x21-\x7e]+$/.test(options.token)) {
      throw ExoError.client("INVALID_ARGUMENT", "the token must be printable ASCII", false);
    }
    this.token = options.token;
    this.tlsOptions = this.endpoint.protocol === "https:" ? tlsAgentOptions(options.tls ?? tlsFromEnv()) : {};
    const pool = {
      keepAlive: true,
      maxSockets: options.maxSockets ?? 64,
      // Idle pooled connections are closed well before the proxy's idle timeout (300 s).
      timeout: 30_000,
      scheduling: "lifo" as const,
    };
    this.agent =
      this.endpoint.protocol === "https:" ? new https.Agent({ ...pool, ...this.tlsOptions }) : new http.Agent(pool);
  }

  /** Closes idle connections (in-flight calls finish). */
  close(): void {
    this.agent.destroy();
  }

  /** The epoch-ms deadline of a call, if it has one. */
  deadline(call: CallOptions | undefined): number | undefined {
    const timeout = call?.timeoutMs ?? this.timeoutMs;
    return timeout === undefined ? undefined : Date.now() + Math.max(0, timeout);
  }

  /**
   * One attempt: sends `spec` and resolves when the answer's head arrives. The deadline and the
   * signal keep watching while the body streams; they let go once it has been read or dropped.
   */
  async attempt(spec: RequestSpec, deadline: number | undefined, signal: AbortSignal | undefined): Promise<Answer> {
    signal?.throwIfAborted();
    const remaining = deadline === undefined ? undefined : deadline - Date.now();
    if (remaining !== undefined && remaining <= 0) {
      throw ExoError.client("TIMEOUT", "the call's deadline passed", true);
    }
    const headers: Record<string, string> = {
      "user-agent": USER_AGENT,
      ...(await traceHeaders()),
      ...spec.headers,
    };
    if (remaining !== undefined) {
      headers[TIMEOUT_HEADER] = String(Math.ceil(remaining));
    }
    if (this.token !== undefined && spec.url === undefined) {
      headers.authorization = `Bearer ${this.token}`;
    }
    const body = spec.body;
    if (Buffer.isBuffer(body)) {
      headers["content-length"] = String(body.length);
    }
    if (spec.expectContinue === true && body !== undefined) {
      headers.expect = "100-continue";
    }
    const request = spec.url !== undefined ? this.absolute(spec, headers) : this.relative(spec, headers);
    const state: AttemptState = { finished: false, responded: false, reusedSocket: false };
    request.once("finish", () => {
      state.finished = true;
    });

    return new Promise<Answer>((resolve, reject) => {
      let response: http.IncomingMessage | undefined;
      let sourceFailure: unknown;
      let settled = false;
      const fail = (err: Error): void => {
        release();
        if (!settled) {
          settled = true;
          reject(err);
        }
      };
      const stop = (err: unknown): void => {
        if (response !== undefined) {
          response.destroy(err as Error);
        } else {
          request.destroy(err as Error);
        }
      };
      const onAbort = (): void => {
        stop(signal?.reason);
      };
      const timer =
        remaining === undefined
          ? undefined
          : setTimeout(() => {
              const err = ExoError.client("TIMEOUT", `no answer within the call's deadline (${Math.ceil(remaining)} ms)`, true);
              stop(state.finished ? markMayHaveApplied(err) : err);
            }, remaining);
      signal?.addEventListener("abort", onAbort, { once: true });
      const release = (): void => {
        if (timer !== undefined) {
          clearTimeout(timer);
        }
        signal?.removeEventListener("abort", onAbort);
      };

      request.on("error", (err) => {
        if (signal?.aborted === true && err === signal.reason) {
          fail(err);
        } else if (sourceFailure !== undefined && !state.responded) {
          fail(
            ExoError.client(
              "INVALID_ARGUMENT",
              `upload cancelled, nothing stored: reading the source failed: ${describe(sourceFailure)}`,
              false,
              sourceFailure,
            ),
          );
        } else if (!state.responded) {
          fail(transportError(err, this.endpoint, state));
        }
        // After the answer's head, failures surface on the response stream.
      });
      request.on("response", (res) => {
        state.responded = true;
        state.reusedSocket = request.reusedSocket;
        response = res;
        if (body instanceof Readable && (res.statusCode ?? 0) >= 300) {
          // Refused before the upload ended: stop reading the source.
          body.unpipe(request);
          body.destroy();
        }
        res.once("close", release);
        res.once("end", release);
        settled = true;
        resolve({
          status: res.statusCode ?? 0,
          statusText: res.statusMessage ?? "",
          headers: res.headers,
          body: res,
          reusedSocket: request.reusedSocket,
        });
      });
      request.on("socket", () => {
        state.reusedSocket = request.reusedSocket;
      });

      let bodySent = false;
      let continueTimer: NodeJS.Timeout | undefined;
      const sendBody = (): void => {
        if (bodySent) {
          return;
        }
        bodySent = true;
        clearTimeout(continueTimer);
        if (body === undefined) {
          request.end();
        } else if (Buffer.isBuffer(body)) {
          request.end(body);
        } else if (sourceFailure === undefined) {
          // `pipe`, not `pipeline`: pipeline destroys a finished ClientRequest, which cuts the
          // connection before the answer arrives.
          body.pipe(request);
        }
      };
      if (body instanceof Readable) {
        // Watched from the start: a source may fail while the body waits for 100 Continue.
        body.once("error", (err) => {
          sourceFailure = err;
          request.destroy(err);
        });
        request.once("close", () => {
          if (!body.readableEnded) {
            body.destroy();
          }
        });
      }
      if (spec.expectContinue === true && body !== undefined) {
        request.once("continue", sendBody);
        request.once("response", (res) => {
          if (!bodySent) {
            // Answered before the body was asked for: it is never sent, and the connection,
            // left with a request it cannot finish, is closed once the answer has been read.
            bodySent = true;
            clearTimeout(continueTimer);
            res.once("end", () => request.destroy());
            res.once("close", () => request.destroy());
          }
        });
        continueTimer = setTimeout(sendBody, CONTINUE_WAIT_MS);
        request.flushHeaders();
      } else {
        sendBody();
      }
    });
  }

  private relative(spec: RequestSpec, headers: Record<string, string>): http.ClientRequest {
    let path = fillPath(spec.route.path, spec.params ?? {});
    const query = new URLSearchParams();
    for (const [name, value] of Object.entries(spec.query ?? {})) {
      if (value !== undefined && value !== "" && value !== 0 && value !== false) {
        query.set(name, String(value));
      }
    }
    const search = query.toString();
    if (search !== "") {
      path += `?${search}`;
    }
    const endpoint = this.endpoint;
    const options: http.RequestOptions = {
      method: spec.route.method,
      path,
      headers,
      agent: this.agent,
      hostname: endpoint.hostname,
      port: endpoint.port,
      setHost: true,
    };
    if (endpoint.socketPath !== undefined) {
      options.socketPath = endpoint.socketPath;
    }
    return endpoint.protocol === "https:" ? https.request(options) : http.request(options);
  }

  private absolute(spec: RequestSpec, headers: Record<string, string>): http.ClientRequest {
    const url = spec.url as URL;
    const sameProxy =
      url.protocol === this.endpoint.protocol &&
      url.hostname.replace(/^\[(.*)\]$/, "$1") === this.endpoint.hostname &&
      (url.port === "" ? (url.protocol === "https:" ? 443 : 80) : Number(url.port)) === this.endpoint.port;
    const options: https.RequestOptions = {
      method: spec.route.method,
      headers,
      // The proxy's own presigned URLs reuse its connections (and TLS settings).
      agent: sameProxy ? this.agent : undefined,
    };
    if (url.protocol === "https:") {
      return https.request(url, sameProxy ? options : { ...options, ...this.tlsOptions });
    }
    if (url.protocol === "http:") {
      return http.request(url, options);
    }
    throw ExoError.client("INVALID_ARGUMENT", `cannot call ${url.protocol} URLs`, false);
  }

  /**
   * A unary JSON call, retried per the policy (narrowed by `retryIf` when given); resolves with
   * the decoded JSON body (`{}` for an empty one) and the status.
   */
  async json(
    spec: RequestSpec & { readonly json?: unknown },
    readOnly: boolean,
    call: CallOptions | undefined,
    retryIf?: (err: ExoError) => boolean,
  ): Promise<{ status: number; body: Record<string, unknown> }> {
    const deadline = this.deadline(call);
    const signal = call?.signal;
    const payload = spec.json === undefined ? undefined : Buffer.from(JSON.stringify(spec.json), "utf8");
    const headers = { accept: "application/json", ...(payload !== undefined ? { "content-type": "application/json" } : {}), ...spec.headers };
    return runWithRetry(call?.retry ?? this.retry, { readOnly, deadline, signal, retryIf }, async () => {
      const answer = await this.attempt({ ...spec, headers, body: payload }, deadline, signal);
      if (answer.status < 200 || answer.status >= 300) {
        throw await answerError(answer);
      }
      let bytes: Buffer;
      try {
        bytes = await readAll(answer.body);
      } catch (err) {
        if (signal?.aborted === true && err === signal.reason) {
          throw err;
        }
        throw transportError(err, this.endpoint, { finished: true, responded: true, reusedSocket: answer.reusedSocket });
      }
      if (bytes.length === 0) {
        return { status: answer.status, body: {} };
      }
      try {
        return { status: answer.status, body: JSON.parse(bytes.toString("utf8")) as Record<string, unknown> };
      } catch (err) {
        throw ExoError.client("INTERNAL", `the proxy answered ${answer.status} with a body that is not JSON`, false, err);
      }
    });
  }
}

/**
 * The body of a download, checked: it fails (with a retryable BACKEND_UNAVAILABLE) when it ends
 * before `expected` bytes arrived, so a cut connection never looks like a shorter object.
 */
export class CountedBody extends Transform {
  private received = 0;

  constructor(private readonly expected: number | undefined) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.received += chunk.length;
    callback(null, chunk);
  }

  override _flush(callback: TransformCallback): void {
    if (this.expected !== undefined && this.received !== this.expected) {
      callback(
        ExoError.client("BACKEND_UNAVAILABLE", `download ended after ${this.received} of ${this.expected} bytes`, true),
      );
      return;
    }
    callback();
  }
}
