#!/usr/bin/env bash
# podman as this machine kind runs it, sourced by scripts/test: no daemon, vfs storage and state
# under .tools/containers (git-ignored), runc (crun fails on hybrid cgroups), cgroupfs, and no
# default ulimits (the sandbox refuses setrlimit). Installs buildah, podman and runc (Debian
# packages) when they are missing and this runs as root; otherwise says what to install.

containers_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
containers_state="$containers_root/.tools/containers"

ensure_container_tools() {
  local missing=()
  for tool in buildah podman runc; do
    command -v "$tool" > /dev/null || missing+=("$tool")
  done
  if [[ ${#missing[@]} -gt 0 ]]; then
    if [[ "$(id -u)" != 0 ]]; then
      echo "the container image tests need ${missing[*]} (apt-get install buildah podman runc)" >&2
      return 1
    fi
    echo "installing ${missing[*]} (Debian packages)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q buildah podman runc > /dev/null
  fi
  mkdir -p "$containers_state"
  printf '[containers]\ndefault_ulimits = []\n' > "$containers_state/containers.conf"
  export CONTAINERS_CONF="$containers_state/containers.conf"
}

# podman ARGS…, with this machine kind's flags and the project-local storage.
podman_local() {
  podman --runtime runc --storage-driver vfs --cgroup-manager cgroupfs \
    --root "$containers_state/storage" --runroot "$containers_state/run" "$@"
}

# Copies BINARY into ROOTFS/usr/local/bin with the shared libraries it links, at the paths its
# loader looks for them: what a FROM scratch image of a glibc binary needs.
copy_with_libraries() {
  local binary="$1" rootfs="$2" lib
  mkdir -p "$rootfs/usr/local/bin"
  cp "$binary" "$rootfs/usr/local/bin/"
  ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | while read -r lib; do
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
  done
}


# The workspace version (Cargo.toml's first `version = "…"`): the images' tag.
workspace_version() {
  sed -n 's/^version = "\(.*\)"$/\1/p' "$containers_root/Cargo.toml" | head -n 1
}
