#!/usr/bin/env bash
# Runs the Autobahn|Testsuite fuzzingclient against `hibiki serve` at /echo.
# usage: scripts/autobahn-server.sh [CASES]   (CASES: "*" = all 517 (default), "fast", or globs)
# AUTOBAHN_TLS=1: over wss://, with a self-signed certificate made by openssl for the run.
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
SCHEME=http WS=ws TLS_ARGS=() CERTS=
if [ "${AUTOBAHN_TLS:-0}" = 1 ]; then
  CERTS=$(mktemp -d "${TMPDIR:-/tmp}/hibiki-autobahn-tls.XXXXXX")
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    -keyout "$CERTS/key.pem" -out "$CERTS/cert.pem" 2>/dev/null
  SCHEME=https WS=wss TLS_ARGS=(--tls-cert "$CERTS/cert.pem" --tls-key "$CERTS/key.pem")
fi
"${CARGO_TARGET_DIR:-target}/release/hibiki" serve --listen "127.0.0.1:$PORT" --threads 1 --max-message-size 16777216 \
  "${TLS_ARGS[@]}" >"${TMPDIR:-/tmp}/hibiki-autobahn-server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; [ -z "$CERTS" ] || rm -rf "$CERTS"' EXIT
for _ in $(seq 1 50); do
  curl -sfk "$SCHEME://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
AUTOBAHN_AGENT=hibiki "$TOOL/run-server-suite.sh" "$WS://127.0.0.1:$PORT/echo" "$CASES"
