/** What every client shares: its transport, and the `openapi` and `describe` calls. */

import { preloadTracing } from "./trace.js";
import { Transport, tokenFromEnv, type CallOptions, type ClientOptions } from "./transport.js";
import type { Route } from "./operations.js";

/** The endpoint in `variable`, else `fallback`. */
export function endpointFromEnv(variable: string, fallback: string, env: NodeJS.ProcessEnv = process.env): string {
  const value = env[variable];
  return value === undefined || value === "" ? fallback : value;
}

/** `options` with the token from `$EXO_PROXY_TOKEN` unless it names one. */
export function withEnvToken(options: ClientOptions, env: NodeJS.ProcessEnv = process.env): ClientOptions {
  return options.token !== undefined ? options : { ...options, token: tokenFromEnv(env) };
}

/** A client of one proxy. Connects lazily (the first call connects), so making one never blocks. */
export abstract class ProxyClient {
  /** The transport: connections, retry policy, token. */
  protected readonly transport: Transport;

  protected constructor(endpoint: string, options: ClientOptions) {
    this.transport = new Transport(endpoint, options);
    preloadTracing();
  }

  /** The endpoint as given. */
  get endpoint(): string {
    return this.transport.endpoint.display;
  }

  /** Closes idle connections; calls in flight finish. The client stays usable. */
  close(): void {
    this.transport.close();
  }

  /** This proxy's OpenAPI document, with its backend's limits filled in. */
  protected async openapiDocument(route: Route, call?: CallOptions): Promise<Record<string, unknown>> {
    return (await this.transport.json({ route }, true, call)).body;
  }
}
