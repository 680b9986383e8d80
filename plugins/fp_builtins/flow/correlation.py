"""Correlations between score vectors, None where undefined (instead of NaN, which is not JSON
and not a number anyone should plot)."""
from __future__ import annotations

import warnings
from typing import Callable

import numpy as np
import torch
from scipy import stats
from torch import Tensor


def pearson(a: Tensor, b: Tensor) -> float | None:
    """Pearson's r: how linearly one vector follows the other."""
    return _statistic(stats.pearsonr, a, b)


def spearman(a: Tensor, b: Tensor) -> float | None:
    """Spearman's ρ: Pearson's r of the ranks (ties get their mean rank)."""
    return _statistic(stats.spearmanr, a, b)


def kendall(a: Tensor, b: Tensor) -> float | None:
    """Kendall's τ-b: agreement of the two orders over all pairs, corrected for ties."""
    return _statistic(stats.kendalltau, a, b)


def rank_correlations(reference: dict[str, Tensor],
                      others: dict[str, dict[str, Tensor]]) -> dict[str, dict[str, float | None]]:
    """Spearman and Kendall between ``reference`` scores and each of ``others`` (name -> scores
    keyed like ``reference``), over the scores of every key they all have, concatenated."""
    keys = [k for k in reference if all(k in scores for scores in others.values())]
    ref = _concat(reference, keys)
    result = {}
    for name, scores in others.items():
        other = _concat(scores, keys)
        result[name] = {"spearman": spearman(ref, other), "kendall": kendall(ref, other)}
    return result


def _concat(scores: dict[str, Tensor], keys: list[str]) -> Tensor:
    if not keys:
        return torch.zeros(0)
    return torch.cat([scores[k].detach().flatten().double().cpu() for k in keys])


def _statistic(test: Callable, a: Tensor, b: Tensor) -> float | None:
    """None where the statistic is undefined: fewer than two points or a constant side."""
    x, y = _array(a), _array(b)
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on near-constant input; None covers it
        value = float(test(x, y).statistic)
    return value if np.isfinite(value) else None


def _array(values) -> np.ndarray:
    if isinstance(values, Tensor):
        values = values.detach().double().cpu().numpy()
    return np.asarray(values, dtype=np.float64).ravel()
