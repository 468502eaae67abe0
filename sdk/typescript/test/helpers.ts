/** What the tests share: the proxies' endpoints (required), unique names, polling. */

import { randomBytes } from "node:crypto";
import assert from "node:assert/strict";

import { ExoError, type Reason } from "@exoflow/sdk";

/** An environment variable the suite needs; a missing one fails the test that needs it, loudly. */
export function required(name: string): string {
  const value = process.env[name];
  if (value === undefined || value === "") {
    throw new Error(`${name} is not set: run the suite through sdk/typescript/ci.sh, which starts the proxies`);
  }
  return value;
}

/** A portable resource name no other run uses. */
export function unique(prefix: string): string {
  return `${prefix}-${randomBytes(4).toString("hex")}`;
}

/** Polls `check` every 50 ms until it returns a value other than undefined, or fails after `withinMs`. */
export async function eventually<T>(what: string, withinMs: number, check: () => Promise<T | undefined> | T | undefined): Promise<T> {
  const started = Date.now();
  for (;;) {
    const value = await check();
    if (value !== undefined) {
      return value;
    }
    if (Date.now() - started > withinMs) {
      throw new Error(`${what} did not happen within ${withinMs} ms`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Asserts that `promise` rejects with an {@link ExoError} of `reason`; returns the error. */
export async function rejectsWith(promise: Promise<unknown>, reason: Reason): Promise<ExoError> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof ExoError, `expected an ExoError, got ${String(err)}`);
    assert.equal(err.reason, reason, `expected ${reason}, got ${err.toString()}`);
    return err;
  }
  assert.fail(`expected a ${reason} error, but the call succeeded`);
}
