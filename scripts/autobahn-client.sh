#!/usr/bin/env bash
# Runs the Autobahn|Testsuite fuzzingserver against hibiki's client (examples/autobahn_client.rs).
# usage: scripts/autobahn-client.sh [CASES]   (CASES: "*" = all 517 (default), "fast", or globs)
set -euo pipefail
cd "$(dirname "$0")/.."
TOOL=${AUTOBAHN_TOOL:-../shared/tools/autobahn}
if [ -z "${AUTOBAHN_BUNDLE_DIR:-}" ] && [ -d "$TOOL/bundle" ]; then
  export AUTOBAHN_BUNDLE_DIR="$TOOL/bundle"
fi
cargo build --release --quiet --example autobahn_client
AUTOBAHN_CASES=${1:-*} AUTOBAHN_PORT=${AUTOBAHN_CLIENT_PORT:-9302} AUTOBAHN_AGENT=hibiki \
  "$TOOL/run-client-suite.sh" "${CARGO_TARGET_DIR:-target}/release/examples/autobahn_client"
