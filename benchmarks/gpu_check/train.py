"""The GPU check's training timings: a few epochs of a protocol through ``fp.run_experiment``, the
first rounds of its prune-and-train schedule kept exactly, each epoch's clock split into steady
training, warm-up (kernel selection, compilation) and the prune event, and the extrapolation of
those parts to the whole protocol."""
from __future__ import annotations

import tempfile
import time
from statistics import median
from typing import Any, Sequence

import torch

import fp
from fp.hookspecs import hookimpl

from .monitor import Utilisation, clock, error_text

#: steps at the start of every epoch that may carry warm-up; the rest run at the steady rate
WARM_STEPS = 5
#: what an epoch record keeps of the engine's epoch metrics besides its clock
EPOCH_METRICS = ("test_acc", "filters_kept_frac")


def protocol(files: Sequence[str], bindings: Sequence[str], manager) -> dict[str, Any]:
    """What the experiment itself runs: epochs, prune rounds, final target and schedule (read
    with ``manager``, an ``fp.make_manager()``)."""
    st = fp.parse_experiment(files, bindings, manager)
    return {"epochs": st.train.epochs, "rounds": st.prune.rounds, "target": st.prune.target,
            "schedule": st.prune.schedule, "batch_size": st.train.batch_size}


def short_bindings(proto: dict[str, Any], epochs: int, manager) -> tuple[list[str], bool]:
    """Bindings that run the protocol's first ``epochs`` epochs with its prune events: as many
    rounds, ending at the target the protocol reaches after them (for the paper's rounds that
    plans exactly the protocol's first events, since p_i depends on n(1-P)/P only). Also whether
    the short plan's targets match the protocol's (checked, not assumed). The LR is held constant:
    the protocol's milestones lie beyond the short run and the LR does not change the work."""
    schedule = manager.registries["schedules"].build(proto["schedule"])
    full = schedule.plan(proto["target"], proto["rounds"], proto["epochs"], 1)
    rounds = min(epochs, len(full))
    target = full[rounds - 1].target if rounds else 0.0
    short = schedule.plan(target, rounds, epochs, 1) if rounds else []
    same = all(abs(a.target - b.target) < 1e-9 and a.step == b.step
               for a, b in zip(short, full[:rounds])) and len(short) == rounds
    return [f"train.epochs = {epochs}", f"prune.rounds = {max(rounds, 1)}",
            f"prune.target = {target!r}", "train.lr_schedule = 'constant'"], same


class OutOfTime(Exception):
    """Raised from a hook to end a timed run when the time budget says so."""


