#!/usr/bin/env bash
# Proxy cost on the cloud backends, against the emulators: starts moto, Azurite and
# fake-gcs-server (as the tests do), writes one proxy config per backend, and runs exo-bench for
# queue, object and kv with the proxy and the direct backend both built from that config (GCP:
# objects only). Prints markdown for benches/README.md.
#
#   cargo build --release -p eqs -p eos -p ekv -p exo-bench && benches/cloud.sh [aws|azure|gcp]...
#
# The emulators are the backends here, so absolute numbers say more about moto (Python) and
# Azurite (Node) and fake-gcs-server (Go) than about AWS, Azure or GCP; the via-proxy/direct
# ratio and the proxy's CPU per operation are what carry over.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck source=scripts/emulators.sh
source scripts/emulators.sh
trap stop_emulators EXIT
bench="${CARGO_TARGET_DIR:-target}/release/exo-bench"
[[ -x "$bench" ]] || { echo "build first: cargo build --release -p eqs -p eos -p ekv -p exo-bench" >&2; exit 1; }
dir="reports/bench" && mkdir -p "$dir"
clouds=("$@")
[[ ${#clouds[@]} -gt 0 ]] || clouds=(aws azure)

run() {
  local queue="$1" object="$2" kv="$3"
  "$bench" queue --config "$queue" --cycles "${EXO_BENCH_CYCLES:-300}" --concurrency 8
  "$bench" object --config "$object" --sizes-kib 1,1024,16384 --budget-bytes $((64 * 1024 * 1024))
  "$bench" kv --config "$kv" --cycles "${EXO_BENCH_CYCLES:-300}" --concurrency 8
}

for cloud in "${clouds[@]}"; do
  case "$cloud" in
    aws)
      start_moto > /dev/null
      export AWS_ENDPOINT_URL="$EXO_MOTO_URL"
      for pair in eqs:sqs eos:s3 ekv:dynamodb; do
        printf 'backend:\n  kind: %s\n  region: us-east-1\n  endpoint: %s\n' "${pair#*:}" "$EXO_MOTO_URL" \
          > "$dir/aws-${pair%%:*}.yaml"
      done
      run "$dir/aws-eqs.yaml" "$dir/aws-eos.yaml" "$dir/aws-ekv.yaml"
      ;;
    azure)
      start_azurite > /dev/null
      for triple in "eqs:azure-queue:$EXO_AZURITE_QUEUE_URL" "eos:azure-blob:$EXO_AZURITE_BLOB_URL" \
        "ekv:azure-table:$EXO_AZURITE_TABLE_URL"; do
        proxy="${triple%%:*}" rest="${triple#*:}"
        printf 'backend:\n  kind: %s\n  account: devstoreaccount1\n  endpoint: %s\n  credentials:\n    account-key: env:EXO_TEST_AZURE_KEY\n' \
          "${rest%%:*}" "${rest#*:}" > "$dir/azure-$proxy.yaml"
      done
      run "$dir/azure-eqs.yaml" "$dir/azure-eos.yaml" "$dir/azure-ekv.yaml"
      ;;
    gcp)
      start_fake_gcs > /dev/null
      printf 'backend:\n  kind: gcs\n  project: exo-bench\n  endpoint: %s\n  credentials:\n    anonymous: true\n' \
        "$EXO_FAKE_GCS_URL" > "$dir/gcp-eos.yaml"
      "$bench" object --config "$dir/gcp-eos.yaml" --sizes-kib 1,1024,16384 --budget-bytes $((64 * 1024 * 1024))
      ;;
    *) echo "unknown cloud $cloud (aws, azure, gcp)" >&2; exit 1 ;;
  esac
done
