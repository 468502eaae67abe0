/**
 * The proto3 JSON mapping the proxies speak, read defensively: a field at its default is
 * omitted (or null), bytes are base64, 64-bit integers are decimal strings.
 */

/** Bytes given to the SDK: raw bytes, or a string sent as its UTF-8 encoding. */
export type BytesLike = Uint8Array | string;

/** `value` as a Buffer (strings as UTF-8), sharing memory where it can. */
export function toBuffer(value: BytesLike): Buffer {
  if (typeof value === "string") {
    return Buffer.from(value, "utf8");
  }
  return Buffer.isBuffer(value) ? value : Buffer.from(value.buffer, value.byteOffset, value.byteLength);
}

/** A JSON object's members (an absent or non-object value reads as empty). */
export type Json = Readonly<Record<string, unknown>>;

export function obj(value: unknown): Json {
  return value !== null && typeof value === "object" && !Array.isArray(value) ? (value as Json) : {};
}

export function str(value: unknown): string {
  return typeof value === "string" ? value : "";
}

export function bool(value: unknown): boolean {
  return value === true;
}

/** A 32-bit number, or a 64-bit one sent as a decimal string (exact up to 2^53). */
export function num(value: unknown): number {
  if (typeof value === "number") {
    return value;
  }
  if (typeof value === "string" && value !== "") {
    const n = Number(value);
    return Number.isFinite(n) ? n : 0;
  }
  return 0;
}

export function arr(value: unknown): readonly unknown[] {
  return Array.isArray(value) ? value : [];
}

export function strings(value: unknown): string[] {
  return arr(value).map(str);
}

/** A string map (attributes, metadata, headers). */
export function stringMap(value: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(obj(value))) {
    out[k] = str(v);
  }
  return out;
}

/** Base64 (standard or URL-safe alphabet) to bytes. */
export function bytes(value: unknown): Buffer {
  return typeof value === "string" ? Buffer.from(value, "base64") : Buffer.alloc(0);
}

/** Bytes to standard base64. */
export function base64(value: BytesLike): string {
  return toBuffer(value).toString("base64");
}

/** Drops members whose value is undefined (so they are left out of a JSON body). */
export function defined<T extends Record<string, unknown>>(value: T): T {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    if (v !== undefined) {
      out[k] = v;
    }
  }
  return out as T;
}
