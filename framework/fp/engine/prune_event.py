"""A prune event inside a run. The scoring and the pruning are ``fp.pruning.prune_event``, the
code ``fp.prune`` runs; this module adds what belongs to a run:

- the scoring samples, drawn reproducibly per event (``draw_scoring``), and the seeded
  ``ScoreContext`` they are scored in (``scoring_context``);
- the hooks: ``before_prune``, ``score`` (plugins may replace the scores), ``after_prune``;
- a latency target (``prune.target_type = "latency"``): rank 0 times pruned copies on the run's
  device at ``prune.latency_batch``, by default the dense model's saturating batch (found once, at
  the first event, and kept in the checkpoint), in the run's numerics (bf16 autocast with
  ``experiment.amp``, channels_last with ``experiment.channels_last``), and the other ranks apply
  rank 0's choice untimed; each probe becomes a ``latency_probe`` record in metrics.jsonl and
  TensorBoard scalars, the event's dense and final latencies go into its prune record and the
  run's summary;
- the optimizer rebuilt for the pruned model (momentum of surviving filters kept with
  ``prune.preserve_momentum``), or, at weight granularity, the masked weights' optimizer state
  zeroed and a rewinding schedule's weights reset (``fp.engine.checkpoint.Rewind``);
- the event's record for metrics.jsonl (``prune_record``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from fp import pruning
from fp import timing
from fp.data import scoring_dataset, seeded_generator
from fp.errors import ConfigError, PruningError
from fp.engine import optim
from fp.engine.distributed import broadcast_buffers
from fp.nn import FILTER
from fp.pruning import PruneOptions, PruneRecord
from fp.run import PruneEvent, Run
from fp.schedule import PruneStep
from fp.scoring import ScoreContext, sampling

if TYPE_CHECKING:  # pragma: no cover
    from fp.engine.checkpoint import Rewind

#: run.state key of the latency batch and the last event's latencies (plain data: checkpointed)
LATENCY_STATE = "latency"


def scoring_batches(run: Run, index: int,
                    needs_data: bool | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The event's scoring batches (see ``draw_scoring``)."""
    return draw_scoring(run, index, needs_data)[0]


