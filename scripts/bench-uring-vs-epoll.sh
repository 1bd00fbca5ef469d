#!/usr/bin/env bash
# uring-server against epoll-server on /hello keep-alive, at 50 and at 500
# connections, both driven by the same wrk command, alternating A B A B …
# in one run so both see the same machine; then the system calls one
# request costs each of them under strace.
#
#   scripts/bench-uring-vs-epoll.sh [ROUNDS] [SECONDS] [-- extra uring-server flags]
#
# The A/B skeleton is scripts/lib.sh's (ab_run): servers on CPU 1, wrk on
# CPU 0; per round and as medians, requests/s, the server's CPU µs per
# request (/proc, all threads) and wrk's own CPU, then the ratio
# uring-server / epoll-server at each connection count.
# Then system calls per request under strace (batching changes): strace
# -f -c attached during a 3 s wrk run, its counts divided by wrk's
# requests. strace slows every system call, so the servers batch
# differently than without it (epoll-server pays it on 2 calls per request,
# uring-server on a share of one enter): read these counts as the shape of
# each model's cost, not its speed.
# Needs: wrk, strace (scripts/install-peers.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
lib_init bench-uring-vs-epoll

rounds=${1:-3}
secs=${2:-5}
shift $(($# < 2 ? $# : 2))
[ "${1:-}" = "--" ] && shift
need_tools wrk strace taskset
cargo build --release -q -p iomodels-servers

start_server epoll-server target/release/epoll-server
epid=$SERVER_PID eaddr=$SERVER_ADDR
start_server uring-server target/release/uring-server "$@"
upid=$SERVER_PID uaddr=$SERVER_ADDR

echo "wrk -t1 -c50|500 -d${secs}s /hello keep-alive (uring-server flags: ${*:-none})"
for c in 50 500; do
  ab_add "epoll-server c=$c" "$epid" wrk -t1 -c$c -d"${secs}s" "http://$eaddr/hello"
  ab_add "uring-server c=$c" "$upid" wrk -t1 -c$c -d"${secs}s" "http://$uaddr/hello"
done
ab_run "$rounds"

# strace_one NAME ADDR PID CONNS: strace -f -c attached to PID while wrk runs.
strace_one() {
  local name=$1 addr=$2 pid=$3 conns=$4 spid out req calls log="$WORK/strace.$1.$4.txt"
  # strace says "Process N attached" once it follows the server (on CPU 1
  # with it, so wrk keeps CPU 0).
  start_process "strace-$name-$conns" ' attached' strace -f -c -o "$log" -p "$pid"
  spid=$SERVER_PID
  out=$(taskset -c "$GEN_CPU" wrk -t1 -c"$conns" -d3s "http://$addr/hello")
  kill -INT "$spid"
  wait "$spid" 2>/dev/null || true
  req=$(awk '/ requests in / {print $1}' <<<"$out")
  calls=$(awk '$NF == "total" {print $4}' "$log")
  printf '%-13s c=%-4s %9s requests under strace, %9s system calls: %6.3f per request\n' \
    "$name" "$conns" "$req" "$calls" "$(awk -v c="$calls" -v n="$req" 'BEGIN{print c/n}')"
  awk -v n="$req" 'NR > 2 && $NF != "total" && $NF !~ /^-/ && NF >= 5 {printf "    %-16s %9d  %6.3f per request\n", $NF, $4, $4/n}' \
    "$log" | sort -k2 -n -r | head -6
}
echo
echo "system calls per request under strace (batching changes): strace -f -c attached during wrk -t1 -d3s"
for c in 50 500; do
  strace_one epoll-server "$eaddr" "$epid" "$c"
  strace_one uring-server "$uaddr" "$upid" "$c"
done
