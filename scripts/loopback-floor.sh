#!/usr/bin/env bash
# The kernel's cost of one small loopback TCP write on this machine (examples/loopback_floor.rs):
# a reader on core 1, a writer on core 0 writing SIZE bytes to each of N connections per tick.
#
# usage: scripts/loopback-floor.sh [CONNECTIONS] [SIZE] [RATE] [SECONDS]   (defaults: 5000 100 60 5)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --example loopback_floor
bin="${CARGO_TARGET_DIR:-target}/release/examples/loopback_floor"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
port=$((20000 + RANDOM % 20000))
taskset -c 1 "$bin" receive "127.0.0.1:$port" &
reader=$!
sleep 0.3
taskset -c 0 "$bin" send "127.0.0.1:$port" "${1:-5000}" "${2:-100}" "${3:-60}" "${4:-5}"
wait "$reader"
