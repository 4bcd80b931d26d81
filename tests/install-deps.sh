#!/usr/bin/env bash
# Installs what wisp's build, lab and tests need on a Debian machine (run as root).
# Idempotent: skips apt when everything is already there.
set -euo pipefail

PKGS=(openipmi ipmitool freeipmi-tools qemu-system-x86 etcd-server etcd-client tcpdump
      etherwake wakeonlan socat iputils-ping iproute2 ethtool procps systemd util-linux
      build-essential pkg-config libfaketime chromium chromium-driver linux-image-amd64
      busybox-static xz-utils prometheus openssl)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "error: no Rust toolchain (cargo) found; install one with rustup (rust 1.85 or newer)" >&2
  exit 1
fi
if command -v rustup >/dev/null 2>&1; then
  rustup component add clippy rustfmt >/dev/null 2>&1 || echo "warning: could not add clippy/rustfmt with rustup" >&2
fi
