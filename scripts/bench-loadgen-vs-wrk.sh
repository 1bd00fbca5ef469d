#!/usr/bin/env bash
# loadgen against wrk, both driving the same nginx (worker_processes 1,
# `return 200 "Hello, World!"`) with the same command line, alternating
# wrk loadgen wrk loadgen … in one run so both see the same machine.
#
#   scripts/bench-loadgen-vs-wrk.sh [ROUNDS] [SECONDS] [CONNECTIONS]
#
# The A/B skeleton is scripts/lib.sh's (ab_run): nginx on CPU 1, the
# generator on CPU 0; per round and as medians, requests/s, nginx's CPU µs
# per request and the generator's own CPU (user+sys) per request, then the
# ratios loadgen / wrk. Goal: loadgen reaches at least wrk's requests/s
# using no more CPU per request.
# Needs nginx and wrk (scripts/install-peers.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
lib_init bench-loadgen-vs-wrk

rounds=${1:-3}
secs=${2:-5}
conns=${3:-50}
need_tools nginx wrk taskset
cargo build --release -q -p loadgen

start_nginx_hello "$(free_port)"
url="http://$SERVER_ADDR/hello"
echo "-t1 -c$conns -d${secs}s $url (nginx, 1 worker)"
ab_add wrk "$SERVER_PID" wrk -t1 -c"$conns" -d"${secs}s" "$url"
ab_add loadgen "$SERVER_PID" target/release/loadgen -t1 -c"$conns" -d"${secs}s" "$url"
ab_run "$rounds"
