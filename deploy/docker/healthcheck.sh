#!/bin/bash
# Docker HEALTHCHECK for images without curl: GET /livez on the admin port through bash's /dev/tcp.
# Exit 0 when the answer's status line is 200, 1 otherwise. TAILGATE_HEALTH_ADDR overrides 127.0.0.1:9464.
set -u
addr="${TAILGATE_HEALTH_ADDR:-127.0.0.1:9464}"
host="${addr%:*}"
port="${addr##*:}"
exec 3<>"/dev/tcp/${host}/${port}" || exit 1
printf 'GET /livez HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$addr" >&3
IFS= read -r -t 2 status <&3 || exit 1
exec 3<&-
case "$status" in
  "HTTP/1."?" 200"*) exit 0 ;;
  *) exit 1 ;;
esac
