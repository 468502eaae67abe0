#!/usr/bin/env bash
# The TypeScript SDK's checks, against real proxies:
#   1. dev dependencies from package-lock.json (`npm ci`), `tsc` (package, then tests and
#      examples) and eslint;
#   2. the proxies: the three given by EXO_EQS_ENDPOINT, EXO_EOS_ENDPOINT and EXO_EKV_ENDPOINT
#      (an `exo up` with sdk/rust/examples/topics.yaml; with none of them set, this script runs
#      that `exo up` itself), plus two eqs proxies it starts: one with TLS, client certificates
#      and a bearer token (certificates made here with openssl), and one with push
#      subscriptions to the test's apps, a Unix socket and traces on;
#   3. the test suite (`node --test`), then the orders and topics examples;
#   4. the package as published: `npm pack`, installed into a fresh npm project, imported and
#      type-checked there, and called against the proxies.
# Binaries come from ${CARGO_TARGET_DIR:-target}/debug (built by cargo, which this script never
# runs). Every process it starts is stopped on exit, whatever happens.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-target}"
[[ "$target" == /* ]] || target="$root/$target"
bin="$target/debug"
cd "$here"

step() { printf '\n== %s (at %d s)\n' "$*" "$SECONDS"; }
die() { printf 'ci.sh: %s\n' "$*" >&2; exit 1; }

# A short path: Unix socket addresses hold at most 107 bytes.
work="$(mktemp -d /tmp/exo-ts.XXXXXX)"
pids=()
cleanup() {
  local status=$? pid
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [[ $status -ne 0 ]]; then
    for log in "$work"/*.log; do
      [[ -f "$log" ]] || continue
      printf '\n--- %s (last lines)\n' "$log" >&2
      tail -n 20 "$log" >&2
    done
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT

# free_ports N: N ports free on 127.0.0.1 now.
free_ports() {
  node -e '
    const net = require("node:net");
    const n = Number(process.argv[1]);
    const servers = Array.from({ length: n }, () => net.createServer());
    Promise.all(servers.map((s) => new Promise((ok) => s.listen(0, "127.0.0.1", () => ok(s.address().port)))))
      .then((ports) => { console.log(ports.join(" ")); servers.forEach((s) => s.close()); });
  ' "$1"
}

# wait_ready NAME PID CURL-ARGS...: polls /readyz (20 s at most) while the process lives.
wait_ready() {
  local name="$1" pid="$2"
  shift 2
  for _ in $(seq 200); do
    kill -0 "$pid" 2>/dev/null || die "$name exited before it was ready (log: $work/$name.log)"
    curl -fsS -o /dev/null --max-time 2 "$@" 2>/dev/null && return 0
    sleep 0.1
  done
  die "$name was not ready within 20 s"
}

# endpoints_ready: each of EXO_{EQS,EOS,EKV}_ENDPOINT answers /readyz (10 s at most each).
endpoints_ready() {
  local name endpoint socket ok args
  for name in EXO_EQS_ENDPOINT EXO_EOS_ENDPOINT EXO_EKV_ENDPOINT; do
    endpoint="${!name}"
    if [[ "$endpoint" == unix:* ]]; then
      socket="${endpoint#unix:}"
      socket="${socket#//}"
      args=(--unix-socket "$socket" http://localhost/readyz)
    else
      args=("$endpoint/readyz")
    fi
    ok=0
    for _ in $(seq 100); do
      curl -fsS -o /dev/null --max-time 2 "${args[@]}" 2>/dev/null && { ok=1; break; }
      sleep 0.1
    done
    [[ $ok -eq 1 ]] || die "no ready proxy at $name=$endpoint"
    echo "$name=$endpoint ready"
  done
}

need_binary() {
  [[ -x "$bin/$1" ]] || die "missing proxy binary $bin/$1: build it first (cargo build), or set CARGO_TARGET_DIR"
}

# Before anything is installed or built: every proxy the run needs must be there.
set_count=0
for name in EXO_EQS_ENDPOINT EXO_EOS_ENDPOINT EXO_EKV_ENDPOINT; do
  [[ -n "${!name:-}" ]] && set_count=$((set_count + 1))
done
case $set_count in
  0) need_binary exo ;;
  3) endpoints_ready ;;
  *) die "set all of EXO_EQS_ENDPOINT, EXO_EOS_ENDPOINT and EXO_EKV_ENDPOINT, or none (then this script runs exo up)" ;;
esac
need_binary eqs-proxy

step "dev dependencies (npm ci), tsc, eslint"
node --version
npm ci --no-audit --no-fund --loglevel=error
if grep -q '"resolved"' package-lock.json; then
  die "package-lock.json records download addresses; .npmrc sets omit-lockfile-registry-resolved"
fi
rm -rf dist build
node_modules/.bin/tsc -p tsconfig.json
node_modules/.bin/tsc -p tsconfig.test.json
node_modules/.bin/eslint .
echo "tsc (strict) and eslint: clean"

step "proxies"
if [[ $set_count -eq 0 ]]; then
  read -r eqs_port eos_port ekv_port app_port < <(free_ports 4)
  sed "s/port: 7480/port: $app_port/" "$root/sdk/rust/examples/topics.yaml" > "$work/topics.yaml"
  "$bin/exo" up --data-dir "$work/exo-data" --manifest "$work/topics.yaml" \
    --eqs "127.0.0.1:$eqs_port" --eos "127.0.0.1:$eos_port" --ekv "127.0.0.1:$ekv_port" > "$work/exo-up.log" 2>&1 &
  pids+=($!)
  export EXO_EQS_ENDPOINT="http://127.0.0.1:$eqs_port" EXO_EOS_ENDPOINT="http://127.0.0.1:$eos_port"
  export EXO_EKV_ENDPOINT="http://127.0.0.1:$ekv_port" EXO_EXAMPLE_LISTEN="127.0.0.1:$app_port"
  echo "started exo up (topics manifest; its push app on $EXO_EXAMPLE_LISTEN)"
fi
endpoints_ready

tls="$work/tls"
mkdir -p "$tls"
# ca NAME: a certificate authority; leaf NAME CA CN [SAN]: a certificate it signs.
ca() {
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=$1 test CA" \
    -keyout "$tls/$1-ca.key" -out "$tls/$1-ca.pem" 2>/dev/null
}
leaf() {
  local name="$1" issuer="$2" cn="$3" san="${4:-}"
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$cn" -keyout "$tls/$name.key" -out "$tls/$name.csr" 2>/dev/null
  if [[ -n "$san" ]]; then
    printf 'subjectAltName=%s\n' "$san" > "$tls/$name.ext"
  else
    printf 'extendedKeyUsage=clientAuth\n' > "$tls/$name.ext"
  fi
  openssl x509 -req -in "$tls/$name.csr" -CA "$tls/$issuer-ca.pem" -CAkey "$tls/$issuer-ca.key" -CAcreateserial \
    -days 2 -extfile "$tls/$name.ext" -out "$tls/$name.pem" 2>/dev/null
}
ca server
ca clients
ca stranger
leaf server server localhost "DNS:localhost"
leaf client clients app
leaf stranger stranger app
read -r tls_port side_port dead_port push_a push_b push_c < <(free_ports 6)
cat > "$work/tls.yaml" <<EOF
server:
  tls:
    cert-file: $tls/server.pem
    key-file: $tls/server.key
    client-ca-file: $tls/clients-ca.pem
  auth-token: env:EXO_TEST_TLS_TOKEN
backend:
  kind: memory
EOF
export EXO_TEST_TLS_TOKEN="tok-$RANDOM$RANDOM"
"$bin/eqs-proxy" --config "$work/tls.yaml" --listen "127.0.0.1:$tls_port" > "$work/eqs-tls.log" 2>&1 &
pids+=($!)
wait_ready eqs-tls "${pids[-1]}" --cacert "$tls/server-ca.pem" --cert "$tls/client.pem" --key "$tls/client.key" \
  "https://localhost:$tls_port/readyz"
export EXO_TEST_TLS_ENDPOINT="https://localhost:$tls_port" EXO_TEST_TLS_DIR="$tls"
echo "TLS + client certificates + token: $EXO_TEST_TLS_ENDPOINT"

push_subscription() {
  cat <<EOF
      - name: $1
        queue: $2
        create-queue: true
        push:
          url: http://127.0.0.1:$3/events
          timeout: 5s
EOF
}
{
  cat <<EOF
server:
  unix-socket: $work/eqs.sock
backend:
  kind: memory
topics:
  - name: pushed
    subscriptions:
EOF
  push_subscription to-node-http push-node-http "$push_a"
  push_subscription to-express-json push-express-json "$push_b"
  push_subscription to-express-raw push-express-raw "$push_c"
} > "$work/side.yaml"
# Traces on (spans go to a port nothing listens on, and are dropped), so the proxy continues
# the caller's trace and stamps sent messages with it: what test/trace.test.ts checks.
OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$dead_port" \
  "$bin/eqs-proxy" --config "$work/side.yaml" --listen "127.0.0.1:$side_port" > "$work/eqs-side.log" 2>&1 &
pids+=($!)
wait_ready eqs-side "${pids[-1]}" "http://127.0.0.1:$side_port/readyz"
export EXO_TEST_PUSH_ENDPOINT="http://127.0.0.1:$side_port" EXO_TEST_PUSH_SOCKET="$work/eqs.sock"
export EXO_TEST_PUSH_PORTS="$push_a,$push_b,$push_c"
echo "push, Unix socket and traces: $EXO_TEST_PUSH_ENDPOINT (apps on $EXO_TEST_PUSH_PORTS)"

step "tests (node --test)"
# Files run three at a time: most of their time is spent waiting (long polls, TTLs, redelivery).
node --test --test-concurrency=3 --test-reporter=spec --test-reporter-destination=stdout \
  --test-reporter=tap --test-reporter-destination="$work/tests.tap" build/test/*.test.js
passed="$(sed -n 's/^# pass //p' "$work/tests.tap")"
failed="$(sed -n 's/^# fail //p' "$work/tests.tap")"

step "examples"
node build/examples/orders.js
node build/examples/topics.js
# The orders example again, over the side proxy's Unix socket.
EXO_EQS_ENDPOINT="unix:$work/eqs.sock" node build/examples/orders.js | tail -n 1

step "the package as published (npm pack into a fresh project)"
# dist/ is built above; `prepack` (tsc) is for a pack made on its own.
tarball="$(npm pack --silent --ignore-scripts --pack-destination "$work")"
contents="$(tar -tzf "$work/$tarball")"
for want in package/package.json package/README.md package/dist/index.js package/dist/index.d.ts; do
  grep -qx "$want" <<< "$contents" || die "$tarball lacks $want"
done
if grep -qE '^package/(src|test|examples|build|node_modules)/' <<< "$contents"; then
  die "$tarball ships files that are not the package"
fi
app="$work/app"
mkdir -p "$app"
cat > "$app/package.json" <<'EOF'
{ "name": "exo-sdk-consumer", "version": "1.0.0", "private": true, "type": "module" }
EOF
(cd "$app" && npm install --no-audit --no-fund --loglevel=error --prefer-offline "$work/$tarball")
cat > "$app/consumer.ts" <<'EOF'
import { ExoError, KvClient, type Entry } from "@exoflow/sdk";

const kv: KvClient = KvClient.fromEnv();
const table = `consumer-${process.pid}`;
await kv.createTable(table);
await kv.put(table, "greeting", "installed from the tarball");
const entry: Entry = await kv.get(table, "greeting");
try {
  await kv.get(table, "absent");
} catch (err) {
  if (!(err instanceof ExoError) || err.reason !== "KEY_NOT_FOUND") throw err;
}
await kv.deleteTable(table);
kv.close();
console.log(`${entry.key}: ${entry.value.toString()}`);
EOF
# Type-checked against the shipped declarations (skipLibCheck off), with this checkout's @types/node.
cat > "$app/tsconfig.json" <<EOF
{
  "compilerOptions": {
    "strict": true, "target": "es2022", "module": "nodenext", "moduleResolution": "nodenext",
    "skipLibCheck": false, "typeRoots": ["$here/node_modules/@types"], "types": ["node"], "outDir": "out"
  },
  "files": ["consumer.ts"]
}
EOF
"$here/node_modules/.bin/tsc" -p "$app"
(cd "$app" && node out/consumer.js)
echo "$tarball: installed, type-checked and called from a fresh npm project"

step "TypeScript SDK: all checks passed"
echo "typescript: $passed passed, $failed failed"
