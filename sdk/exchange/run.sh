#!/usr/bin/env bash
# The cross-language exchange: the three SDKs talking to each other through one `exo up`.
#   1. messages: Python publishes a few hundred awkward messages (an empty body, every byte
#      value, invalid UTF-8, NUL bytes, bodies up to 200 KiB, unicode attribute values) to the
#      manifest's topic `order-events` (publish.py); a TypeScript app receives them by push (the
#      manifest's `mail` subscription POSTs to it; push_subscriber.mts) and the Rust SDK's
#      `drain` example pulls them from a queue subscribed for the run; compare.py checks that
#      each receiver got every message exactly once, byte-exact, with identical attributes;
#   2. a large object: Node uploads EXO_EXCHANGE_OBJECT_MIB MiB (default 256) streamed from a
#      generator (upload.mts), Python downloads it as a stream (download.py); the SHA-256 of
#      both sides must match, and each process's peak RSS must stay below MAX_RSS_MIB.
#
# Environment:
#   EXO_EQS_ENDPOINT, EXO_EOS_ENDPOINT  the proxies of an `exo up` started with
#       --manifest sdk/rust/examples/topics.yaml (required: this script starts no proxy);
#   EXO_EXAMPLE_LISTEN  where that manifest's push subscription sends (host:port; default
#       127.0.0.1:7480, the manifest's own app port): the push subscriber listens there;
#   EXO_EXCHANGE_OBJECT_MIB  the large object's size in MiB (default 256);
#   CARGO_TARGET_DIR  where `drain` was built (debug/examples/drain); default ./target, else
#       ~/.cache/exoflow/target (where .ci/run builds).
# What it uses, and does not make: the Python SDK in the venv sdk/python/ci.sh makes
# (.tools/sdk-python), the TypeScript SDK as sdk/typescript/ci.sh leaves it (dist/ and the dev
# dependencies in node_modules, whose tsc compiles the two TypeScript apps here), and the drain
# example (built by `cargo test`, or `cargo build -p exo-sdk --example drain`).
# Every process it starts is stopped when it ends, and what the run made on the proxies (the
# pull subscription and its queue, the object and its bucket) is removed, whatever the outcome.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
started_at=$SECONDS
# Peak resident set allowed to the uploading and the downloading process: half the default
# object, so a client that held the object (or half of it) fails. Node's own footprint is about
# 46 MiB, and the 1 MiB chunks it has sent are freed only at its next garbage collection, which
# V8 starts once about 64 MiB of such memory has piled up: a streaming upload peaks near 90 MiB
# whatever the size (92 MiB for 1 GiB). Python streams at a flat ~47 MiB.
MAX_RSS_MIB=128

fail() {
  echo "sdk/exchange/run.sh: $*" >&2
  exit 1
}

step() {
  echo
  echo "=== $* ($((SECONDS - started_at))s)"
}

# What the run needs, before anything starts.
[[ -n "${EXO_EQS_ENDPOINT:-}" && -n "${EXO_EOS_ENDPOINT:-}" ]] ||
  fail "set EXO_EQS_ENDPOINT and EXO_EOS_ENDPOINT to the proxies of an exo up started with --manifest sdk/rust/examples/topics.yaml"
listen="${EXO_EXAMPLE_LISTEN:-127.0.0.1:7480}"
object_mib="${EXO_EXCHANGE_OBJECT_MIB:-256}"
[[ "$object_mib" =~ ^[1-9][0-9]*$ ]] || fail "EXO_EXCHANGE_OBJECT_MIB is a whole number of MiB, at least 1 (not '$object_mib')"

python="$root/.tools/sdk-python/bin/python"
[[ -x "$python" ]] && "$python" -c 'import exoflow' 2> /dev/null ||
  fail "the Python SDK is not installed in .tools/sdk-python: run sdk/python/ci.sh first (it makes that venv)"
ts="$root/sdk/typescript"
[[ -f "$ts/dist/index.js" && -x "$ts/node_modules/.bin/tsc" && -d "$ts/node_modules/@types/node" ]] ||
  fail "the TypeScript SDK is not built (sdk/typescript/dist, with its dev dependencies in node_modules): run sdk/typescript/ci.sh first"
