#!/usr/bin/env bash
# fpm-server behind nginx against php-fpm behind nginx: the same nginx
# (one worker, fastcgi_keep_conn on, upstream keepalive), the same worker
# count (pm static, 2 children), /hello against a one-line PHP echo of the
# same 13 bytes; wrk -t1 through nginx, alternating rounds in one run.
#
#   scripts/bench-fpm-vs-php-fpm.sh [ROUNDS] [SECONDS] [CONNECTIONS]
# Needs nginx, wrk and php-fpm (scripts/install-peers.sh installs them).
# `iomodels run --models fpm,swoole --peers nginx+php-fpm,nginx+fpm-server`
# makes the same comparison as rows of the matrix.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
secs=${2:-5}
conns=${3:-50}
phpfpm=$(command -v php-fpm8.2 php-fpm 2>/dev/null | head -1 || true)
[ -n "$phpfpm" ] || phpfpm=$(ls /usr/sbin/php-fpm* 2>/dev/null | head -1 || true)
[ -n "$phpfpm" ] || { echo "bench-fpm-vs-php-fpm: php-fpm is not installed (apt-get install php-fpm)" >&2; exit 2; }
for tool in nginx wrk; do
  command -v "$tool" >/dev/null || { echo "bench-fpm-vs-php-fpm: $tool is not installed (scripts/install-peers.sh)" >&2; exit 2; }
done
cargo build --release -q -p iomodels-servers
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; [ -s "$work/php.pid" ] && kill "$(cat "$work/php.pid")" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
. scripts/lib.sh

# The two FastCGI applications, 2 workers each.
fport=$(free_port)
./target/release/fpm-server --listen "127.0.0.1:$fport" --protocol fcgi --pm static --max-children 2 > "$work/fpm.out" &
pport=$(free_port)
printf '<?php echo "Hello, World!";\n' > "$work/hello.php"
cat > "$work/php-fpm.conf" <<CONF
[global]
pid = $work/php.pid
error_log = $work/php-error.log
daemonize = no
[www]
listen = 127.0.0.1:$pport
pm = static
pm.max_children = 2
CONF
"$phpfpm" -R -y "$work/php-fpm.conf" &

# nginx in front of both: port A -> fpm-server, port B -> php-fpm.
a=$(free_port)
b=$(free_port)
cat > "$work/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000000;
  upstream fpm { server 127.0.0.1:$fport; keepalive 8; }
  upstream php { server 127.0.0.1:$pport; keepalive 8; }
  server {
    listen 127.0.0.1:$a;
    location / {
      fastcgi_pass fpm; fastcgi_keep_conn on;
      fastcgi_param REQUEST_METHOD \$request_method;
      fastcgi_param REQUEST_URI \$request_uri;
      fastcgi_param SCRIPT_NAME \$fastcgi_script_name;
      fastcgi_param QUERY_STRING \$query_string;
    }
  }
  server {
    listen 127.0.0.1:$b;
    location / {
      fastcgi_pass php; fastcgi_keep_conn on;
      fastcgi_param REQUEST_METHOD \$request_method;
      fastcgi_param SCRIPT_FILENAME $work/hello.php;
      fastcgi_param QUERY_STRING \$query_string;
    }
  }
}
CONF
nginx -c "$work/nginx.conf" -p "$work" &
sleep 1
for port in $a $b; do
  curl -sf "http://127.0.0.1:$port/hello" | grep -q "Hello, World!" || { echo "bench-fpm-vs-php-fpm: no Hello, World! through nginx on $port" >&2; exit 1; }
done

run_one() { # name port
  local out
  out=$( { TIMEFORMAT='%U %S'; time wrk -t1 -c"$conns" -d"${secs}s" "http://127.0.0.1:$2/hello" ; } 2>&1 )
  printf '%-22s %10s req/s  p50 %8s  wrk cpu %ss\n' "$1" "$(awk '/^Requests\/sec/ {print $2}' <<<"$out")" \
    "$(awk '/^    Latency/ {print $2}' <<<"$out")" "$(tail -1 <<<"$out" | awk '{printf "%.2f", $1+$2}')"
  echo "$1 $(awk '/^Requests\/sec/ {print $2}' <<<"$out")" >> "$work/results"
}
echo "nginx (1 worker, fastcgi_keep_conn) -> 2 FastCGI workers; wrk -t1 -c$conns -d${secs}s /hello; $rounds rounds"
for _ in $(seq "$rounds"); do
  run_one "nginx+fpm-server" "$a"
  run_one "nginx+php-fpm" "$b"
done
python3 - "$work/results" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
med = lambda n: statistics.median(float(r[1]) for r in rows if r[0] == n)
f, p = med("nginx+fpm-server"), med("nginx+php-fpm")
print(f"median: nginx+fpm-server {f:.0f} req/s, nginx+php-fpm {p:.0f} req/s, ratio {f/p:.2f}")
PY
