#!/usr/bin/env bash
# CI-sized performance smoke (seconds, not minutes): Tailgate's proxy CPU per span against nginx grpc_pass moving the
# same traffic to the same receiver, in one run on one machine, release build, default policies, the durable store on.
# Absolute times vary too much between machines and runs to assert; a ratio measured side by side does not. Fails only
# on a gross regression: the ratio above SMOKE_MAX_RATIO (default 16, about twice today's ratio; run-benchmarks.sh
# measures the real figure against its goal of 2).
# Usage: loadtest/smoke-bench.sh [SECONDS] [SPANS_PER_SECOND]   (default 5 s at 20k spans/s)
set -euo pipefail
cd "$(dirname "$0")/.."
source loadtest/nginx.sh
SECS=${1:-5}; RATE=${2:-20000}; MAX_RATIO=${SMOKE_MAX_RATIO:-16}
OUT=loadtest/out/smoke
mkdir -p "$OUT"
BIN=.build/release/tailgate
PROXY_PORT=26317; NGINX_PORT=26318; RECV_PORT=26319
command -v nginx >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null; }
swift build -c release --product tailgate 2>&1 | tail -1
[ -f "$OUT/agents.tgrec" ] || $BIN generate --traces 5000 --seed 7 --rate 500 -o "$OUT/agents.tgrec" >/dev/null

# The proxy's data directory is scratch: removed once the proxy is gone.
cleanup() {
  [ -n "${PROXY_PID:-}" ] && { kill "$PROXY_PID" 2>/dev/null; wait "$PROXY_PID" 2>/dev/null; } || true
  stop_nginx "$PWD/$OUT"
  rm -rf "$OUT/data"
}
trap cleanup EXIT

rm -rf "$OUT/data"
printf 'policies_reload_interval: 0s\ndata_dir: %s\nbuffer: {wait_after_root: 1s, idle_timeout: 2s}\n' "$PWD/$OUT/data" > "$OUT/proxy.yaml"
$BIN serve --grpc-listen 127.0.0.1:$PROXY_PORT --http-listen off --metrics-listen off --config "$OUT/proxy.yaml" \
    --downstream grpc://127.0.0.1:$RECV_PORT --log-level warning > "$OUT/proxy.log" 2>&1 &
PROXY_PID=$!
for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$PROXY_PORT) 2>/dev/null && break; sleep 0.1; done
$BIN loadtest --target grpc://127.0.0.1:$PROXY_PORT --connections 8 --duration ${SECS}s --rate "$RATE" \
    --receiver 127.0.0.1:$RECV_PORT --proxy-pid "$PROXY_PID" --settle 5s --json "$OUT/tailgate.json" --html "$OUT/tailgate.html" \
    "$OUT/agents.tgrec" > "$OUT/tailgate.txt"
kill -INT "$PROXY_PID"; wait "$PROXY_PID" || true; PROXY_PID=

NGINX_WORKER=$(start_nginx "$NGINX_PORT" "$RECV_PORT" "$PWD/$OUT")
printf 'policies: [{name: all, type: always_sample}]\n' > "$OUT/all.yaml"
$BIN loadtest --target grpc://127.0.0.1:$NGINX_PORT --connections 8 --duration ${SECS}s --rate "$RATE" \
    --receiver 127.0.0.1:$RECV_PORT --policies "$OUT/all.yaml" --proxy-pid "$NGINX_WORKER" \
    --settle 3s --json "$OUT/nginx.json" --html "$OUT/nginx.html" "$OUT/agents.tgrec" > "$OUT/nginx.txt"
stop_nginx "$PWD/$OUT"

python3 - "$OUT" "$MAX_RATIO" <<'PY'
import json, re, sys
out, limit = sys.argv[1], float(sys.argv[2])
def cpu(name):
    r = json.load(open(f"{out}/{name}.json"))
    assert (r.get("verification") or {}).get("passed"), f"{name}: verification failed: {r.get('verification')}"
    for n in r.get("notes", []):
        m = re.search(r"= (\d+) ns/span", n)
        if m: return int(m.group(1))
    raise SystemExit(f"{name}: no CPU figure in the report")
t, n = cpu("tailgate"), cpu("nginx")
ratio = t / max(n, 1)
print(f"performance smoke: tailgate {t} ns/span, nginx grpc_pass {n} ns/span: {ratio:.2f}x (fails above {limit:g}x)")
sys.exit(0 if ratio <= limit else 1)
PY
