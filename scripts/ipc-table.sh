#!/usr/bin/env bash
# The IPC table of docs/ipc.md: runs `cargo bench --bench ipc` (criterion;
# servers/benches/ipc.rs) and prints one markdown row per method from
# criterion's medians (target/criterion/<group>/<method>/<size>/new): the
# whole bench IPC_ROUNDS times (default 3), so every method meets the
# machine's changing load in every round, and per case the median of the
# rounds' medians (on a shared machine one round can be off by 2×).
#
#   scripts/ipc-table.sh [--no-run] [-- criterion args]
#
# Both processes run where this script's affinity lets them: run it as
# `taskset -c 1 scripts/ipc-table.sh` for one core (every hop a context
# switch on that core), or with IOMODELS_IPC_CPUS=0,1 for the parent on
# CPU 0 and the child on CPU 1. IOMODELS_IPC_CLOCK=cpu: the CPU time of
# both processes instead of wall time (servers/benches/ipc.rs). Needs: jq.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
lib_init ipc-table
need_tools jq
run=1
if [ "${1:-}" = "--no-run" ]; then run=0; shift; fi
[ "${1:-}" = "--" ] && shift
rounds=${IPC_ROUNDS:-3}
dir=target/criterion
# Each round's medians, one file per round: "group/method/size ns".
if [ $run = 1 ]; then
  echo "$rounds rounds; load average $(cut -d' ' -f1-3 /proc/loadavg); affinity $(taskset -pc $$ | sed 's/.*: //'); IOMODELS_IPC_CPUS=${IOMODELS_IPC_CPUS:-unset} IOMODELS_IPC_CLOCK=${IOMODELS_IPC_CLOCK:-wall}" >&2
  rm -f "$dir"/ipc-round-*.txt
  for r in $(seq "$rounds"); do
    nice -n 10 cargo bench -q -p iomodels-servers --bench ipc -- --noplot "$@" 2>&1 | grep -E '^skipping' >&2 || true
    for f in "$dir"/{roundtrip,throughput}/*/*/new/estimates.json; do
      id=${f#"$dir"/}
      echo "${id%/new/estimates.json} $(jq '.median.point_estimate' "$f")"
    done >"$dir/ipc-round-$r.txt"
    echo "round $r done; load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  done
fi
# The median over the rounds of one case, in ns ("" if never measured).
median() {
  cat "$dir"/ipc-round-*.txt 2>/dev/null | awk -v id="$1" '$1 == id { a[++n] = $2 }
    END {
      if (!n) exit
      for (i = 2; i <= n; i++) { x = a[i]; for (j = i - 1; j >= 1 && a[j] > x; j--) a[j + 1] = a[j]; a[j + 1] = x }
      print n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }'
}
echo "clock: ${IOMODELS_IPC_CLOCK:-wall}; per case the median of $(ls "$dir"/ipc-round-*.txt | wc -l) rounds"
echo
echo "| method | round trip 64 B (µs) | round trip 4 KiB (µs) | one way 64 B (k msg/s) | one way 4 KiB (MB/s) |"
echo "|---|---:|---:|---:|---:|"
for m in pipe fifo unix-stream unix-dgram unix-seqpacket unix-socket tcp-loopback posix-mq sysv-msg shm-futex shm-eventfd shm-sem; do
  awk -v m="$m" -v a="$(median roundtrip/$m/64)" -v b="$(median roundtrip/$m/4096)" \
    -v c="$(median throughput/$m/64)" -v d="$(median throughput/$m/4096)" '
    function f(x, fmt) { return x == "" ? "skipped" : sprintf(fmt, x) }
    BEGIN {
      printf "| %s | %s | %s | %s | %s |\n", m, f(a / 1000, "%.1f"), f(b / 1000, "%.1f"),
        (c == "" ? "skipped" : sprintf("%.0f", 1e6 / c)), (d == "" ? "skipped" : sprintf("%.0f", 4096 * 1e3 / d))
    }'
done
