#!/usr/bin/env bash
# The CPU a server burns while nothing happens: for 0 and for N idle
# keep-alive connections, the server's user+system CPU over SECONDS, as a
# percentage of one core. Made for nonblocking-server (the model whose
# lesson this is), with and without --spin; works for any model.
#
#   scripts/idle-cpu.sh [SECONDS] [N] [MODEL [flags…]]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
n=${2:-1000}
shift $(( $# < 2 ? $# : 2 ))
model=${1:-nonblocking}
[ $# -gt 0 ] && shift
flags=("$@")
cargo build --release -q -p iomodels-servers
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
"./target/release/$model-server" --listen 127.0.0.1:0 --idle-timeout 600 "${flags[@]}" > "$work/out" &
pid=$!
for _ in $(seq 50); do grep -q "listening on" "$work/out" 2>/dev/null && break; sleep 0.1; done
port=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$work/out")
python3 - "$pid" "$port" "$n" "$secs" "$model ${flags[*]}" <<'PY'
import os, socket, sys, time
pid, port, n, secs, name = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5].strip()
hz = os.sysconf("SC_CLK_TCK")
def cpu():
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / hz
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
