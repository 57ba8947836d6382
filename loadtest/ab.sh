#!/usr/bin/env bash
# Two Tailgate binaries side by side: the CPU per span of each proxy at one rate, both running at the same time in each
# round, each with its own load generator and receiver (so both see the same machine: frequency, neighbours, page
# cache). Release builds, the default configuration with the durable store on (a data directory), metrics on, default
# policies, gRPC, 8 connections, generated agent traffic. The load generator is the same binary for both (LOADGEN,
# default .build/release/tailgate), so only the proxy differs. Prints each round and the median of the ratios B / A.
# Usage: loadtest/ab.sh BIN_A BIN_B [RATE] [ROUNDS] [SECONDS_PER_RUN]   (default 20000 5 15)
# BUFFER_A / BUFFER_B: extra `buffer:` keys for one side (e.g. BUFFER_B='shards: 64'); LOADTEST_A / LOADTEST_B: extra
# loadtest options for one side (e.g. LOADTEST_B=--gzip). With the same binary twice, they compare settings or traffic.
# JSON=1: OTLP/JSON over HTTP/1.1 instead of gRPC (the replay harness encodes each request as it sends it, fresh trace
# IDs in every pass), for the JSON ingest path. RATE=0 (either mode) sends as fast as acknowledgements allow.
# Example, the working tree against a commit:
#   git worktree add /tmp/base <commit> && (cd /tmp/base && swift build -c release --product tailgate)
#   swift build -c release --product tailgate && loadtest/ab.sh /tmp/base/.build/release/tailgate .build/release/tailgate
set -euo pipefail
cd "$(dirname "$0")/.."
A=$1; B=$2; RATE=${3:-20000}; ROUNDS=${4:-5}; SECS=${5:-15}
LOADGEN=${LOADGEN:-.build/release/tailgate}
OUT=loadtest/out/ab
mkdir -p "$OUT"
REC=loadtest/out/agents-50k.tgrec
[ -f "$REC" ] || $LOADGEN generate --traces 50000 --seed 7 --rate 500 -o "$REC"
PIDS=()
# At exit: the proxies stopped, then their data directories (scratch) removed.
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$OUT/data-a" "$OUT/data-b"; true' EXIT

start_proxy() {  # $1: a | b, $2: binary, $3: proxy port, $4: receiver port, $5: metrics port; sets STARTED_PID
  rm -rf "$OUT/data-$1"
  local extra; [ "$1" = a ] && extra=${BUFFER_A:-} || extra=${BUFFER_B:-}
  printf 'policies_reload_interval: 0s\ndata_dir: %s\nbuffer: {wait_after_root: 2s, idle_timeout: 5s%s}\n' "$PWD/$OUT/data-$1" "${extra:+, $extra}" > "$OUT/proxy-$1.yaml"
  local http=off; [ "${JSON:-0}" = 1 ] && http=127.0.0.1:$(($3 + 100))
  "$2" serve --grpc-listen 127.0.0.1:$3 --http-listen $http --metrics-listen 127.0.0.1:$5 \
      --config "$OUT/proxy-$1.yaml" --downstream grpc://127.0.0.1:$4 --log-level warning > "$OUT/proxy-$1.log" 2>&1 &
  STARTED_PID=$!
  for _ in $(seq 50); do (echo > /dev/tcp/127.0.0.1/$3) 2>/dev/null && break; sleep 0.1; done
  for _ in $(seq 50); do [ "$http" = off ] || (echo > /dev/tcp/127.0.0.1/$(($3 + 100))) 2>/dev/null && break; sleep 0.1; done
}

loadtest() {  # $1: a | b, $2: proxy port, $3: receiver port, $4: proxy pid; prints "ns_per_span ack_p99_ms"
  local report extra; [ "$1" = a ] && extra=${LOADTEST_A:-} || extra=${LOADTEST_B:-}
  local target=grpc://127.0.0.1:$2 rate="--rate $RATE"
  [ "${JSON:-0}" = 1 ] && target="http://127.0.0.1:$(($2 + 100))/v1/traces --otlp-json"
  [ "$RATE" = 0 ] && rate=
  # shellcheck disable=SC2086
  report=$($LOADGEN loadtest --target $target --connections 8 --duration ${SECS}s $rate $extra \
      --receiver 127.0.0.1:$3 --proxy-pid "$4" --settle 8s --json "$OUT/$1.json" --html "$OUT/$1.html" "$REC")
  grep -q "verification  PASS" <<<"$report" || { echo "verification failed ($1)" >&2; echo "$report" | tail -30 >&2; exit 1; }
  echo "$(grep -o '= [0-9]* ns/span' <<<"$report" | grep -o '[0-9]*') $(grep -A1 'ack latency' <<<"$report" | tail -1 | awk '{print $4}')"
}

median() { sort -g | awk '{ a[NR] = $1 } END { print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }'; }
ratios=(); as=(); bs=()
for i in $(seq "$ROUNDS"); do
  start_proxy a "$A" 24417 14417 29564; pa=$STARTED_PID
  start_proxy b "$B" 24418 14418 29565; pb=$STARTED_PID
  PIDS=("$pa" "$pb")
  loadtest a 24417 14417 "$pa" > "$OUT/a.txt" & la=$!
  loadtest b 24418 14418 "$pb" > "$OUT/b.txt" & lb=$!
  wait "$la"; wait "$lb"
  kill -INT "$pa" "$pb"; wait "$pa" || true; wait "$pb" || true; PIDS=()
  read -r a_ns a_p99 < "$OUT/a.txt"; read -r b_ns b_p99 < "$OUT/b.txt"
  ratio=$(awk -v a="$a_ns" -v b="$b_ns" 'BEGIN { printf "%.3f", b / a }')
  ratios+=("$ratio"); as+=("$a_ns"); bs+=("$b_ns")
  echo "round $i at $RATE spans/s: A $a_ns ns/span (ack p99 $a_p99 ms), B $b_ns ns/span (ack p99 $b_p99 ms): B/A $ratio"
done
echo "median over $ROUNDS rounds: A $(printf '%s\n' "${as[@]}" | median) ns/span, B $(printf '%s\n' "${bs[@]}" | median) ns/span, B/A $(printf '%s\n' "${ratios[@]}" | median)"
