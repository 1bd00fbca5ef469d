#!/usr/bin/env bash
# The main command (README): installs the peer tools, builds the whole
# workspace in release mode and runs the orchestrator. Without arguments
# that is the quick matrix of every server model × the core scenarios ×
# HTTP and FastCGI (a few minutes), a table on the terminal and a report
# under results/<run-id>/. Arguments go to `iomodels`, e.g.
#   scripts/main.sh run --models epoll,prefork --scenarios hello,wait -d 2s
#   scripts/main.sh report results/<run-id>/results.json
#   scripts/main.sh compare results/baseline.json results/<run-id>/results.json
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-peers.sh
cargo build --release --workspace
exec target/release/iomodels "$@"
