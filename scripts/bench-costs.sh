#!/usr/bin/env bash
# What one request costs a server, for several servers side by side: CPU,
# read+write system calls and context switches per request, measured in
# one run with every server alternating within each round (A B C …,
# A B C …) so all see the same machine. Servers on CPU 1, the load
# generator (loadgen -t1) on CPU 0.
#
#   scripts/bench-costs.sh ROUNDS SECONDS 'LABEL:BINARY FLAGS' …
#   e.g. scripts/bench-costs.sh 3 2 'tokio:tokio-server --workers 1' epoll:epoll-server
#
# The loads, each at its connection count (LOADS overrides them, as
# 'NAME|ROUTE|CONNS …'):
#   /hello keep-alive at 50 and at 500 connections,
#   /wait?us=10000 at 200 connections (a parked timer),
#   /file?name=64k at 10 connections (the model's disk path).
# docs/models/tokio.md gives the command that measured its table.
#
# Per run, nothing that stops the server: its CPU µs per request (/proc:
# utime + stime, all threads, clock ticks); its system calls per request,
# counted by perf on the raw_syscalls and syscalls tracepoints (counting
# mode: the kernel adds 1 per call, the server is never stopped, unlike
# strace): all of them, reads (read, readv, pread64, recvfrom, recvmsg), writes
# (write, writev, sendto, sendmsg), waits (epoll_wait/epoll_pwait,
# io_uring_enter) and futex; and its context switches per request
# (voluntary + involuntary, summed over the live threads of /proc/PID/task).
# /proc/PID/io's syscr/syscw, the suite's r+w column, count only
# read/write-family calls: a server that uses recv/send, or a ring of
# requests, shows ~0 there, hence perf here. perf counts the threads that
# exist when it attaches (a blocking-pool worker born during a run is not
# counted; the context switches, from /proc, include it). Each run opens
# its connections inside the measured window (no warm-up): 500 accepts
# are spread over ~10^5 requests. The load generator's own CPU is printed
# beside it (GEN: ≥ 90 % of its core, the generator may have set the
# pace; compare CPU per request then). Then the medians per server and load.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
lib_init bench-costs

