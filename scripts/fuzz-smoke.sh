#!/usr/bin/env bash
# Fuzz smoke test: builds every cargo-fuzz target once, runs each for SECONDS (default 30)
# from a temporary copy of its seed corpus, prints one line per target, and fails on any
# crash, panic, leak, timeout or out-of-memory. Run from the repository root:
#
#   scripts/fuzz-smoke.sh [SECONDS]
#
# Needs cargo-fuzz (installed here if missing). cargo-fuzz passes nightly-only flags
# (-Zsanitizer=address), hence RUSTC_BOOTSTRAP=1 on a stable toolchain.
#
# Longer runs, one target at a time (targets: `cargo fuzz list`; layouts: fuzz/README.md):
#
#   cd fuzz
#   RUSTC_BOOTSTRAP=1 cargo fuzz run connection -- -max_total_time=3600 -rss_limit_mb=2048
#   RUSTC_BOOTSTRAP=1 cargo fuzz run deflate_inflate -j 2 -- -max_total_time=3600 -rss_limit_mb=2048
#
# Those grow fuzz/corpus/<target>/ (only the seed-* files there are tracked by git). A crash is
# saved as fuzz/artifacts/<target>/crash-*; replay and shrink it with
#
#   RUSTC_BOOTSTRAP=1 cargo fuzz run <target> artifacts/<target>/crash-...
#   RUSTC_BOOTSTRAP=1 cargo fuzz tmin <target> artifacts/<target>/crash-...
#
# and keep the minimized input as a regression seed (fuzz/corpus/<target>/seed-<name>):
# `cargo test --lib fuzzing` replays every seed without cargo-fuzz.
set -euo pipefail
export RUSTC_BOOTSTRAP=1

seconds=${1:-30}
if ! [[ $seconds =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: scripts/fuzz-smoke.sh [SECONDS]  (a positive number of seconds per target)" >&2
    exit 2
fi
if [[ ! -f fuzz/Cargo.toml ]]; then
    echo "fuzz-smoke: run from the repository root (fuzz/Cargo.toml not found)" >&2
    exit 2
fi
root=$PWD

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz-smoke: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/fuzz-smoke.XXXXXX")
trap 'rm -rf "$work"' EXIT

cd "$root/fuzz"
# Our own target dir: a CARGO_TARGET_DIR shared with normal builds would be rebuilt with the
# sanitizer flags, and we need to know where the binaries land.
target_dir=$root/fuzz/target
triple=$(rustc -vV | sed -n 's/^host: //p')
bin_dir=$target_dir/$triple/release

# Build every target once (release, debug assertions on, AddressSanitizer: cargo-fuzz's
# defaults). The binaries are then run directly, so all targets test the same build even when
# the sources change meanwhile.
build_start=$SECONDS
if ! cargo fuzz build --target-dir "$target_dir" --target "$triple" >"$work/build.log" 2>&1; then
    cat "$work/build.log" >&2
    echo "fuzz-smoke: build failed" >&2
    exit 1
fi
echo "build        ok in $((SECONDS - build_start))s"

mapfile -t targets < <(cargo fuzz list)
if [[ ${#targets[@]} -eq 0 ]]; then
    echo "fuzz-smoke: no fuzz targets" >&2
    exit 1
fi

# As `cargo fuzz run` does.
export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_odr_violation=0

failed=0
for target in "${targets[@]}"; do
    corpus=$work/corpus/$target
    mkdir -p "$corpus" "$root/fuzz/artifacts/$target"
    shopt -s nullglob
    seeds=("$root/fuzz/corpus/$target"/seed-*)
    shopt -u nullglob
    if [[ ${#seeds[@]} -gt 0 ]]; then
        cp "${seeds[@]}" "$corpus/"
    fi
    log=$work/$target.log
    if "$bin_dir/$target" "$corpus" \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
        -artifact_prefix="$root/fuzz/artifacts/$target/" >"$log" 2>&1; then
        # "#1234 DONE cov: 1 ft: 2 corp: 3/4b lim: 5 exec/s: 6 rss: 7Mb"
        stats=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true)
        runs=$(sed -nE 's/^#([0-9]+).*/\1/p' <<<"$stats")
        execs=$(sed -nE 's/.*exec\/s: ([0-9]+).*/\1/p' <<<"$stats")
        cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$stats")
        corp=$(sed -nE 's/.* corp: ([0-9]+)\/.*/\1/p' <<<"$stats")
        printf 'ok    %-20s %6s exec/s  %9s runs  cov %5s  corpus %4s  (%ss)\n' \
            "$target" "${execs:-?}" "${runs:-?}" "${cov:-?}" "${corp:-?}" "$seconds"
    else
        failed=1
        artifact=$(sed -nE 's/.*Test unit written to (.*)$/\1/p' "$log" | tail -n 1)
        printf 'FAIL  %-20s %s\n' "$target" "${artifact:-(no artifact; see the log below)}"
        grep -E -m 5 "panicked at|ERROR: libFuzzer|ERROR: AddressSanitizer|SUMMARY" "$log" | sed 's/^/      /' || true
        if [[ -z $artifact ]]; then
            tail -n 30 "$log" | sed 's/^/      /'
        else
            echo "      replay: cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run $target ${artifact#"$root/fuzz/"}"
        fi
    fi
done
exit "$failed"
