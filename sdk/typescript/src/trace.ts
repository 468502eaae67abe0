/**
 * W3C trace context on every call, when the app uses OpenTelemetry: `@opentelemetry/api` (an
 * optional peer dependency) is loaded once, on the first call, and its global propagator writes
 * the active context's headers (`traceparent`, `tracestate` with the W3C propagator the
 * OpenTelemetry Node SDK registers). Without the package, or without a registered propagator,
 * nothing is sent.
 */

/** The part of `@opentelemetry/api` used here. */
interface OtelApi {
  context: { active(): unknown };
  propagation: {
    inject(context: unknown, carrier: Record<string, string>, setter?: unknown): void;
  };
}

let api: Promise<OtelApi | undefined> | undefined;

function load(): Promise<OtelApi | undefined> {
  if (api === undefined) {
    // A variable specifier: the package is optional, so neither tsc nor a bundler may insist on it.
    const name = "@opentelemetry/api";
    api = import(name).then(
      (module: Partial<OtelApi> & { default?: Partial<OtelApi> }) => {
        const found = module.propagation !== undefined ? module : module.default;
        return found?.propagation !== undefined && found.context !== undefined ? (found as OtelApi) : undefined;
      },
      () => undefined,
    );
  }
  return api;
}

/** Starts loading `@opentelemetry/api` if present, so the first call does not wait for it. */
export function preloadTracing(): void {
  void load();
}

/** The active trace context's headers (empty without OpenTelemetry or a propagator). */
export async function traceHeaders(): Promise<Record<string, string>> {
  const otel = await load();
  const carrier: Record<string, string> = {};
  if (otel !== undefined) {
    try {
      otel.propagation.inject(otel.context.active(), carrier);
    } catch {
      // A faulty propagator must not fail the call.
    }
  }
  return carrier;
}
