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
trap 'kill $(cat "$work/pids" 2>/dev/null) 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
start() { # name protocol: starts it, sets $addr
  "./target/release/$1" --listen 127.0.0.1:0 --protocol "$2" --workers 2 > "$work/$1.$2" &
  echo $! >> "$work/pids"
  for _ in $(seq 50); do grep -q "listening on" "$work/$1.$2" 2>/dev/null && break; sleep 0.1; done
  addr=$(sed -n 's/^listening on //p' "$work/$1.$2")
}

models=()
for b in iterative fork prefork thread threadpool nonblocking select poll sigio epoll mio oneshot uring; do
  [ -x "./target/release/$b-server" ] && models+=("$b-server")
done
printf '%-16s %-8s %s\n' server protocol "routes checked"
for m in "${models[@]}"; do
  start "$m" http
  ok=0
  for t in /hello "/cpu?n=1000" "/wait?us=1000" "/bytes?n=100" "/file?name=4k" /status; do
    curl -sf "http://$addr$t" > /dev/null && ok=$((ok+1))
  done
  printf '%-16s %-8s %s/6 ok (curl)\n' "$m" http "$ok"
  start "$m" fcgi
  faddr=$addr
  ok=0
  for t in /hello /cpu:n=1000 /wait:us=1000 /bytes:n=100; do
    REQUEST_METHOD=GET SCRIPT_NAME=${t%%:*} QUERY_STRING=$( [[ $t == *:* ]] && echo "${t#*:}" ) \
      cgi-fcgi -bind -connect "$faddr" | grep -q "^Status: 200" && ok=$((ok+1))
  done
  printf '%-16s %-8s %s/4 ok (cgi-fcgi)\n' "$m" fcgi "$ok"
done

echo
echo "wrk -t1 -c50 -d3s, every server with --workers 2 (processes or threads for models that have them)"
printf '%-16s %14s %18s\n' server "/hello req/s" "/wait?us=10000 req/s"
for m in "${models[@]}"; do
  start "$m" http
  h=$(wrk -t1 -c50 -d3s "http://$addr/hello" | awk '/^Requests\/sec/ {print $2}')
  w=$(wrk -t1 -c50 -d3s --timeout 10s "http://$addr/wait?us=10000" | awk '/^Requests\/sec/ {print $2}')
  printf '%-16s %14s %18s\n' "$m" "$h" "$w"
done
echo
echo "Blocking models with 2 workers cap /wait near 2 / 10 ms = 200 req/s (Little's law); event loops reach"
echo "about 50 connections / 10 ms = 5000 req/s. iterative-server serves one keep-alive connection at a time."
