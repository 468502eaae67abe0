/**
 * The SDK's error: the proxy's error vocabulary (`exo.common.v1.ErrorReason`), decoded from the
 * RFC 9457 problem+json body every proxy answers a failed HTTP call with.
 */

/** Every stable reason a proxy may give (`exo-proto/proto/exo/common/v1/error.proto`). */
export const REASONS = [
  "ERROR_REASON_UNSPECIFIED",
  "INVALID_ARGUMENT",
  "INVALID_NAME",
  "INVALID_ATTRIBUTE",
  "INVALID_RECEIPT",
  "MALFORMED_REQUEST",
  "INVALID_FILTER",
  "QUEUE_NOT_FOUND",
  "BUCKET_NOT_FOUND",
  "OBJECT_NOT_FOUND",
  "KEY_NOT_FOUND",
  "TABLE_NOT_FOUND",
  "ROUTE_NOT_FOUND",
  "TOPIC_NOT_FOUND",
  "SUBSCRIPTION_NOT_FOUND",
  "QUEUE_ALREADY_EXISTS",
  "BUCKET_ALREADY_EXISTS",
  "NOT_EMPTY",
  "SUBSCRIPTION_ALREADY_EXISTS",
  "CONDITION_FAILED",
  "RECEIPT_STALE",
  "NOT_MODIFIED",
  "RANGE_NOT_SATISFIABLE",
  "NOT_A_COUNTER",
  "COUNTER_OVERFLOW",
  "MESSAGE_TOO_LARGE",
  "VALUE_TOO_LARGE",
  "REQUEST_TOO_LARGE",
  "THROTTLED",
  "STORAGE_FULL",
  "TOO_MANY_SUBSCRIPTIONS",
  "UNSUPPORTED",
  "BACKEND_UNAVAILABLE",
  "TIMEOUT",
  "SHUTTING_DOWN",
  "UNAUTHENTICATED",
  "PERMISSION_DENIED",
  "INTERNAL",
] as const;

/** Why a call failed; branch on this, never on the message. */
export type Reason = (typeof REASONS)[number];

const KNOWN = new Set<string>(REASONS);

/** A reason as sent by a proxy; one this SDK does not know (a newer proxy) reads as INTERNAL. */
export function toReason(text: unknown): Reason {
  return typeof text === "string" && KNOWN.has(text) && text !== "ERROR_REASON_UNSPECIFIED"
    ? (text as Reason)
    : "INTERNAL";
}

/** The fields of an {@link ExoError}. */
export interface ExoErrorFields {
  reason: Reason;
  message: string;
  retryable: boolean;
  backend?: string;
  field?: string;
  resource?: string;
  status?: number;
  retryAfterMs?: number;
  cause?: unknown;
}

/** A failed call, in the same vocabulary whatever the backend. */
export class ExoError extends Error {
  /** Why; branch on this, never on the message. */
  readonly reason: Reason;
  /** The backend that answered, empty if the proxy itself (or this client) rejected the call. */
  readonly backend: string;
  /** Whether the same call may succeed later. */
  readonly retryable: boolean;
  /** The request field at fault, if any. */
  readonly field: string;
  /** The queue, bucket, table or key concerned, if any. */
  readonly resource: string;
  /** The HTTP status of the answer; 0 when no answer came (a transport failure). */
  readonly status: number;
  /**
   * How long the proxy asked the caller to wait before trying again (an open circuit breaker,
   * shed load); the retry policy waits at least this long. 0: no hint.
   */
  readonly retryAfterMs: number;

  constructor(fields: ExoErrorFields) {
    super(fields.message, fields.cause === undefined ? undefined : { cause: fields.cause });
    this.name = "ExoError";
    this.reason = fields.reason;
    this.backend = fields.backend ?? "";
    this.retryable = fields.retryable;
    this.field = fields.field ?? "";
    this.resource = fields.resource ?? "";
    this.status = fields.status ?? 0;
    this.retryAfterMs = fields.retryAfterMs ?? 0;
  }

  /** Whether this is a not-found error of any kind (queue, topic, bucket, object, table, key...). */
  isNotFound(): boolean {
    return this.status === 404 || this.reason.endsWith("_NOT_FOUND");
  }

  override toString(): string {
    const backend = this.backend === "" ? "" : ` (backend ${this.backend})`;
    return `${this.name}: ${this.reason}: ${this.message}${backend}`;
  }

  /** An error made on the client side (bad argument, bad endpoint, transport failure). */
  static client(reason: Reason, message: string, retryable: boolean, cause?: unknown): ExoError {
    return new ExoError({ reason, message, retryable, cause });
  }
}

/** What a status means when the answer carries no problem document (not from a proxy handler). */
function reasonForStatus(status: number): [Reason, boolean] {
  switch (status) {
    case 400:
      return ["MALFORMED_REQUEST", false];
    case 401:
      return ["UNAUTHENTICATED", false];
    case 403:
      return ["PERMISSION_DENIED", false];
    case 404:
      return ["ROUTE_NOT_FOUND", false];
    case 304:
      return ["NOT_MODIFIED", false];
    case 412:
      return ["CONDITION_FAILED", false];
    case 413:
      return ["REQUEST_TOO_LARGE", false];
    case 416:
      return ["RANGE_NOT_SATISFIABLE", false];
    case 429:
      return ["THROTTLED", true];
    case 501:
      return ["UNSUPPORTED", false];
    case 502:
    case 503:
      return ["BACKEND_UNAVAILABLE", true];
    case 504:
      return ["TIMEOUT", true];
    case 507:
      return ["STORAGE_FULL", false];
    default:
      return ["INTERNAL", false];
  }
}

function text(value: unknown): string {
  return typeof value === "string" ? value : "";
}

/** `Retry-After` in whole seconds (RFC 9110), as milliseconds; 0 when absent or a date. */
function retryAfterHeader(value: string | undefined): number {
  if (value === undefined || !/^\s*\d+\s*$/.test(value)) {
    return 0;
  }
  return Number(value) * 1000;
}

/**
 * The error of a failed HTTP answer: the problem document's fields when the body is one,
 * otherwise a reason derived from the status alone.
 */
export function errorFromResponse(
  status: number,
  body: Uint8Array,
  retryAfter: string | undefined,
  statusText: string,
): ExoError {
  let problem: Record<string, unknown> | undefined;
  if (body.length > 0) {
    try {
      const parsed: unknown = JSON.parse(Buffer.from(body).toString("utf8"));
      if (parsed !== null && typeof parsed === "object" && typeof (parsed as Record<string, unknown>).reason === "string") {
        problem = parsed as Record<string, unknown>;
      }
    } catch {
      problem = undefined;
    }
  }
  if (problem !== undefined) {
    const hint = typeof problem.retryAfterMs === "number" ? problem.retryAfterMs : 0;
    return new ExoError({
      reason: toReason(problem.reason),
      message: text(problem.detail) || text(problem.title) || `HTTP ${status}`,
      retryable: problem.retryable === true,
      backend: text(problem.backend),
      field: text(problem.field),
      resource: text(problem.resource),
      status,
      retryAfterMs: hint > 0 ? hint : retryAfterHeader(retryAfter),
    });
  }
  const [reason, retryable] = reasonForStatus(status);
  const snippet = Buffer.from(body.subarray(0, 200)).toString("utf8").trim();
  const message = `HTTP ${status}${statusText ? ` ${statusText}` : ""}${snippet ? `: ${snippet}` : ""}`;
  return new ExoError({ reason, message, retryable, status, retryAfterMs: retryAfterHeader(retryAfter) });
}
