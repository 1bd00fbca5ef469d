# shellcheck shell=bash
# shellcheck disable=SC2034 # variables set here are read by the scripts that source it
# Helpers the scripts share. Source it from the repository root, after
# `set -euo pipefail`:
#
#   cd "$(dirname "$0")/.."
#   . scripts/lib.sh
#   lib_init NAME            # NAME prefixes errors; $WORK is a scratch directory
#
# What is here, each in one place:
#   die, need_tools            one-line errors (exit 1; exit 2 for a missing tool)
#   model_names, check_model   the model list, read from `iomodels models --names`
#   start_server               a server pinned to $SERVER_CPU, up once it prints
#                              its ready line `listening on ADDR` (never a sleep)
#   start_process              the same for any program and ready-line pattern
#   start_nginx_hello          nginx, one worker, `return 200 "Hello, World!"`
#   tree_ticks                 CPU ticks of whole process trees, from /proc
#   ab_add, ab_run, ab_reset   the A/B benchmark: alternating rounds, medians, ratios
# Everything started here is stopped when the script exits.

# The servers run on CPU 1 and the load generator on CPU 0 (taskset), so
# neither migrates and the two cores of a small machine are split the same
# way for every contestant. Override for other machines.
SERVER_CPU=${SERVER_CPU:-1}
GEN_CPU=${GEN_CPU:-0}
# How long a program may take to print its ready line, seconds.
READY_TIMEOUT=${READY_TIMEOUT:-20}

_LIB_PIDS=()
_LIB_CLEANUP=()

