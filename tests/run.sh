#!/usr/bin/env bash
# Runs the whole lks test suite: unit tests, end-to-end tests against the real
# binaries, and a short smoke run of the benchmark. Installs what the tests need
# and is safe to run again (idempotent). CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1 || { echo "tests/run.sh: '$1' is required: $2" >&2; exit 1; }; }
need cargo "install Rust with rustup (https://rustup.rs)"

# The end-to-end tests run the real binaries: build them first.
cargo build --workspace --bins --locked
cargo test --workspace --locked -- --test-threads=2
# A short smoke run of the sync benchmark (the full run is in the README).
cargo run -p lks-e2e --bin lks-bench --locked -- --smoke
