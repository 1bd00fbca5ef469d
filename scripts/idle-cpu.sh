#!/usr/bin/env bash
# The CPU a server burns while nothing happens: for 0 and for N idle
# keep-alive connections, the user+system CPU of the server's whole
# process tree over SECONDS, as a percentage of one core. Made for
# nonblocking-server (the model whose lesson this is), with and without
# --spin; works for any model (one of `iomodels models --names`). The
# server runs on CPU 1 (scripts/lib.sh). The orchestrator's idle sweep
# measures requests/s beside idle connections; this measures the CPU they
# cost with no request at all.
#
#   scripts/idle-cpu.sh [SECONDS] [N] [MODEL [flags…]]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
lib_init idle-cpu
secs=${1:-5}
n=${2:-1000}
shift $(($# < 2 ? $# : 2))
model=${1:-nonblocking}
model=${model%-server}
[ $# -gt 0 ] && shift
cargo build --release -q -p iomodels-servers
check_model "$model"
start_server "$model-server" "target/release/$model-server" --idle-timeout 600 "$@"
pid=$SERVER_PID port=$SERVER_PORT
python3 - "$pid" "$port" "$n" "$secs" "$model $*" <<'PY'
import os, socket, sys, time
pid, port, n, secs, name = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5].strip()
hz = os.sysconf("SC_CLK_TCK")
def tree(p):
    kids = [p]
    try:
        for t in os.listdir(f"/proc/{p}/task"):
            with open(f"/proc/{p}/task/{t}/children") as f:
                kids += [c for k in f.read().split() for c in tree(int(k))]
    except FileNotFoundError:
        pass
    return kids
def cpu():
    # The whole process tree, as scripts/lib.sh's tree_ticks counts it:
    # utime + stime (all threads) + cutime + cstime (reaped children).
    total = 0
    for p in set(tree(pid)):
        try:
            f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += sum(int(x) for x in f[11:15])
    return total / hz
def measure():
    a, t = cpu(), time.time()
    time.sleep(secs)
    return 100 * (cpu() - a) / (time.time() - t)
time.sleep(0.5)
idle0 = measure()
socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
time.sleep(0.5)
idle_n = measure()
print(f"| {name} | {idle0:.1f}% | {idle_n:.1f}% |")
PY
