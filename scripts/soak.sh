#!/usr/bin/env bash
# Soak: N verified requests per model (loadgen -n; default 1,000,000) over
# a route mix, and the server's memory — RSS and PSS summed over its whole
# process tree, from /proc/PID/smaps_rollup — before the run, right after
# it, and at the end (its connections closed, idle for a few seconds), to
# catch slow leaks (and half-way, to tell a leak from a high-water mark).
# A benchmark script, not a test: it prints a Markdown table and exits 1
# if any run had an error.
#
#   scripts/soak.sh [-n N] [-c CONNS] [-p http|fcgi] [--settle S] [MODEL ...]
#   scripts/soak.sh                           # every model, 1,000,000 each
#   scripts/soak.sh -n 100000 epoll prefork   # two models, 100k each
#   scripts/soak.sh -p fcgi mio
#
# MODEL is a model name (epoll) or a server binary (epoll-server); each runs
# with the flags the conformance suite gives it (4 workers for the
# blocking pools). "before" is taken after a warm-up of N/100 requests, so
# lazily grown buffers and allocator arenas count as the baseline, not as a
# leak. fork-server serves one request per connection: it gets --new-conn.
# The server runs on CPU 1 and loadgen on CPU 0 when there are two CPUs.
set -euo pipefail
cd "$(dirname "$0")/.."

n=1000000
conns=32
protocol=http
settle=3
models=()
while [ $# -gt 0 ]; do
  case $1 in
    -n) n=$2; shift 2 ;;
    -c) conns=$2; shift 2 ;;
    -p|--protocol) protocol=$2; shift 2 ;;
    --settle) settle=$2; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "soak.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) models+=("${1%-server}"); shift ;;
  esac
done
case $protocol in http|fcgi) ;; *) echo "soak.sh: -p must be http or fcgi" >&2; exit 2 ;; esac
[ "$n" -ge 100 ] 2>/dev/null || { echo "soak.sh: -n must be a number of at least 100" >&2; exit 2; }
if [ ${#models[@]} -eq 0 ]; then
  models=(iterative fork prefork thread threadpool nonblocking select poll epoll sigio uring mio oneshot fpm swoole)
fi

# The flags each model runs with (as in servers/tests/util/models.rs).
flags_for() {
  case $1 in
    prefork|threadpool) echo "--workers 4" ;;
    fpm) echo "--pm static --max-children 4" ;;
    swoole) echo "--reactors 2 --workers 2" ;;
    mio) echo "--workers 2" ;;
    oneshot) echo "--workers 3" ;;
    *) echo "" ;;
  esac
}

for m in "${models[@]}"; do
  [ -n "$(flags_for "$m")" ] || case $m in
    iterative|fork|thread|nonblocking|select|poll|epoll|sigio|uring) ;;
    *) echo "soak.sh: unknown model '$m' (one of: iterative fork prefork thread threadpool nonblocking select poll epoll sigio uring mio oneshot fpm swoole)" >&2; exit 2 ;;
  esac
done

echo "building release binaries…" >&2
cargo build --release -q -p iomodels-servers -p loadgen
bin=target/release
pin_server=() pin_load=()
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  pin_server=(taskset -c 1) pin_load=(taskset -c 0)
fi

work=$(mktemp -d)
server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# mem PID: "RSS_KiB PSS_KiB" summed over the process and its descendants.
mem() {
  python3 - "$1" <<'PY'
import os, sys
def tree(p):
    out = [p]
    try:
        for t in os.listdir(f"/proc/{p}/task"):
            with open(f"/proc/{p}/task/{t}/children") as f:
                out += [c for k in f.read().split() for c in tree(int(k))]
    except FileNotFoundError:
        pass
    return out
rss = pss = 0
for p in set(tree(int(sys.argv[1]))):
    try:
        with open(f"/proc/{p}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"): rss += int(line.split()[1])
                if line.startswith("Pss:"): pss += int(line.split()[1])
    except FileNotFoundError:
        pass
print(rss, pss)
PY
}

# The route mix: small answers, CPU, a parked wait, a body large enough to
# stream (200 kB), a file, and an echo (POST, 4 KiB body); 12.6 kB per
# request on average, every body verified by loadgen.
routes=(--route /hello:16 --route '/cpu?n=200:2' --route '/wait?us=100:1'
        --route '/bytes?n=16384:2' --route '/bytes?n=200000:1'
        --route '/file?name=64k:1' --route /echo:1 --body-size 4096)

