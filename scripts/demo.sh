#!/usr/bin/env bash
# The main job until the orchestrator lands: builds every server in release
# mode, starts each model on a free port, checks every route with curl and
# cgi-fcgi, then shows the models' difference with wrk: /hello keep-alive
# (where one epoll thread keeps up with N processes) and /wait?us=10000
# (where N blocking workers cap throughput at N x 100 requests/s, Little's
# law, and one event loop does not).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-peers.sh
cargo build --release -q --workspace

work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
start() { # name protocol -> prints the address
  "./target/release/$1" --listen 127.0.0.1:0 --protocol "$2" --workers 2 > "$work/$1.$2" &
  for _ in $(seq 50); do grep -q "listening on" "$work/$1.$2" 2>/dev/null && break; sleep 0.1; done
  sed -n 's/^listening on //p' "$work/$1.$2"
}

models=(prefork-server epoll-server)
printf '%-16s %-8s %s\n' server protocol "routes checked"
for m in "${models[@]}"; do
  addr=$(start "$m" http)
  ok=0
  for t in /hello "/cpu?n=1000" "/wait?us=1000" "/bytes?n=100" "/file?name=4k" /status; do
    curl -sf "http://$addr$t" > /dev/null && ok=$((ok+1))
  done
  printf '%-16s %-8s %s/6 ok (curl)\n' "$m" http "$ok"
  faddr=$(start "$m" fcgi)
  ok=0
  for t in /hello /cpu:n=1000 /wait:us=1000 /bytes:n=100; do
    REQUEST_METHOD=GET SCRIPT_NAME=${t%%:*} QUERY_STRING=$( [[ $t == *:* ]] && echo "${t#*:}" ) \
      cgi-fcgi -bind -connect "$faddr" | grep -q "^Status: 200" && ok=$((ok+1))
  done
  printf '%-16s %-8s %s/4 ok (cgi-fcgi)\n' "$m" fcgi "$ok"
done

echo
echo "wrk -t1 -c50 -d3s, both servers with --workers 2 (prefork: 2 processes; epoll: always 1 thread)"
printf '%-16s %14s %18s\n' server "/hello req/s" "/wait?us=10000 req/s"
for m in "${models[@]}"; do
  addr=$(start "$m" http)
  h=$(wrk -t1 -c50 -d3s "http://$addr/hello" | awk '/^Requests\/sec/ {print $2}')
  w=$(wrk -t1 -c50 -d3s --timeout 10s "http://$addr/wait?us=10000" | awk '/^Requests\/sec/ {print $2}')
  printf '%-16s %14s %18s\n' "$m" "$h" "$w"
done
echo
echo "prefork's /wait is capped near 2 workers / 10 ms = 200 req/s; epoll's is near 50 connections / 10 ms = 5000 req/s."
