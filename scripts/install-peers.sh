#!/usr/bin/env bash
# Installs the Debian packages the tests, benchmarks and the default run
# use, when missing: curl, cgi-fcgi (libfcgi-bin: an independent FastCGI
# client), wrk, strace, hyperfine, chromium (headless, for the report
# test), valgrind (`iomodels cost`: instructions per request), and the
# peers `iomodels` runs as rows beside the models: nginx
# (nginx-light), Apache (apache2: prefork, worker and event MPMs),
# lighttpd, php-fpm with the PHP command line (php-cli) and php-cgi
# (cgi-server's PHP program), fcgiwrap; and for distributed runs
# (suite/tests/distributed.rs) OpenSSH's server and client and iproute2
# (ip, tc: network namespaces).
# Runs `apt-get update` once, only if something is missing. Needs root (or
# sudo). The packages' own services are not started: iomodels starts each
# peer itself from a configuration it generates, and stops it.
set -euo pipefail

# present CMD: an executable named CMD (a glob) on PATH or in /usr/sbin.
present() {
  command -v "$1" >/dev/null 2>&1 && return 0
  compgen -G "/usr/sbin/$1" >/dev/null && return 0
  return 1
}

need=()
for pair in curl:curl libfcgi-bin:cgi-fcgi nginx-light:nginx wrk:wrk strace:strace \
  hyperfine:hyperfine chromium:chromium valgrind:valgrind apache2:apache2 lighttpd:lighttpd \
  'php-fpm:php-fpm*' php-cli:php php-cgi:php-cgi fcgiwrap:fcgiwrap openssh-server:sshd \
  openssh-client:ssh iproute2:ip; do
  pkg=${pair%%:*} cmd=${pair#*:}
  present "$cmd" || need+=("$pkg")
done
[ ${#need[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "install-peers: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Keep the packages from starting their services (apache2, nginx, lighttpd
# and php-fpm would otherwise listen on port 80 or a socket): a
# policy-rc.d that denies every start, only for this install, only where
# the machine has none of its own (Debian's container images do).
policy=/usr/sbin/policy-rc.d
made_policy=""
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
  $sudo chmod 755 "$policy"
  made_policy=1
fi
trap '[ -n "$made_policy" ] && $sudo rm -f "$policy"' EXIT
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
