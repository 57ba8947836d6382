#!/usr/bin/env bash
# What the durable store costs: Tailgate with and without a data directory, alternating, at one rate (release build,
# default policies, gRPC, 8 connections, generated agent traffic; buffered durability). Single runs on a shared
# machine vary by ±15 %, so it alternates several rounds and prints each with the median of the ratios.
# With PROFILE=1 (needs `perf`), each store-on run is also sampled, and the share of the proxy's samples spent in the
# store's own code (any frame of the TailgateStore module: encoding records into the log, checksums, the writer,
# maintenance) is printed: a ratio within one run, so free of the run-to-run noise, though blind to indirect costs
# (cache misses elsewhere, lock waits).
# With PAIRED=1, each round runs both proxies at the same time instead of one after the other, each with its own
# load generator and receiver at RATE: both see the same machine (frequency, neighbours, page cache), so the ratio
# within a round is not shifted by what changed between runs — the alternating rounds split into two groups ~20 points
# apart on this VM. (The two share the 2 cores with two load generators, so absolute figures are higher than alone.)
# Usage: [PROFILE=1] [PAIRED=1] loadtest/store-ab.sh [RATE] [ROUNDS] [SECONDS_PER_RUN]   (default 20000 4 15)
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${1:-20000}; ROUNDS=${2:-4}; SECS=${3:-15}
OUT=loadtest/out/store-ab
mkdir -p "$OUT"
BIN=.build/release/tailgate
PROXY_PORT=24317; RECV_PORT=14317; METRICS_PORT=29464
swift build -c release --product tailgate >/dev/null
REC=loadtest/out/agents-50k.tgrec
[ -f "$REC" ] || $BIN generate --traces 50000 --seed 7 --rate 500 -o "$REC"
PROXY_PID=; PAIR_PIDS=()
# At exit: the proxies stopped, then their data directories (scratch) removed.
trap '[ -n "$PROXY_PID" ] && kill "$PROXY_PID" 2>/dev/null; for p in "${PAIR_PIDS[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$OUT"/data-*; true' EXIT

start_proxy() {  # $1: off | on, $2: proxy port, $3: receiver port, $4: metrics port; sets STARTED_PID
  rm -rf "$OUT/data-$1"
  cat > "$OUT/proxy-$1.yaml" <<YAML
annotate_kept_spans: true
policies_reload_interval: 0s
buffer: {wait_after_root: 2s, idle_timeout: 5s, max_buffered_bytes: 2GiB}
forwarder: {compression: none, concurrency: 2}
YAML
  [ "$1" = on ] && echo "data_dir: $PWD/$OUT/data-$1" >> "$OUT/proxy-$1.yaml"
  $BIN serve --grpc-listen 127.0.0.1:$2 --http-listen off --metrics-listen 127.0.0.1:$4 \
      --config "$OUT/proxy-$1.yaml" --downstream grpc://127.0.0.1:$3 --log-level warning > "$OUT/proxy-$1.log" 2>&1 &
  STARTED_PID=$!
  for _ in $(seq 50); do (echo > /dev/tcp/127.0.0.1/$2) 2>/dev/null && break; sleep 0.1; done
}

loadtest() {  # $1: off | on, $2: proxy port, $3: receiver port, $4: proxy pid; prints "ns_per_span ack_p99_ms"
  local report
  report=$($BIN loadtest --target grpc://127.0.0.1:$2 --connections 8 --duration ${SECS}s --rate "$RATE" \
      --receiver 127.0.0.1:$3 --proxy-pid "$4" --settle 10s --json "$OUT/$1.json" --html "$OUT/$1.html" "$REC")
  echo "$(grep -o '= [0-9]* ns/span' <<<"$report" | grep -o '[0-9]*') $(grep -A1 'ack latency' <<<"$report" | tail -1 | awk '{print $4}')"
}

