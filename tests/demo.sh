#!/usr/bin/env bash
# The demo: installs what it needs, builds, starts a 3-host lab (network namespaces,
# ipmi_sim BMCs, a Wake-on-LAN listener, real genies, the router, qemu VMs), turns on
# energy-saving mode with short timers (a server falls asleep, then is woken for a VM),
# shows `router hosts`, `router vms` and `router energy status`, prints the web
# dashboard's URL (http://127.0.0.1:7180/, forwarded into the lab), and tears everything
# down on Ctrl-C. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "error: run as root (the lab creates network namespaces)" >&2; exit 1; }
bash tests/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --workspace --bins --release --locked
export WISP_BIN_DIR="$PWD/target/release"
exec "$WISP_BIN_DIR/wisp-demo" "$@"
