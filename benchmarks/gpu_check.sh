#!/usr/bin/env bash
# A prepared check for a short GPU slot, from a fresh copy of this checkout:
#   bash benchmarks/gpu_check.sh [--data PATH/cifar10-jpg.tar.gz] [--out DIR] [--dry-run]
# It makes fp importable (installing the checkout without dependencies, offline, if needed),
# then hands over to python -m fp.tools.bench.gpu_check, which prints one JSON summary on
# stdout (progress on stderr). --dry-run rehearses the same code on the CPU in seconds.
set -euo pipefail
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
# fp must import, and from this checkout (not from an older install elsewhere)
export FP_GPU_CHECK_INSTALL="fp was already importable"
if ! "$PY" -c "import fp, pathlib, sys
sys.exit(pathlib.Path(fp.__file__).resolve().parent != pathlib.Path('framework/fp').resolve())" 2>/dev/null; then
    echo "gpu_check: fp is not importable from this checkout; installing it: pip install --no-deps --no-build-isolation -e ." >&2
    if log=$("$PY" -m pip install --no-deps --no-build-isolation -e . 2>&1); then
        FP_GPU_CHECK_INSTALL="installed with pip install --no-deps --no-build-isolation -e ."
    else
        # e.g. a setuptools too old for pyproject.toml: import the sources through a folder of
        # links laid out as the install would (framework/ as fp, plugins/ as fp_builtins)
        why=$(grep -m1 -E "[A-Za-z]+Error: " <<<"$log" || grep -m1 "error:" <<<"$log" || true)
        why=$(sed "s/^ *//" <<<"$why")
        links=$(mktemp -d "${TMPDIR:-/tmp}/fp-gpu-check-src.XXXXXX")
        mkdir "$links/fp"
        ln -s "$PWD"/framework/* "$links/fp/"
        ln -s "$PWD/plugins" "$links/fp/plugins"
        export PYTHONPATH="$links${PYTHONPATH:+:$PYTHONPATH}"
        FP_GPU_CHECK_INSTALL="pip install -e . failed (${why:-see pip}); fp imported from source through $links"
        echo "gpu_check: $FP_GPU_CHECK_INSTALL" >&2
    fi
fi
exec "$PY" -m fp.tools.bench.gpu_check "$@"
