#!/usr/bin/env bash
# End-to-end benchmarks of Tailgate on generated agent traffic, all on loopback and bounded in time:
#   1. hot-path micro-benchmarks (tailgate-bench);
#   2. maximum sustained rate through the proxy (default policies), proxy CPU per span;
#   3. ack latency at half that rate;
#   4. resident memory while buffering, against the wire bytes buffered;
#   5. nginx (grpc_pass) forwarding the same traffic to the same receiver: CPU per span side by side.
# Usage: loadtest/run-benchmarks.sh [SECONDS_PER_RUN]   (default 15)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-15}
OUT=loadtest/out
mkdir -p "$OUT"
BIN=.build/release/tailgate
PROXY_PORT=24317; NGINX_PORT=25317; RECV_PORT=14317; METRICS_PORT=29464

command -v nginx >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null; }
swift build -c release --product tailgate >/dev/null
swift build -c release --product tailgate-bench >/dev/null

REC=$OUT/agents-50k.tgrec
[ -f "$REC" ] || $BIN generate --traces 50000 --seed 7 --rate 500 -o "$REC"

cleanup() { pkill -f "tailgate serve --grpc-listen 127.0.0.1:$PROXY_PORT" 2>/dev/null || true; [ -f "$OUT/nginx.pid" ] && kill "$(cat "$OUT/nginx.pid")" 2>/dev/null || true; }
trap cleanup EXIT

echo "== 1. hot path (release build)"
.build/release/tailgate-bench | tee "$OUT/bench.txt"

DEFAULT_BUFFER="{wait_after_root: 2s, idle_timeout: 5s, max_buffered_bytes: 2GiB}"
start_proxy() {  # $1: the buffer settings
  cat > "$OUT/proxy.yaml" <<YAML
annotate_kept_spans: true
policies_reload_interval: 0s
buffer: $1
forwarder: {compression: none, concurrency: 2}
YAML
  $BIN serve --grpc-listen 127.0.0.1:$PROXY_PORT --http-listen off --metrics-listen 127.0.0.1:$METRICS_PORT \
      --config "$OUT/proxy.yaml" --downstream grpc://127.0.0.1:$RECV_PORT --log-level warning > "$OUT/proxy.log" 2>&1 &
  PROXY_PID=$!
  for _ in $(seq 50); do (echo > /dev/tcp/127.0.0.1/$PROXY_PORT) 2>/dev/null && break; sleep 0.1; done
}
stop_proxy() { kill -INT "$PROXY_PID" 2>/dev/null || true; wait "$PROXY_PID" 2>/dev/null || true; }

echo "== 2. maximum sustained rate through tailgate (default policies, gRPC, 8 connections, ${SECS}s)"
start_proxy "$DEFAULT_BUFFER"
$BIN loadtest --target grpc://127.0.0.1:$PROXY_PORT --connections 8 --duration ${SECS}s --receiver 127.0.0.1:$RECV_PORT \
    --proxy-pid "$PROXY_PID" --settle 15s --json "$OUT/max.json" --html "$OUT/max.html" "$REC" | tail -30
stop_proxy
MAX=$(python3 -c "import json;r=json.load(open('$OUT/max.json'));print(int(r['spansAcked']/r['durationSeconds']))")

echo "== 3. ack latency at half the maximum rate ($((MAX / 2)) spans/s)"
start_proxy "$DEFAULT_BUFFER"
$BIN loadtest --target grpc://127.0.0.1:$PROXY_PORT --connections 8 --duration ${SECS}s --rate $((MAX / 2)) \
    --receiver 127.0.0.1:$RECV_PORT --proxy-pid "$PROXY_PID" --settle 15s --json "$OUT/half.json" --html "$OUT/half.html" "$REC" | tail -30
stop_proxy

