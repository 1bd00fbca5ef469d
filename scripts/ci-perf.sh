#!/usr/bin/env bash
# CI performance gate: a short matrix (hello, new-conn, cpu and wait over
# HTTP, 3 repetitions, medians) compared against the committed
# results/baseline.json. Exits 1 when server CPU µs per request is worse
# than the threshold (default 25 %: short runs on a shared machine), or
# requests/s relative to epoll-server in the same run is worse than twice
# the threshold.
# Writes Bencher Metric Format to target/ci-perf/bmf.json for bencher.dev.
#
#   scripts/ci-perf.sh [THRESHOLD]
set -euo pipefail
cd "$(dirname "$0")/.."
threshold=${1:-25%}
cargo build --release --workspace -q
out=target/ci-perf
rm -rf "$out"
mkdir -p "$out"
target/release/iomodels run --peers none --scenarios hello,new-conn,cpu,wait --protocol http \
  --duration 800ms --warmup 200ms --repeat 3 --out "$out" > "$out/table.md"
new=$(ls -d "$out"/*/ | head -1)results.json
target/release/iomodels compare results/baseline.json "$new" --threshold "$threshold" --bmf "$out/bmf.json"
