#!/usr/bin/env bash
# swoole-server's variants against each other in one run, alternating
# A B A B … (scripts/lib.sh's ab_run: servers on CPU 1, the load generator
# on CPU 0; requests/s, the server's CPU µs per request from /proc, the
# generator's own CPU, then the ratio of each pair, 2nd over 1st):
#
#   1. --ipc stream against --ipc dgram (process mode, /hello): what
#      message pairs save over framed stream pairs;
#   2. --mode process against --mode base on /hello (base saves the hop),
#      /cpu?n=20000 and /wait?us=10000 (both block the process that runs
#      them);
#   3. a mix, 9 /hello to 1 /wait?us=10000 on every connection: process
#      mode with --dispatch idle (a free worker takes the next request)
#      against base mode (a connection waits for its own worker).
#
#   scripts/bench-swoole-modes.sh [ROUNDS] [SECONDS] [CONNECTIONS]
#
# Process mode runs 1 reactor thread and 2 workers, base mode 2 workers:
# the same 2 processes that run requests. Needs: taskset.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
lib_init bench-swoole-modes

rounds=${1:-3}
secs=${2:-5}
conns=${3:-16}
need_tools taskset
cargo build --release -q -p iomodels-servers -p loadgen
bin=target/release/swoole-server

start_server stream $bin --reactors 1 --workers 2 --ipc stream
spid=$SERVER_PID saddr=$SERVER_ADDR
start_server dgram $bin --reactors 1 --workers 2 --ipc dgram
dpid=$SERVER_PID daddr=$SERVER_ADDR
start_server idle $bin --reactors 1 --workers 2 --dispatch idle
ipid=$SERVER_PID iaddr=$SERVER_ADDR
start_server base $bin --mode base --workers 2
bpid=$SERVER_PID baddr=$SERVER_ADDR

lg=(target/release/loadgen -t1 -c"$conns" -d"${secs}s" --latency)
mix=(--route /hello:9 --route '/wait?us=10000:1')
echo "loadgen -t1 -c$conns -d${secs}s; swoole-server process: --reactors 1 --workers 2, base: --workers 2"
ab_add "stream /hello" "$spid" "${lg[@]}" "http://$saddr/hello"
ab_add "dgram /hello" "$dpid" "${lg[@]}" "http://$daddr/hello"
ab_add "process /hello" "$spid" "${lg[@]}" "http://$saddr/hello"
ab_add "base /hello" "$bpid" "${lg[@]}" "http://$baddr/hello"
ab_add "process /cpu" "$spid" "${lg[@]}" "http://$saddr/cpu?n=20000"
ab_add "base /cpu" "$bpid" "${lg[@]}" "http://$baddr/cpu?n=20000"
ab_add "process /wait" "$spid" "${lg[@]}" "http://$saddr/wait?us=10000"
ab_add "base /wait" "$bpid" "${lg[@]}" "http://$baddr/wait?us=10000"
ab_add "process-idle mix" "$ipid" "${lg[@]}" "${mix[@]}" "http://$iaddr/hello"
ab_add "base mix" "$bpid" "${lg[@]}" "${mix[@]}" "http://$baddr/hello"
ab_run "$rounds"

# The mix's tail: one more run each, its latency percentiles (the /hello
# requests that waited behind a /wait are the tail).
for pair in "process-idle $iaddr" "base $baddr"; do
  set -- $pair
  echo "$1 mix latency:"
  taskset -c "$GEN_CPU" "${lg[@]}" "${mix[@]}" "http://$2/hello" | awk '$1 ~ /^(50|90|99|99.9)%$/ {printf "  %s %s", $1, $2} END {print ""}'
done