[ $# -ge 3 ] || die "usage: scripts/bench-costs.sh ROUNDS SECONDS 'LABEL:BINARY FLAGS' …"
rounds=$1
secs=$2
shift 2
servers=("$@")
read -r -a loads <<<"${LOADS:-hello|/hello|50 hello|/hello|500 wait|/wait?us=10000|200 file|/file?name=64k|10}"
need_tools taskset perf
cargo build --release -q -p iomodels-servers -p loadgen

declare -A pid addr
for s in "${servers[@]}"; do
  name=${s%%:*}
  read -r bin flags <<<"${s#*:}"
  # shellcheck disable=SC2086
  start_server "$name" "target/release/$bin" $flags
  pid[$name]=$SERVER_PID
  addr[$name]=$SERVER_ADDR
done

# snapshot PID: "ticks csw"
snapshot() {
  local p=$1 ticks csw
  ticks=$(tree_ticks "$p")
  csw=$(cat /proc/"$p"/task/*/status 2>/dev/null | awk '/ctxt_switches/ {n += $2} END {print n}')
  echo "$ticks $csw"
}

# The system calls perf counts, grouped: reads, writes, waits, futex.
events=raw_syscalls:sys_enter
for c in read readv pread64 recvfrom recvmsg write writev sendto sendmsg epoll_wait epoll_pwait io_uring_enter futex; do
  events+=,syscalls:sys_enter_$c
done

hz=$(getconf CLK_TCK)
results="$WORK/results"
echo "$rounds rounds of ${secs}s runs; servers on CPU $SERVER_CPU, loadgen -t1 on CPU $GEN_CPU; load average $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$rounds"); do
  for l in "${loads[@]}"; do
    IFS='|' read -r lname route conns <<<"$l"
    for s in "${servers[@]}"; do
      name=${s%%:*}
      p=${pid[$name]}
      read -r t0 c0 < <(snapshot "$p")
      taskset -c "$GEN_CPU" perf stat -x, -e "$events" -p "$p" -o "$WORK/perf.txt" &
      perf_pid=$!
      sleep 0.3 # perf has attached
      out=$({
        TIMEFORMAT='%U %S %R'
        time taskset -c "$GEN_CPU" target/release/loadgen -t1 -c"$conns" -d"${secs}s" "http://${addr[$name]}$route" 2>&1
      } 2>&1) || die "$name $route: loadgen failed: $(tail -2 <<<"$out" | paste -sd'|')"
      read -r t1 c1 < <(snapshot "$p")
      kill -INT "$perf_pid"
      wait "$perf_pid" || true
      # total reads writes waits futex
      read -r sys rd wr wt fx < <(awk -F, '
        $3 ~ /raw_syscalls/ { t = $1 }
        $3 ~ /_(read|readv|pread64|recvfrom|recvmsg)$/ { r += $1 }
        $3 ~ /_(write|writev|sendto|sendmsg)$/ { w += $1 }
        $3 ~ /_(epoll_wait|epoll_pwait|io_uring_enter)$/ { x += $1 }
        $3 ~ /_futex$/ { f += $1 }
        END { print t + 0, r + 0, w + 0, x + 0, f + 0 }' "$WORK/perf.txt")
      req=$(awk '/ requests in / {print $1}' <<<"$out")
      errs=$(awk '/^  Errors:/ {print $2}' <<<"$out")
      read -r gcpu gwall < <(tail -1 <<<"$out" | awk '{printf "%.2f %.2f\n", $1 + $2, $3}')
      awk -v r="$r" -v n="$name" -v l="$lname c=$conns" -v req="$req" -v secs="$secs" -v hz="$hz" \
        -v t=$((t1 - t0)) -v csw=$((c1 - c0)) -v sys="$sys" -v rd="$rd" -v wr="$wr" -v wt="$wt" -v fx="$fx" \
        -v gcpu="$gcpu" -v gwall="$gwall" -v errs="${errs:-0}" -v out="$results" 'BEGIN {
          cpu = t / hz * 1e6 / req; share = 100 * gcpu / gwall
          printf "round %s %-16s %-9s %7.0f req/s  CPU %6.2f us  sys %6.3f (rd %5.3f wr %5.3f wait %5.3f futex %5.3f)  csw %6.3f /req  gen %3.0f%%%s%s\n",
            r, l, n, req / secs, cpu, sys / req, rd / req, wr / req, wt / req, fx / req, csw / req, share,
            (share >= 90 ? " GEN" : ""), (errs > 0 ? "  " errs " errors" : "")
          printf "%s\t%s\t%f\t%f\t%f\t%f\t%f\t%f\t%f\t%f\n", l, n, req / secs, cpu, sys / req, rd / req, wr / req, wt / req, fx / req, csw / req >> out
        }'
    done
  done
done

echo
echo "medians over $rounds rounds:"
printf '%-16s %-9s %8s %8s %8s %8s %8s %8s %8s %8s\n' load server "req/s" "CPU us" "sys" reads writes waits futex csw
sort -t$'\t' -k1,1 -s "$results" | awk -F'\t' '
  function med(s,   a, n, i, j, x) {
    n = split(s, a, " ")
    for (i = 2; i <= n; i++) { x = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > x; j--) a[j + 1] = a[j]; a[j + 1] = x }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  { k = $1 "\t" $2; if (!(k in seen)) { seen[k] = 1; order[++m] = k }
    for (c = 3; c <= 10; c++) v[k, c] = v[k, c] " " $c }
  END { for (i = 1; i <= m; i++) { k = order[i]; split(k, f, "\t")
    printf "%-16s %-9s %8.0f %8.2f %8.3f %8.3f %8.3f %8.3f %8.3f %8.3f\n", f[1], f[2], med(v[k, 3]), med(v[k, 4]),
      med(v[k, 5]), med(v[k, 6]), med(v[k, 7]), med(v[k, 8]), med(v[k, 9]), med(v[k, 10]) } }'
