#!/usr/bin/env bash
# End-to-end benchmarks of Tailgate on generated agent traffic, all on loopback and bounded in time, release build,
# with the features of the day on (the durable store in buffered mode, metrics, span annotation):
#   1. hot-path micro-benchmarks (tailgate-bench);
#   2. maximum sustained rate through the proxy (default policies, gRPC, 8 connections), proxy CPU per span;
#   3. ack latency and CPU per span at half that rate;
#   4. CPU per span at 20k spans/s (the per-wake-up tax of light load);
#   5. gzip-compressed against uncompressed requests, side by side at 60k spans/s (two proxies at once, 3 rounds);
#   6. Tailgate and nginx (grpc_pass, forwarding everything) at 60k spans/s, same traffic, same receiver; nginx again
#      at half Tailgate's maximum rate, for the share of the ack latency that is the harness's own;
#   7. OTLP/JSON over HTTP/1.1: MB/s of JSON per core of proxy CPU, (a) replayed with fresh traces (the goal's
#      figure) and (b) one body repeated with h2load (late spans of decided traces, for comparison);
#   8. resident memory while buffering, against the wire bytes buffered;
# then one summary table with the goals of issue 14 and the ratios.
# Usage: loadtest/run-benchmarks.sh [SECONDS_PER_RUN]   (default 15)
set -euo pipefail
cd "$(dirname "$0")/.."
source loadtest/nginx.sh
SECS=${1:-15}
OUT=loadtest/out
mkdir -p "$OUT"
BIN=.build/release/tailgate
PROXY_PORT=24317; HTTP_PORT=24318; NGINX_PORT=25317; RECV_PORT=14317; METRICS_PORT=29464

need() { command -v "$1" >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null; }; }
need nginx nginx; need h2load nghttp2-client
swift build -c release --product tailgate >/dev/null
swift build -c release --product tailgate-bench >/dev/null

REC=$OUT/agents-50k.tgrec
[ -f "$REC" ] || $BIN generate --traces 50000 --seed 7 --rate 500 -o "$REC"

# The proxy's data directory is scratch: removed once the proxy is gone.
cleanup() {
  [ -n "${PROXY_PID:-}" ] && { kill "$PROXY_PID" 2>/dev/null; wait "$PROXY_PID" 2>/dev/null; } || true
  stop_nginx "$PWD/$OUT"
  rm -rf "$OUT/data"
}
trap cleanup EXIT

echo "== 1. hot path (release build)"
.build/release/tailgate-bench | tee "$OUT/bench.txt"

DEFAULT_BUFFER="{wait_after_root: 2s, idle_timeout: 5s, max_buffered_bytes: 2GiB}"
start_proxy() {  # $1: the buffer settings, $2: the store settings
  local STORE=${2:-"{}"}
  rm -rf "$OUT/data"
  cat > "$OUT/proxy.yaml" <<YAML
annotate_kept_spans: true
policies_reload_interval: 0s
data_dir: $PWD/$OUT/data
buffer: $1
store: $STORE
forwarder: {compression: none, concurrency: 2}
YAML
  $BIN serve --grpc-listen 127.0.0.1:$PROXY_PORT --http-listen 127.0.0.1:$HTTP_PORT --metrics-listen 127.0.0.1:$METRICS_PORT \
      --config "$OUT/proxy.yaml" --downstream grpc://127.0.0.1:$RECV_PORT --log-level warning > "$OUT/proxy.log" 2>&1 &
  PROXY_PID=$!
  for _ in $(seq 50); do (echo > /dev/tcp/127.0.0.1/$PROXY_PORT) 2>/dev/null && break; sleep 0.1; done
}
stop_proxy() { kill -INT "$PROXY_PID" 2>/dev/null || true; wait "$PROXY_PID" 2>/dev/null || true; PROXY_PID=; }
point() {  # $1: name, $2: rate ("" = as fast as possible), then extra loadtest options
  local name=$1 rate=$2; shift 2
  start_proxy "$DEFAULT_BUFFER"
  $BIN loadtest --target grpc://127.0.0.1:$PROXY_PORT --connections 8 --duration ${SECS}s ${rate:+--rate $rate} \
      --receiver 127.0.0.1:$RECV_PORT --proxy-pid "$PROXY_PID" --settle 15s --json "$OUT/$name.json" --html "$OUT/$name.html" \
      "$@" "$REC" | tail -12
  stop_proxy
}

echo "== 2. maximum sustained rate through tailgate (default policies, gRPC, 8 connections, ${SECS}s)"
point max ""
MAX=$(python3 -c "import json;r=json.load(open('$OUT/max.json'));print(int(r['spansAcked']/r['durationSeconds']))")

echo "== 3. half the maximum rate ($((MAX / 2)) spans/s)"
point half $((MAX / 2))

echo "== 4. 20k spans/s"
point r20k 20000

