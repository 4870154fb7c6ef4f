#!/usr/bin/env bash
# The README's first command: builds lks, starts an lks-agent on loopback with a
# fresh token and its root in .lks/demo-root, then syncs examples/ into it with
# `lks sync --once` and shows what landed. Nothing is written outside .lks/.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --bins -p lks -p lks-agent
mkdir -p .lks
root=.lks/demo-root
token=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
export LKS_TOKEN=$token
./target/debug/lks-agent serve --root "$root" --listen 127.0.0.1:0 >.lks/demo-agent.out 2>.lks/demo-agent.log &
agent=$!
trap 'kill $agent 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q '^listening on' .lks/demo-agent.out 2>/dev/null && break; sleep 0.05; done
addr=$(sed -n 's/^listening on //p' .lks/demo-agent.out)
echo "lks-agent (pid $agent) listening on $addr, root $root"
echo "\$ lks sync examples --to http://$addr --once"
./target/debug/lks sync examples --to "http://$addr" --once
echo "\$ lks sync examples --to http://$addr --once   # again: nothing to send"
./target/debug/lks sync examples --to "http://$addr" --once
echo "files now in $root:"
(cd "$root" && find . -mindepth 1 | sort | sed 's/^\.\//  /')
echo "Try watch mode: LKS_TOKEN=... lks sync examples --to http://ADDR (edit a file, see one line per batch)."
