#!/usr/bin/env bash
# Measures hibiki against its peers (fastwebsockets, tokio-tungstenite) the same way, in one run:
# each server pinned to core 0, `hibiki load` pinned to core 1, servers taking turns
# (A B C A B C ...), medians over the rounds, ratios by messages per server CPU-second.
#
# usage: scripts/compare-peers.sh [ROUNDS] [SECONDS]      (defaults: 3 rounds of 10 s)
# env:   SCENARIOS="echo-1 echo-16 echo-16k echo-1000 broadcast idle" to pick some
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin hibiki
(cd benches/peers && cargo build --release --quiet --bins)
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec python3 scripts/compare_peers.py "${1:-3}" "${2:-10}"