def draw_scoring(run: Run, index: int, needs_data: bool | None = None) -> tuple[list, dict]:
    """(batches, what the draw was for the prune record) of event ``index``: ``prune.samples``
    training examples in batches of ``prune.batch_size``, drawn afresh for each event but
    reproducibly (seeded by the experiment's seed and the event). Class-balanced when
    ``prune.balanced`` (None: the measure's ``balanced``) says so: then exactly
    ``prune.samples // classes`` of every class (``fp.scoring.sampling``), every rank holding
    its disjoint share; otherwise each rank's shard of the shuffled split gives its first
    ``prune.samples // world_size`` examples, the last batch cut short (fewer if the split is
    smaller). With ``prune.scoring_augment`` the images are augmented as training images are
    (random crop and flip, as the paper's code scores them): the same images in the same order,
    their crops and flips drawn from the draw's seed, so a resumed run and every rank see the
    same ones. A data-free measure (``needs_data`` False, by default the run's measure's) gets
    one example, for the input shape. The training split drawn from lacks the fixed evaluation
    set's images (``data.eval_samples``; all of it when that is 0)."""
    prune, dataset = run.settings.prune, scoring_dataset(run)
    if not (run.measure.needs_data if needs_data is None else needs_data):
        loader = dataset.loader("train", 1, device=run.device)
        return [next(iter(loader))], {}
    seed = run.settings.experiment.seed + 7919 * index
    balanced = prune.balanced
    if balanced if balanced is not None else run.measure.balanced:
        return _balanced(run, dataset, seed)
    loader = dataset.loader("train", prune.batch_size, shuffle=True,
                            augment=prune.scoring_augment, device=run.device, seed=seed,
                            rank=run.rank, world_size=run.world_size)
    batches = first_samples(loader, max(1, prune.samples // run.world_size))
    # ranks' shards are equally long, so each holds the same number of samples
    return batches, {"scoring_balanced": False,
                     "scoring_samples": sum(len(y) for _, y in batches) * run.world_size,
                     "scoring_augment": prune.scoring_augment}


def first_samples(loader, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The loader's first ``count`` examples (fewer if it runs out), the last batch cut short:
    ``prune.samples = 300`` scores 300 images, two batches of 128 and one of 44."""
    batches, taken = [], 0
    for x, y in loader:
        keep = min(len(y), count - taken)
        batches.append((x[:keep], y[:keep]))
        taken += keep
        if taken >= count:
            break
    return batches


def _balanced(run: Run, dataset, seed: int) -> tuple[list, dict]:
    """Every rank draws the same balanced set from the whole split (of ``dataset``: the run's
    without V), augmented alike when ``prune.scoring_augment`` (the loader is rank 0's on every
    rank), then keeps its share."""
    prune, classes = run.settings.prune, dataset.num_classes
    quota = sampling.per_class_quota(prune.samples, classes, run.world_size)
    loader = dataset.loader("train", prune.batch_size, shuffle=True,
                            augment=prune.scoring_augment, device=run.device, seed=seed)
    try:
        x, y = sampling.draw_balanced(loader, classes, quota)
    except ConfigError as exc:
        if dataset is run.dataset:  # nothing held out
            raise
        held = run.settings.data.eval_samples
        raise ConfigError(f"{str(exc).rstrip('.')} once data.eval_samples = {held} holds "
                          f"{held // classes} of every class out of the scoring draws.") from None
    batches = sampling.rank_share(x, y, prune.batch_size, run.rank, run.world_size)
    return batches, {"scoring_balanced": True, "scoring_samples": len(y),
                     "scoring_class_counts": sampling.class_counts(y, classes),
                     "scoring_augment": prune.scoring_augment}


#: what ScoreContext.info says about a prune event's scoring samples, its seed and
#: Hessian-gradient products, for its record
RECORD_INFO = ("scoring_balanced", "scoring_samples", "scoring_class_counts", "scoring_augment",
               "scoring_seed", "scoring_layout", "scoring_layout_s", "scoring_shortcuts",
               "scoring_matmul", "scoring_fold", "scoring_shortcuts_s", "hvp_method", "hvp_kept",
               "hvp_probe", "hvp_seconds", "hvp_fallback_reason")

#: seeded_generator key that sets an event's scoring seed apart from its data draw's streams
SCORING_SEED_STREAM = 0x5EED


def hvp_record(event: PruneEvent) -> dict:
    """How the event's samples were drawn (balanced or not, how many, per class when balanced)
    and its Hg computed (method, graphs kept, probe timings); {} for a context built elsewhere
    that has computed no Hg."""
    info = event.ctx.info if event.ctx is not None else {}
    return {key: info[key] for key in RECORD_INFO if key in info}


def scoring_context(run: Run, batches, index: int) -> ScoreContext:
    """The context prune event ``index`` scores ``run.measure`` in: at ``prune.temperature``
    (None: the measure's own T), on the run's device, with the run's HVP, layout and shortcut
    settings.
    Its ``seed`` (named in ``info["scoring_seed"]``) is a SeedSequence mix of
    ``experiment.seed``, ``index`` and a stream key: the same on every rank and when a resumed
    run redoes the event, different for other seeds and events."""
    prune = run.settings.prune
    temperature = run.measure.temperature if prune.temperature is None else prune.temperature
    seed = seeded_generator(run.settings.experiment.seed, index,
                            SCORING_SEED_STREAM).initial_seed()  # the mixed 63-bit seed
    ctx = ScoreContext(run.model, batches, temperature=temperature, device=run.device,
                       hvp_method=prune.hvp_method, hvp_memory_gb=prune.hvp_memory_gb,
                       layout=prune.scoring_layout, shortcuts=prune.scoring_shortcuts, seed=seed)
    ctx.info["scoring_seed"] = seed
    return ctx


def prune_options(run: Run) -> PruneOptions:
    """The run's ``prune.*`` settings as the options of ``fp.pruning.prune_event``."""
    prune = run.settings.prune
    return PruneOptions(granularity=prune.granularity, target_type=prune.target_type,
                        max_fraction=prune.max_fraction, protected=tuple(prune.protected),
                        round_to=prune.round_to, residual=prune.residual,
                        temperature=prune.temperature, latency_probes=prune.latency_probes)


def filter_options(run: Run) -> dict:
    """``fp.pruning.prune_filters``'s options as the run's ``prune.*`` settings give them (for
    callers that run the surgery alone, ``fp bench``)."""
    options = prune_options(run)
    return {"target_type": options.target_type, "max_fraction": options.max_fraction,
            "protected": options.protected, "round_to": options.round_to,
            "residual": options.residual}


def prune_now(run: Run, planned: PruneStep, index: int, example_inputs: torch.Tensor,
              rewind: "Rewind | None" = None) -> PruneEvent:
    """Prune event ``index`` of ``run`` as ``planned``: draw, score and prune through
    ``fp.pruning.prune_event`` with the hooks around it, then rebuild what the run holds.
    ``rewind`` (``fp.engine.checkpoint.Rewind``) resets the weights of a rewinding step."""
    options = prune_options(run)
    broadcast_buffers(run.model, run.world_size)
    event = PruneEvent(index=index, step=run.step, epoch=run.epoch, target=planned.target,
                       granularity=options.granularity)
    batches, drawn = draw_scoring(run, index)
    event.ctx = scoring_context(run, batches, index)
    event.ctx.info.update(drawn)
    run.manager.call("before_prune", run=run, event=event)

    def rescore(scores: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        replaced = run.manager.call("score", run=run, event=event, scores=scores)
        event.scores = replaced if replaced is not None else scores
        return event.scores

    carry = momentum(run) if options.granularity == FILTER else None
    if options.target_type == "latency":
        record = _prune_to_latency(run, event, options, example_inputs, carry, rescore)
    else:
        record = pruning.prune_event(run.model, run.measure, event.ctx, event.target, options,
                                     example_inputs=example_inputs, dense=run.dense,
                                     carry=carry, rescore=rescore)[1]
    if options.granularity == FILTER:
        _after_surgery(run, event, record)
    else:
        _after_masking(run, event, record, rewind if planned.rewind else None)
    run.manager.call("after_prune", run=run, event=event)
    return event


def momentum(run: Run) -> dict[str, torch.Tensor] | None:
    """The SGD momentum of every parameter that has one, to be pruned with it
    (``prune.preserve_momentum``); None when the setting is off."""
    if not run.settings.prune.preserve_momentum:
        return None
    return {n: run.optimizer.state[p]["momentum_buffer"] for n, p in run.model.named_parameters()
            if "momentum_buffer" in run.optimizer.state.get(p, {})}


def _after_surgery(run: Run, event: PruneEvent, record: PruneRecord) -> None:
    """What a filter event leaves a run: the event filled in, a fresh optimizer for the new
    parameters (with the surviving momentum when carried)."""
    result = record.result
    event.removed = record.pruned
    if result.masked:
        event.info["masked"] = {name: rows.tolist() for name, rows in result.masked.items()}
    event.widths_before, event.widths_after = result.widths_before, result.widths_after
    new_params = dict(run.model.named_parameters())
    carried = {id(new_params[n]): t for n, t in (result.carried or {}).items() if n in new_params}
    run.optimizer = optim.rebuild_optimizer(run.model, run.settings.train, run.optimizer, carried)


def _after_masking(run: Run, event: PruneEvent, record: PruneRecord,
                   rewind: "Rewind | None") -> None:
    """What a weight event leaves a run: the weights of a rewinding step reset (with a fresh
    optimizer and the learning-rate schedule restarted), the masked weights' optimizer state
    zeroed."""
    if rewind is not None and rewind.weights is not None:
        rewind.reset(run.model)
        run.optimizer = optim.make_optimizer(run.model, run.settings.train)
        # the LR schedule restarts with the first epoch after this event (events fall at epoch ends)
        rewind.cycle_start = -(-run.step // len(run.train_loader))
    pruning.apply_masks(run.model, run.masks, run.optimizer)
    event.sparsity = record.sparsity


def prune_record(event: PruneEvent, run: Run, stats: dict[str, Any]) -> dict[str, Any]:
    """The event's ``"prune"`` record for metrics.jsonl: ``stats`` (the model's size after it),
    the event, how its samples were drawn and its Hg computed, a latency event's latencies and,
    with ``prune.residual = "masked"``, the masked filters per layer."""
    record = dict(stats)
    record.update(event="prune", index=event.index, step=run.step, epoch=run.epoch,
                  target=event.target, sparsity=event.sparsity,
                  widths=event.widths_after or None, widths_before=event.widths_before or None)
    record.update(hvp_record(event), **event.info.get("latency", {}))
    if pruning.filter_masks(run.model):
        record["masked_filters"] = pruning.masked_filter_counts(run.model)
    return record


# --- a latency target ---------------------------------------------------------------------------

def timing_options(run: Run) -> dict[str, Any]:
    """The run's numerics, for timing its model: bf16 with ``experiment.amp``, channels_last."""
    experiment = run.settings.experiment
    return {"dtype": "bfloat16" if experiment.amp else "float32",
            "channels_last": experiment.channels_last}


def latency_batch(run: Run, example: torch.Tensor) -> int:
    """``prune.latency_batch``, or the dense model's saturating batch on the run's device (found
    once and kept in ``run.state``, so in the checkpoint)."""
    state = run.state.setdefault(LATENCY_STATE, {})
    if "latency_batch" not in state:
        batch = run.settings.prune.latency_batch
        if batch is None:
            batch, curve = timing.saturating_batch(run.model, example, device=run.device,
                                                   **timing_options(run))
            state["saturation"] = [list(point) for point in curve]
        state["latency_batch"] = int(batch)
    return state["latency_batch"]


def _prune_to_latency(run: Run, event: PruneEvent, options: PruneOptions,
                      example_inputs: torch.Tensor, carry: dict[str, torch.Tensor] | None,
                      rescore) -> PruneRecord:
    """Rank 0 times and chooses, then shares its choice (or its error) with the other ranks,
    which score alike and apply it untimed; rank 0 records the probes."""
    common = dict(example_inputs=example_inputs, dense=run.dense, carry=carry, rescore=rescore)
    if not run.is_main:
        def rank_zeros_choice() -> int:
            candidate, failure = _share(run, None, None)
            if failure is not None:
                raise PruningError(failure)
            return candidate

        return pruning.prune_event(run.model, run.measure, event.ctx, event.target, options,
                                   candidate=rank_zeros_choice, **common)[1]
    example = example_inputs[:1]
    latency_fn = pruning.measured_latency(example, latency_batch(run, example), device=run.device,
                                          **timing_options(run))
    try:
        record = pruning.prune_event(run.model, run.measure, event.ctx, event.target, options,
                                     latency_fn=latency_fn, **common)[1]
    except PruningError as exc:
        _share(run, None, str(exc))
        raise
    _share(run, record.latency.candidate, None)
    record_probes(run, event, record.latency)
    return record


def _share(run: Run, candidate: int | None, failure: str | None) -> tuple[int | None, str | None]:
    """Rank 0's choice (the candidate count, or its error) on every rank."""
    shared = [candidate, failure]
    if run.world_size > 1:
        dist.broadcast_object_list(shared, src=0)
    return shared[0], shared[1]


def record_probes(run: Run, event: PruneEvent, done: pruning.LatencyPrune) -> None:
    """metrics.jsonl and TensorBoard get every probe; the prune record and the summary the
    event's dense and final latencies."""
    state = run.state[LATENCY_STATE]
    batch = state["latency_batch"]
    for probe in done.records():
        run.log({"event": "latency_probe", "index": event.index, "step": run.step,
                 "epoch": run.epoch, "target": event.target, "latency_batch": batch, **probe})
        run.log_scalars({f"latency/event_{event.index}/ratio": probe["ratio"],
                         f"latency/event_{event.index}/latency_ms": 1e3 * probe["latency_s"]},
                        step=probe["probe"])
    summary = {**done.summary(), "latency_batch": batch, "latency_target": event.target,
               "latency_candidate": done.candidate}
    state["probes_total"] = state.get("probes_total", 0) + summary["latency_probes"]
    state.update({k: v for k, v in summary.items() if k != "latency_candidate"})
    event.info["latency"] = summary
    run.log_scalars({"latency/ratio": summary["latency_ratio"],
                     "latency/final_ms": 1e3 * summary["final_latency_s"],
                     "latency/dense_ms": 1e3 * summary["dense_latency_s"]}, step=run.step)
