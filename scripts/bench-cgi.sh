#!/usr/bin/env bash
# CGI → FastCGI in one run: the CPU one /hello costs when every request
# forks (fork-server), forks and executes a program (cgi-server with
# hello-cgi, a small Rust binary), forks and starts an interpreter
# (cgi-server with php-cgi on suite/peers/workload.php), and when
# processes persist (prefork-server, fpm-server, and php-fpm on the same
# workload.php). All over FastCGI, loadgen -t1 -c4 with a new connection
# per request (fork-server closes after each one; so did CGI-era web
# servers), alternating rounds.
#
#   scripts/bench-cgi.sh [ROUNDS] [SECONDS] [CONNECTIONS]
#
# The A/B skeleton is scripts/lib.sh's (ab_run): servers on CPU 1, the
# generator on CPU 0; per round and as medians, requests/s, the CPU µs per
# request of the server's whole process tree (reaped CGI programs
# included: their CPU lands in cgi-server's cutime), and the generator's
# own CPU. Ratios: cgi-server (hello-cgi) / fork-server (what exec and a
# program's start-up add to a fork), cgi-server (php-cgi) / php-fpm (CGI
# against FastCGI for the same PHP), fpm-server / prefork-server.
# Needs php-cgi and php-fpm (scripts/install-peers.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
lib_init bench-cgi

rounds=${1:-3}
secs=${2:-5}
conns=${3:-4}
phpfpm=$(command -v php-fpm8.2 php-fpm 2>/dev/null | head -1 || true)
[ -n "$phpfpm" ] || phpfpm=$(ls /usr/sbin/php-fpm* 2>/dev/null | head -1 || true)
[ -n "$phpfpm" ] || { echo "bench-cgi: php-fpm is not installed (scripts/install-peers.sh)" >&2; exit 2; }
need_tools php-cgi taskset
cargo build --release -q -p iomodels-servers -p loadgen
script=$PWD/suite/peers/workload.php
load() { echo target/release/loadgen -t1 -c"$conns" -d"${secs}s" --new-conn "fcgi://$1/hello" "${@:2}"; }

start_server fork-server target/release/fork-server --protocol fcgi
fork=$SERVER_PID faddr=$SERVER_ADDR
start_server cgi-hello target/release/cgi-server --protocol fcgi
cgi=$SERVER_PID caddr=$SERVER_ADDR
start_server cgi-php target/release/cgi-server --protocol fcgi --program "$(command -v php-cgi)" --script "$script"
cgiphp=$SERVER_PID cpaddr=$SERVER_ADDR
start_server prefork-server target/release/prefork-server --protocol fcgi --workers 2
prefork=$SERVER_PID paddr=$SERVER_ADDR
start_server fpm-server target/release/fpm-server --protocol fcgi --pm static --max-children 2
fpm=$SERVER_PID fpaddr=$SERVER_ADDR
pport=$(free_port)
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

echo "FastCGI /hello, loadgen -t1 -c$conns -d${secs}s --new-conn (every body verified); PHP: $(php-cgi -v | head -1)"
# shellcheck disable=SC2046
ab_add fork-server "$fork" $(load "$faddr")
# shellcheck disable=SC2046
ab_add cgi-server+hello-cgi "$cgi" $(load "$caddr")
# shellcheck disable=SC2046
ab_add php-fpm "$php" $(load "127.0.0.1:$pport" --param "SCRIPT_FILENAME=$script")
# shellcheck disable=SC2046
ab_add cgi-server+php-cgi "$cgiphp" $(load "$cpaddr")
# shellcheck disable=SC2046
ab_add prefork-server "$prefork" $(load "$paddr")
# shellcheck disable=SC2046
ab_add fpm-server "$fpm" $(load "$fpaddr")
ab_run "$rounds"
