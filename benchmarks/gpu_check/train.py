"""The GPU check's training timings: a few epochs of a protocol through ``fp.run_experiment``, the
first rounds of its prune-and-train schedule kept exactly, each epoch's clock split into steady
training, the start-up of a new model (warm-up of its first steps: kernel selection, and compiled,
the compile; and its last step, whose short batch is a new shape) and the prune event, and the
extrapolation of those parts to the whole protocol: one start-up per model it trains (1 + its
prune events inside the training), every epoch at the steady rate, every prune event at the
timed cost. For a compiled run the start-ups are the compiles, counted as such."""
from __future__ import annotations

import tempfile
import time
from statistics import median
from typing import Any, Sequence

import torch

import fp
from fp.hookspecs import hookimpl

from .monitor import Utilisation, clock, error_text
from .sizes import COMPILED

#: steps at the start of every epoch that may carry warm-up; the rest run at the steady rate
WARM_STEPS = 5
#: what an epoch record keeps of the engine's epoch metrics besides its clock
EPOCH_METRICS = ("test_acc", "filters_kept_frac", "compiled_steps")


def protocol(files: Sequence[str], bindings: Sequence[str], manager) -> dict[str, Any]:
    """What the experiment itself runs: epochs, prune rounds, final target and schedule, the
    epochs its prune events follow and so the models it trains (read with ``manager``, an
    ``fp.make_manager()``)."""
    st = fp.parse_experiment(files, bindings, manager)
    schedule = manager.registries["schedules"].build(st.prune.schedule)
    events = ([p.step for p in schedule.plan(st.prune.target, st.prune.rounds, st.train.epochs, 1)]
              if st.prune.target > 0 else [])
    return {"epochs": st.train.epochs, "rounds": st.prune.rounds, "target": st.prune.target,
            "schedule": st.prune.schedule, "batch_size": st.train.batch_size,
            "prune_epochs": events, "models_trained": models_trained(events, st.train.epochs)}


