#!/usr/bin/env bash
# Builds and runs the libFuzzer targets (Fuzz/README.md).
#
#   Fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]
#
# SECONDS_PER_TARGET defaults to 20 (what CI runs); TARGET is any of fuzz-scanner fuzz-otlp-json fuzz-gzip
# fuzz-policies (default: all four, in that order). Prints, per target, the executions, exec/s, crashes and corpus
# size; exits 1 when a build fails or any target crashes (the crashing inputs are in Fuzz/artifacts/TARGET/).
#
# Environment:
#   FUZZ_CONFIG=release|debug   build configuration (default release: debug runs ~10× fewer executions per second)
#   FUZZ_WORKDIR=DIR            keep the working corpora in DIR/TARGET (reused, and grown, across runs); by default
#                               a temporary directory, deleted at the end. The committed corpus is never written.
#   FUZZ_ARGS="..."             extra libFuzzer flags for every target (e.g. "-runs=100000" or "-seed=1")
#   FUZZ_NO_BUILD=1             use the binaries already in .build-fuzz
#   FUZZ_REMOVE_BUILD=1         delete .build-fuzz at the end (CI: saves its disk for the builds after it)
set -uo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
SECONDS_PER_TARGET=${1:-20}
shift || true
ALL=(fuzz-scanner fuzz-otlp-json fuzz-gzip fuzz-policies)
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=("${ALL[@]}")
CONFIG=${FUZZ_CONFIG:-release}
SCRATCH=$ROOT/.build-fuzz

for t in "${TARGETS[@]}"; do
    case " ${ALL[*]} " in *" $t "*) ;; *) echo "unknown target '$t' (one of: ${ALL[*]})" >&2; exit 2 ;; esac
done
if ! [[ $SECONDS_PER_TARGET =~ ^[0-9]+$ ]]; then echo "usage: Fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]" >&2; exit 2; fi

# Per target: libFuzzer flags beyond the common ones.
target_flags() {
    case $1 in
        fuzz-scanner)   echo "-max_len=16384 -timeout=10" ;;
        fuzz-otlp-json) echo "-max_len=16384 -timeout=10 -dict=Fuzz/dict/otlp-json.dict" ;;
        fuzz-gzip)      echo "-max_len=8192 -timeout=10" ;;
        fuzz-policies)  echo "-max_len=16384 -timeout=20 -dict=Fuzz/dict/policies.dict" ;;
    esac
}

# The Package.swift block instruments only the fuzz targets' own module: the code under test (TailgateWire,
# TailgatePolicies, Yams, ...) needs coverage and ASan too, so the flags are given for every module here. One
# combined -sanitize=fuzzer,address: swiftc keeps only the last -sanitize= flag, so SwiftPM's
# `--sanitize=fuzzer --sanitize=address` would silently build the libraries without coverage. (`--sanitize=fuzzer`
# stays: it tells SwiftPM not to rename the fuzz targets' `main`, which libFuzzer provides.)
export TAILGATE_FUZZ=1
BUILD=(swift build --scratch-path "$SCRATCH" -c "$CONFIG" --sanitize=fuzzer
       -Xswiftc -sanitize=fuzzer,address -Xcc -fsanitize=fuzzer-no-link,address)
if [ -z "${FUZZ_NO_BUILD:-}" ]; then
    for t in "${TARGETS[@]}"; do
        echo "== building $t ($CONFIG)"
        start=$(date +%s)
        if ! "${BUILD[@]}" --product "$t"; then
            echo "== build of $t failed" >&2
            exit 1
        fi
        echo "== built $t in $(( $(date +%s) - start )) s"
    done
fi
BIN=$("${BUILD[@]}" --show-bin-path)

if [ -n "${FUZZ_WORKDIR:-}" ]; then
    WORK=$FUZZ_WORKDIR
    mkdir -p "$WORK"
else
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/tailgate-fuzz.XXXXXX")
    trap 'rm -rf "$WORK"' EXIT
fi

# Symbolized ASan reports; Swift's own backtracer would race libFuzzer's crash handler.
export ASAN_SYMBOLIZER_PATH=${ASAN_SYMBOLIZER_PATH:-$(command -v llvm-symbolizer || echo "$(dirname "$(command -v swift)")/llvm-symbolizer")}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:symbolize=1}
export SWIFT_BACKTRACE=enable=no

failed=0
summary=()
for t in "${TARGETS[@]}"; do
    corpus=$WORK/$t
    artifacts=$ROOT/Fuzz/artifacts/$t
    mkdir -p "$corpus" "$artifacts"
    cp -n "$ROOT/Fuzz/corpus/$t/"* "$corpus/" 2>/dev/null || true
    before=$(find "$artifacts" -type f | wc -l)
    log=$WORK/$t.log
    echo "== fuzzing $t for ${SECONDS_PER_TARGET} s (corpus $corpus, log $log)"
    # shellcheck disable=SC2046
    "$BIN/$t" "$corpus" -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$artifacts/" $(target_flags "$t") ${FUZZ_ARGS:-} >"$log" 2>&1
    status=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    crashes=$(( $(find "$artifacts" -type f | wc -l) - before ))
    if [ "$status" -ne 0 ] && [ "$crashes" -eq 0 ]; then crashes=1; fi   # died without writing an input
    units=$(find "$corpus" -type f | wc -l)
    line=$(printf '%-15s executions %10s  exec/s %7s  crashes %d  corpus %d files  (exit %d)' \
        "$t" "${execs:-?}" "${rate:-?}" "$crashes" "$units" "$status")
    echo "$line"
    summary+=("$line")
    if [ "$crashes" -ne 0 ]; then
        failed=1
        echo "---- $t crashed; end of its log:"
        grep -v '^#[0-9]' "$log" | tail -60
        echo "---- crashing inputs: $artifacts/"
        ls -1 "$artifacts"
    fi
done

if [ -n "${FUZZ_REMOVE_BUILD:-}" ]; then rm -rf "$SCRATCH"; fi
echo "== summary (${SECONDS_PER_TARGET} s per target)"
printf '%s\n' "${summary[@]}"
exit $failed
