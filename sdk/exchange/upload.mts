/**
 * The exchange's uploader (TypeScript SDK): streams a large object to the eos proxy of
 * `$EXO_EOS_ENDPOINT` through `ObjectClient.put` from a generator, one 1 MiB chunk at a time
 * (the SDK's stream asks for the next one as the connection's backpressure allows), never
 * holding the object.
 *
 *     node upload.mjs BUCKET KEY MIB
 *
 * The content is deterministic and incompressible: the AES-128-CTR keystream of a fixed key and
 * counter (zeros encrypted), made as it is sent and hashed as it is made. Creates BUCKET if
 * missing, uploads MIB MiB under KEY with the size announced, and prints one JSON line:
 * `{bytes, sha256, seconds, mib_per_s, peak_rss_kib, start_rss_kib, etag}`. `peak_rss_kib` is the
 * process's peak resident set (`getrusage`'s ru_maxrss, KiB on Linux, as Python reads it), so
 * it covers everything the process ever held, Node's own baseline included.
 */

import { createCipheriv, createHash, type Hash } from "node:crypto";

import { ObjectClient } from "@exoflow/sdk";

const MIB = 1024 * 1024;

const [bucket, key, mibArg] = process.argv.slice(2);
if (bucket === undefined || key === undefined || mibArg === undefined || !/^[1-9][0-9]*$/.test(mibArg)) {
  console.error("usage: upload BUCKET KEY MIB (MIB a whole number of MiB, at least 1)");
  process.exit(2);
}
const size = Number(mibArg) * MIB;

/** `size` bytes of keystream, 1 MiB per chunk, each hashed before it is handed over. */
function* generated(hash: Hash): Generator<Uint8Array> {
  const cipher = createCipheriv("aes-128-ctr", Buffer.alloc(16, 0x36), Buffer.alloc(16, 0));
  const zeros = Buffer.alloc(MIB);
  for (let made = 0; made < size; made += MIB) {
    const chunk = cipher.update(zeros);
    hash.update(chunk);
    yield chunk;
  }
}

const objects = ObjectClient.fromEnv();
try {
  const startRss = process.resourceUsage().maxRSS;
  await objects.createBucket(bucket);
  const hash = createHash("sha256");
  const started = performance.now();
  const info = await objects.put(bucket, key, generated(hash), {
    contentLength: size,
    contentType: "application/octet-stream",
  });
  const seconds = (performance.now() - started) / 1000;
  if (info.size !== size) {
    throw new Error(`the proxy stored ${info.size} bytes of the ${size} sent`);
  }
  console.log(
    JSON.stringify({
      bytes: size,
      sha256: hash.digest("hex"),
      seconds: Number(seconds.toFixed(3)),
      mib_per_s: Number((size / MIB / seconds).toFixed(1)),
      peak_rss_kib: process.resourceUsage().maxRSS,
      start_rss_kib: startRss,
      etag: info.etag,
    }),
  );
} finally {
  objects.close();
}
