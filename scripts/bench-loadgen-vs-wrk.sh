#!/usr/bin/env bash
# loadgen against wrk, both driving the same nginx (worker_processes 1,
# `return 200 "Hello, World!"`) with the same command line, alternating
# wrk loadgen wrk loadgen … in one run so both see the same machine.
#
#   scripts/bench-loadgen-vs-wrk.sh [ROUNDS] [SECONDS] [CONNECTIONS]
#
# nginx runs on CPU 1 and the generator on CPU 0 (taskset), so on a small
# machine each has a core and neither migrates.
#
# Prints, per round and as medians: requests/s and the generator's own CPU
# (user+sys, from the shell's `time`) per request, then the ratios
# loadgen / wrk. Goal: loadgen reaches at least wrk's requests/s using no
# more CPU per request. Needs nginx and wrk (scripts/install-peers.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${1:-3}
secs=${2:-5}
conns=${3:-50}

for tool in nginx wrk; do
  command -v "$tool" >/dev/null || { echo "bench-loadgen-vs-wrk: $tool is not installed (scripts/install-peers.sh)" >&2; exit 2; }
done

cargo build --release -q -p loadgen
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT

. scripts/lib.sh
port=$(free_port)
start_nginx_hello "$work" "$port"

url="http://127.0.0.1:$port/hello"
run_one() { # name command...
  local name=$1; shift
  local out rps req cpu us
  out=$( { TIMEFORMAT='%U %S'; time taskset -c 0 "$@" ; } 2>&1 )
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  req=$(awk '/requests in/ {print $1}' <<<"$out")
  cpu=$(tail -1 <<<"$out" | awk '{printf "%.2f", $1+$2}')
  us=$(awk -v c="$cpu" -v n="$req" 'BEGIN{printf "%.3f", c*1e6/n}')
  printf '%-8s %12s req/s   generator cpu %5ss = %6s us/req\n' "$name" "$rps" "$cpu" "$us"
  echo "$name $rps $us" >> "$work/results"
}

echo "-t1 -c$conns -d${secs}s $url (nginx, 1 worker), $rounds rounds alternating"
for _ in $(seq "$rounds"); do
  run_one wrk wrk -t1 -c"$conns" -d"${secs}s" "$url"
  run_one loadgen ./target/release/loadgen -t1 -c"$conns" -d"${secs}s" "$url"
done

python3 - "$work/results" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
med = lambda name, i: statistics.median(float(r[i]) for r in rows if r[0] == name)
w, l = med("wrk", 1), med("loadgen", 1)
wc, lc = med("wrk", 2), med("loadgen", 2)
print(f"median: wrk {w:.0f} req/s ({wc:.3f} us/req), loadgen {l:.0f} req/s ({lc:.3f} us/req)")
print(f"ratio loadgen/wrk: {l/w:.3f} requests/s, {lc/wc:.3f} CPU per request")
PY
