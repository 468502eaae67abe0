#!/usr/bin/env bash
# Validates rendered deployment files with real third-party validators (installed by
# scripts/tools.sh into .tools/): yamllint for all YAML, kubernetes-validate --strict and checkov
# for k8s/, cfn-lint and checkov for cloudformation/, exo's structural check and checkov for arm/, the Compose v2 binary for compose/,
# systemd-analyze verify for systemd/. Skipped checkov checks carry their reason in the files.
# Usage: deploy/validate.sh RENDER_DIR   (as written by `exo deploy render --out RENDER_DIR`)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$(cd "$1" && pwd)"
venv="$root/.tools/venv"
fail() { echo "deploy validation failed: $*" >&2; exit 1; }

echo "yamllint"
"$venv/bin/yamllint" --strict -c "$root/deploy/yamllint.yaml" "$out"

if [[ -d "$out/k8s" ]]; then
  echo "kubernetes-validate --strict (Kubernetes 1.30)"
  # An unknown kind or apiVersion only WARNs and exits 0: treat any WARN as a failure. The custom
  # resources (KEDA, PodMonitor) are unknown to it: they get exo's structural check below.
  builtin=()
  for f in "$out"/k8s/*.yaml; do
    grep -qE '^apiVersion: (keda\.sh|monitoring\.coreos\.com)/' "$f" || builtin+=("$f")
  done
  report="$("$venv/bin/kubernetes-validate" --strict -k 1.30 "${builtin[@]}" 2>&1)" || { echo "$report"; fail "kubernetes-validate"; }
  echo "$report"
  ! grep -q WARN <<<"$report" || fail "kubernetes-validate warned"
  echo "custom resources (exo deploy check-crds)"
  exo="${EXO_BIN:-${CARGO_TARGET_DIR:-$root/target}/debug/exo}"
  [[ -x "$exo" ]] || fail "exo binary not found at $exo (set EXO_BIN)"
  "$exo" deploy check-crds "$out/k8s" || fail "custom resources"
fi

checkov_scan() { # framework path...
  local framework="$1"; shift
  local report
  report="$(CKV_SKIP_PACKAGE_UPDATE_CHECK=true BC_SKIP_MAPPING=TRUE "$venv/bin/checkov" --skip-download --quiet --compact \
    --framework "$framework" "$@" 2>&1)" || { echo "$report"; fail "checkov ($framework)"; }
  echo "$report" | grep -E "Passed checks" || true
  # checkov skips files it does not recognise: insist that it scanned something.
  grep -qE "Passed checks: [1-9]" <<<"$report" || { echo "$report"; fail "checkov ($framework) scanned nothing"; }
}

if [[ -d "$out/k8s" ]]; then
  echo "checkov (kubernetes)"
  checkov_scan kubernetes -d "$out/k8s"
fi

if [[ -d "$out/cloudformation" ]]; then
  echo "cfn-lint"
  # Exit code is a bit mask (2 error, 4 warning, ...): anything but 0 fails.
  "$venv/bin/cfn-lint" "$out"/cloudformation/*.json || fail "cfn-lint"
  echo "checkov (cloudformation)"
  checkov_scan cloudformation -f "$out"/cloudformation/template.json
fi

if [[ -d "$out/arm" ]]; then
  echo "ARM structural check (exo deploy check-arm)"
  exo="${EXO_BIN:-${CARGO_TARGET_DIR:-$root/target}/debug/exo}"
  [[ -x "$exo" ]] || fail "exo binary not found at $exo (set EXO_BIN)"
  "$exo" deploy check-arm "$out/arm/template.json" || fail "ARM structure"
  echo "checkov (arm)"
  # CKV_AZURE_95 (automatic OS image upgrades for scale sets) is skipped here because checkov
  # ignores the skip in the resource's metadata for scale sets: instances run the app's own
  # versioned image, so OS updates ship as a new image in the manifest; Azure offers automatic OS
  # upgrades only for platform and gallery images anyway.
  checkov_scan arm --skip-check CKV_AZURE_95 -f "$out/arm/template.json"
fi

if [[ -d "$out/compose" ]]; then
  echo "compose config -q (Compose v2)"
  compose="$venv/lib/python3.11/site-packages/compose/docker-compose"
  [[ -x "$compose" ]] || compose="$(find "$venv" -path '*site-packages/compose/docker-compose' -type f | head -n 1)"
  [[ -x "$compose" ]] || fail "Compose v2 binary not found in $venv"
  # Credentials are required variables (${NAME:?}); give each a placeholder for the check.
  vars=()
  while read -r name; do vars+=("$name=placeholder"); done < <(grep -oE '\$\{[A-Z_][A-Z0-9_]*:\?' "$out/compose/compose.yaml" | sed -E 's/^\$\{//; s/:\?$//' | sort -u)
  (cd "$out/compose" && env "${vars[@]}" "$compose" config -q) || fail "compose"
fi

if [[ -d "$out/systemd" ]]; then
  echo "systemd-analyze verify"
  command -v systemd-analyze >/dev/null || fail "systemd-analyze is not installed (apt-get install systemd)"
  sandbox="$(mktemp -d)"
  trap 'rm -rf "$sandbox"' EXIT
  mkdir -p "$sandbox/usr/local/bin" "$sandbox/etc/systemd/system" "$sandbox/usr/lib/systemd"
  cp -r /usr/lib/systemd/system "$sandbox/usr/lib/systemd/"
  # verify checks that ExecStart binaries exist: install stubs of the proxies.
  for proxy in eqs eos ekv; do printf '#!/bin/sh\nexit 0\n' > "$sandbox/usr/local/bin/$proxy-proxy"; chmod +x "$sandbox/usr/local/bin/$proxy-proxy"; done
  cp "$out"/systemd/*.service "$sandbox/etc/systemd/system/"
  # Bad values only warn (exit 0): any output is a failure.
  report="$(systemd-analyze verify --root="$sandbox" "$sandbox"/etc/systemd/system/*.service 2>&1)" || { echo "$report"; fail "systemd-analyze"; }
  [[ -z "$report" ]] || { echo "$report"; fail "systemd-analyze reported problems"; }
fi
echo "deployment files valid: $out"