# mib KIB: the figure in MiB with one decimal.
mib() { python3 -c "print(f'{$1 / 1024:.1f}')"; }

rows=()
failed=0
for m in "${models[@]}"; do
  read -r -a flags <<< "$(flags_for "$m")"
  out=$work/$m.out
  "${pin_server[@]}" "$bin/$m-server" --listen 127.0.0.1:0 --protocol "$protocol" \
    --idle-timeout 60 "${flags[@]}" > "$out" 2> "$work/$m.err" &
  server_pid=$!
  for _ in $(seq 100); do grep -q "listening on" "$out" 2>/dev/null && break; sleep 0.05; done
  if ! grep -q "listening on" "$out"; then
    echo "soak.sh: $m-server did not start: $(head -1 "$work/$m.err")" >&2
    rows+=("| $m | $protocol | not started | | | | | | | | |")
    failed=1; server_pid=; continue
  fi
  addr=$(sed -n 's/^listening on //p' "$out")
  extra=()
  [ "$m" = fork ] && extra=(--new-conn)
  # A worker holds a keep-alive connection until it closes: a blocking
  # pool gets as many connections as it has workers (more would starve
  # into timeouts, which is that model's lesson, not a leak).
  c=$conns
  case $m in
    iterative) c=1 ;;
    prefork|threadpool|fpm) c=$(( conns < 4 ? conns : 4 )) ;;
  esac
  url="$protocol://$addr/hello"
  load() {
    "${pin_load[@]}" "$bin/loadgen" -t 1 -c "$c" -n "$1" --timeout 30s "${routes[@]}" \
      "${extra[@]}" --json "$2" "$url" > "$2.txt" 2>&1
  }
  echo "$m-server ($protocol): warm-up $((n / 100)), then $n requests…" >&2
  load $((n / 100)) "$work/$m.warm.json" || true
  sleep 1
  read -r rss0 pss0 <<< "$(mem "$server_pid")"
  start=$(date +%s.%N)
  status=ok
  # Two halves, with the memory between them: growth that goes on in
  # the second half is a leak; growth in the first half only is a
  # high-water mark (more large responses at once than the warm-up saw).
  load $((n / 2)) "$work/$m.1.json" || status="loadgen exit $?"
  read -r rssm pssm <<< "$(mem "$server_pid")"
  load $((n - n / 2)) "$work/$m.2.json" || status="loadgen exit $?"
  secs=$(python3 -c "import time; print(f'{time.time() - $start:.0f}')")
  read -r rss1 pss1 <<< "$(mem "$server_pid")"
  sleep "$settle"
  read -r rss2 pss2 <<< "$(mem "$server_pid")"
  summary=$(python3 - "$work/$m.1.json" "$work/$m.2.json" <<'PY'
import json, sys
done = errs = 0
secs = 0.0
for path in sys.argv[1:3]:
    try:
        r = json.load(open(path))
    except Exception:
        print("0 0 no-report"); sys.exit()
    done += r.get("requests", 0)
    secs += r.get("duration_s", 0.0)
    errs += sum(r.get("errors", {}).values())
print(done, f"{done / secs:.0f}" if secs > 0 else "0", errs)
PY
)
  read -r done_n rps errs <<< "$summary"
  [ "$errs" = 0 ] && [ "$status" = ok ] || failed=1
  [ "$status" = ok ] || errs="$errs ($status)"
  rows+=("| $m | $protocol | $c | $done_n | $errs | $rps | $secs s | $(mib "$rss0") / $(mib "$pss0") | $(mib "$rssm") / $(mib "$pssm") | $(mib "$rss1") / $(mib "$pss1") | $(mib "$rss2") / $(mib "$pss2") |")
  kill "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null || true
  server_pid=
done

echo
echo "Soak: $n verified requests per model over $protocol, $conns connections (iterative 1; prefork, threadpool, fpm 4), loadgen -t1; memory RSS / PSS in MiB, summed over the process tree"
echo
echo "| model | protocol | conns | requests | errors | req/s | time | before (RSS / PSS) | half-way | after | end (+${settle} s idle) |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
exit $failed
