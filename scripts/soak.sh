#!/usr/bin/env bash
# Soak: N verified requests per model (loadgen -n; default 1,000,000) over
# a route mix, and the server's memory — RSS and PSS summed over its whole
# process tree, from /proc/PID/smaps_rollup — before the run, half-way,
# right after it, and at the end (idle for a few seconds), to catch slow
# leaks: a leak keeps growing in the second half, a high-water mark does
# not. A benchmark script, not a test: it prints a Markdown table and
# exits 1 if any run had an error.
#
#   scripts/soak.sh [-n N] [-c CONNS] [-p http|fcgi] [-w WORKERS] [--settle S] [MODEL ...]
#   scripts/soak.sh                          # every model, 1,000,000 each
#   scripts/soak.sh -n 100000 epoll prefork  # two models, 100,000 each
#
# MODEL is a name of `iomodels models --names` (the default: all of them).
# Every server runs with `--workers WORKERS` (default 4) and a 60 s idle
# timeout. How a model must be driven is probed, not listed: 32 connections
# each ask /hello; if fewer are answered within a second, the model serves
# that many at once (one, or one per worker) and gets that many connections
# (more would only starve into timeouts: its lesson, not a leak); if it
# closes a keep-alive connection after the answer, it gets --new-conn.
# "before" is taken after a warm-up of N/100 requests, so buffers grown once
# count as the baseline. Servers on CPU $SERVER_CPU, loadgen -t1 on CPU
# $GEN_CPU (scripts/lib.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
lib_init soak.sh

n=1000000
conns=32
protocol=http
workers=4
settle=3
models=()
while [ $# -gt 0 ]; do
  case $1 in
    -n) n=$2; shift 2 ;;
    -c) conns=$2; shift 2 ;;
    -p|--protocol) protocol=$2; shift 2 ;;
    -w|--workers) workers=$2; shift 2 ;;
    --settle) settle=$2; shift 2 ;;
    -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) models+=("${1%-server}"); shift ;;
  esac
done
case $protocol in http|fcgi) ;; *) die "-p must be http or fcgi" ;; esac
[[ $n =~ ^[0-9]+$ ]] && [ "$n" -ge 100 ] || die "-n must be a number of at least 100"
[[ $conns =~ ^[0-9]+$ ]] && [ "$conns" -ge 1 ] || die "-c must be a positive number"
need_tools python3 taskset

