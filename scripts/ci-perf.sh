#!/usr/bin/env bash
# CI performance gate, in three steps:
#  1. `cargo bench -p iomodels-servers --bench models -- --test`: the
#     end-to-end benches find every model on their own and each one answers
#     (criterion's test mode: one iteration each);
#  2. `iomodels run --cost`: a short interleaved matrix (hello, new-conn,
#     cpu, wait over HTTP; 3 rounds; epoll-server twice per round, the A/A
#     check) plus instructions per request under valgrind;
#  3. `iomodels compare` against the committed results/baseline.json:
#     instructions/request gated at 2 %, context switches and read+write
#     calls/request at 5 %, server CPU µs/request and requests/s relative to
#     epoll-server only beyond THRESHOLD *and* the A/A noise floor; raw
#     requests/s and latency informational. Exit 1 on a regression.
# Writes Bencher Metric Format to target/ci-perf/bmf.json for bencher.dev.
#
#   scripts/ci-perf.sh [THRESHOLD]        # the gate (default 10 %)
#   scripts/ci-perf.sh --update-baseline  # same matrix, written to results/baseline.json
set -euo pipefail
cd "$(dirname "$0")/.."
update=false
threshold=10%
case "${1:-}" in
  --update-baseline) update=true ;;
  "") ;;
  *) threshold=$1 ;;
esac
scripts/install-peers.sh
cargo build --release --workspace -q
cargo bench -q -p iomodels-servers --bench models -- --test
out=target/ci-perf
rm -rf "$out"
mkdir -p "$out"
target/release/iomodels run --peers none --scenarios hello,new-conn,cpu,wait --protocol http \
  --duration 800ms --warmup 200ms --repeat 3 --aa epoll --cost --out "$out" > "$out/table.md"
new=$(ls -d "$out"/*/ | head -1)results.json
if $update; then
  cp "$new" results/baseline.json
  echo "ci-perf: results/baseline.json updated from $new"
  exit 0
fi
target/release/iomodels compare results/baseline.json "$new" --threshold "$threshold" --bmf "$out/bmf.json"
