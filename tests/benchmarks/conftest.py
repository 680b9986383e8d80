"""The benchmarks are not installed: their packages (``gpu_check``) import from ``benchmarks/``,
as ``benchmarks/gpu_check.sh`` runs them."""
from __future__ import annotations

import sys
from pathlib import Path

BENCHMARKS = str(Path(__file__).resolve().parents[2] / "benchmarks")
if BENCHMARKS not in sys.path:
    sys.path.insert(0, BENCHMARKS)