echo "== 5. gzip-compressed against uncompressed requests, side by side at 60k spans/s (loadtest/ab.sh, 3 rounds)"
# Two proxies at once, one sent gzip and one not, in each round: separate runs differ by more than the cost measured.
LOADTEST_B=--gzip loadtest/ab.sh "$BIN" "$BIN" 60000 3 "$SECS" | tee "$OUT/gzip-ab.txt"
python3 - "$OUT/gzip-ab.txt" > "$OUT/gzip.json" <<'PY'
import json, re, statistics, sys
rounds = [(int(a), int(b)) for a, b in re.findall(r"A (\d+) ns/span .*?, B (\d+) ns/span", open(sys.argv[1]).read())]
print(json.dumps({"rounds": rounds, "extraNsPerSpan": statistics.median(b - a for a, b in rounds)}))
PY

echo "== 6a. tailgate at 60k spans/s"
point r60k 60000

echo "== 6b. nginx grpc_pass forwarding the same traffic to the same receiver at 60k spans/s"
NGINX_WORKER=$(start_nginx "$NGINX_PORT" "$RECV_PORT" "$PWD/$OUT")
printf 'policies: [{name: all, type: always_sample}]\n' > "$OUT/all.yaml"
$BIN loadtest --target grpc://127.0.0.1:$NGINX_PORT --connections 8 --duration ${SECS}s --rate 60000 \
    --receiver 127.0.0.1:$RECV_PORT --policies "$OUT/all.yaml" --proxy-pid "$NGINX_WORKER" --settle 5s \
    --json "$OUT/nginx.json" --html "$OUT/nginx.html" "$REC" | tail -12
stop_nginx "$PWD/$OUT"

echo "== 6c. nginx grpc_pass at half tailgate's maximum rate ($((MAX / 2)) spans/s): the ack latency the harness itself sees"
# The load generator and its receiver share the two cores with the proxy; a pass-through proxy at the same rate shows
# how much of the ack p99 is theirs.
NGINX_WORKER=$(start_nginx "$NGINX_PORT" "$RECV_PORT" "$PWD/$OUT")
$BIN loadtest --target grpc://127.0.0.1:$NGINX_PORT --connections 8 --duration ${SECS}s --rate $((MAX / 2)) \
    --receiver 127.0.0.1:$RECV_PORT --policies "$OUT/all.yaml" --proxy-pid "$NGINX_WORKER" --settle 5s \
    --json "$OUT/nginx-half.json" --html "$OUT/nginx-half.html" "$REC" | tail -3
stop_nginx "$PWD/$OUT"

echo "== 7a. OTLP/JSON over HTTP/1.1: the replay harness sending JSON, fresh traces in every pass (8 connections)"
# The goal's measurement: every request carries new traces (fresh IDs per pass, encoded to JSON as sent), so the proxy
# transcodes, scans, buffers, decides and forwards as it would for a JSON exporter. MB/s of JSON per core of proxy CPU.
start_proxy "$DEFAULT_BUFFER"
$BIN loadtest --target http://127.0.0.1:$HTTP_PORT/v1/traces --otlp-json --connections 8 --duration ${SECS}s \
    --receiver 127.0.0.1:$RECV_PORT --proxy-pid "$PROXY_PID" --settle 15s --json "$OUT/json-replay.json" \
    --html "$OUT/json-replay.html" "$REC" | tail -4
stop_proxy
python3 - "$OUT/json-replay.json" > "$OUT/json.json" <<'PY'
import json, re, sys
r = json.load(open(sys.argv[1]))
cpu = next(float(m.group(1)) for n in r["notes"] for m in [re.search(r"CPU: ([0-9.]+) s", n)] if m)
print(json.dumps({"bytesSent": r["bytesSent"], "spansAcked": r["spansAcked"], "cpuSeconds": cpu,
                  "mbPerCoreSecond": r["bytesSent"] / 1e6 / cpu if cpu else 0,
                  "verified": bool((r.get("verification") or {}).get("passed"))}))
PY
cat "$OUT/json.json"

echo "== 7b. OTLP/JSON, late spans only (h2load, one body repeated: after the first request its traces are decided)"
$BIN generate --traces 40 --seed 11 -o "$OUT/json-sample.jsonl" >/dev/null
python3 - "$OUT/json-sample.jsonl" "$OUT/json-body.json" <<'PY'
import sys
lines = [l for l in open(sys.argv[1], encoding="utf-8").read().splitlines() if l.strip()]
open(sys.argv[2], "w", encoding="utf-8").write(max(lines, key=len))
PY
start_proxy "$DEFAULT_BUFFER"
cpu() { awk '{print $14 + $15}' "/proc/$PROXY_PID/stat"; }
C0=$(cpu)
h2load --h1 -c 8 -D "$SECS" -d "$OUT/json-body.json" -H "content-type: application/json" \
    "http://127.0.0.1:$HTTP_PORT/v1/traces" > "$OUT/json-h2load.txt"
C1=$(cpu)
stop_proxy
python3 - "$OUT/json-h2load.txt" "$OUT/json-body.json" "$C0" "$C1" "$(getconf CLK_TCK)" > "$OUT/json-late.json" <<'PY'
import json, os, re, sys
text = open(sys.argv[1]).read()
done = int(re.search(r"(\d+) succeeded", text).group(1))
size = os.path.getsize(sys.argv[2])
cpu = (float(sys.argv[4]) - float(sys.argv[3])) / float(sys.argv[5])
print(json.dumps({"requests": done, "bodyBytes": size, "cpuSeconds": cpu,
                  "mbPerCoreSecond": done * size / 1e6 / cpu if cpu else 0,
                  "status": re.search(r"status codes: .*", text).group(0)}))
