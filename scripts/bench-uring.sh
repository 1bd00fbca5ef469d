#!/usr/bin/env bash
# uring-server against itself with other flags (issue 18: what earns its
# place): two servers, A and B, on CPU 1, loadgen -t1 (its default I/O
# backend) on CPU 0, alternating rounds (A B A B …), medians and the ratio
# B / A of requests/s, server CPU per request (lib.sh's tree_ticks over the
# run) and generator CPU per request, for each case.
#
#   scripts/bench-uring.sh "FLAGS A" "FLAGS B" [ROUNDS] [SECONDS] [CASE...]
#
# CASE (default: c50 c500 new50): c50, c500: /hello keep-alive at 50 or
# 500 connections; new50: /hello, a new connection per request, 50 at a
# time; bytes64k, bytes1m: /bytes?n=65536 or 1000000, keep-alive, 50
# connections. Example: scripts/bench-uring.sh "--no-direct" "" 4 5
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
lib_init bench-uring

[ $# -ge 2 ] || die "usage: scripts/bench-uring.sh \"FLAGS A\" \"FLAGS B\" [ROUNDS] [SECONDS] [CASE...]"
flags_a=$1 flags_b=$2
rounds=${3:-4}
secs=${4:-5}
shift $(($# < 4 ? $# : 4))
cases=("$@")
[ ${#cases[@]} -gt 0 ] || cases=(c50 c500 new50)
need_tools taskset
nice -n 10 cargo build --release -q -p iomodels-servers -p loadgen

# shellcheck disable=SC2086
start_server "uring A" target/release/uring-server --workers 1 $flags_a
apid=$SERVER_PID aaddr=$SERVER_ADDR
# shellcheck disable=SC2086
start_server "uring B" target/release/uring-server --workers 1 $flags_b
bpid=$SERVER_PID baddr=$SERVER_ADDR

lg() { echo target/release/loadgen -t1 -d"${secs}s" "$@"; }
for c in "${cases[@]}"; do
  case $c in
  c50) args="-c50" path=/hello ;;
  c500) args="-c500" path=/hello ;;
  new50) args="-c50 --new-conn" path=/hello ;;
  bytes64k) args="-c50" path="/bytes?n=65536" ;;
  bytes1m) args="-c50" path="/bytes?n=1000000" ;;
  *) die "unknown case $c (c50, c500, new50, bytes64k, bytes1m)" ;;
  esac
  echo "== $c: A = uring-server $flags_a, B = uring-server $flags_b"
  # shellcheck disable=SC2046,SC2086
  ab_add "A $c" "$apid" $(lg $args "http://$aaddr$path")
  # shellcheck disable=SC2046,SC2086
  ab_add "B $c" "$bpid" $(lg $args "http://$baddr$path")
  ab_run "$rounds"
  ab_reset
done
