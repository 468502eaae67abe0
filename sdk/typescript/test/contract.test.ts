/**
 * The SDK against the contract's OpenAPI documents: every operation (operationId) of every proxy
 * has a route in the SDK's table with the same method and path, and a client method that makes
 * it; the table has nothing the contract lacks. A new route in the contract fails this test
 * until the SDK has a method for it.
 */

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import {
  EKV_OPERATIONS,
  EOS_OPERATIONS,
  EQS_OPERATIONS,
  KvClient,
  ObjectClient,
  QueueClient,
  TopicClient,
  type Route,
} from "@exoflow/sdk";

/** The repository's exo-proto directory (tests run from build/test/). */
const protoDir = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "..", "exo-proto");

interface Operation {
  operationId: string;
  method: string;
  path: string;
}

function operations(file: string): Operation[] {
  const document = JSON.parse(readFileSync(join(protoDir, file), "utf8")) as {
    paths: Record<string, Record<string, { operationId?: string }>>;
  };
  const found: Operation[] = [];
  for (const [path, item] of Object.entries(document.paths)) {
    for (const [method, operation] of Object.entries(item)) {
      if (["get", "post", "put", "delete", "head", "patch"].includes(method)) {
        assert.ok(operation.operationId, `${method} ${path} in ${file} has no operationId`);
        found.push({ operationId: operation.operationId, method: method.toUpperCase(), path });
      }
    }
  }
  assert.ok(found.length > 5, `${file} lists too few operations to be the contract`);
  return found;
}

type Clients = readonly (typeof QueueClient | typeof TopicClient | typeof ObjectClient | typeof KvClient)[];

function check(file: string, table: Readonly<Record<string, Route>>, clients: Clients): void {
  const contract = operations(file);
  for (const op of contract) {
    const route = table[op.operationId];
    assert.ok(route, `${file}: operation ${op.operationId} (${op.method} ${op.path}) has no route in the SDK`);
    assert.equal(route.method, op.method, `${file}: ${op.operationId} method`);
    assert.equal(route.path, op.path, `${file}: ${op.operationId} path`);
    const owners = clients.filter((client) => op.operationId in client.operations);
    assert.ok(owners.length > 0, `${file}: operation ${op.operationId} has no method in ${clients.map((c) => c.name).join(" or ")}`);
    for (const client of owners) {
      const method = (client.operations as Record<string, string>)[op.operationId] ?? "";
      assert.equal(
        typeof (client.prototype as unknown as Record<string, unknown>)[method],
        "function",
        `${client.name}.${method} (for ${op.operationId}) is not a method`,
      );
    }
  }
  const known = new Set(contract.map((op) => op.operationId));
  for (const id of Object.keys(table)) {
    assert.ok(known.has(id), `${file}: the SDK routes ${id}, which the contract does not have`);
  }
  for (const client of clients) {
    for (const id of Object.keys(client.operations)) {
      assert.ok(known.has(id), `${client.name} claims ${id}, which ${file} does not have`);
    }
  }
}

test("every eqs operation has a route and a QueueClient or TopicClient method", () => {
  check("openapi-eqs.json", EQS_OPERATIONS, [QueueClient, TopicClient]);
});

test("every eos operation has a route and an ObjectClient method", () => {
  check("openapi-eos.json", EOS_OPERATIONS, [ObjectClient]);
});

test("every ekv operation has a route and a KvClient method", () => {
  check("openapi-ekv.json", EKV_OPERATIONS, [KvClient]);
});

test("the per-proxy documents together are the whole contract (openapi.json)", () => {
  const all = new Set(operations("openapi.json").map((op) => `${op.method} ${op.path}`));
  const perProxy = new Set(
    [...operations("openapi-eqs.json"), ...operations("openapi-eos.json"), ...operations("openapi-ekv.json")].map(
      (op) => `${op.method} ${op.path}`,
    ),
  );
  for (const route of all) {
    assert.ok(perProxy.has(route), `${route} is in openapi.json but in no proxy's document the SDK checks`);
  }
});
