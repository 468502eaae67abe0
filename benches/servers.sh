#!/usr/bin/env bash
# Proxy cost on the self-hosted backends, against the servers this machine runs (PostgreSQL,
# Redis, NATS JetStream, RabbitMQ on their standard loopback ports, as the tests use them): one
# proxy config per backend in a schema / namespace / vhost of the run's own (removed after), then
# exo-bench with the proxy and the direct backend both built from that config. Prints markdown
# for benches/README.md.
#
#   cargo build --release -p eqs -p ekv -p exo-bench && benches/servers.sh [postgres|redis|nats|rabbitmq]...
#
# EXO_TEST_POSTGRES_URL, EXO_TEST_REDIS_URL, EXO_TEST_NATS_URL, EXO_TEST_RABBITMQ_URL point
# elsewhere, as for scripts/test. RabbitMQ needs rabbitmqctl for the run's vhost.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck source=scripts/emulators.sh
source scripts/emulators.sh
bench="${CARGO_TARGET_DIR:-target}/release/exo-bench"
[[ -x "$bench" ]] || { echo "build first: cargo build --release -p eqs -p ekv -p exo-bench" >&2; exit 1; }
dir="reports/bench" && mkdir -p "$dir"
servers=("$@")
[[ ${#servers[@]} -gt 0 ]] || servers=(postgres redis nats rabbitmq)
run_id="exo_bench_$(date +%s)_$$"
cycles="${EXO_BENCH_CYCLES:-2000}"
queue() { "$bench" queue --config "$1" --cycles "$cycles" --concurrency 16; }
kv() { "$bench" kv --config "$1" --cycles "$cycles" --concurrency 16; }

for server in "${servers[@]}"; do
  case "$server" in
    postgres)
      url="${EXO_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
      for proxy in eqs ekv; do
        printf 'backend:\n  kind: postgres\n  url: %s\n  schema: %s\n' "$url" "$run_id" > "$dir/postgres-$proxy.yaml"
      done
      queue "$dir/postgres-eqs.yaml"
      kv "$dir/postgres-ekv.yaml"
      psql "$url" -qc "DROP SCHEMA IF EXISTS $run_id CASCADE" > /dev/null
      ;;
    redis)
      url="${EXO_TEST_REDIS_URL:-redis://127.0.0.1:6379/0}"
      printf 'backend:\n  kind: redis\n  url: %s\n  namespace: %s\n' "$url" "$run_id" > "$dir/redis-ekv.yaml"
      kv "$dir/redis-ekv.yaml"
      redis-cli -u "$url" --scan --pattern "$run_id:*" | xargs -r -n 500 redis-cli -u "$url" del > /dev/null
      ;;
    nats)
      url="${EXO_TEST_NATS_URL:-nats://127.0.0.1:4222}"
      printf 'backend:\n  kind: nats\n  url: %s\n  namespace: %s\n' "$url" "${run_id//_/-}" > "$dir/nats-eqs.yaml"
      queue "$dir/nats-eqs.yaml"
      ensure_interop_tools
      "$interop_venv/bin/python" -c '
import asyncio, sys, nats
async def drop():
    nc = await nats.connect(sys.argv[1]); js = nc.jetstream()
    names, page = [], await js.streams_info()
    while page:
        names += [s.config.name for s in page]
        page = await js.streams_info(offset=len(names))
    for name in names:
        if name.startswith(sys.argv[2] + "_"):
            await js.delete_stream(name)
    await nc.close()
asyncio.run(drop())' "$url" "${run_id//_/-}"
      ;;
    rabbitmq)
      base="${EXO_TEST_RABBITMQ_URL:-amqp://guest:guest@127.0.0.1:5672}"
      user="${base#amqp://}"; user="${user%%@*}"; user="${user%%:*}"
      rabbitmqctl -q add_vhost "$run_id" > /dev/null
      rabbitmqctl -q set_permissions -p "$run_id" "$user" '.*' '.*' '.*' > /dev/null
      printf 'backend:\n  kind: rabbitmq\n  url: %s/%s\n  namespace: bench\n' "$base" "$run_id" > "$dir/rabbitmq-eqs.yaml"
      queue "$dir/rabbitmq-eqs.yaml" || { rabbitmqctl -q delete_vhost "$run_id"; exit 1; }
      rabbitmqctl -q delete_vhost "$run_id" > /dev/null
      ;;
    *) echo "unknown server $server (postgres, redis, nats, rabbitmq)" >&2; exit 1 ;;
  esac
done