echo "building release binaries…" >&2
cargo build --release -q -p iomodels-servers -p loadgen -p iomodels-suite
[ ${#models[@]} -gt 0 ] || mapfile -t models < <(model_names)
for m in "${models[@]}"; do check_model "$m"; done

# mem PID: "RSS_KiB PSS_KiB" of the process and all its descendants.
mem() {
  local p rss=0 pss=0 r s
  for p in $(tree_pids "$1"); do
    read -r r s < <(awk '/^Rss:/ {r = $2} /^Pss:/ {s = $2} END {print r + 0, s + 0}' \
      "/proc/$p/smaps_rollup" 2>/dev/null || echo "0 0")
    rss=$((rss + r)) pss=$((pss + s))
  done
  echo "$rss $pss"
}

# mib KIB: the figure in MiB with one decimal.
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# probe ADDR: "SERVED CLOSES" — how many of $conns keep-alive connections
# asking /hello at once are answered within a second, and whether the
# server closed them after the answer (1) or kept them open (0).
probe() {
  python3 - "$1" "$protocol" "$conns" <<'PY'
import socket, struct, sys, time
host, port = sys.argv[1].rsplit(":", 1)
protocol, count = sys.argv[2], int(sys.argv[3])

def fcgi_record(kind, content):
    return struct.pack(">BBHHBB", 1, kind, 1, len(content), 0, 0) + content

def pair(name, value):
    return bytes([len(name), len(value)]) + name + value

if protocol == "http":
    request = b"GET /hello HTTP/1.1\r\nHost: soak\r\n\r\n"
else:
    params = pair(b"REQUEST_METHOD", b"GET") + pair(b"REQUEST_URI", b"/hello")
    request = (fcgi_record(1, struct.pack(">HB5x", 1, 1)) + fcgi_record(4, params)
               + fcgi_record(4, b"") + fcgi_record(5, b""))
socks = []
for _ in range(count):
    s = socket.create_connection((host, int(port)))
    s.sendall(request)
    s.setblocking(False)
    socks.append(s)
answered, closed = set(), set()
end = time.time() + 1.0
while time.time() < end:
    for s in socks:
        if s in closed:
            continue
        try:
            data = s.recv(65536)
        except BlockingIOError:
            continue
        except OSError:
            data = b""
        if data:
            answered.add(s)
        else:
            closed.add(s)
    time.sleep(0.01)
print(len(answered), int(bool(answered & closed)))
PY
}

# The route mix: small answers, CPU, a parked wait, a body large enough to
# stream (200 kB), a file, and an echo (POST, 4 KiB body): 12.6 kB per
# request on average, every body verified by loadgen.
routes=(--route /hello:16 --route '/cpu?n=200:2' --route '/wait?us=100:1'
        --route '/bytes?n=16384:2' --route '/bytes?n=200000:1'
        --route '/file?name=64k:1' --route /echo:1 --body-size 4096)

# load N JSON: N requests; loadgen's summary in JSON.txt.
load() {
  taskset -c "$GEN_CPU" target/release/loadgen -t 1 -c "$c" -n "$1" --timeout 30s \
    "${routes[@]}" "${extra[@]}" --json "$2" "$protocol://$SERVER_ADDR/hello" >"$2.txt" 2>&1
}

rows=()
failed=0
for m in "${models[@]}"; do
  start_server "$m" "target/release/$m-server" --protocol "$protocol" \
    --workers "$workers" --idle-timeout 60
  read -r served closes < <(probe "$SERVER_ADDR") || die "could not probe $m-server"
  c=$conns extra=() how="keep-alive"
  if [ "$closes" = 1 ]; then
    extra=(--new-conn) how="new connection per request"
  elif [ "$served" -lt "$conns" ]; then
    c=$(( served > 0 ? served : 1 )) how="serves $c at once"
  fi
  echo "$m-server ($protocol, $how): warm-up $((n / 100)), then $n requests…" >&2
  load $((n / 100)) "$WORK/$m.warm.json" || true
  sleep 1
  read -r rss0 pss0 < <(mem "$SERVER_PID")
  started=$SECONDS
  status=ok
  load $((n / 2)) "$WORK/$m.1.json" || status="loadgen exit $?"
  read -r rssm pssm < <(mem "$SERVER_PID")
  load $((n - n / 2)) "$WORK/$m.2.json" || status="loadgen exit $?"
  secs=$((SECONDS - started))
  read -r rss1 pss1 < <(mem "$SERVER_PID")
  sleep "$settle"
  read -r rss2 pss2 < <(mem "$SERVER_PID")
  read -r done_n rps errs < <(python3 - "$WORK/$m.1.json" "$WORK/$m.2.json" <<'PY'
import json, sys
done = errs = 0
secs = 0.0
for path in sys.argv[1:]:
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
  [ "$errs" = 0 ] && [ "$status" = ok ] || failed=1
  [ "$status" = ok ] || errs="$errs ($status)"
  [ ${#extra[@]} -eq 0 ] || c="$c new"
  rows+=("| $m | $protocol | $c | $done_n | $errs | $rps | $secs s | $(mib "$rss0") / $(mib "$pss0") | $(mib "$rssm") / $(mib "$pssm") | $(mib "$rss1") / $(mib "$pss1") | $(mib "$rss2") / $(mib "$pss2") |")
  kill -TERM "$SERVER_PID" 2>/dev/null
  wait "$SERVER_PID" 2>/dev/null || true
done

echo
echo "Soak: $n verified requests per model over $protocol, --workers $workers, loadgen -t1 (conns: as probed, at most $conns; \"new\": a connection per request); memory RSS / PSS in MiB, summed over the process tree; load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| model | protocol | conns | requests | errors | req/s | time | before (RSS / PSS) | half-way | after | end (+${settle} s idle) |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
exit $failed
