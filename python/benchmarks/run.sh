#!/usr/bin/env bash
# Run shmq's Python benchmarks: bash python/benchmarks/run.sh [bench.py arguments]
#                 batch calls: bash python/benchmarks/run.sh --batch [bench_batch.py arguments]
#          weights (Latest): bash python/benchmarks/run.sh --latest [bench_latest.py arguments]
#
# Uses the virtual environment in $SHMQ_VENV (default .venv, relative to the repository
# root; made with $PYTHON, default python3, if it does not exist), installs shmq from
# ./python and the peers from python/benchmarks/requirements.txt into it, then runs
# bench.py with the given arguments (see --help; --quick for a smoke run), or with
# --batch first, bench_batch.py (put_many/get_many vs faster-fifo) with the rest.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
VENV="${SHMQ_VENV:-.venv}"
case "$VENV" in /*) ;; *) VENV="$ROOT/$VENV" ;; esac
REQS="python/benchmarks/requirements.txt"

if [ ! -x "$VENV/bin/python" ]; then
    echo "run.sh: creating the virtual environment $VENV" >&2
    "${PYTHON:-python3}" -m venv "$VENV"
fi
PY="$VENV/bin/python"

echo "run.sh: installing shmq from ./python (builds the Rust extension)" >&2
"$PY" -m pip install ./python

echo "run.sh: installing the peers from $REQS" >&2
if ! "$PY" -m pip install -r "$REQS"; then
    # The likely culprit is iceoryx2 (no wheel for this platform or glibc):
    # go on without it; bench.py then lists it as not measured.
    echo "run.sh: WARNING: installing $REQS failed; retrying without iceoryx2," \
        "which will be left out of the benchmarks" >&2
    grep -v '^iceoryx2' "$REQS" | "$PY" -m pip install -r /dev/stdin
fi

if [ "${1:-}" = "--batch" ]; then
    shift
    exec "$PY" python/benchmarks/bench_batch.py "$@"
fi
if [ "${1:-}" = "--latest" ]; then
    shift
    "$PY" -m pip install -q gymnasium  # the RL example's environment (--rl)
    exec "$PY" python/benchmarks/bench_latest.py "$@"
fi
exec "$PY" python/benchmarks/bench.py "$@"
