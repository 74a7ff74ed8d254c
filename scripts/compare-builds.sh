#!/usr/bin/env bash
# Compares two builds of hibiki under the same load, in turns, with the A/A spread beside it.
#
# usage: scripts/compare-builds.sh A_BINARY B_BINARY [ROUNDS] [SECONDS]
# env:   SCENARIOS="room-5000 tick-5000 echo-16 echo-1 echo-16k broadcast-5000 idle-10000"
#        (default: room-5000 tick-5000 echo-16); the load tool is B's.
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec python3 scripts/compare_builds.py "$1" "$2" "${3:-3}" "${4:-8}"
