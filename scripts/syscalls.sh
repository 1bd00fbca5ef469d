#!/usr/bin/env bash
# System calls per request for each model, as strace -f -c counts them on
# a short wrk run (/hello; keep-alive, except fork-server which closes
# after each request). strace slows everything down: read the counts, not
# the times.
#
#   scripts/syscalls.sh [SECONDS] [CONNECTIONS] [MODEL…]
# Prints a Markdown table (calls per request by name) to stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-2}
conns=${2:-50}
shift $(( $# < 2 ? $# : 2 ))
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(iterative fork prefork thread threadpool nonblocking select poll sigio epoll mio oneshot)
for tool in strace wrk; do
  command -v "$tool" >/dev/null || { echo "syscalls: $tool is not installed (scripts/install-peers.sh)" >&2; exit 2; }
done
cargo build --release -q -p iomodels-servers
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT

echo "| model | requests | calls/request | by name (per request) |"
echo "|---|---:|---:|---|"
for m in "${models[@]}"; do
  bin="./target/release/$m-server"
  [ -x "$bin" ] || { echo "| $m | (not built) | | |"; continue; }
  strace -f -c -o "$work/$m.strace" "$bin" --listen 127.0.0.1:0 --workers 2 > "$work/$m.out" 2>/dev/null &
  spid=$!
  for _ in $(seq 100); do grep -q "listening on" "$work/$m.out" 2>/dev/null && break; sleep 0.1; done
  addr=$(sed -n 's/^listening on //p' "$work/$m.out")
  c=$conns
  [ "$m" = iterative ] && c=1   # one connection at a time: more would only wait
  reqs=$(wrk -t1 -c"$c" -d"${secs}s" --timeout 5s "http://$addr/hello" | awk '/requests in/ {print $1}')
  pkill -TERM -P "$spid" || true; wait "$spid" 2>/dev/null || true
  python3 - "$work/$m.strace" "$m" "$reqs" <<'PY'
import sys
path, model, reqs = sys.argv[1], sys.argv[2], int(sys.argv[3] or 0)
rows = []
for line in open(path):
    parts = line.split()
    if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] not in ("total",):
        calls = int(parts[3]); name = parts[-1]
        rows.append((calls, name))
total = sum(c for c, _ in rows)
per = lambda c: c / reqs if reqs else 0
top = ", ".join(f"{n} {per(c):.2f}" for c, n in sorted(rows, reverse=True) if per(c) >= 0.01)
print(f"| {model} | {reqs} | {per(total):.2f} | {top} |")
PY
done
