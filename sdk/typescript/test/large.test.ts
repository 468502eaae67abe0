/**
 * A 256 MiB object through ObjectClient against the eos proxy of `$EXO_EOS_ENDPOINT`: uploaded
 * from a generated stream and read back as a stream, byte-exact (SHA-256 of both sides), while
 * the process's resident memory stays far below the object's size.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { Readable } from "node:stream";
import { after, before, test } from "node:test";

import { ObjectClient } from "@exoflow/sdk";
import { required, unique } from "./helpers.js";

const MIB = 1024 * 1024;
const SIZE = 256 * MIB;
/** Resident memory may grow this much at most: a quarter of the object. */
const RSS_BUDGET = 64 * MIB;

let objects: ObjectClient;
let bucket: string;

before(async () => {
  required("EXO_EOS_ENDPOINT");
  objects = ObjectClient.fromEnv();
  bucket = unique("ts-large");
  await objects.createBucket(bucket);
});

after(async () => {
  await objects.delete(bucket, "big").catch(() => undefined);
  await objects.deleteBucket(bucket);
  objects.close();
});

/** 256 MiB of pseudo-random bytes, 1 MiB at a time, hashed as they are made. */
function generated(hash: ReturnType<typeof createHash>): Readable {
  let made = 0;
  let state = 0x9e3779b9;
  return new Readable({
    read() {
      if (made >= SIZE) {
        this.push(null);
        return;
      }
      const chunk = Buffer.allocUnsafe(MIB);
      for (let i = 0; i < MIB; i += 4) {
        // xorshift32: cheap, and no two chunks alike.
        state ^= state << 13;
        state ^= state >>> 17;
        state ^= state << 5;
        chunk.writeUInt32LE(state >>> 0, i);
      }
      made += MIB;
      hash.update(chunk);
      this.push(chunk);
    },
  });
}

/** Samples the resident set size every 20 ms while `work` runs; returns the highest seen. */
async function peakRss(work: () => Promise<void>): Promise<number> {
  let peak = process.memoryUsage.rss();
  const timer = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage.rss());
  }, 20);
  try {
    await work();
  } finally {
    clearInterval(timer);
  }
  return Math.max(peak, process.memoryUsage.rss());
}

test("a 256 MiB object streams up and down with bounded memory, byte-exact", { timeout: 300_000 }, async () => {
  global.gc?.();
  const baseline = process.memoryUsage.rss();
  const sent = createHash("sha256");
  const uploadPeak = await peakRss(async () => {
    const info = await objects.put(bucket, "big", generated(sent), { contentLength: SIZE, contentType: "application/octet-stream" });
    assert.equal(info.size, SIZE);
  });
  const received = createHash("sha256");
  let bytes = 0;
  const downloadPeak = await peakRss(async () => {
    const opened = await objects.get(bucket, "big");
    assert.equal(opened.length, SIZE);
    for await (const chunk of opened.body) {
      bytes += (chunk as Buffer).length;
      received.update(chunk as Buffer);
    }
  });
  assert.equal(bytes, SIZE);
  assert.equal(received.digest("hex"), sent.digest("hex"), "the object came back byte-exact");
  const growth = Math.max(uploadPeak, downloadPeak) - baseline;
  console.log(
    `# rss: baseline ${(baseline / MIB).toFixed(0)} MiB, upload peak +${((uploadPeak - baseline) / MIB).toFixed(1)} MiB, download peak +${((downloadPeak - baseline) / MIB).toFixed(1)} MiB`,
  );
  assert.ok(growth < RSS_BUDGET, `RSS grew ${(growth / MIB).toFixed(1)} MiB for a 256 MiB object (budget ${RSS_BUDGET / MIB} MiB)`);
});
