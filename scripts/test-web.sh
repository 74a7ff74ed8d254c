#!/usr/bin/env bash
# hibiki.js and the page at /: the Node tests (node --test: the client against the built
# server and against stub servers, the JavaScript examples) and the browser test (headless
# Chromium driven by playwright-core). Installs Chromium (Debian's package) and the npm
# packages of tests/web when they are missing; never downloads a browser of its own.
#
#   scripts/test-web.sh                          # screenshots go to target/web-screenshots
#   HIBIKI_SCREENSHOTS=docs/img scripts/test-web.sh   # refresh the README's screenshots
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
  echo "test-web: FAILED: $*" >&2
  exit 1
}

command -v node >/dev/null || fail "node (20 or later) is not installed"
command -v npm >/dev/null || fail "npm is not installed"
major=$(node -p 'process.versions.node.split(".")[0]')
[ "$major" -ge 20 ] || fail "node $(node --version) is too old: 20 or later is needed"

export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$CHROMIUM" ]; then
  echo "test-web: no Chromium at $CHROMIUM: apt-get install -y chromium"
  command -v apt-get >/dev/null || fail "no Chromium and no apt-get to install it (set CHROMIUM to a Chromium binary)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } ||
    fail "apt-get install chromium did not work"
  [ -x "$CHROMIUM" ] || fail "Chromium was installed but $CHROMIUM is still missing"
fi

echo "test-web: npm packages (tests/web)"
(cd tests/web && npm ci --no-audit --no-fund --loglevel=error) || fail "npm ci in tests/web"

echo "test-web: cargo build --bin hibiki"
cargo build --bin hibiki || fail "cargo build --bin hibiki"
target="${CARGO_TARGET_DIR:-target}"
case "$target" in /*) ;; *) target="$PWD/$target" ;; esac
export HIBIKI_BIN="$target/debug/hibiki"
[ -x "$HIBIKI_BIN" ] || fail "no binary at $HIBIKI_BIN after the build"

echo "test-web: node tests (hibiki.js, the JavaScript examples)"
timeout 300 node --test --test-force-exit --test-concurrency=1 tests/web/client.test.mjs tests/web/examples.test.mjs ||
  fail "node tests (tests/web/client.test.mjs, tests/web/examples.test.mjs)"

echo "test-web: browser test (headless Chromium)"
timeout 300 node --test --test-force-exit tests/web/browser.test.mjs || fail "browser test (tests/web/browser.test.mjs)"

echo "test-web: all passed"
