#!/usr/bin/env bash
# epoll-server against nginx (worker_processes 1, `return 200` of the same
# 13 bytes) on /hello keep-alive, both driven by the same wrk command,
# alternating A B A B … in one run so both see the same machine.
#
#   scripts/bench-vs-nginx.sh [ROUNDS] [SECONDS] [CONNECTIONS] [-- extra epoll-server flags]
#
# The A/B skeleton is scripts/lib.sh's (ab_run): servers on CPU 1, wrk on
# CPU 0; per round and as medians, requests/s, the server's CPU µs per
# request (/proc, whole process tree) and wrk's own CPU, then the ratio
# epoll-server / nginx.
# Needs: nginx (nginx-light), wrk; run scripts/install-peers.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
lib_init bench-vs-nginx

rounds=${1:-3}
secs=${2:-5}
conns=${3:-50}
shift $(($# < 3 ? $# : 3))
[ "${1:-}" = "--" ] && shift
need_tools nginx wrk taskset
cargo build --release -q -p iomodels-servers

start_nginx_hello "$(free_port)"
ab_add nginx "$SERVER_PID" wrk -t1 -c"$conns" -d"${secs}s" "http://$SERVER_ADDR/hello"
start_server epoll-server target/release/epoll-server "$@"
ab_add epoll-server "$SERVER_PID" wrk -t1 -c"$conns" -d"${secs}s" "http://$SERVER_ADDR/hello"

echo "wrk -t1 -c$conns -d${secs}s /hello keep-alive (epoll-server flags: ${*:-none})"
ab_run "$rounds"
