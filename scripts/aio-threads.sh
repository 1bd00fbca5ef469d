#!/usr/bin/env bash
# What glibc's POSIX AIO does underneath aio-server, without strace: the
# threads it creates per request. aio-server runs alone in a new PID
# namespace (unshare), where thread ids come from a counter only it uses,
# so the namespace's last id after the load, minus the one before, is the
# number of threads (and processes) created meanwhile. The load generator
# runs outside it, on the other CPU.
#
#   scripts/aio-threads.sh [SECONDS] [CONNECTIONS] [AIO-SERVER FLAGS...]
#
# Prints requests, threads created, threads created per request, and the
# threads alive at the end of the load. Needs root (unshare -p) and
# util-linux's unshare. Context switches per request, against
# uring-server: `iomodels run --models aio,uring --scenarios hello`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
lib_init aio-threads

secs=${1:-5}
conns=${2:-10}
shift $(($# < 2 ? $# : 2))
need_tools unshare taskset
cargo build --release -q -p iomodels-servers -p loadgen
fifo=$WORK/go
mkfifo "$fifo"
# Inside the namespace: the server, then (when told) the last id used.
inner='target/release/aio-server --listen 127.0.0.1:0 "$@" & s=$!
read -r _ < "$0"; cat /proc/sys/kernel/ns_last_pid; grep Threads /proc/$s/status
read -r _ < "$0"; cat /proc/sys/kernel/ns_last_pid; grep Threads /proc/$s/status
kill $s; wait $s'
taskset -c "$SERVER_CPU" unshare -pf --mount-proc bash -c "$inner" "$fifo" "$@" >"$WORK/ns.log" 2>&1 &
ns=$!
on_exit "kill $ns 2>/dev/null"
for _ in $(seq 100); do grep -q 'listening on' "$WORK/ns.log" && break; sleep 0.1; done
addr=$(awk '/listening on/ {print $3; exit}' "$WORK/ns.log")
[ -n "$addr" ] || die "aio-server did not start: $(tail -2 "$WORK/ns.log")"
echo go >"$fifo"
for _ in $(seq 50); do [ "$(grep -c Threads "$WORK/ns.log")" -ge 1 ] && break; sleep 0.1; done
out=$(taskset -c "$GEN_CPU" target/release/loadgen -t1 -c"$conns" -d"${secs}s" "http://$addr/hello")
echo go >"$fifo"
wait $ns || true
req=$(awk '/ requests in / {print $1}' <<<"$out")
awk -v req="$req" '
  /^[0-9]+$/ { id[++n] = $1 }
  /^Threads/ { thr = $2 }
  END {
    made = id[2] - id[1]
    printf "aio-server %s: %d requests, %d threads created (%.3f per request), %d threads alive at the end\n",
      ENVIRON["FLAGS"], req, made, made / req, thr
  }' FLAGS="$*" "$WORK/ns.log"
grep -E 'Requests/sec' <<<"$out"