class EpochClock:
    """Hook implementations that stamp each epoch (CUDA synchronised): its start, the end of its
    WARM_STEPS-th and last steps, the end of its prune event and its end."""

    __name__ = "gpu_check_clock"

    def __init__(self, device: torch.device, deadline: float):
        self.device, self.deadline = device, deadline
        self.epochs: list[dict[str, float]] = []
        self.stopped = ""

    @hookimpl(tryfirst=True)
    def run_start(self, run) -> None:
        self.steps = len(run.train_loader)
        self.warm = min(WARM_STEPS, self.steps // 2)
        self.stamps, self.done = {"start": clock(self.device)}, 0

    @hookimpl(trylast=True)
    def after_step(self, run, step: int, loss) -> None:
        self.done += 1
        if self.done == self.warm:
            self.stamps["warm"] = clock(self.device)
        if self.done == self.steps:
            self.stamps["trained"] = clock(self.device)
        if time.perf_counter() > self.deadline:
            self.stop(f"the time budget ran out in epoch {len(self.epochs) + 1}")

    @hookimpl(trylast=True)
    def after_prune(self, run, event) -> None:
        self.stamps["pruned"] = clock(self.device)

    @hookimpl(trylast=True)
    def after_epoch(self, run, epoch: int, metrics: dict[str, float]) -> None:
        end = clock(self.device)
        self.epochs.append({"epoch": epoch, **split_epoch(self.stamps, end, self.steps, self.warm),
                            **{key: round(metrics[key], 4) for key in EPOCH_METRICS
                               if key in metrics}})
        self.stamps, self.done = {"start": end}, 0
        left = self.deadline - time.perf_counter()
        if epoch < run.settings.train.epochs and left < 1.5 * self.epochs[-1]["epoch_s"]:
            self.stop(f"{left:.0f} s of the budget left could not fit epoch {epoch + 1}")

    def stop(self, reason: str) -> None:
        self.stopped = reason
        raise OutOfTime(reason)


def split_epoch(stamps: dict[str, float], end: float, steps: int, warm: int) -> dict[str, float]:
    """One epoch's seconds: all of it, its steps' steady rate, the warm-up its first steps took
    beyond that rate, its prune event (last step to the event's end: the scoring draw, the
    measure, the plugins' diagnostics, surgery) and the rest at the steady rate (evaluation and
    checkpoint included)."""
    start = stamps["start"]
    trained = stamps.get("trained", end)
    warm_at = stamps.get("warm", start)
    step_s = (trained - warm_at) / max(1, steps - warm)
    warmup_s = max(0.0, warm_at - start - warm * step_s)
    prune_s = stamps["pruned"] - trained if "pruned" in stamps else 0.0
    epoch_s = end - start
    return {key: round(value, 6) for key, value in {
        "epoch_s": epoch_s, "step_s": step_s, "warmup_s": warmup_s, "prune_s": prune_s,
        "steady_epoch_s": epoch_s - warmup_s - prune_s}.items()}


def extrapolate(epochs: list[dict[str, float]], proto: dict[str, Any]) -> dict[str, Any]:
    """The whole protocol from the timed epochs. Warm-ups: the first epoch's once, then one per
    prune event (new layer shapes: cuDNN picks kernels again, torch.compile recompiles), those
    timed as timed and the rest as the latest; every epoch at the steady epoch time (the median
    of the epochs after the first, which carries one-off costs) and every prune event at the
    median event time."""
    later = epochs[1:] or epochs
    timed_rewarm = sum(e["warmup_s"] for e in epochs[1:])
    rewarm = epochs[-1]["warmup_s"]  # the latest: what a further change of shapes costs
    steady = median(e["steady_epoch_s"] for e in later)
    events = [e["prune_s"] for e in epochs if e["prune_s"] > 0]
    prune = median(events) if events else 0.0
    n, rounds = proto["epochs"], proto["rounds"] if proto["target"] > 0 else 0
    rest = max(0, rounds - (len(epochs) - 1))
    total = epochs[0]["warmup_s"] + timed_rewarm + rest * rewarm + n * steady + rounds * prune
    return {"first_warmup_s": epochs[0]["warmup_s"], "timed_rewarm_s": round(timed_rewarm, 6),
            "rewarm_s": rewarm, "steady_epoch_s": round(steady, 6),
            "prune_event_s": round(prune, 6), "protocol_epochs": n,
            "protocol_prune_events": rounds, "full_protocol_s": round(total, 2),
            "full_protocol_h": round(total / 3600, 3),
            "formula": f"first_warmup_s + timed_rewarm_s + {rest} x rewarm_s + "
                       f"{n} x steady_epoch_s + {rounds} x prune_event_s",
            "caveat": "an upper bound for pruned runs: the timed epochs train the model of the "
                      "first rounds, later epochs a smaller one" +
                      ("" if len(epochs) > 1 else "; one epoch timed, so its warm-up stands "
                                                  "for every re-warm-up")}


def time_variant(files: Sequence[str], bindings: Sequence[str], proto: dict[str, Any], *,
                 device: torch.device, deadline: float) -> dict[str, Any]:
    """Run the experiment with ``bindings`` under an EpochClock and extrapolate its epochs."""
    timer = EpochClock(device, deadline)
    start = time.perf_counter()
    summary: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="fp-gpu-check-run-") as out, \
            Utilisation(device) as utilisation:
        try:
            summary = fp.run_experiment(files, bindings, out=out, quiet=True,
                                        manager=fp.make_manager(plugins=(timer,))).summary
        except Exception as exc:  # noqa: BLE001 - a stop by the budget still reports its epochs
            if not timer.stopped or not timer.epochs:
                raise RuntimeError(timer.stopped or error_text(exc)) from exc
    found: dict[str, Any] = {"ok": True, "bindings": list(bindings),
                             "steps_per_epoch": timer.steps, "warm_steps": timer.warm,
                             "epochs": timer.epochs, "gpu_utilisation": utilisation.result(),
                             "wall_s": round(time.perf_counter() - start, 2)}
    if timer.stopped:
        found["stopped"] = timer.stopped
    if summary:
        found["engine_wall_time_s"] = summary.get("wall_time_s")
        found["final_filters_kept"] = summary.get("filters_kept")
    found["extrapolation"] = extrapolate(timer.epochs, proto)
    return found


def compare(variants: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Speed-ups between the variants that ran, and whether compilation pays over the protocol."""
    full = {name: v["extrapolation"]["full_protocol_s"] for name, v in variants.items()
            if v.get("ok") and "extrapolation" in v}
    steady = {name: variants[name]["extrapolation"]["steady_epoch_s"] for name in full}
    found: dict[str, Any] = {"full_protocol_s": full}
    for name, base in (("amp_channels_last", "fp32"), ("amp_channels_last_compile",
                                                       "amp_channels_last")):
        if name in full and base in full:
            found[f"{name}_vs_{base}"] = {
                "steady_epoch_speedup": round(steady[base] / steady[name], 3),
                "full_protocol_speedup": round(full[base] / full[name], 3)}
    pair = ("amp_channels_last_compile", "amp_channels_last")
    if all(name in full for name in pair):
        pays = full[pair[0]] < full[pair[1]]
        found["compile_pays"] = pays
        found["verdict"] = (f"torch.compile {'pays' if pays else 'does not pay'}: the protocol "
                            f"takes {full[pair[0]] / 3600:.2f} h compiled against "
                            f"{full[pair[1]] / 3600:.2f} h without, recompiling after every "
                            f"prune event included")
    else:
        found["compile_pays"] = None
        found["verdict"] = "not compared: " + "; ".join(
            f"{name} " + (f"was skipped ({variants[name]['skipped']})" if "skipped" in
                          variants.get(name, {}) else "did not run or failed")
            for name in pair if name not in full)
    return found