paired() {  # prints "off_ns off_p99 on_ns on_p99"
  start_proxy off $PROXY_PORT $RECV_PORT $METRICS_PORT; local off_pid=$STARTED_PID
  start_proxy on $((PROXY_PORT + 1)) $((RECV_PORT + 1)) $((METRICS_PORT + 1)); local on_pid=$STARTED_PID
  PAIR_PIDS=("$off_pid" "$on_pid")
  local perf_off= perf_on=
  if [ -n "${PROFILE:-}" ]; then
    perf record -F 1999 -g -p "$off_pid" -o "$OUT/pair-off.perf.data" >/dev/null 2>&1 &
    perf_off=$!
    perf record -F 1999 -g -p "$on_pid" -o "$OUT/pair-on.perf.data" >/dev/null 2>&1 &
    perf_on=$!
  fi
  loadtest off $PROXY_PORT $RECV_PORT "$off_pid" > "$OUT/pair-off.txt" &
  local a=$!
  loadtest on $((PROXY_PORT + 1)) $((RECV_PORT + 1)) "$on_pid" > "$OUT/pair-on.txt" &
  local b=$!
  wait "$a"; wait "$b"
  if [ -n "$perf_off" ]; then
    kill -INT "$perf_off" "$perf_on"; wait "$perf_off" || true; wait "$perf_on" || true
    # Where the extra samples of the store-on proxy go: self samples per function, on minus off (same run, same
    # traffic, same duration), the largest differences first.
    for side in off on; do
      perf script -i "$OUT/pair-$side.perf.data" -F ip,sym 2>/dev/null \
        | awk 'BEGIN { RS = ""; FS = "\n" } { l = $1; sub(/^[ \t]*[0-9a-f]+ /, "", l); print l }' \
        > "$OUT/pair-$side.leaves"
    done
    python3 - "$OUT/pair-off.leaves" "$OUT/pair-on.leaves" >&2 <<'PY'
import collections, sys
off = collections.Counter(open(sys.argv[1]).read().splitlines())
on = collections.Counter(open(sys.argv[2]).read().splitlines())
total_off, total_on = sum(off.values()), sum(on.values())
print(f"  samples: store off {total_off}, on {total_on} (+{100 * (total_on - total_off) / max(total_off, 1):.1f} %); largest differences (self):")
for sym, d in sorted(((s, on[s] - off[s]) for s in set(on) | set(off)), key=lambda x: -x[1])[:15]:
    print(f"  {d:+6d}  ({off[sym]:5d} → {on[sym]:5d})  {sym[:110]}")
PY
  fi
  kill -INT "$off_pid" "$on_pid"; wait "$off_pid" || true; wait "$on_pid" || true; PAIR_PIDS=()
  echo "$(cat "$OUT/pair-off.txt") $(cat "$OUT/pair-on.txt")"
}

run() {  # $1: off | on; prints "ns_per_span ack_p99_ms"
  start_proxy "$1" $PROXY_PORT $RECV_PORT $METRICS_PORT
  PROXY_PID=$STARTED_PID
  local report perf_pid=
  if [ "$1" = on ] && [ -n "${PROFILE:-}" ]; then
    perf record -F 499 -g -p "$PROXY_PID" -o "$OUT/on.perf.data" >/dev/null 2>&1 &
    perf_pid=$!
  fi
  report=$($BIN loadtest --target grpc://127.0.0.1:$PROXY_PORT --connections 8 --duration ${SECS}s --rate "$RATE" \
      --receiver 127.0.0.1:$RECV_PORT --proxy-pid "$PROXY_PID" --settle 10s --json "$OUT/$1.json" --html "$OUT/$1.html" "$REC")
  local share=-
  if [ -n "$perf_pid" ]; then  # stopped before the proxy, so shutdown work is not in the profile
    kill -INT "$perf_pid"; wait "$perf_pid" || true
    share=$(perf script -i "$OUT/on.perf.data" -F ip,sym 2>/dev/null | python3 -c '
import sys
total = store = 0
for block in sys.stdin.read().split("\n\n"):
    if block.strip():
        total += 1
        store += "13TailgateStore" in block
print(f"{100 * store / max(total, 1):.1f}")')
  fi
  kill -INT "$PROXY_PID"; wait "$PROXY_PID" || true; PROXY_PID=
  local ns p99
  ns=$(grep -o '= [0-9]* ns/span' <<<"$report" | grep -o '[0-9]*')
  p99=$(grep -A1 'ack latency' <<<"$report" | tail -1 | awk '{print $4}')
  echo "$ns $p99 $share"
}

median() { sort -g | awk '{ a[NR] = $1 } END { print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }'; }
ratios=(); shares=()
for i in $(seq "$ROUNDS"); do
  if [ -n "${PAIRED:-}" ]; then
    read -r off offp99 on onp99 < <(paired)
    share=-
  else
    read -r off offp99 _ < <(run off)
    read -r on onp99 share < <(run on)
  fi
  r=$(awk -v a="$off" -v b="$on" 'BEGIN { printf "%.1f", (b - a) * 100 / a }')
  ratios+=("$r")
  extra=
  if [ "$share" != - ]; then
    shares+=("$share")
    extra=" (the store's own code: $share % of the store-on run's samples)"
  fi
  echo "round $i at $RATE spans/s: store off $off ns/span (ack p99 $offp99 ms), on $on ns/span (ack p99 $onp99 ms): ${r} %$extra"
done
echo "store cost at $RATE spans/s: median $(printf '%s\n' "${ratios[@]}" | median) % CPU per span over $ROUNDS rounds (issue 11's goal: at most 10 %)"
if [ ${#shares[@]} -gt 0 ]; then
  echo "store's own code at $RATE spans/s: median $(printf '%s\n' "${shares[@]}" | median) % of the proxy's samples with the store on"
fi