target="${CARGO_TARGET_DIR:-$root/target}"
[[ "$target" == /* ]] || target="$root/$target"
if [[ -z "${CARGO_TARGET_DIR:-}" && ! -x "$target/debug/examples/drain" && -x "$HOME/.cache/exoflow/target/debug/examples/drain" ]]; then
  target="$HOME/.cache/exoflow/target"
fi
drain="$target/debug/examples/drain"
[[ -x "$drain" ]] ||
  fail "the Rust pull subscriber $drain is missing: build it (cargo build -p exo-sdk --example drain; cargo test builds it too) or set CARGO_TARGET_DIR"

# A short name, unique to the run: the pull subscription, its queue, and the object's bucket.
run="$(date +%s)-$$"
queue="exchange-$run"
bucket="exchange-$run"
work="$(mktemp -d /tmp/exo-exchange.XXXXXX)"
pids=()
published=0
uploaded=0
cleanup() {
  local status=$? pid log
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2> /dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2> /dev/null || true
  done
  # What a failed run left on the proxies.
  if [[ $published == 1 ]]; then
    "$python" "$here/publish.py" finish --run "$run" --queue "$queue" --leftovers "$work/leftovers.jsonl" > /dev/null 2>&1 || true
  fi
  if [[ $uploaded == 1 ]]; then
    "$python" "$here/download.py" delete "$bucket" big > /dev/null 2>&1 || true
  fi
  if [[ $status -ne 0 ]]; then
    for log in "$work"/*.log; do
      [[ -s "$log" ]] || continue
      printf '\n--- %s (last lines)\n' "$(basename "$log")" >&2
      tail -n 20 "$log" >&2
    done
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT

ready() {
  local endpoint="$1" socket
  case "$endpoint" in
    unix:*)
      socket="${endpoint#unix:}"
      curl -fsS -o /dev/null --max-time 2 --unix-socket "${socket#//}" http://localhost/readyz
      ;;
    *) curl -fsS -o /dev/null --max-time 2 "$endpoint/readyz" ;;
  esac
}
for name in EXO_EQS_ENDPOINT EXO_EOS_ENDPOINT; do
  ready "${!name}" 2> /dev/null || fail "no ready proxy at $name=${!name}"
done

step "the TypeScript apps, compiled against the SDK's dist/"
# Node finds `@exoflow/sdk` from the compiled files through node_modules beside them; tsc
# through tsconfig.json's `paths`.
mkdir -p "$work/ts/node_modules/@exoflow"
ln -s "$ts" "$work/ts/node_modules/@exoflow/sdk"
"$ts/node_modules/.bin/tsc" -p "$here/tsconfig.json" --outDir "$work/ts/out"
echo "push_subscriber.mjs, upload.mjs"

step "messages: Python publishes, TypeScript is pushed to, Rust pulls"
count="$("$python" "$here/publish.py" count)"
node "$work/ts/out/push_subscriber.mjs" "$listen" "$work/pushed.jsonl" "$run" "$count" 45 > "$work/push-subscriber.log" 2>&1 &
push_pid=$!
pids+=("$push_pid")
for _ in $(seq 100); do
  grep -qx listening "$work/push-subscriber.log" && break
  kill -0 "$push_pid" 2> /dev/null || fail "the push subscriber did not start"
  sleep 0.1
done
grep -qx listening "$work/push-subscriber.log" || fail "the push subscriber did not listen on $listen within 10 s"
echo "push subscriber listening on $listen"
published=1
"$python" "$here/publish.py" publish --run "$run" --queue "$queue" --out "$work/expected.json"
# The receivers' failures (a timeout: messages missing) are reported after the comparison, which
# names what is missing.
problems=()
if ! "$drain" "$queue" "$count" 30 > "$work/pulled.jsonl" 2> "$work/drain.log"; then
  problems+=("the Rust pull subscriber failed: $(tail -n 1 "$work/drain.log")")
fi
echo "rust pull subscriber: $(wc -l < "$work/pulled.jsonl") messages"
if ! wait "$push_pid"; then
  problems+=("the push subscriber failed: $(tail -n 1 "$work/push-subscriber.log")")
fi
pids=()
tail -n 1 "$work/push-subscriber.log"
"$python" "$here/publish.py" finish --run "$run" --queue "$queue" --leftovers "$work/pulled.jsonl"
published=0
if ! "$python" "$here/compare.py" messages "$work/expected.json" \
  "typescript-push=$work/pushed.jsonl" "rust-pull=$work/pulled.jsonl"; then
  problems+=("the receivers did not get exactly what was published (above)")
fi
if [[ ${#problems[@]} -gt 0 ]]; then
  printf '%s\n' "${problems[@]}" >&2
  fail "the message exchange failed"
fi

step "a $object_mib MiB object: Node uploads it, Python reads it back"
uploaded=1
node "$work/ts/out/upload.mjs" "$bucket" big "$object_mib" > "$work/upload.json" 2> "$work/upload.log" ||
  fail "the Node upload failed"
"$python" "$here/download.py" "$bucket" big > "$work/download.json" 2> "$work/download.log" ||
  fail "the Python download failed"
uploaded=0
"$python" "$here/compare.py" object "$work/upload.json" "$work/download.json" "$MAX_RSS_MIB" ||
  fail "the object did not come back byte-exact in bounded memory"

echo
echo "sdk/exchange/run.sh: every check passed in $((SECONDS - started_at))s"
