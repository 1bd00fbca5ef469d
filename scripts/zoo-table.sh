#!/usr/bin/env bash
# Every model side by side in one run: requests/s with wrk for /hello
# keep-alive and /wait?us=10000 (a simulated 10 ms database call), both
# with CONNECTIONS connections, every server with --workers 2. Prints a
# Markdown table, with wrk's own CPU (user+sys seconds) next to each figure
# and the non-2xx answers wrk counted in its requests/s (a model that
# refuses when saturated, threadpool-server, answers 503 quickly).
#
#   scripts/zoo-table.sh [SECONDS] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-3}
conns=${2:-200}
command -v wrk >/dev/null || { echo "zoo-table: wrk is not installed (scripts/install-peers.sh)" >&2; exit 2; }
cargo build --release -q -p iomodels-servers
work=$(mktemp -d)
trap 'kill $(cat "$work/pids" 2>/dev/null) 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT

bench() { # url -> "req/s non-2xx wrk-cpu"
  local out
  out=$( { TIMEFORMAT='%U %S'; time wrk -t1 -c"$conns" -d"${secs}s" --timeout 5s "$1" ; } 2>&1 )
  printf '%s %s %s' "$(awk '/^Requests\/sec/ {printf "%.0f", $2}' <<<"$out")" \
    "$(awk '/Non-2xx/ {n=$NF} END {print n+0}' <<<"$out")" \
    "$(tail -1 <<<"$out" | awk '{printf "%.1fs", $1+$2}')"
}

echo "wrk -t1 -c$conns -d${secs}s, every server --workers 2"
echo
echo "| model | /hello req/s | non-2xx | wrk CPU | /wait?us=10000 req/s | non-2xx | wrk CPU |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for m in iterative fork prefork thread threadpool nonblocking select poll sigio epoll mio oneshot uring fpm swoole; do
  bin="./target/release/$m-server"
  [ -x "$bin" ] || continue
  "$bin" --listen 127.0.0.1:0 --workers 2 > "$work/$m.out" 2>/dev/null &
  pid=$!
  echo "$pid" >> "$work/pids"
  for _ in $(seq 50); do grep -q "listening on" "$work/$m.out" 2>/dev/null && break; sleep 0.1; done
  addr=$(sed -n 's/^listening on //p' "$work/$m.out")
  read -r h hn hc <<<"$(bench "http://$addr/hello")"
  read -r w wn wc <<<"$(bench "http://$addr/wait?us=10000")"
  echo "| $m | $h | $hn | $hc | $w | $wn | $wc |"
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
done
