#!/usr/bin/env bash
# uring-server against epoll-server on /hello keep-alive, at 50 and at 500
# connections, both driven by the same wrk command, alternating A B A B …
# in one run so both see the same machine; then the system calls one
# request costs each of them (strace -c -f attached for a short wrk run).
#
#   scripts/bench-uring-vs-epoll.sh [ROUNDS] [SECONDS] [-- extra uring-server flags]
#
# The servers run on CPU 1 and wrk on CPU 0 (taskset), so neither migrates
# and the two cores of a small machine are split the same way for both.
#
# Prints, per round and as medians: requests/s, the server's CPU µs per
# request (from /proc/PID/stat, all threads), and wrk's own CPU (user+sys
# seconds), then the ratio uring-server / epoll-server; then system calls
# per request, from strace's counts divided by wrk's requests (strace slows
# both servers a lot: these counts are for the ratio, not the speed).
# Needs: wrk, strace (scripts/install-peers.sh installs wrk).
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${1:-3}
secs=${2:-5}
shift $(( $# < 2 ? $# : 2 ))
[ "${1:-}" = "--" ] && shift
extra=("$@")

for tool in wrk strace; do
  command -v "$tool" >/dev/null || { echo "bench-uring-vs-epoll: $tool is not installed" >&2; exit 2; }
done

cargo build --release -q -p iomodels-servers
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT

# Waits for a server's ready line and prints its port.
port_of() {
  for _ in $(seq 50); do grep -q "listening on" "$work/$1.out" 2>/dev/null && break; sleep 0.1; done
  grep -q "listening on" "$work/$1.out" || { echo "bench-uring-vs-epoll: $1 did not start" >&2; exit 1; }
  sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$work/$1.out"
}
taskset -c 1 ./target/release/epoll-server --listen 127.0.0.1:0 > "$work/epoll.out" &
epid=$!
taskset -c 1 ./target/release/uring-server --listen 127.0.0.1:0 "${extra[@]}" > "$work/uring.out" &
upid=$!
eport=$(port_of epoll)
uport=$(port_of uring)
[ -n "$eport" ] && [ -n "$uport" ] || exit 1

# CPU ticks (user+sys, all threads) of a process.
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

run_one() { # name port pid conns
  local name=$1 port=$2 pid=$3 conns=$4
  local before after out req rps wcpu us_per_req
  before=$(ticks "$pid")
  out=$( { TIMEFORMAT='%U %S'; time taskset -c 0 wrk -t1 -c"$conns" -d"${secs}s" "http://127.0.0.1:$port/hello" ; } 2>&1 )
  after=$(ticks "$pid")
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  req=$(awk '/requests in/ {print $1}' <<<"$out")
  wcpu=$(tail -1 <<<"$out" | awk '{printf "%.2f", $1+$2}')
  us_per_req=$(awk -v t=$((after-before)) -v hz="$hz" -v n="$req" 'BEGIN{printf "%.2f", t/hz*1e6/n}')
  printf '%-13s c=%-4s %12s req/s   server %6s us/req   wrk cpu %5ss of %ss\n' "$name" "$conns" "$rps" "$us_per_req" "$wcpu" "$secs"
  echo "$name $conns $rps $us_per_req $wcpu" >> "$work/results"
}

echo "wrk -t1 -c50|500 -d${secs}s /hello keep-alive, $rounds rounds alternating (uring-server flags: ${extra[*]:-none})"
for r in $(seq "$rounds"); do
  for conns in 50 500; do
    run_one epoll-server "$eport" "$epid" "$conns"
    run_one uring-server "$uport" "$upid" "$conns"
  done
done

python3 - "$work/results" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
def med(name, conns, i):
    return statistics.median(float(r[i]) for r in rows if r[0] == name and r[1] == conns)
for conns in ("50", "500"):
    e, u = med("epoll-server", conns, 2), med("uring-server", conns, 2)
    ec, uc = med("epoll-server", conns, 3), med("uring-server", conns, 3)
    ew, uw = med("epoll-server", conns, 4), med("uring-server", conns, 4)
    print(f"c={conns} median: epoll-server {e:.0f} req/s ({ec:.2f} us/req, wrk cpu {ew:.2f}s), "
          f"uring-server {u:.0f} req/s ({uc:.2f} us/req, wrk cpu {uw:.2f}s)")
    print(f"c={conns} ratio uring/epoll: {u/e:.3f} requests/s, {uc/ec:.3f} server CPU per request")
EOF

# System calls per request: strace attached (all threads) for a short run.
strace_one() { # name port pid conns
  local name=$1 port=$2 pid=$3 conns=$4 spid out req calls
  strace -f -c -o "$work/strace.$name.$conns" -p "$pid" 2>/dev/null &
  spid=$!
  sleep 1
  out=$(taskset -c 0 wrk -t1 -c"$conns" -d3s "http://127.0.0.1:$port/hello")
  kill -INT "$spid"; wait "$spid" 2>/dev/null || true
  req=$(awk '/requests in/ {print $1}' <<<"$out")
  calls=$(awk '$NF == "total" {print $4}' "$work/strace.$name.$conns")
  printf '%-13s c=%-4s %9s requests under strace, %9s system calls: %6.3f per request\n' \
    "$name" "$conns" "$req" "$calls" "$(awk -v c="$calls" -v n="$req" 'BEGIN{print c/n}')"
  awk -v n="$req" 'NR > 2 && $NF != "total" && $NF !~ /^-/ && NF >= 5 {printf "    %-16s %9d  %6.3f per request\n", $NF, $4, $4/n}' \
    "$work/strace.$name.$conns" | sort -k2 -n -r | head -6
}
echo
echo "system calls per request (strace -f -c attached during wrk -t1 -d3s):"
for conns in 50 500; do
  strace_one epoll-server "$eport" "$epid" "$conns"
  strace_one uring-server "$uport" "$upid" "$conns"
done
