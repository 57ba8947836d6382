#!/usr/bin/env bash
# What the durable store costs, end to end and in process, on loopback and bounded in time:
#   1. in process (tailgate-bench store): CPU per span store off / buffered / sync, spill and read-back throughput,
#      recovery time per GiB, resident memory holding IDLE_SPANS spans of idle agent runs with a 256 MiB budget;
#   2. through the proxy at a fixed rate (gRPC, default policies, 8 connections): proxy CPU per span and ack
#      latency with no store, a buffered store and a sync store.
# Usage: loadtest/store-benchmarks.sh [SECONDS_PER_RUN] [RATE] [IDLE_SPANS]   (defaults 10, 40000, 10000000)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
RATE=${2:-40000}
IDLE=${3:-10000000}
OUT=loadtest/out
mkdir -p "$OUT"
BIN=.build/release/tailgate
PROXY_PORT=24417; RECV_PORT=14417; METRICS_PORT=29564

swift build -c release --product tailgate >/dev/null
swift build -c release --product tailgate-bench >/dev/null
REC=$OUT/agents-50k.tgrec
[ -f "$REC" ] || $BIN generate --traces 50000 --seed 7 --rate 500 -o "$REC"

echo "== 1. in process (release build)"
.build/release/tailgate-bench store | tee "$OUT/store-bench.txt"
.build/release/tailgate-bench store-idle "$IDLE" | tee -a "$OUT/store-bench.txt"  # alone: its RSS growth is its own

DATA=$(mktemp -d)
cleanup() { pkill -f "tailgate serve --grpc-listen 127.0.0.1:$PROXY_PORT" 2>/dev/null || true; rm -rf "$DATA"; }
trap cleanup EXIT

run() {  # $1: name, $2: extra configuration
  rm -rf "$DATA/store"
  cat > "$OUT/store-proxy.yaml" <<YAML
policies_reload_interval: 0s
buffer: {wait_after_root: 2s, idle_timeout: 5s, max_buffered_bytes: 2GiB}
forwarder: {compression: none, concurrency: 2}
$2
YAML
  $BIN serve --grpc-listen 127.0.0.1:$PROXY_PORT --http-listen off --metrics-listen 127.0.0.1:$METRICS_PORT \
      --config "$OUT/store-proxy.yaml" --downstream grpc://127.0.0.1:$RECV_PORT --log-level warning > "$OUT/store-proxy-$1.log" 2>&1 &
  PROXY_PID=$!
  for _ in $(seq 50); do (echo > /dev/tcp/127.0.0.1/$PROXY_PORT) 2>/dev/null && break; sleep 0.1; done
  $BIN loadtest --target grpc://127.0.0.1:$PROXY_PORT --connections 8 --duration ${SECS}s --rate "$RATE" \
      --receiver 127.0.0.1:$RECV_PORT --proxy-pid "$PROXY_PID" --settle 10s --json "$OUT/store-$1.json" "$REC" | tail -4
  kill -INT "$PROXY_PID" 2>/dev/null || true; wait "$PROXY_PID" 2>/dev/null || true
}

echo "== 2. through the proxy at $RATE spans/s, ${SECS}s each"
run off ""
run buffered "data_dir: $DATA/store"
run sync "data_dir: $DATA/store
store: {durability: sync}"

echo "== summary"
python3 - <<PY
import json, re
def load(n): return json.load(open(f"$OUT/store-{n}.json"))
def cpu(r):
    for n in r.get("notes", []):
        m = re.search(r"= (\d+) ns/span", n)
        if m: return int(m.group(1))
base = cpu(load("off"))
for n in ("off", "buffered", "sync"):
    r = load(n)
    v = r.get("verification") or {}
    c = cpu(r)
    print(f"{n:9s} proxy CPU {c} ns/span ({(c / base - 1) * 100:+.1f}% vs off), ack p50 {r['latencyMs']['p50']:.2f} ms, "
          f"p99 {r['latencyMs']['p99']:.2f} ms, verification {'PASS' if v.get('passed') else 'FAIL'}")
PY
