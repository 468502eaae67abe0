/**
 * Retries with capped exponential back-off and full jitter, for retryable errors only (the rule
 * of the Rust SDK's `RetryPolicy`).
 */

import { ExoError } from "./errors.js";

/** How a client retries failed calls. */
export interface RetryPolicy {
  /** Attempts in all, the first included (1 = never retry). */
  readonly maxAttempts: number;
  /** Back-off ceiling before the first retry, in ms; doubles each time. */
  readonly initialBackoffMs: number;
  /** Longest back-off ceiling, in ms. */
  readonly maxBackoffMs: number;
}

/** 4 attempts, 50 ms doubling up to 2 s: the Rust SDK's default. */
export const DEFAULT_RETRY: RetryPolicy = Object.freeze({ maxAttempts: 4, initialBackoffMs: 50, maxBackoffMs: 2000 });

/** Never retry. */
export const NO_RETRY: RetryPolicy = Object.freeze({ ...DEFAULT_RETRY, maxAttempts: 1 });

/** The longest wait a proxy's retry hint can impose on one retry (a wrong hint cannot stall us). */
export const MAX_HINTED_WAIT_MS = 30_000;

/**
 * Transport failures after which the proxy may have applied the request: the connection broke
 * once the request was sent and before an answer came. Such a failure is retried only for
 * calls that change nothing (reads); see {@link runWithRetry}.
 */
const mayHaveApplied = new WeakSet<ExoError>();

/** Marks `err` as a failure after which the proxy may have applied the request. */
export function markMayHaveApplied(err: ExoError): ExoError {
  mayHaveApplied.add(err);
  return err;
}

/** Whether `err` is a failure after which the proxy may have applied the request. */
export function isMayHaveApplied(err: unknown): boolean {
  return err instanceof ExoError && mayHaveApplied.has(err);
}

/** What {@link runWithRetry} needs to know about one call. */
export interface RetryContext {
  /** The call changes nothing at the proxy (describe, list, get, head...). */
  readonly readOnly: boolean;
  /** Epoch ms after which no attempt starts and no back-off is waited (undefined: none). */
  readonly deadline?: number | undefined;
  /** Aborts the back-off wait too. */
  readonly signal?: AbortSignal | undefined;
  /**
   * Narrows which retryable errors are retried: a call that must not be repeated once it took
   * effect (an increment) retries only the failures that say nothing was written.
   */
  readonly retryIf?: ((err: ExoError) => boolean) | undefined;
  /** Replaces `Math.random` (tests). */
  readonly random?: () => number;
}

/** Sleeps `ms`, or rejects with the signal's reason when it aborts first. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted === true) {
      reject(signal.reason as Error);
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason as Error);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * Runs `call` until it succeeds, fails with an error that is not retryable, or attempts run
 * out. Retried: an {@link ExoError} whose `retryable` is true — the proxy's word, or a
 * connection that could not be made — except a connection lost after the request was sent,
 * which only read-only calls retry (the proxy may have applied it), and any error `retryIf`
 * turns down. The wait before a retry is
 * uniformly random in [0, ceiling] (full jitter), never shorter than the proxy's retry hint
 * (itself capped at 30 s); the ceiling doubles up to `maxBackoffMs`. No retry starts past the
 * call's deadline.
 */
export async function runWithRetry<T>(
  policy: RetryPolicy,
  context: RetryContext,
  call: (attempt: number) => Promise<T>,
): Promise<T> {
  const random = context.random ?? Math.random;
  let ceiling = policy.initialBackoffMs;
  for (let attempt = 1; ; attempt++) {
    try {
      return await call(attempt);
    } catch (err) {
      if (!(err instanceof ExoError) || !err.retryable || attempt >= policy.maxAttempts) {
        throw err;
      }
      if (isMayHaveApplied(err) && !context.readOnly) {
        throw err;
      }
      if (context.retryIf !== undefined && !context.retryIf(err)) {
        throw err;
      }
      const pause = Math.max(random() * ceiling, Math.min(err.retryAfterMs, MAX_HINTED_WAIT_MS));
      if (context.deadline !== undefined && Date.now() + pause >= context.deadline) {
        throw err;
      }
      await sleep(pause, context.signal);
      ceiling = Math.min(ceiling * 2, policy.maxBackoffMs);
    }
  }
}
