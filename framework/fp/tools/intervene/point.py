"""One kept checkpoint and the record of one measure's intervention on it.

Every measure scores its own copy of the same dense model on the same S, chooses the lowest
``fraction`` of the dense filters as a run does, and is measured on the same V against the same
dense passes, so two measures' records differ only by the filters they chose.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from fp import pruning
from fp.data import seeded_generator
from fp.engine.prune_event import SCORING_SEED_STREAM
from fp.measure import Measure
from fp.nn import FILTER
from fp.scoring import ScoreContext, score
from fp.tools.intervene import removal as rm
from fp.tools.intervene.effects import Batch, Pass, gradient, mean_loss
from fp.tools.intervene.predictions import (grad_norm_sq, log_ratio, predicted_removal,
                                            predicted_zeroing, probe_sources, surviving_before,
                                            theta_g)
from fp.tools.intervene.runs import DenseRun


@dataclass
class Checkpoint:
    """A kept checkpoint's dense model with V, S and the dense passes all measures share."""

    run: DenseRun
    epoch: int
    model: nn.Module
    v: list[Batch]
    s: list[Batch]
    example: Tensor
    dense_v: Pass            # on V at the training T, with the probes of ``probe_sources``
    _dense_s: dict[float, dict[str, Tensor]] = field(default_factory=dict)

    @classmethod
    def measured(cls, run: DenseRun, epoch: int, model: nn.Module, v: list[Batch],
                 s: list[Batch], example: Tensor) -> "Checkpoint":
        """The checkpoint with its dense pass over V done."""
        dense_v = gradient(model, v, run.settings.train.temperature, probe_sources(model, example))
        return cls(run, epoch, model, v, s, example, dense_v)

    @property
    def train_t(self) -> float:
        return self.run.settings.train.temperature

    def dense_grad_s(self, temperature: float) -> dict[str, Tensor]:
        """g_S of the dense model at ``temperature`` (computed once per temperature)."""
        if temperature not in self._dense_s:
            self._dense_s[temperature] = gradient(self.model, self.s, temperature).grads
        return self._dense_s[temperature]

    def scores(self, measure: Measure) -> dict[str, Tensor]:
        """``measure``'s filter scores of a copy of the model on S at its own temperature, in a
        context seeded as a prune event's (the checkpoint's epoch as the event's index)."""
        prune, seed = self.run.settings.prune, self.run.settings.experiment.seed
        event_seed = seeded_generator(seed, self.epoch, SCORING_SEED_STREAM).initial_seed()
        ctx = ScoreContext(copy.deepcopy(self.model), self.s, temperature=measure.temperature,
                           device=self.example.device, hvp_method=prune.hvp_method,
                           hvp_memory_gb=prune.hvp_memory_gb, layout=prune.scoring_layout,
                           shortcuts=prune.scoring_shortcuts, seed=event_seed)
        return score(None, measure, None, granularity=FILTER, temperature=measure.temperature,
                     ctx=ctx)

    def remove(self, measure: Measure, fraction: float) -> rm.Removal:
        """The measure's lowest ``fraction`` of the dense filters, removed from a copy with the
        run's ``prune.*`` options."""
        prune = self.run.settings.prune
        options = {"max_fraction": prune.max_fraction, "protected": tuple(prune.protected),
                   "round_to": prune.round_to, "residual": prune.residual}
        return rm.remove(self.model, self.scores(measure), fraction, options, self.example)


def measure_record(point: Checkpoint, measure: Measure, fraction: float) -> dict[str, Any]:
    """Everything ``fp intervene`` records of ``measure`` removing ``fraction`` at ``point``."""
    model, t = point.model, point.train_t
    removal = point.remove(measure, fraction)
    zeroed = rm.zeroed_entries(model, removal, point.example, norms=False)  # θ of the filters
    after_v = gradient(removal.model, point.v, t)
    before = point.dense_v
    loss_zeroed = mean_loss(rm.zeroed_copy(model, zeroed), point.v, t)
    record = {"seed": point.run.settings.experiment.seed, "epoch": point.epoch,
              "measure": measure.name, "fraction": fraction,
              "samples_v": sum(len(y) for _, y in point.v),
              "samples_s": sum(len(y) for _, y in point.s),
              "temperature_train": t, "temperature_measure": measure.temperature,
              "loss_before": before.loss, "loss_zeroed": loss_zeroed,
              "loss_removed": after_v.loss,
              "abs_change_zeroed": abs(loss_zeroed - before.loss),
              "abs_change_removed": abs(after_v.loss - before.loss),
              "predicted_zeroed": predicted_zeroing(model, before, removal, point.example),
              "predicted_removed": predicted_removal(model, before, removal, point.example)}
    record.update(theta_g_change(model, before, removal.model, after_v))
    for suffix, temperature in (("measure_t", measure.temperature), ("train_t", t)):
        record.update(grad_norms(point, removal, temperature, suffix))
    widths = pruning.filter_widths(model)
    record["first_convs_removed"] = {name: len(removal.filters(name)) / widths[name]
                                     for name in rm.first_convs(model)}
    record.update(filters_removed=pruning.prunable_filters(model)
                  - pruning.prunable_filters(removal.model),
                  dense_filters=pruning.prunable_filters(model),
                  architecture=point.run.settings.model.architecture,
                  dataset=point.run.settings.data.dataset, run=point.run.name)
    return record


def theta_g_change(dense: nn.Module, before: Pass, pruned: nn.Module, after: Pass) -> dict:
    """Θᵀg on V before and after removal, and its change relative to |before|."""
    old, new = theta_g(dense, before.grads), theta_g(pruned, after.grads)
    relative = (new - old) / abs(old) if old else float("nan")
    return {"theta_g_before": old, "theta_g_after": new, "theta_g_rel_change": relative}


def grad_norms(point: Checkpoint, removal: rm.Removal, temperature: float, suffix: str) -> dict:
    """||g_S||² at ``temperature`` over the surviving parameters, before and after removal."""
    before = surviving_before(point.dense_grad_s(temperature), removal)
    after = grad_norm_sq(rm.live(removal.model, gradient(removal.model, point.s,
                                                          temperature).grads))
    return {f"grad_norm_sq_before_{suffix}": before, f"grad_norm_sq_after_{suffix}": after,
            f"log_grad_ratio_{suffix}": log_ratio(after, before)}
