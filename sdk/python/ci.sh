#!/usr/bin/env bash
# The Python SDK's checks, as a fresh clone runs them:
#   1. a clean venv at .tools/sdk-python with the pinned tools (requirements-dev.txt, installed
#      by uv, pinned, which .tools/sdk-python-uv keeps: seconds instead of pip's half minute),
#      and the SDK installed from this folder with pip (`pip install ./sdk/python`, not editable);
#   2. a wheel and an sdist built with hatchling; ruff check, ruff format --check, mypy --strict
#      (pyproject.toml [tool.mypy]);
#   3. the test suite against the proxies of `exo up` (EXO_EQS_ENDPOINT, EXO_EOS_ENDPOINT,
#      EXO_EKV_ENDPOINT), against a TLS + mTLS + token eqs proxy started here with certificates
#      made here, and against an eqs proxy the push tests start pushing to apps in the test;
#   4. the orders and topics examples against `exo up`.
#
# Environment:
#   EXO_EQS_ENDPOINT, EXO_EOS_ENDPOINT, EXO_EKV_ENDPOINT  the proxies of an `exo up` started with
#       --manifest sdk/rust/examples/topics.yaml (all three, or none: then this script starts
#       `exo up` itself on free ports and stops it at the end);
#   EXO_EXAMPLE_LISTEN  where that manifest's push subscription sends (host:port; default
#       127.0.0.1:7480, the manifest's own port), for the topics example;
#   CARGO_TARGET_DIR  where the proxies were built (debug/exo, debug/eqs-proxy); default ./target,
#       else ~/.cache/exoflow/target (where .ci/run builds).
# Every process it starts is stopped when it ends, whatever the outcome.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$root/.tools/sdk-python"
uv_version="0.13.8"
uv_home="$root/.tools/sdk-python-uv"
started_at=$SECONDS

fail() {
  echo "sdk/python/ci.sh: $*" >&2
  exit 1
}

step() {
  echo
  echo "=== $* ($((SECONDS - started_at))s)"
}

# The proxies' binaries.
target="${CARGO_TARGET_DIR:-$root/target}"
if [[ -z "${CARGO_TARGET_DIR:-}" && ! -x "$target/debug/eqs-proxy" && -x "$HOME/.cache/exoflow/target/debug/eqs-proxy" ]]; then
  target="$HOME/.cache/exoflow/target"
fi
bin="$target/debug"
for binary in exo eqs-proxy; do
  [[ -x "$bin/$binary" ]] || fail "the proxy binary $bin/$binary is missing: build the workspace (cargo build) or set CARGO_TARGET_DIR"
done

work="$(mktemp -d /tmp/exo-pysdk.XXXXXX)"
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2> /dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2> /dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

free_ports() {
  python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])' "$1"
}

# wait_ready URL LOG [curl options...]: until the proxy's /readyz answers 200, or fail loudly.
wait_ready() {
  local url="$1" log="$2"
  shift 2
  for _ in $(seq 150); do
    curl -fsS "$@" "$url" > /dev/null 2>&1 && return 0
    sleep 0.1
  done
  cat "$log" >&2 || true
  fail "$url did not become ready"
}

step "clean venv with pinned tools, the SDK installed from $here"
if [[ "$("$uv_home/bin/uv" --version 2> /dev/null)" != "uv $uv_version"* ]]; then
  python3 -m venv --clear "$uv_home"
  "$uv_home/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$uv_version"
fi
# uv trusts the CA bundle pip is told to (a machine whose registry traffic passes a TLS proxy).
uv=("$uv_home/bin/uv")
[[ -n "${PIP_CERT:-}" && -z "${SSL_CERT_FILE:-}" ]] && uv=(env SSL_CERT_FILE="$PIP_CERT" "$uv_home/bin/uv")
"${uv[@]}" venv --quiet --clear --python "$(command -v python3)" "$venv"
"${uv[@]}" pip install --quiet --python "$venv/bin/python" -r "$here/requirements-dev.txt"
# The SDK as its README installs it, with pip; its build backend (hatchling, pinned above) is
# already in the venv, so no isolated build environment is made.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-build-isolation --no-deps "$here"
"$venv/bin/python" -c 'import exoflow, sys; print("exoflow", exoflow.__version__, "from", exoflow.__file__, "on Python", sys.version.split()[0])'

step "wheel and sdist built with the standard backend"
(cd "$here" && "$venv/bin/hatchling" build -d "$work/dist" > /dev/null)
"$venv/bin/python" - "$work/dist" << 'PY'
import pathlib, sys, tarfile, zipfile
dist = pathlib.Path(sys.argv[1])
[wheel] = dist.glob("exoflow-*-py3-none-any.whl")
[sdist] = dist.glob("exoflow-*.tar.gz")
names = zipfile.ZipFile(wheel).namelist()
assert "exoflow/py.typed" in names and not any(n.startswith("tests/") for n in names), names
assert any(n.endswith("/src/exoflow/push.py") for n in tarfile.open(sdist).getnames())
print(wheel.name, sdist.name)
PY

step "ruff check, ruff format --check, mypy --strict"
(
  cd "$here"
  "$venv/bin/ruff" check .
  "$venv/bin/ruff" format --check .
  "$venv/bin/mypy"
)

