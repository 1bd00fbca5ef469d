#!/usr/bin/env bash
# The test command (README; .ci/run runs exactly this): installs the peer
# tools the tests use, checks formatting and lints, runs every test, and
# runs the servers' criterion benches once in --test mode.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-peers.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -q -- -D warnings
cargo test --workspace
# The end-to-end benches build from a fresh checkout and measure every
# model: criterion's --test mode runs each once (README, Benchmarks).
cargo bench -p iomodels-servers --bench models -- --test
# The IPC methods between two processes, each case once (about a second).
cargo bench -p iomodels-servers --bench ipc -- --test
