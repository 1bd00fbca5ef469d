#!/usr/bin/env bash
# fpm-server behind nginx against php-fpm behind nginx: the same nginx
# (one worker, fastcgi_keep_conn on, upstream keepalive), the same worker
# count (pm static, 2 children), /hello against a one-line PHP echo of the
# same 13 bytes; wrk -t1 through nginx, alternating rounds in one run.
#
#   scripts/bench-fpm-vs-php-fpm.sh [ROUNDS] [SECONDS] [CONNECTIONS]
#
# The A/B skeleton is scripts/lib.sh's (ab_run): nginx and both FastCGI
# applications on CPU 1, wrk on CPU 0; per round and as medians,
# requests/s, p50, the CPU µs per request of nginx plus the application's
# whole process tree, and wrk's own CPU, then the ratio fpm-server / php-fpm.
# Needs nginx, wrk and php-fpm (scripts/install-peers.sh installs them).
# `iomodels run --models fpm,swoole --peers nginx+php-fpm,nginx+fpm-server`
# makes the same comparison as rows of the matrix.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
lib_init bench-fpm-vs-php-fpm

rounds=${1:-3}
secs=${2:-5}
conns=${3:-50}
phpfpm=$(command -v php-fpm8.2 php-fpm 2>/dev/null | head -1 || true)
[ -n "$phpfpm" ] || phpfpm=$(ls /usr/sbin/php-fpm* 2>/dev/null | head -1 || true)
[ -n "$phpfpm" ] || { echo "bench-fpm-vs-php-fpm: php-fpm is not installed (apt-get install php-fpm)" >&2; exit 2; }
need_tools nginx wrk curl taskset
cargo build --release -q -p iomodels-servers

# The two FastCGI applications, 2 workers each.
start_server fpm-server target/release/fpm-server --protocol fcgi --pm static --max-children 2
fpm=$SERVER_PID faddr=$SERVER_ADDR
pport=$(free_port)
printf '<?php echo "Hello, World!";\n' >"$WORK/hello.php"
cat >"$WORK/php-fpm.conf" <<CONF
[global]
pid = $WORK/php.pid
error_log = /proc/self/fd/2
daemonize = no
[www]
listen = 127.0.0.1:$pport
pm = static
pm.max_children = 2
CONF
start_process php-fpm 'ready to handle connections' "$phpfpm" -R -y "$WORK/php-fpm.conf"
php=$SERVER_PID

# nginx in front of both: port A -> fpm-server, port B -> php-fpm.
a=$(free_port)
b=$(free_port)
cat >"$WORK/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $WORK/nginx.pid;
error_log stderr notice;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000000;
  upstream fpm { server $faddr; keepalive 8; }
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
      fastcgi_param SCRIPT_FILENAME $WORK/hello.php;
      fastcgi_param QUERY_STRING \$query_string;
    }
  }
}
CONF
start_nginx nginx "$WORK/nginx.conf"
nginx=$SERVER_PID
for port in $a $b; do
  curl -sf "http://127.0.0.1:$port/hello" | grep -q "Hello, World!" ||
    die "no Hello, World! through nginx on port $port"
done

echo "nginx (1 worker, fastcgi_keep_conn) -> 2 FastCGI workers; wrk -t1 -c$conns -d${secs}s --latency /hello"
ab_add nginx+php-fpm "$nginx $php" wrk -t1 -c"$conns" -d"${secs}s" --latency "http://127.0.0.1:$b/hello"
ab_add nginx+fpm-server "$nginx $fpm" wrk -t1 -c"$conns" -d"${secs}s" --latency "http://127.0.0.1:$a/hello"
ab_run "$rounds"