echo "== 4. memory while buffering (decisions held back: wait_after_root and idle_timeout 10 min)"
start_proxy "{wait_after_root: 10m, idle_timeout: 10m, max_trace_age: 20m, max_buffered_bytes: 8GiB}"
RSS0=$(awk '/VmRSS/{print $2}' /proc/$PROXY_PID/status)
$BIN loadtest --target grpc://127.0.0.1:$PROXY_PORT --connections 8 --spans 1000000 \
    --json "$OUT/mem.json" --html "$OUT/mem.html" "$REC" | tail -3
sleep 1
RSS1=$(awk '/VmRSS/{print $2}' /proc/$PROXY_PID/status)
BUF=$(curl -s http://127.0.0.1:$METRICS_PORT/metrics | awk '/^tailgate_buffered_bytes /{print int($2)}')
WIRE=$(python3 -c "import json;r=json.load(open('$OUT/mem.json'));print(r['bytesSent'])")
python3 - <<PY
rss0, rss1, buf, wire = $RSS0 * 1024, $RSS1 * 1024, $BUF, $WIRE
print(f"buffered: {buf/2**20:.0f} MiB accounted; wire bytes sent {wire/2**20:.0f} MiB; RSS {rss0/2**20:.0f} -> {rss1/2**20:.0f} MiB")
print(f"RSS / wire bytes = {rss1/wire:.2f}; target RSS <= 1.5 x wire + 100 MiB = {(1.5*wire + 100*2**20)/2**20:.0f} MiB: {'met' if rss1 <= 1.5*wire + 100*2**20 else 'NOT met'}")
PY
stop_proxy

echo "== 5. nginx grpc_pass forwarding the same traffic to the same receiver"
cat > "$OUT/nginx.conf" <<NGINX
worker_processes 1;
pid $PWD/$OUT/nginx.pid;
error_log $PWD/$OUT/nginx-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_max_body_size 64m;
  upstream receiver { server 127.0.0.1:$RECV_PORT; keepalive 32; }
  server {
    listen 127.0.0.1:$NGINX_PORT http2;
    location / { grpc_pass grpc://receiver; }
  }
}
NGINX
nginx -c "$PWD/$OUT/nginx.conf"
sleep 0.5
NGINX_WORKER=$(pgrep -P "$(cat "$OUT/nginx.pid")" | head -1)
printf 'policies: [{name: all, type: always_sample}]\n' > "$OUT/all.yaml"
$BIN loadtest --target grpc://127.0.0.1:$NGINX_PORT --connections 8 --duration ${SECS}s --rate $((MAX / 2)) \
    --receiver 127.0.0.1:$RECV_PORT --policies "$OUT/all.yaml" --proxy-pid "$NGINX_WORKER" --settle 5s \
    --json "$OUT/nginx.json" --html "$OUT/nginx.html" "$REC" | tail -30
kill "$(cat "$OUT/nginx.pid")"; rm -f "$OUT/nginx.pid"

echo "== summary"
python3 - <<PY
import json, re
def load(n): return json.load(open(f"$OUT/{n}.json"))
def cpu(r):
    for n in r.get("notes", []):
        m = re.search(r"= (\d+) ns/span", n)
        if m: return int(m.group(1))
mx, half, ng = load("max"), load("half"), load("nginx")
print(f"max sustained: {mx['spansAcked']/mx['durationSeconds']:,.0f} spans/s acked; proxy CPU {cpu(mx)} ns/span (target <= 1000)")
print(f"at half rate: ack p99 {half['latencyMs']['p99']:.2f} ms (target <= 5 ms), p50 {half['latencyMs']['p50']:.2f} ms; proxy CPU {cpu(half)} ns/span")
print(f"nginx grpc_pass at the same rate: CPU {cpu(ng)} ns/span; tailgate/nginx CPU per span = {cpu(half)/max(cpu(ng),1):.2f}")
for n in ("max", "half"):
    v = load(n).get("verification") or {}
    print(f"verification ({n}): {'PASS' if v.get('passed') else 'FAIL'} {v.get('problems', [])[:3]}")
PY