PY
cat "$OUT/json-late.json"

echo "== 8. memory while buffering (decisions held back: wait_after_root and idle_timeout 10 min)"
start_proxy "{wait_after_root: 10m, idle_timeout: 10m, max_trace_age: 20m, max_buffered_bytes: 8GiB}" "{spill_after: 20m}"
RSS0=$(awk '/VmRSS/{print $2}' /proc/$PROXY_PID/status)
$BIN loadtest --target grpc://127.0.0.1:$PROXY_PORT --connections 8 --spans 1000000 \
    --json "$OUT/mem.json" --html "$OUT/mem.html" "$REC" | tail -3
sleep 1
RSS1=$(awk '/VmRSS/{print $2}' /proc/$PROXY_PID/status)
BUF=$(curl -s http://127.0.0.1:$METRICS_PORT/metrics | awk '/^tailgate_buffered_bytes /{print int($2)}')
WIRE=$(python3 -c "import json;r=json.load(open('$OUT/mem.json'));print(r['bytesSent'])")
echo "{\"rss0\": $((RSS0 * 1024)), \"rss1\": $((RSS1 * 1024)), \"buffered\": $BUF, \"wire\": $WIRE}" > "$OUT/memory.json"
stop_proxy

echo "== summary (one run; CPU is the proxy's own, from /proc)"
python3 - <<PY
import json, re
def load(n): return json.load(open(f"$OUT/{n}.json"))
def cpu(r):
    for n in r.get("notes", []):
        m = re.search(r"= (\d+) ns/span", n)
        if m: return int(m.group(1))
    return 0
mx, half, r20, gz, r60, ng, nh, js, jl, mem = (load(n) for n in ("max", "half", "r20k", "gzip", "r60k", "nginx", "nginx-half", "json", "json-late", "memory"))
lat = lambda r: f"{r['latencyMs']['p99']:.1f} ms (p50 {r['latencyMs']['p50']:.1f})"
rate = lambda r: r["spansAcked"] / r["durationSeconds"]
rows = [
    ("proxy CPU at half the maximum rate", f"{cpu(half)/1000:.2f} µs/span", "<= 1.5 µs/span", cpu(half) <= 1500),
    ("proxy CPU at 20k spans/s", f"{cpu(r20)/1000:.2f} µs/span", "<= 2.5 µs/span", cpu(r20) <= 2500),
    ("tailgate / nginx CPU per span at 60k spans/s", f"{cpu(r60)/1000:.2f} / {cpu(ng)/1000:.2f} µs = {cpu(r60)/max(cpu(ng),1):.2f}x", "<= 2.0x", cpu(r60) <= 2 * cpu(ng)),
    ("ack p99 at half the maximum rate", lat(half), "<= 5 ms", half['latencyMs']['p99'] <= 5),
    ("  (nginx grpc_pass at the same rate)", lat(nh), "(the harness's share)", None),
    ("  (ack p99 at 60k: tailgate, nginx)", f"{r60['latencyMs']['p99']:.1f} ms, {ng['latencyMs']['p99']:.1f} ms", "(for comparison)", None),
    ("proxy capacity (1 / CPU per span at max rate)", f"{1e9/max(cpu(mx),1)/1000:,.0f}k spans/s per core (acked {rate(mx)/1000:,.0f}k/s)", "2x the 0.1 figure (238k)", 1e9 / max(cpu(mx), 1) >= 476_000),
    ("gzip cost over uncompressed, side by side at 60k", f"{gz['extraNsPerSpan']/1000:+.2f} µs/span (median of {len(gz['rounds'])} rounds)", "<= +0.5 µs/span", gz['extraNsPerSpan'] <= 500),
    ("OTLP/JSON over HTTP/1.1, new traces (replay)", f"{js['mbPerCoreSecond']:.0f} MB/s per core", ">= 100 MB/s", js['mbPerCoreSecond'] >= 100 and js['verified']),
    ("  (late spans of decided traces, h2load)", f"{jl['mbPerCoreSecond']:.0f} MB/s per core", "(for comparison)", None),
    ("RSS while buffering / wire bytes", f"{mem['rss1']/2**20:.0f} MiB for {mem['wire']/2**20:.0f} MiB", "<= 1.5x + 100 MiB", mem['rss1'] <= 1.5 * mem['wire'] + 100 * 2**20),
]
w = max(len(r[0]) for r in rows)
for name, value, goal, ok in rows:
    print(f"{name:<{w}}  {value:<40} goal {goal:<26} {'' if ok is None else 'met' if ok else 'NOT met'}")
for n in ("max", "half", "r20k", "r60k", "json-replay"):
    v = load(n).get("verification") or {}
    print(f"verification ({n}): {'PASS' if v.get('passed') else 'FAIL'} {v.get('problems', [])[:3]}")
PY
