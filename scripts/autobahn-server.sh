#!/usr/bin/env bash
# Runs the Autobahn|Testsuite fuzzingclient against `hibiki serve` at /echo.
# usage: scripts/autobahn-server.sh [CASES]   (CASES: "*" = all 517 (default), "fast", or globs)
# Needs the autobahn tool folder (AUTOBAHN_TOOL, default ../shared/tools/autobahn).
set -euo pipefail
cd "$(dirname "$0")/.."
TOOL=${AUTOBAHN_TOOL:-../shared/tools/autobahn}
CASES=${1:-*}
PORT=${AUTOBAHN_SERVER_PORT:-9301}
if [ -z "${AUTOBAHN_BUNDLE_DIR:-}" ] && [ -d "$TOOL/bundle" ]; then
  export AUTOBAHN_BUNDLE_DIR="$TOOL/bundle"
fi
cargo build --release --quiet --bin hibiki
"${CARGO_TARGET_DIR:-target}/release/hibiki" serve --listen "127.0.0.1:$PORT" --threads 1 --max-message-size 16777216 \
  >"${TMPDIR:-/tmp}/hibiki-autobahn-server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do
  curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
AUTOBAHN_AGENT=hibiki "$TOOL/run-server-suite.sh" "ws://127.0.0.1:$PORT/echo" "$CASES"