# lib_init NAME: names the script in errors, makes $WORK, and stops what the
# script started (servers, then any background job) when it exits.
lib_init() {
  LIB_NAME=$1
  WORK=$(mktemp -d)
  trap _lib_exit EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

# on_exit COMMAND: one more clean-up step, run before the servers stop.
on_exit() { _LIB_CLEANUP+=("$1"); }

_lib_exit() {
  local rc=$? c p
  set +e
  for c in "${_LIB_CLEANUP[@]}"; do eval "$c"; done
  for p in "${_LIB_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${_LIB_PIDS[@]}"; do wait "$p" 2>/dev/null; done
  p=$(jobs -p)
  [ -z "$p" ] || { kill $p 2>/dev/null; wait 2>/dev/null; }
  rm -rf "$WORK"
  exit "$rc"
}

# die MESSAGE: one line on stderr, exit 1.
die() {
  echo "${LIB_NAME:-script}: $*" >&2
  exit 1
}

# need_tools TOOL...: exits 2 naming the first one missing.
need_tools() {
  local t
  for t in "$@"; do
    command -v "$t" >/dev/null || [ -x "/usr/sbin/$t" ] || {
      echo "${LIB_NAME:-script}: $t is not installed (scripts/install-peers.sh)" >&2
      exit 2
    }
  done
}

# A free TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# The model names, one a line: the suite's one list (suite/src/models.rs
# `KNOWN`, then any other *-server found), as `iomodels models --names`
# prints it. Runs $IOMODELS (default target/release/iomodels, built when
# missing).
model_names() {
  local bin=${IOMODELS:-target/release/iomodels}
  [ -x "$bin" ] || cargo build --release -q -p iomodels-suite
  "$bin" models --names
}

# check_model MODEL: dies unless MODEL (`epoll`, not `epoll-server`) is one
# of model_names and its release binary is built.
check_model() {
  local m=$1
  model_names | grep -qx -- "$m" ||
    die "unknown model '$m'; the models are: $(model_names | paste -sd' ')"
  [ -x "target/release/$m-server" ] ||
    die "target/release/$m-server is not built (cargo build --release -p iomodels-servers)"
}

# start_process NAME PATTERN COMMAND...: runs COMMAND on $SERVER_CPU with its
# stdout and stderr in $WORK/NAME.log, and returns once it has printed a line
# matching the extended regex PATTERN (waiting on a pipe: no sleep, no
# polling). Sets READY_LINE (that line) and SERVER_PID. Dies with the
# program's last lines if it exits or stays silent for $READY_TIMEOUT s.
# The program is stopped (SIGTERM) when the script exits.
start_process() {
  local name=$1 pattern=$2
  shift 2
  local fifo="$WORK/$name.fifo" log="$WORK/$name.log" line fd pid
  rm -f "$fifo"
  mkfifo "$fifo"
  taskset -c "$SERVER_CPU" "$@" >"$fifo" 2>&1 &
  pid=$!
  _LIB_PIDS+=("$pid")
  exec {fd}<"$fifo"
  READY_LINE=
  while IFS= read -r -t "$READY_TIMEOUT" -u "$fd" line; do
    printf '%s\n' "$line" >>"$log"
    if [[ $line =~ $pattern ]]; then
      READY_LINE=$line
      break
    fi
  done
  if [ -z "$READY_LINE" ]; then
    exec {fd}<&-
    local why="exited before its ready line (/$pattern/)"
    kill -0 "$pid" 2>/dev/null && why="printed no ready line (/$pattern/) within ${READY_TIMEOUT}s"
    die "$name $why: $(tail -3 "$log" 2>/dev/null | paste -sd'|')"
  fi
  # Keep reading, so the program never blocks on a full pipe.
  cat <&"$fd" >>"$log" &
  exec {fd}<&-
  SERVER_PID=$pid
}

# start_server NAME BINARY [FLAGS...]: an iomodels server on a free port of
# 127.0.0.1, pinned to $SERVER_CPU; returns once it prints `listening on
# ADDR`. Sets SERVER_ADDR (host:port), SERVER_PORT and SERVER_PID.
start_server() {
  local name=$1 bin=$2
  shift 2
  [ -x "$bin" ] || die "$bin is not built"
  start_process "$name" '^listening on ' "$bin" --listen 127.0.0.1:0 "$@"
  SERVER_ADDR=${READY_LINE#listening on }
  SERVER_PORT=${SERVER_ADDR##*:}
}

# start_nginx_hello PORT: nginx on $SERVER_CPU with one worker, no access
# log, `return 200 "Hello, World!"` on /hello (the workload's /hello body),
# and unlimited keep-alive requests (nginx's default of 1000 would make
# clients reconnect, which these benchmarks do not measure). Returns once
# the master has started its worker (its listening socket is open by then).
# Sets SERVER_ADDR, SERVER_PORT and SERVER_PID (the master).
start_nginx_hello() {
  local port=$1 dir="$WORK/nginx-$1"
  mkdir -p "$dir"
  cat >"$dir/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log stderr notice;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000000;
  server {
    listen 127.0.0.1:$port;
    location = /hello { default_type text/plain; return 200 "Hello, World!"; }
  }
}
CONF
  start_nginx "nginx-$port" "$dir/nginx.conf"
  SERVER_ADDR=127.0.0.1:$port
  SERVER_PORT=$port
}

# start_nginx NAME CONF: nginx with the configuration CONF (which must say
# `daemon off;` and `error_log stderr notice;`), ready once its worker runs.
start_nginx() {
  start_process "$1" 'start worker process' nginx -e stderr -c "$2" -p "$(dirname "$2")"
}

# tree_pids PID...: the PIDs and all their descendants (through
# /proc/PID/task/*/children), one a line; gone processes are skipped.
tree_pids() {
  local p
  for p in "$@"; do
    [ -d "/proc/$p" ] || continue
    echo "$p"
    # shellcheck disable=SC2046
    tree_pids $(cat /proc/"$p"/task/*/children 2>/dev/null)
  done
}

# tree_ticks PID...: CPU clock ticks the process trees under PID... have
# spent: utime + stime of every live process (all its threads) plus cutime
# + cstime (children already reaped), as the orchestrator counts them
# (suite/src/procfs.rs). The difference of two readings is the CPU spent
# between them.
# shellcheck disable=SC2016 # awk's fields, not the shell's
tree_ticks() { _tree_sum '$12 + $13 + $14 + $15' "$@"; }

# tree_user_ticks PID...: the user-space share of tree_ticks (utime +
# cutime); the rest is the kernel's, on loopback including the TCP receive
# path of the peer's socket, which runs in the sender's system call (this
# kernel has no IRQ_TIME_ACCOUNTING: softirq time is charged to the task).
# shellcheck disable=SC2016 # awk's fields, not the shell's
tree_user_ticks() { _tree_sum '$12 + $14' "$@"; }

# _tree_sum EXPR PID...: EXPR of /proc/PID/stat's fields after "pid (comm) "
# (utime is the 12th, then stime, cutime, cstime), summed over the trees.
_tree_sum() {
  local expr=$1 p total=0 t
  shift
  for p in $(tree_pids "$@"); do
    t=$(awk "{ sub(/^.*\\) /, \"\"); print $expr }" "/proc/$p/stat" 2>/dev/null) || t=0
    total=$((total + ${t:-0}))
  done
  echo "$total"
}

# --- The A/B benchmark --------------------------------------------------
#
#   ab_add NAME "PIDS" COMMAND...   a contestant: the server process trees
#                                   to account (PIDS, space-separated roots)
#                                   and the load generator's command, which
#                                   prints wrk's summary (wrk or loadgen)
#   ab_run ROUNDS                   round 1: every contestant in the order
#                                   added, round 2 the same, … (A B A B …),
#                                   then medians and the ratio of each
#                                   pair: the 2nd over the 1st, the 4th
#                                   over the 3rd, … (AB_PAIRS=0: no ratios)
#
# Every line shows requests/s, the server's CPU µs per request (its whole
# process tree, from /proc), and the generator's own CPU (user + sys from
# the shell's `time`) as seconds, share of the wall time and µs per
# request. GEN marks a run where the generator used >= 90 % of its core
# (the orchestrator's mark): its requests/s then measures the generator,
# so compare the servers by CPU per request.

_AB_NAMES=()
_AB_PIDS=()
_AB_CMDS=()

# ab_reset: forgets the contestants and results, for a second benchmark in
# the same script (after ab_run has printed the first; its rows stay in
# $WORK/ab.results.N and its medians in $WORK/ab.medians.N, N counting
# from 1).
ab_reset() {
  _AB_NAMES=()
  _AB_PIDS=()
  _AB_CMDS=()
  local n=1
  while [ -e "$WORK/ab.results.$n" ]; do n=$((n + 1)); done
  [ ! -e "$WORK/ab.results" ] || mv "$WORK/ab.results" "$WORK/ab.results.$n"
  [ ! -e "$WORK/ab.medians" ] || mv "$WORK/ab.medians" "$WORK/ab.medians.$n"
}

ab_add() {
  _AB_NAMES+=("$1")
  _AB_PIDS+=("$2")
  shift 2
  _AB_CMDS+=("$(printf '%q ' "$@")")
}

# _ab_one INDEX ROUND: one measured run, a line of output, a results row.
_ab_one() {
  local i=$1 round=$2 before after ubefore uafter out rps req p50 errs cpu ucpu wall hz
  local name=${_AB_NAMES[$i]}
  hz=$(getconf CLK_TCK)
  # shellcheck disable=SC2086
  ubefore=$(tree_user_ticks ${_AB_PIDS[$i]})
  # shellcheck disable=SC2086
  before=$(tree_ticks ${_AB_PIDS[$i]})
  out=$({
    TIMEFORMAT='%U %S %R'
    time eval "taskset -c $GEN_CPU ${_AB_CMDS[$i]}" 2>&1
  } 2>&1) || die "$name: the generator failed: $(tail -2 <<<"$out" | paste -sd'|')"
  # shellcheck disable=SC2086
  after=$(tree_ticks ${_AB_PIDS[$i]})
  # shellcheck disable=SC2086
  uafter=$(tree_user_ticks ${_AB_PIDS[$i]})
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  req=$(awk '/ requests in / {print $1}' <<<"$out")
  [ -n "$rps" ] && [ -n "${req:-}" ] && [ "$req" -gt 0 ] ||
    die "$name: no requests measured: $(tail -3 <<<"$out" | paste -sd'|')"
  p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
  # Failed requests: wrk's non-2xx answers and socket errors, loadgen's errors.
  errs=$(awk '/Non-2xx|Socket errors|^  Errors:/ { for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) n += $i } END { print n + 0 }' <<<"$out")
  read -r cpu ucpu wall < <(tail -1 <<<"$out" | awk '{printf "%.2f %.2f %.2f\n", $1 + $2, $1, $3}')
  awk -v name="$name" -v r="$round" -v rps="$rps" -v req="$req" -v t=$((after - before)) \
    -v ut=$((uafter - ubefore)) -v ucpu="$ucpu" \
    -v hz="$hz" -v cpu="$cpu" -v wall="$wall" -v p50="$p50" -v errs="$errs" -v out="$WORK/ab.results" '
    BEGIN {
      server = t / hz * 1e6 / req; gen = cpu * 1e6 / req; share = 100 * cpu / wall; limited = share >= 90
      printf "round %-2s %-20s %11.0f req/s  server %7.2f us/req  generator %5.2f s CPU (%3.0f%% of %.1f s, %6.2f us/req)", r, name, rps, server, cpu, share, wall, gen
      if (p50 != "") printf "  p50 %s", p50
      if (limited) printf "  GEN"
      if (errs > 0) printf "  %d errors", errs
      printf "\n"
      # Columns 7 and 8: the user-space share of the server and generator
      # figures (µs per request), for scripts that say where the time goes.
      printf "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", name, rps, server, cpu, gen, limited, ut / hz * 1e6 / req, ucpu * 1e6 / req >> out
    }'
}

ab_run() {
  local rounds=$1 r i
  [ ${#_AB_NAMES[@]} -ge 2 ] || die "ab_run: add at least two contestants"
  echo "$rounds rounds alternating ${_AB_NAMES[*]}; servers on CPU $SERVER_CPU, generator on CPU $GEN_CPU; load average $(cut -d' ' -f1-3 /proc/loadavg)"
  for r in $(seq "$rounds"); do
    for i in "${!_AB_NAMES[@]}"; do
      _ab_one "$i" "$r"
    done
  done
  awk -F'\t' -v sep="$(printf '%s\037' "${_AB_NAMES[@]}")" -v pairs="${AB_PAIRS:-1}" \
    -v medians="$WORK/ab.medians" '
    function median(name, col,   a, n, i, j, x) {
      n = 0
      for (i = 1; i <= rows; i++) if (row[i, 0] == name) a[++n] = row[i, col]
      for (i = 2; i <= n; i++) { x = a[i]; for (j = i - 1; j >= 1 && a[j] > x; j--) a[j + 1] = a[j]; a[j + 1] = x }
      return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    function ratio(x, y) { return y > 0 ? sprintf("%.3f", x / y) : "n/a" }
    { rows++; for (c = 1; c <= NF; c++) row[rows, c - 1] = $c; gen[$1] += $6; runs[$1]++ }
    END {
      k = split(sep, name, "\037") - 1
      print "medians:"
      for (i = 1; i <= k; i++) {
        n = name[i]
        for (c = 1; c <= 7; c++) m[n, c] = median(n, c)
        printf "%s", n >> medians
        for (c = 1; c <= 7; c++) printf "\t%s", m[n, c] >> medians
        printf "\n" >> medians
        printf "  %-20s %11.0f req/s  server %7.2f us/req  generator %5.2f s CPU (%6.2f us/req)", n, m[n, 1], m[n, 2], m[n, 3], m[n, 4]
        if (gen[n]) printf "  GEN in %d of %d rounds", gen[n], runs[n]
        printf "\n"
      }
      for (i = 2; pairs && i <= k; i += 2) {
        a = name[i - 1]; b = name[i]
        printf "ratio %s / %s: %s requests/s, %s server CPU per request, %s generator CPU per request\n",
          b, a, ratio(m[b, 1], m[a, 1]), ratio(m[b, 2], m[a, 2]), ratio(m[b, 4], m[a, 4])
      }
    }' "$WORK/ab.results"
}
