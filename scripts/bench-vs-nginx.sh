#!/usr/bin/env bash
# epoll-server against nginx (worker_processes 1, `return 200` of the same
# 13 bytes) on /hello keep-alive, both driven by the same wrk command,
# alternating A B A B … in one run so both see the same machine.
#
#   scripts/bench-vs-nginx.sh [ROUNDS] [SECONDS] [CONNECTIONS] [-- extra epoll-server flags]
#
# The servers run on CPU 1 and wrk on CPU 0 (taskset), so neither migrates
# and the two cores of a small machine are split the same way for both.
#
# Prints, per round and as medians: requests/s, the server's CPU µs per
# request (from /proc/PID/stat, whole process tree), and wrk's own CPU
# (user+sys seconds), then the ratio epoll-server / nginx.
# Needs: nginx (nginx-light), wrk; run scripts/install-peers.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${1:-3}
secs=${2:-5}
conns=${3:-50}
shift $(( $# < 3 ? $# : 3 ))
[ "${1:-}" = "--" ] && shift
extra=("$@")

for tool in nginx wrk; do
  command -v "$tool" >/dev/null || { echo "bench-vs-nginx: $tool is not installed (scripts/install-peers.sh)" >&2; exit 2; }
done

cargo build --release -q -p iomodels-servers
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT

. scripts/lib.sh
nport=$(free_port)
start_nginx_hello "$work" "$nport"

taskset -c 1 ./target/release/epoll-server --listen 127.0.0.1:0 "${extra[@]}" > "$work/epoll.out" &
epid=$!
for _ in $(seq 50); do grep -q "listening on" "$work/epoll.out" 2>/dev/null && break; sleep 0.1; done
eport=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$work/epoll.out")

# CPU ticks (user+sys) of a process and all its threads, and of its children.
tree_ticks() {
  local total=0 p
  for p in "$@"; do
    total=$(( total + $(awk '{print $14+$15}' "/proc/$p/stat") ))
  done
  echo "$total"
}
hz=$(getconf CLK_TCK)
nginx_pids() { pgrep -f "nginx: (master|worker)" | tr '\n' ' '; }

run_one() { # name port pids...
  local name=$1 port=$2; shift 2
  local before after out req rps wcpu
  before=$(tree_ticks "$@")
  out=$( { TIMEFORMAT='%U %S'; time taskset -c 0 wrk -t1 -c"$conns" -d"${secs}s" "http://127.0.0.1:$port/hello" ; } 2>&1 )
  after=$(tree_ticks "$@")
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  req=$(awk '/requests in/ {print $1}' <<<"$out")
  wcpu=$(tail -1 <<<"$out" | awk '{printf "%.2f", $1+$2}')
  local us_per_req
  us_per_req=$(awk -v t=$((after-before)) -v hz="$hz" -v n="$req" 'BEGIN{printf "%.2f", t/hz*1e6/n}')
  printf '%-13s %12s req/s   server %6s us/req   wrk cpu %5ss of %ss\n' "$name" "$rps" "$us_per_req" "$wcpu" "$secs"
  echo "$name $rps $us_per_req" >> "$work/results"
}

echo "wrk -t1 -c$conns -d${secs}s /hello keep-alive, $rounds rounds alternating (epoll-server flags: ${extra[*]:-none})"
for r in $(seq "$rounds"); do
  run_one nginx "$nport" $(nginx_pids)
  run_one epoll-server "$eport" "$epid"
done

python3 - "$work/results" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
med = lambda name, i: statistics.median(float(r[i]) for r in rows if r[0] == name)
n, e = med("nginx", 1), med("epoll-server", 1)
nc, ec = med("nginx", 2), med("epoll-server", 2)
print(f"median: nginx {n:.0f} req/s ({nc:.2f} us/req), epoll-server {e:.0f} req/s ({ec:.2f} us/req)")
print(f"ratio epoll-server/nginx: {e/n:.3f} requests/s, {ec/nc:.3f} CPU per request")
EOF
