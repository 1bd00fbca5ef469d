#!/usr/bin/env bash
# How much memory an idle keep-alive connection costs a server: opens N
# connections, makes one /hello request on each (so each is a keep-alive
# connection between requests), holds them all idle, and compares the
# server's RSS (and PSS, summed over its process tree) before and after.
# It then checks the server still answers /hello on a fresh connection.
# The orchestrator's idle sweep holds silent connections (never a request)
# beside active load and reports peak RSS; this isolates the cost of one
# keep-alive connection between requests. SERVER is one of `iomodels models
# --names` (with or without -server); it runs on CPU 1 (scripts/lib.sh).
#
#   scripts/idle-rss.sh [SERVER] [N] [-- extra server flags]
#   scripts/idle-rss.sh epoll-server 10000
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
lib_init idle-rss

server=${1:-epoll-server}
count=${2:-10000}
shift $(($# < 2 ? $# : 2))
[ "${1:-}" = "--" ] && shift
model=${server%-server}

cargo build --release -q -p iomodels-servers
check_model "$model"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
start_server "$model-server" "target/release/$model-server" --idle-timeout 600 "$@"
pid=$SERVER_PID port=$SERVER_PORT

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
    # A model whose workers each hold one keep-alive connection never
    # answers a connection beyond its workers while the others are held:
    # give up after 5 s, not hang.
    s.settimeout(5)
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
    try:
        hello(s)
    except socket.timeout:
        s.close()
        print(f"connection {i + 1} got no answer within 5 s: the server serves only {i} "
              "keep-alive connections at once (one per worker); measuring those")
        break
    socks.append(s)
held = len(socks)
if held == 0:
    raise SystemExit("no connection held")
opened = time.time() - start
time.sleep(1.0)
rss1, pss1 = memory()
t = time.time()
try:
    probe = socket.create_connection(("127.0.0.1", port)); hello(probe); probe.close()
    probe = f"{(time.time() - t) * 1000:.1f} ms"
except socket.timeout:
    probe = "no answer within 5 s"
print(f"{held} idle keep-alive connections held (opened in {opened:.1f}s)")
print(f"RSS {rss0/1024:.0f} KiB -> {rss1/1024:.0f} KiB: {(rss1-rss0)/held:.0f} bytes per connection")
print(f"PSS {pss0/1024:.0f} KiB -> {pss1/1024:.0f} KiB: {(pss1-pss0)/held:.0f} bytes per connection")
print(f"a fresh /hello while they are held: {probe}")
EOF
