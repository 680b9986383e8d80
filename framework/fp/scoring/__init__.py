"""Importance scoring: the context measures read (model, batches, shared gradient statistics) and
``score``, which runs a measure at filter or weight granularity (docs/measures.md).
"""
from __future__ import annotations

from fp.scoring.context import DEFAULT_TEMPERATURE, ParamStats, ScoreContext
from fp.scoring.gradients import weighted_mean_
from fp.scoring.api import resolve_measure, score
from fp.measure import to_weight_shape

#: scoring samples per prune event in the paper's protocol: 20 batches of 128
DEFAULT_SCORING_SAMPLES = 2560


__all__ = ["DEFAULT_SCORING_SAMPLES", "DEFAULT_TEMPERATURE", "ParamStats", "ScoreContext",
           "resolve_measure", "score", "to_weight_shape", "weighted_mean_"]
