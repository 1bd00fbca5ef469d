#!/usr/bin/env bash
# Installs the Debian packages the tests and benchmarks use, when missing:
# curl, cgi-fcgi (libfcgi-bin: an independent FastCGI client), nginx
# (nginx-light), wrk, strace, hyperfine, chromium (headless, for the
# report test), valgrind (`iomodels cost`: instructions per request). Runs `apt-get update` once, only
# if something is missing. Needs root (or sudo).
set -euo pipefail

need=()
for pair in curl:curl libfcgi-bin:cgi-fcgi nginx-light:nginx wrk:wrk strace:strace hyperfine:hyperfine chromium:chromium valgrind:valgrind; do
  pkg=${pair%%:*} cmd=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || need+=("$pkg")
done
[ ${#need[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "install-peers: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