def models_trained(prune_epochs: Sequence[int], epochs: int) -> int:
    """The models a run trains: the first, and a new one after every prune event that more
    training follows (an event at epoch 0 replaces the first before its first step; one at the
    end leaves a model that never trains)."""
    return 1 + sum(1 for e in prune_epochs if 0 < e < epochs)


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
    WARM_STEPS-th, last but one and last steps, the end of its prune event and its end."""

    __name__ = "gpu_check_clock"

    def __init__(self, device: torch.device, deadline: float):
        self.device, self.deadline = device, deadline
        self.epochs: list[dict[str, float]] = []
        self.stopped = ""
        self.steps, self.warm, self.last_batch = 0, 0, None

    @hookimpl(tryfirst=True)
    def run_start(self, run) -> None:
        self.steps = len(run.train_loader)
        self.warm = min(WARM_STEPS, (self.steps - 1) // 2)
        self.last_batch = last_batch(run, self.steps)
        self.stamps, self.done = {"start": clock(self.device)}, 0

    @hookimpl(trylast=True)
    def after_step(self, run, step: int, loss) -> None:
        self.done += 1
        for name, at in (("warm", self.warm), ("penultimate", self.steps - 1),
                         ("trained", self.steps)):
            if self.done == at:
                self.stamps[name] = clock(self.device)
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


def last_batch(run, steps: int) -> int | None:
    """The size of an epoch's last batch (one process), None where the dataset has no length."""
    try:
        images = len(run.dataset)
    except (TypeError, NotImplementedError):
        return None
    per_rank = max(1, run.settings.train.batch_size // run.world_size)
    return images - (steps - 1) * per_rank if run.world_size == 1 else None


def split_epoch(stamps: dict[str, float], end: float, steps: int, warm: int) -> dict[str, float]:
    """One epoch's seconds: all of it, its steps' steady rate (from the WARM_STEPS-th step to
    the last but one), the warm-up its first steps took beyond that rate, the tail its last step
    took beyond it (a short last batch is a new shape: kernels picked again, a graph compiled
    again), its prune event (last step to the event's end: the scoring draw, the measure, the
    plugins' diagnostics, surgery) and the rest at the steady rate (evaluation and checkpoint
    included)."""
    start = stamps["start"]
    trained = stamps.get("trained", end)
    warm_at = stamps.get("warm", start)
    penultimate = stamps.get("penultimate")
    if penultimate is not None and steps - 1 > warm:
        step_s = (penultimate - warm_at) / (steps - 1 - warm)
        tail_s = max(0.0, trained - penultimate - step_s)
    else:  # too few steps to time the last one apart
        step_s, tail_s = (trained - warm_at) / max(1, steps - warm), 0.0
    warmup_s = max(0.0, warm_at - start - warm * step_s)
    prune_s = stamps["pruned"] - trained if "pruned" in stamps else 0.0
    epoch_s = end - start
    return {key: round(value, 6) for key, value in {
        "epoch_s": epoch_s, "step_s": step_s, "warmup_s": warmup_s, "tail_s": tail_s,
        "prune_s": prune_s, "steady_epoch_s": epoch_s - warmup_s - tail_s - prune_s}.items()}


def extrapolate(epochs: list[dict[str, float]], proto: dict[str, Any]) -> dict[str, Any]:
    """The whole protocol from the timed epochs. Start-ups: one per model it trains
    (``models_trained``): the first epoch's warm-up and tail once, then those of every timed
    epoch that follows a prune event (a new model), and each model not timed at the latest one's
    (what a further change of shapes costs); every epoch at the steady epoch time (the median of
    the epochs after the first, which carries one-off costs) and every prune event at the median
    event time."""
    n, events = proto["epochs"], proto["prune_epochs"]
    models = models_trained(events, n)
    new_model = [i == 0 or epochs[i - 1]["prune_s"] > 0 for i in range(len(epochs))]
    starts = [e["warmup_s"] + e["tail_s"] for e, new in zip(epochs, new_model) if new]
    # an epoch that trains on the model of the epoch before: its warm-up and tail are steady time
    steady_of = [e["steady_epoch_s"] + (0.0 if new else e["warmup_s"] + e["tail_s"])
                 for e, new in zip(epochs, new_model)]
    later = slice(1, None) if len(epochs) > 1 else slice(None)
    steady = median(steady_of[later])
    step = median(e["step_s"] for e in epochs[later])
    restart = starts[-1]  # the latest: what a further change of shapes costs
    estimated = max(0, models - len(starts))
    starts_total = sum(starts) + estimated * restart
    timed_events = [e["prune_s"] for e in epochs if e["prune_s"] > 0]
    prune = median(timed_events) if timed_events else 0.0
    total = starts_total + n * steady + len(events) * prune
    return {"models_trained": models, "first_start_s": round(starts[0], 6),
            "restarts_timed_s": [round(s, 6) for s in starts[1:]], "restart_s": round(restart, 6),
            "restarts_estimated": estimated, "starts_s": round(starts_total, 6),
            "steady_epoch_s": round(steady, 6), "step_s": round(step, 6),
            "prune_event_s": round(prune, 6), "protocol_epochs": n,
            "protocol_prune_events": len(events), "full_protocol_s": round(total, 2),
            "full_protocol_h": round(total / 3600, 3),
            "formula": f"first_start_s + sum(restarts_timed_s) + {estimated} x restart_s + "
                       f"{n} x steady_epoch_s + {len(events)} x prune_event_s",
            "caveat": "an upper bound for pruned runs: the timed epochs train the model of the "
                      "first rounds, later epochs a smaller one" +
                      ("" if len(starts) > 1 else "; one model timed, so its start-up stands "
                                                  "for every later one")}


def compiles(x: dict[str, Any], steps_per_epoch: int, graphs_per_model: int) -> dict[str, Any]:
    """A compiled run's extrapolation ``x`` told as compiles: the engine compiles every model it
    trains afresh (1 + the prune events inside the training), each into ``graphs_per_model``
    graphs (two where an epoch's last batch is short: a second shape); their cost is the models'
    start-ups, the first compile and the post-prune recompiles timed apart where the short run
    sees them. The rest: every step at the compiled steady rate, and what else the epochs and
    prune events take."""
    steps = x["protocol_epochs"] * steps_per_epoch
    steps_s = steps * x["step_s"]
    return {"models_compiled": x["models_trained"], "graphs_per_model": graphs_per_model,
            "graph_compiles": x["models_trained"] * graphs_per_model,
            "first_compile_s": x["first_start_s"], "recompiles_timed_s": x["restarts_timed_s"],
            "recompile_s": x["restart_s"], "recompiles_estimated": x["restarts_estimated"],
            "compile_s": x["starts_s"], "compiled_steps": steps, "compiled_step_s": x["step_s"],
            "compiled_steps_s": round(steps_s, 2),
            "rest_s": round(x["full_protocol_s"] - x["starts_s"] - steps_s, 2),
            "formula": "full_protocol_s = compile_s + compiled_steps_s + rest_s (evaluation, "
                       "checkpoints, prune events)"}


def time_variant(files: Sequence[str], bindings: Sequence[str], proto: dict[str, Any], *,
                 device: torch.device, deadline: float) -> dict[str, Any]:
    """Run the experiment with ``bindings`` under an EpochClock and extrapolate its epochs; a
    compiled run also says whether its steps ran compiled and counts its compiles."""
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
                             "steps_per_epoch": timer.steps, "last_batch": timer.last_batch,
                             "warm_steps": timer.warm, "epochs": timer.epochs,
                             "gpu_utilisation": utilisation.result(),
                             "wall_s": round(time.perf_counter() - start, 2)}
    if timer.stopped:
        found["stopped"] = timer.stopped
    if summary:
        found["engine_wall_time_s"] = summary.get("wall_time_s")
        found["final_filters_kept"] = summary.get("filters_kept")
    found["extrapolation"] = x = extrapolate(timer.epochs, proto)
    if any("compiled_steps" in e for e in timer.epochs):
        found.update(compiled_run(timer, summary.get("compile"), proto["batch_size"]))
        x["compiles"] = compiles(x, timer.steps, found["graphs_per_model"])
    return found


