"""A full run's loss L_V on its fixed evaluation set V: the metrics.jsonl "eval_set" records that
a run with data.eval_samples > 0 writes at every epoch end and just before and just after every
prune event. Claim (i) reads it after the prune events (docs/claims.md, "Quantities")."""
from __future__ import annotations

from dataclasses import dataclass

from fp.tools.report.records import RunRecord, number

#: the epochs after the last prune event at which L_V is compared; the first is claim (i)'s
#: primary quantity (docs/claims.md)
HORIZONS = (1, 3, 5)


@dataclass
class Recovery:
    """Epochs after the first prune event until L_V is back at or below its level just before
    it; ``epochs`` is None when it never was by the run's end, ``observed`` epochs later."""

    epochs: int | None
    observed: int

    @property
    def censored(self) -> bool:
        return self.epochs is None

    def text(self) -> str:
        return str(self.epochs) if not self.censored else f">{self.observed} (censored)"


@dataclass
class EvalCurve:
    """One run's L_V by epoch end and by prune event; each value with its training step. A
    resumed run's repeated records count once (the last copy)."""

    epochs: dict[int, tuple[float, float]]         # epoch -> (step, L_V)
    before: dict[int, tuple[float, float]]         # prune event index -> (step, L_V)
    after: dict[int, tuple[float, float]]
    prune_steps: dict[int, float]                  # prune event index -> step

    @classmethod
    def of(cls, run: RunRecord) -> "EvalCurve":
        places: dict[str, dict] = {"epoch": {}, "before_prune": {}, "after_prune": {}}
        for record in run.evals:
            at, step = record.get("at"), number(record.get("step"))
            loss = number(record.get("loss"))
            key = number(record.get("epoch" if at == "epoch" else "index"))
            if at in places and None not in (key, step, loss):
                places[at][int(key)] = (step, loss)
        steps = {int(i): s for i, s in ((number(p.get("index")), number(p.get("step")))
                                        for p in run.prunes) if i is not None and s is not None}
        for index, (step, _) in [*places["before_prune"].items(), *places["after_prune"].items()]:
            steps[index] = step
        return cls(places["epoch"], places["before_prune"], places["after_prune"], steps)

    def ended_by(self, step: float) -> int:
        """The last epoch that ended at or before ``step`` (0 for none). A prune event at an
        epoch's last step comes before that epoch's end record, which has the same step."""
        return max((e for e, (s, _) in self.epochs.items() if s <= step), default=0)

    def since(self, index: int) -> dict[int, float]:
        """k -> L_V at the end of the k-th epoch after prune event ``index`` (k = 0: just after
        the event)."""
        if index not in self.prune_steps:
            return {}
        start = self.ended_by(self.prune_steps[index])
        curve = {e - start: loss for e, (_, loss) in self.epochs.items() if e > start}
        if index in self.after:
            curve[0] = self.after[index][1]
        return dict(sorted(curve.items()))

    def since_last_prune(self) -> dict[int, float]:
        return self.since(max(self.prune_steps)) if self.prune_steps else {}

    def after_last_prune(self, k: int) -> float | None:
        return self.since_last_prune().get(k)

    def recovery(self) -> Recovery | None:
        """Epochs after the first prune event until L_V <= its value just before that event."""
        if not self.before or not self.prune_steps:
            return None
        first = min(self.before)
        reference = self.before[first][1]
        curve = {k: v for k, v in self.since(first).items() if k > 0}
        if not curve:
            return None
        back = [k for k, loss in curve.items() if loss <= reference]
        return Recovery(min(back) if back else None, max(curve))


def curve(run: RunRecord) -> EvalCurve:
    return EvalCurve.of(run)


def loss_after_last_prune(k: int):
    """The per-run quantity "L_V k epochs after the last prune event"."""
    def of_run(run: RunRecord) -> float | None:
        return curve(run).after_last_prune(k)
    return of_run


def recovery_epochs(run: RunRecord) -> Recovery | None:
    return curve(run).recovery()
