# Sourced by the benchmark scripts: nginx as the pass-through reference, one worker forwarding gRPC (grpc_pass) from
# 127.0.0.1:$1 to the receiver on 127.0.0.1:$2; its files in $3. Prints the worker's PID (whose CPU is measured).
start_nginx() {
  local port=$1 receiver=$2 dir=$3
  cat > "$dir/nginx.conf" <<NGINX
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/nginx-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_max_body_size 64m;
  upstream receiver { server 127.0.0.1:$receiver; keepalive 32; }
  server { listen 127.0.0.1:$port http2; location / { grpc_pass grpc://receiver; } }
}
NGINX
  nginx -c "$dir/nginx.conf"
  sleep 0.5
  pgrep -P "$(cat "$dir/nginx.pid")" | head -1
}

stop_nginx() {  # $1: the directory given to start_nginx
  [ -f "$1/nginx.pid" ] && kill "$(cat "$1/nginx.pid")" 2>/dev/null || true
  rm -f "$1/nginx.pid"
}
