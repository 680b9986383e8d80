#!/usr/bin/env bash
# A prepared check for a short GPU slot, from a fresh copy of this checkout:
#   bash benchmarks/gpu_check.sh [--data PATH/cifar10-jpg.tar.gz] [--out DIR] [--dry-run]
#                                [--compile yes] [--mode layout]
# The default check ends within 6 minutes of this script's start, --compile yes adds the compiled
# variant's own 3.5, --mode layout takes at most 2 (benchmarks/gpu_check/budget.py). It makes fp
# importable from this checkout (installing it without dependencies, offline, if needed), then
# hands over to the benchmark package beside this script (benchmarks/gpu_check/, not installed:
# run with benchmarks/ on PYTHONPATH), which prints one JSON summary on stdout (progress on
# stderr). --dry-run rehearses the same code on the CPU in seconds.
set -euo pipefail
# the start, so that the check counts its start-up (python, import torch) against the slot
FP_GPU_CHECK_STARTED=$(date +%s.%N)
export FP_GPU_CHECK_STARTED
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
# what fp imports on this path, looked up without importing it (importing torch takes seconds)
missing=$("$PY" -c "import importlib.util as u
print(' '.join(m for m in ('torch', 'torchvision', 'gin', 'pluggy', 'torch_pruning', 'rich',
                           'numpy', 'scipy', 'PIL') if u.find_spec(m) is None))")
if [[ " $missing " == *" torch "* ]]; then
    echo "gpu_check: torch is not installed for $PY; install torch (a CUDA build) and torchvision first." >&2
    exit 3
elif [[ -n "$missing" ]]; then
    echo "gpu_check: $PY lacks fp's dependencies $missing; install them (see pyproject.toml) first." >&2
    exit 3
fi
# fp must import, and from this checkout (framework/fp), not from an older install elsewhere; it
# needs its installed metadata too (its version, and the entry points that name the built-ins)
from_here() {
    "$PY" -c "import fp, pathlib, sys
sys.exit(pathlib.Path(fp.__file__).resolve().parent != pathlib.Path('framework/fp').resolve())" 2>/dev/null
}
INSTALL="pip install --no-deps --no-build-isolation -e ."
if from_here; then
    FP_GPU_CHECK_INSTALL="fp was already importable from this checkout"
else
    echo "gpu_check: fp is not importable from this checkout; installing it: $INSTALL" >&2
    if ! log=$("$PY" -m pip install --no-deps --no-build-isolation -e . 2>&1); then
        why=$(grep -m1 -E "[A-Za-z]+Error: " <<<"$log" || grep -m1 "error:" <<<"$log" || true)
        why=$(sed "s/^ *//" <<<"$why")
        echo "gpu_check: $INSTALL failed (${why:-see its output}), so fp cannot be imported from this checkout; install it by hand and run again." >&2
        exit 3
    fi
    if ! from_here; then
        echo "gpu_check: fp still does not import from this checkout after $INSTALL (another fp comes first on $PY's path)." >&2
        exit 3
    fi
    FP_GPU_CHECK_INSTALL="installed with $INSTALL"
fi
export FP_GPU_CHECK_INSTALL
export PYTHONPATH="$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" -m gpu_check.cli "$@"
