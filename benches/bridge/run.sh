#!/usr/bin/env bash
# The bridge benchmark: shmq bridge push/pull against async-nats publishing
# straight into JetStream with the same acks, on loopback, same run
# (cli/examples/bridge_bench.rs; results in docs/benchmarks.md).
#   bash benches/bridge/run.sh [--runs 3]
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/install-nats-server
cargo build --release -q -p shmq-cli --bin shmq --example bridge_bench
lscpu | grep -E "^Model name" || true
target/release/examples/bridge_bench "$@"
