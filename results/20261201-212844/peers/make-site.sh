#!/bin/sh
# Recreates the files the peers of this run served, as iomodels wrote
# them: /hello's body, the data files and the fixed /bytes bodies (byte
# i = 'a' + i % 26), and workload.php / workload.cgi from beside this
# script. Usage: sh make-site.sh [DIR] (default: where this run had it).
set -e
site=${1:-/tmp/iomodels-site-4645-0}
here=$(dirname "$0")
mkdir -p "$site/www/_files" "$site/www/_bytes" "$site/tmp"
chmod 755 "$site" "$site/www" "$site/www/_files" "$site/www/_bytes"
chmod 1777 "$site/tmp"
pattern() { awk -v n="$1" 'BEGIN { for (i = 0; i < n; i++) printf "%c", 97 + i % 26 }'; }
printf 'Hello, World!' > "$site/www/hello"
pattern 4096 > "$site/www/_files/4k"
pattern 65536 > "$site/www/_files/64k"
pattern 1048576 > "$site/www/_files/1m"
for n in 0 1 13 26 100 1000 1024 4096 16384 65536; do pattern "$n" > "$site/www/_bytes/$n"; done
cp "$here/workload.php" "$here/workload.cgi" "$site/"
chmod 755 "$site/workload.cgi"
