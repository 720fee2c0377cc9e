#!/usr/bin/env bash
# Regenerates the cross-process comparison of shmq with other transports
# (issue 6) in one command: builds benches/compare (an unpublished crate with
# its own workspace: shmq by path, iceoryx2, ringfire, crossbeam-channel,
# plotters) and
# runs every cell -- transport x size x metric, each run a fresh pair of
# processes pinned to CPUs 0 and 1 -- 3 times, then writes
# docs/compare.csv, docs/compare.md, docs/compare-throughput.svg and
# docs/compare-latency.svg.
#
#   bash benches/compare/run.sh           # full run: about 5 minutes on 2 cores
#   bash benches/compare/run.sh --quick   # smoke run: 1 run per cell, short
#                                         # cells, well under a minute after the
#                                         # build; writes benches/compare/target/quick/
#
#   bash benches/compare/run.sh --fanout  # one publisher to 1, 2 and 4
#                                         # subscriber processes, shmq's broadcast
#                                         # against iceoryx2 and ringfire's SPMC
#                                         # ring: docs/compare-fanout.md
#
# Other arguments go to the binary: --runs N, --only ID,ID (e.g. shmq-copy-spin,
# iox-poll-zero, memcpy), --sizes 8,65536, --out DIR. See the doc comment of
# benches/compare/src/main.rs for what each mode means.
#
# Needs a Rust toolchain (1.89 or newer: iceoryx2 0.10's minimum) and a C
# compiler (gcc): nothing else. iceoryx2 builds its POSIX layer from the libc
# crate on Linux (bindgen, hence libclang, only on QNX), so no system package
# is installed. The crates come from crates.io, pinned by Cargo.lock.
# Cargo runs under the shared lock /tmp/shmq-cargo.lock, so it never races
# another build of the repository on the same machine.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"

locked=()
[ -f Cargo.lock ] && locked=(--locked)
if command -v flock >/dev/null; then
    flock /tmp/shmq-cargo.lock cargo build --release "${locked[@]}"
else
    cargo build --release "${locked[@]}"
fi

export COMPARE_COMMAND="bash benches/compare/run.sh${*:+ $*}"
status=0
./target/release/compare "$@" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true' INT TERM
wait "$pid" || status=$?

# The binary removes what its runs create; after a crash, remove what is
# left of this run only (its names carry the binary's pid).
rm -f /dev/shm/iox2shmqcmp"${pid}"_* /dev/shm/shmq-compare-"${pid}"-*
rm -rf /tmp/shmq-compare-iox2-"${pid}"
exit "$status"