def compiled_run(timer: EpochClock, engine: dict[str, Any] | None,
                 batch_size: int) -> dict[str, Any]:
    """Whether every step of a compiled run ran compiled: the engine's own counts (summary.json's
    ``compile`` block, when the run finished; each epoch's ``compiled_steps`` otherwise), and the
    graphs it compiled per model (from those counts; by the batch shapes where the run was
    stopped before its summary)."""
    steps = timer.steps * len(timer.epochs)
    compiled = sum(int(e.get("compiled_steps", 0)) for e in timer.epochs)
    found: dict[str, Any] = {"engine_compile": engine, "steps": steps, "compiled_steps": compiled}
    trained = len([e for i, e in enumerate(timer.epochs)
                   if i == 0 or timer.epochs[i - 1]["prune_s"] > 0])
    if engine is not None:
        found["every_step_compiled"] = (engine["compiled_steps"] == engine["steps"]
                                        and bool(engine["ended_compiled"]))
        found["graphs_per_model"] = max(1, round(engine["graphs_compiled"] / max(1, trained)))
        found["graphs_per_model_from"] = (f"the engine: {engine['graphs_compiled']} graphs for "
                                          f"the {trained} models that trained")
    else:
        short = timer.last_batch is not None and timer.last_batch != batch_size
        found["every_step_compiled"] = compiled == steps
        found["graphs_per_model"] = 2 if short else 1
        found["graphs_per_model_from"] = (f"the batch shapes: the last batch holds "
                                          f"{timer.last_batch} of {batch_size} images")
    return found


def compare(variants: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Speed-ups between the variants that ran, and whether compilation pays over the protocol:
    the compiled protocol (its compiles, its steps at the compiled rate, the rest) against the
    uncompiled one, where every step of the compiled run ran compiled."""
    full = {name: v["extrapolation"]["full_protocol_s"] for name, v in variants.items()
            if v.get("ok") and "extrapolation" in v}
    steady = {name: variants[name]["extrapolation"]["steady_epoch_s"] for name in full}
    found: dict[str, Any] = {"full_protocol_s": full}
    for name, base in (("amp_channels_last", "fp32"), (COMPILED, "amp_channels_last")):
        if name in full and base in full:
            found[f"{name}_vs_{base}"] = {
                "steady_epoch_speedup": round(steady[base] / steady[name], 3),
                "full_protocol_speedup": round(full[base] / full[name], 3)}
    pair = (COMPILED, "amp_channels_last")
    if not all(name in full for name in pair):
        found["compile_pays"] = None
        found["verdict"] = "not compared: " + "; ".join(
            f"{name} " + (f"was skipped ({variants[name]['skipped']})" if "skipped" in
                          variants.get(name, {}) else "did not run or failed")
            for name in pair if name not in full)
        return found
    compiled, eager = variants[COMPILED], variants["amp_channels_last"]["extrapolation"]
    if not compiled["every_step_compiled"]:
        found["compile_pays"] = None
        found["verdict"] = (f"undetermined: {compiled['steps'] - compiled['compiled_steps']} of "
                            f"the compiled run's {compiled['steps']} steps ran eagerly (or it did "
                            f"not end compiled), so its rate is not the compiled rate")
        return found
    c = compiled["extrapolation"]["compiles"]
    pays = full[COMPILED] < full["amp_channels_last"]
    found["compile_pays"] = pays
    found["break_even"] = break_even(compiled["extrapolation"], eager)
    found["verdict"] = (
        f"torch.compile {'pays' if pays else 'does not pay'}: {c['models_compiled']} models "
        f"compiled ({c['graph_compiles']} graphs) cost {c['compile_s']:.1f} s against "
        f"{eager['starts_s']:.1f} s of warm-ups uncompiled, and {c['compiled_steps']} steps at "
        f"{c['compiled_step_s'] * 1e3:.2f} ms against {eager['step_s'] * 1e3:.2f} ms; the protocol "
        f"takes {full[COMPILED] / 3600:.2f} h compiled against "
        f"{full['amp_channels_last'] / 3600:.2f} h without")
    return found


def break_even(compiled: dict[str, Any], eager: dict[str, Any]) -> dict[str, Any]:
    """What compiling costs up front, what it saves per epoch, and the epochs that repay it."""
    extra = compiled["starts_s"] - eager["starts_s"]
    saved = eager["steady_epoch_s"] - compiled["steady_epoch_s"]
    return {"extra_start_up_s": round(extra, 2), "saved_per_epoch_s": round(saved, 4),
            "epochs_to_repay": round(extra / saved, 1) if saved > 0 else None}
