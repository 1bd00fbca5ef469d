#!/usr/bin/env bash
# CI performance gate, in three steps:
#  1. `cargo bench -p iomodels-servers --bench models -- --test`: the
#     end-to-end benches find every model on their own and each one answers
#     (criterion's test mode: one iteration each);
#  2. `iomodels run --cost`: a short interleaved matrix (hello, new-conn,
#     cpu, wait over HTTP; 3 rounds; epoll-server twice per round, the A/A
#     check) plus instructions per request under valgrind;
#     The base binaries (built from the baseline's commit, or BASE_REF) run
#     beside the new ones in the same rounds (`--base-bins`);
#  3. `iomodels compare` against the committed results/baseline.json:
#     instructions/request gated at 2 %, context switches and read+write
#     calls/request at 5 %, server CPU µs/request against the base binaries
#     in the same run and requests/s relative to epoll-server, only beyond
#     THRESHOLD *and* the A/A noise floor; raw requests/s and latency
#     informational. Exit 1 on a regression.
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
base_src=target/ci-perf-base/src
base_target=$PWD/target/ci-perf-base/target
rm -rf "$out"
mkdir -p "$out"
# The base binaries, for the same-run A/B: the baseline's commit (or
# BASE_REF), built in a throw-away worktree with its own target directory.
base_args=()
if ! $update; then
  ref=${BASE_REF:-$(sed -n 's/^ *"git_sha": "\([0-9a-f]*\)".*/\1/p' results/baseline.json | head -1)}
  if [ -n "$ref" ] && git cat-file -e "$ref^{commit}" 2>/dev/null; then
    echo "ci-perf: building the base binaries at $ref"
    git worktree remove --force "$base_src" 2>/dev/null || rm -rf "$base_src"
    git worktree prune
    git worktree add -q --detach "$base_src" "$ref"
    trap 'git worktree remove --force "$base_src" 2>/dev/null || true' EXIT
    (cd "$base_src" && CARGO_TARGET_DIR=$base_target cargo build --release -q -p iomodels-servers)
    base_args=(--base-bins "$base_target/release")
  else
    echo "ci-perf: base commit ${ref:-(none)} is not in this clone: CPU per request is compared across runs, not in one run"
  fi
fi
target/release/iomodels run --peers none --scenarios hello,new-conn,cpu,wait --protocol http \
  --duration 800ms --warmup 200ms --repeat 3 --aa epoll --cost "${base_args[@]}" \
  --out "$out" > "$out/table.md"
new=$(ls -d "$out"/*/ | head -1)results.json
if $update; then
  cp "$new" results/baseline.json
  echo "ci-perf: results/baseline.json updated from $new"
  exit 0
fi
target/release/iomodels compare results/baseline.json "$new" --threshold "$threshold" --bmf "$out/bmf.json"
