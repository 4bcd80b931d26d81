#!/usr/bin/env bash
# The whole test suite: installs what it needs, then formatting, lints, the build and
# every test (unit, loopback, and the lab with real qemu, ipmi_sim and namespaces).
# Needs root (network namespaces, raw sockets).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "error: run as root (the lab creates network namespaces)" >&2; exit 1; }
bash tests/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo build (binaries used by the lab)"
cargo build --workspace --bins --locked
echo "== cargo test"
# Lab tests run real qemu and ipmi_sim: two at a time suits a 2-core machine.
cargo test --workspace --locked -- --test-threads="${WISP_TEST_THREADS:-2}"
