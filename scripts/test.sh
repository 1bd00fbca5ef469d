#!/usr/bin/env bash
# The test command (README; .ci/run runs exactly this): installs the peer
# tools the tests use, checks formatting and lints, runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-peers.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -q -- -D warnings
cargo test --workspace
