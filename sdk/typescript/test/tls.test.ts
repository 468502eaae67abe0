/**
 * TLS, client certificates and the bearer token against a real eqs proxy started by ci.sh with
 * `server.tls` (its certificate from a CA made for the run, client certificates required from
 * another) and `server.auth-token`: `$EXO_TEST_TLS_ENDPOINT`, the files in `$EXO_TEST_TLS_DIR`,
 * the token in `$EXO_TEST_TLS_TOKEN`.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { before, test } from "node:test";

import { NO_RETRY, ObjectClient, QueueClient, type ClientOptions, type TlsOptions } from "@exoflow/sdk";
import { rejectsWith, required, unique } from "./helpers.js";

let endpoint: string;
let dir: string;
let token: string;

before(() => {
  endpoint = required("EXO_TEST_TLS_ENDPOINT");
  dir = required("EXO_TEST_TLS_DIR");
  token = required("EXO_TEST_TLS_TOKEN");
});

function trusted(): TlsOptions {
  return { caFile: join(dir, "server-ca.pem"), clientCertFile: join(dir, "client.pem"), clientKeyFile: join(dir, "client.key") };
}

function client(url: string, options: ClientOptions): QueueClient {
  return new QueueClient(url, { retry: NO_RETRY, ...options });
}

test("from the EXO_* variables: endpoint, CA, client certificate and token", async () => {
  const saved = { ...process.env };
  try {
    process.env.EXO_EQS_ENDPOINT = endpoint;
    process.env.EXO_CA_FILE = join(dir, "server-ca.pem");
    process.env.EXO_CLIENT_CERT_FILE = join(dir, "client.pem");
    process.env.EXO_CLIENT_KEY_FILE = join(dir, "client.key");
    process.env.EXO_PROXY_TOKEN = token;
    const queues = QueueClient.fromEnv();
    const name = unique("ts-tls");
    await queues.createQueue(name);
    await queues.send(name, "over mTLS");
    const [message] = await queues.receive(name, { waitSeconds: 1 });
    assert.equal(message?.body.toString(), "over mTLS");
    await queues.deleteQueue(name);
    queues.close();
  } finally {
    process.env = saved;
  }
});

test("without the token: UNAUTHENTICATED, not retried", async () => {
  const queues = client(endpoint, { tls: trusted() });
  const err = await rejectsWith(queues.listQueues(), "UNAUTHENTICATED");
  assert.equal(err.status, 401);
  assert.equal(err.retryable, false);
  const wrong = client(endpoint, { tls: trusted(), token: "not-the-token" });
  await rejectsWith(wrong.listQueues(), "UNAUTHENTICATED");
  queues.close();
  wrong.close();
});

test("a server certificate from an unknown CA is refused, naming the cause", async () => {
  const queues = client(endpoint, { tls: { ...trusted(), caFile: join(dir, "stranger-ca.pem") }, token });
  const err = await rejectsWith(queues.listQueues(), "BACKEND_UNAVAILABLE");
  assert.equal(err.retryable, false, "a certificate problem does not fix itself: not retried");
  assert.match(err.message, /UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED|unable to verify/i);
  queues.close();
});

test("the name checked is the endpoint's host, or serverName when given", async () => {
  const byAddress = endpoint.replace("localhost", "127.0.0.1");
  assert.notEqual(byAddress, endpoint);
  const queues = client(byAddress, { tls: trusted(), token });
  const err = await rejectsWith(queues.listQueues(), "BACKEND_UNAVAILABLE");
  assert.match(err.message, /ERR_TLS_CERT_ALTNAME_INVALID|altnames/i);
  const named = client(byAddress, { tls: { ...trusted(), serverName: "localhost" }, token });
  assert.ok(Array.isArray(await named.listQueues()));
  queues.close();
  named.close();
});

test("mTLS: no client certificate, or one from another CA, gets nothing", async () => {
  const { clientCertFile: _cert, clientKeyFile: _key, ...serverOnly } = trusted();
  for (const tls of [serverOnly, { ...trusted(), clientCertFile: join(dir, "stranger.pem"), clientKeyFile: join(dir, "stranger.key") }]) {
    const queues = client(endpoint, { tls, token });
    await assert.rejects(queues.listQueues(), (err: unknown) => {
      assert.ok(err instanceof Error);
      assert.equal((err as { reason?: string }).reason, "BACKEND_UNAVAILABLE", String(err));
      assert.equal((err as { retryable?: boolean }).retryable, false, String(err));
      return true;
    });
    queues.close();
  }
});

test("a client certificate without its key is a client-side error", () => {
  assert.throws(
    () => new ObjectClient(endpoint, { tls: { caFile: join(dir, "server-ca.pem"), clientCertFile: join(dir, "client.pem") } }),
    /both its file and its key file/,
  );
  assert.throws(() => new ObjectClient(endpoint, { tls: { caFile: join(dir, "no-such-file.pem") } }), /cannot read the CA file/);
});
