#!/usr/bin/env bash
# The CPU one /hello request costs, side by side, in one run: issue 18's
# table. Servers: nginx (1 worker, `return 200`), epoll-server and
# uring-server (one thread each) on CPU 1; the generator on CPU 0;
# keep-alive at 50 and at 500 connections; every contestant in turn, ROUNDS
# times (A B C A B C …), medians. Then the generators themselves: wrk -t1
# -c50 against loadgen on both of its I/O backends, on the same nginx.
#
#   scripts/bench-efficiency.sh [ROUNDS] [SECONDS]      (default 4 rounds of 5 s)
#
# Server CPU per request: user + system ticks of the server's process tree
# (/proc/PID/stat of nginx's master and worker, of our one-process servers;
# lib.sh's tree_ticks) over the run, divided by the requests the generator
# counted. Generator CPU per request: the generator's user + system time
# (the shell's `time`) over the same requests. GEN (from lib.sh) marks a run
# where the generator used >= 90 % of its core.
# Then where each figure's CPU goes: user space against the kernel (on
# loopback the kernel part holds the TCP work of both directions: a send
# runs the receiving socket's side too), which bounds what any change in
# user space can still save.
# GENERATOR=loadgen drives the server table with loadgen (its default I/O
# backend) instead of wrk -t1. Extra flags for uring-server: URING_FLAGS.
# The targets are printed with each ratio; the machine's load average is
# printed first and last (a shared machine makes every figure noisy: read
# the ratios, which alternate rounds make fair, not the absolute values).
# Needs nginx and wrk (scripts/install-peers.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
lib_init bench-efficiency
# Three contestants per group: the ratios are in the table at the end.
export AB_PAIRS=0

rounds=${1:-4}
secs=${2:-5}
generator=${GENERATOR:-wrk}
need_tools nginx wrk taskset
nice -n 10 cargo build --release -q -p iomodels-servers -p loadgen

start_nginx_hello "$(free_port)"
npid=$SERVER_PID naddr=$SERVER_ADDR
start_server epoll-server target/release/epoll-server --workers 1
epid=$SERVER_PID eaddr=$SERVER_ADDR
# shellcheck disable=SC2086
start_server uring-server target/release/uring-server --workers 1 ${URING_FLAGS:-}
upid=$SERVER_PID uaddr=$SERVER_ADDR

# gen CONNS URL: the server table's generator command.
gen() {
  case $generator in
  wrk) echo wrk -t1 -c"$1" -d"${secs}s" "$2" ;;
  loadgen) echo target/release/loadgen -t1 -c"$1" -d"${secs}s" "$2" ;;
  *) die "GENERATOR must be wrk or loadgen, not $generator" ;;
  esac
}

echo "== servers: /hello keep-alive, $generator -t1, ${secs}s runs; load average $(cut -d' ' -f1-3 /proc/loadavg)"
for c in 50 500; do
  # shellcheck disable=SC2046
  ab_add "nginx c=$c" "$npid" $(gen "$c" "http://$naddr/hello")
  # shellcheck disable=SC2046
  ab_add "epoll-server c=$c" "$epid" $(gen "$c" "http://$eaddr/hello")
  # shellcheck disable=SC2046
  ab_add "uring-server c=$c" "$upid" $(gen "$c" "http://$uaddr/hello")
done
ab_run "$rounds"
ab_reset

echo
echo "== generators: -t1 -c50 -d${secs}s on nginx /hello"
ab_add "wrk" "$npid" wrk -t1 -c50 -d"${secs}s" "http://$naddr/hello"
ab_add "loadgen --io uring" "$npid" target/release/loadgen --io uring -t1 -c50 -d"${secs}s" "http://$naddr/hello"
ab_add "loadgen --io epoll" "$npid" target/release/loadgen --io epoll -t1 -c50 -d"${secs}s" "http://$naddr/hello"
ab_run "$rounds"
ab_reset

# The table, from the medians ab_run wrote (name, then the medians of
# requests/s, server us/req, generator s, generator us/req, GEN, server
# user us/req, generator user us/req), and the targets.
echo
awk -F'\t' '
  { for (c = 2; c <= NF; c++) med[$1, c - 1] = $c }
  function s(n) { return med[n, 2] }   # server us/req
  function g(n) { return med[n, 4] }   # generator us/req
  function su(n) { return med[n, 6] }  # of which user space
  function gu(n) { return med[n, 7] }
  function check(what, x, target) {
    printf "  %-44s %6.3f  (target <= %.2f: %s)\n", what, x, target, x <= target ? "met" : "MISSED"
  }
  END {
    print "| server | 50 connections: us of server CPU per request (generator us/req) | 500 connections |"
    print "|---|---|---|"
    split("nginx epoll-server uring-server", m, " ")
    for (i = 1; i <= 3; i++) {
      printf "| %s |", m[i]
      for (c = 50; c <= 500; c += 450) {
        n = m[i] " c=" c
        printf " %.2f", s(n)
        if (i > 1) printf " (%.2fx nginx)", s(n) / s("nginx c=" c)
        printf " (gen %.2f) |", g(n)
      }
      printf "\n"
    }
    print ""
    print "| generator on nginx, -t1 -c50 | generator CPU us/req | nginx us/req | requests/s |"
    print "|---|---|---|---|"
    split("wrk|loadgen --io uring|loadgen --io epoll", q, "|")
    for (i = 1; i <= 3; i++)
      printf "| %s | %.2f | %.2f | %.0f |\n", q[i], g(q[i]), s(q[i]), med[q[i], 1]
    print ""
    print "Where one request'"'"'s CPU goes (medians, us per request; kernel = total - user):"
    print ""
    print "| run | server user | server kernel | generator user | generator kernel |"
    print "|---|---|---|---|---|"
    for (i = 1; i <= 3; i++)
      for (c = 50; c <= 500; c += 450) {
        n = m[i] " c=" c
        printf "| %s | %.2f | %.2f | %.2f | %.2f |\n", n, su(n), s(n) - su(n), gu(n), g(n) - gu(n)
      }
    for (i = 1; i <= 3; i++)
      printf "| %s on nginx | %.2f | %.2f | %.2f | %.2f |\n", q[i], su(q[i]), s(q[i]) - su(q[i]), gu(q[i]), g(q[i]) - gu(q[i])
    print ""
    print "targets (medians):"
    check("loadgen --io uring / wrk, generator CPU", g("loadgen --io uring") / g("wrk"), 0.6)
    check("uring-server / nginx at 50", s("uring-server c=50") / s("nginx c=50"), 0.8)
    check("uring-server / nginx at 500", s("uring-server c=500") / s("nginx c=500"), 0.75)
    check("epoll-server / nginx at 50", s("epoll-server c=50") / s("nginx c=50"), 0.85)
    check("uring-server / epoll-server at 50", s("uring-server c=50") / s("epoll-server c=50"), 0.9)
    check("uring-server / epoll-server at 500", s("uring-server c=500") / s("epoll-server c=500"), 0.9)
  }' "$WORK"/ab.medians.*
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