step "the proxies of exo up"
given=0
for name in EXO_EQS_ENDPOINT EXO_EOS_ENDPOINT EXO_EKV_ENDPOINT; do
  [[ -n "${!name:-}" ]] && given=$((given + 1))
done
if [[ $given == 0 ]]; then
  read -r eqs_port eos_port ekv_port app_port < <(free_ports 4)
  sed "s/port: 7480/port: $app_port/" "$root/sdk/rust/examples/topics.yaml" > "$work/topics.yaml"
  "$bin/exo" up --data-dir "$work/exo-data" --manifest "$work/topics.yaml" \
    --eqs "127.0.0.1:$eqs_port" --eos "127.0.0.1:$eos_port" --ekv "127.0.0.1:$ekv_port" \
    > "$work/exo-up.log" 2>&1 &
  pids+=($!)
  export EXO_EQS_ENDPOINT="http://127.0.0.1:$eqs_port"
  export EXO_EOS_ENDPOINT="http://127.0.0.1:$eos_port"
  export EXO_EKV_ENDPOINT="http://127.0.0.1:$ekv_port"
  export EXO_EXAMPLE_LISTEN="127.0.0.1:$app_port"
  echo "started exo up (log $work/exo-up.log)"
elif [[ $given != 3 ]]; then
  fail "set all of EXO_EQS_ENDPOINT, EXO_EOS_ENDPOINT, EXO_EKV_ENDPOINT (or none, to have exo up started here)"
fi
for name in EXO_EQS_ENDPOINT EXO_EOS_ENDPOINT EXO_EKV_ENDPOINT; do
  endpoint="${!name}"
  case "$endpoint" in
    unix:*) wait_ready "http://localhost/readyz" "$work/exo-up.log" --unix-socket "${endpoint#unix:}" ;;
    *) wait_ready "$endpoint/readyz" "$work/exo-up.log" ;;
  esac
  echo "$name=$endpoint ready"
done
export EXO_EXAMPLE_LISTEN="${EXO_EXAMPLE_LISTEN:-127.0.0.1:7480}"

step "an eqs proxy with TLS, client certificates and a token"
tls="$work/tls"
mkdir -p "$tls"
(
  cd "$tls"
  openssl_quiet() { openssl "$@" 2> /dev/null; }
  openssl_quiet ecparam -name prime256v1 -genkey -noout -out ca.key
  openssl_quiet req -x509 -new -key ca.key -sha256 -days 2 -subj "/CN=exoflow-test-ca" -out ca.pem
  openssl_quiet ecparam -name prime256v1 -genkey -noout -out server.key
  openssl_quiet req -new -key server.key -subj "/CN=exo-proxy.test" -out server.csr
  printf 'subjectAltName=DNS:localhost,DNS:exo-proxy.test\nextendedKeyUsage=serverAuth\n' > server.ext
  openssl_quiet x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -sha256 \
    -extfile server.ext -out server.pem
  openssl_quiet ecparam -name prime256v1 -genkey -noout -out client.key
  openssl_quiet req -new -key client.key -subj "/CN=py-sdk-test" -out client.csr
  printf 'extendedKeyUsage=clientAuth\n' > client.ext
  openssl_quiet x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -sha256 \
    -extfile client.ext -out client.pem
  python3 -c 'import secrets; print(secrets.token_urlsafe(24))' > token
)
read -r tls_port < <(free_ports 1)
cat > "$tls/eqs.yaml" << EOF
server:
  listen: 127.0.0.1:$tls_port
  auth-token: file:$tls/token
  tls:
    cert-file: $tls/server.pem
    key-file: $tls/server.key
    client-ca-file: $tls/ca.pem
backend:
  kind: memory
EOF
"$bin/eqs-proxy" --config "$tls/eqs.yaml" > "$work/eqs-tls.log" 2>&1 &
pids+=($!)
wait_ready "https://localhost:$tls_port/readyz" "$work/eqs-tls.log" \
  --cacert "$tls/ca.pem" --cert "$tls/client.pem" --key "$tls/client.key"
echo "TLS eqs proxy ready on https://localhost:$tls_port"

step "the test suite"
(
  cd "$here"
  EXO_TEST_TLS_ENDPOINT="https://localhost:$tls_port" \
    EXO_TEST_TLS_CA_FILE="$tls/ca.pem" \
    EXO_TEST_TLS_CLIENT_CERT="$tls/client.pem" \
    EXO_TEST_TLS_CLIENT_KEY="$tls/client.key" \
    EXO_TEST_TLS_TOKEN="$(cat "$tls/token")" \
    EXO_EQS_PROXY_BIN="$bin/eqs-proxy" \
    "$venv/bin/python" -m pytest -p no:cacheprovider --durations=5 tests
)

step "the examples against exo up"
for example in orders topics; do
  if ! (cd "$work" && "$venv/bin/python" "$here/examples/$example.py") > "$work/example-$example.log" 2>&1; then
    cat "$work/example-$example.log" >&2
    fail "example $example failed"
  fi
  tail -n 3 "$work/example-$example.log"
done

echo
echo "sdk/python/ci.sh: every check passed in $((SECONDS - started_at))s"
