#!/usr/bin/env bash
# How much memory an idle keep-alive connection costs a server: opens N
# connections, makes one /hello request on each (so each is a keep-alive
# connection between requests), holds them all idle, and compares the
# server's RSS (and PSS, summed over its process tree) before and after.
# It then checks the server still answers /hello on a fresh connection.
#
#   scripts/idle-rss.sh [SERVER] [N] [-- extra server flags]
#   scripts/idle-rss.sh epoll-server 10000
set -euo pipefail
cd "$(dirname "$0")/.."

server=${1:-epoll-server}
count=${2:-10000}
shift $(( $# < 2 ? $# : 2 ))
[ "${1:-}" = "--" ] && shift

cargo build --release -q -p iomodels-servers
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
out=$(mktemp)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -f "$out"' EXIT
"./target/release/$server" --listen 127.0.0.1:0 --idle-timeout 600 "$@" > "$out" &
pid=$!
for _ in $(seq 50); do grep -q "listening on" "$out" 2>/dev/null && break; sleep 0.1; done
port=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$out")

python3 - "$pid" "$port" "$count" <<'EOF'
import os, resource, selectors, socket, sys, time
pid, port, count = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

def tree(p):
    kids = [p]
    try:
        for t in os.listdir(f"/proc/{p}/task"):
            with open(f"/proc/{p}/task/{t}/children") as f:
                kids += [c for k in f.read().split() for c in tree(int(k))]
    except FileNotFoundError:
        pass
    return kids

def memory():
    rss = pss = 0
    for p in set(tree(pid)):
        with open(f"/proc/{p}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"): rss += int(line.split()[1])
                if line.startswith("Pss:"): pss += int(line.split()[1])
    return rss * 1024, pss * 1024

req = b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"
def hello(s):
    s.sendall(req)
    data = b""
    while not data.endswith(b"Hello, World!"):
        chunk = s.recv(4096)
        if not chunk: raise SystemExit("server closed a connection")
        data += chunk

warm = socket.create_connection(("127.0.0.1", port)); hello(warm); warm.close()
time.sleep(0.3)
rss0, pss0 = memory()
socks = []
start = time.time()
for i in range(count):
    s = socket.create_connection(("127.0.0.1", port))
    hello(s)
    socks.append(s)
time.sleep(1.0)
rss1, pss1 = memory()
t = time.time()
probe = socket.create_connection(("127.0.0.1", port)); hello(probe); probe.close()
probe_ms = (time.time() - t) * 1000
print(f"{count} idle keep-alive connections held (opened in {time.time()-start:.1f}s)")
print(f"RSS {rss0/1024:.0f} KiB -> {rss1/1024:.0f} KiB: {(rss1-rss0)/count:.0f} bytes per connection")
print(f"PSS {pss0/1024:.0f} KiB -> {pss1/1024:.0f} KiB: {(pss1-pss0)/count:.0f} bytes per connection")
print(f"a fresh /hello while they are held: {probe_ms:.1f} ms")
EOF
