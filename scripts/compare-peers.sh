#!/usr/bin/env bash
# Measures hibiki against its peers (fastwebsockets, tokio-tungstenite, uWebSockets) the same way, in one run:
# each server pinned to core 0, `hibiki load` pinned to core 1, servers taking turns
# (A B C A B C ...), medians over the rounds, ratios by messages per server CPU-second.
#
# usage: scripts/compare-peers.sh [ROUNDS] [SECONDS]      (defaults: 3 rounds of 10 s)
# env:   SCENARIOS="echo-1 echo-16 echo-16k echo-1000 broadcast idle connect" to pick some
#        TLS=1: over wss:// instead: a self-signed certificate made with openssl in a temporary
#        directory, given to every server (hibiki serve --tls-cert/--tls-key, the peers'
#        tokio-rustls variants) and to `hibiki load --ca`; scenarios echo-16, echo-1, echo-16k
#        and connect (full TLS + WebSocket handshakes per server CPU-second) unless SCENARIOS
#        says otherwise. A hibiki build without --tls-cert is left out (peers only).
#        ONLY="hibiki fastwebsockets": just these servers.
#        BASELINE=path/to/hibiki: an older build as one more server, "baseline": before and
#        after beside the peers (scripts/compare-builds.sh compares two builds alone).
#        UWS=0: without uWebSockets (benches/peers/uws, uWebSockets.js on node, installed here
#        with npm ci).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${TLS:-}" ] && [ "${TLS}" != 0 ] && ! command -v openssl >/dev/null; then
  echo "TLS=1 needs openssl (to make the certificate)" >&2
  exit 2
fi
cargo build --release --quiet --bin hibiki
(cd benches/peers && cargo build --release --quiet --bins)
if [ "${UWS:-1}" != 0 ]; then
  command -v node >/dev/null || { echo "uWebSockets runs on node: install node, or UWS=0" >&2; exit 2; }
  [ -d benches/peers/uws/node_modules ] || (cd benches/peers/uws && npm ci --no-audit --no-fund --ignore-scripts --silent)
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec python3 scripts/compare_peers.py "${1:-3}" "${2:-10}"
