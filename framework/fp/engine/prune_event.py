"""A prune event inside a run: score, let plugins see or replace the scores, prune, rebuild."""
from __future__ import annotations

import torch

from fp import pruning
from fp.data import scoring_dataset, seeded_generator
from fp.errors import ConfigError
from fp.engine import optim
from fp.engine.distributed import broadcast_buffers
from fp.engine.latency_event import prune_latency
from fp.run import PruneEvent, Run
from fp.schedule import PruneStep
from fp.scoring import ScoreContext, sampling, score
from fp.nn import FILTER


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
               "scoring_seed", "scoring_layout", "scoring_layout_s", "hvp_method", "hvp_kept",
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
    (None: the measure's own T), on the run's device, with the run's HVP and layout settings.
    Its ``seed`` (named in ``info["scoring_seed"]``) is a SeedSequence mix of
    ``experiment.seed``, ``index`` and a stream key: the same on every rank and when a resumed
    run redoes the event, different for other seeds and events."""
    prune = run.settings.prune
    temperature = run.measure.temperature if prune.temperature is None else prune.temperature
    seed = seeded_generator(run.settings.experiment.seed, index,
                            SCORING_SEED_STREAM).initial_seed()  # the mixed 63-bit seed
    ctx = ScoreContext(run.model, batches, temperature=temperature, device=run.device,
                       hvp_method=prune.hvp_method, hvp_memory_gb=prune.hvp_memory_gb,
                       layout=prune.scoring_layout, seed=seed)
    ctx.info["scoring_seed"] = seed
    return ctx


def filter_options(run: Run) -> dict:
    """``fp.pruning.prune_filters``'s options as the run's ``prune.*`` settings give them."""
    prune = run.settings.prune
    return {"target_type": prune.target_type, "max_fraction": prune.max_fraction,
            "protected": tuple(prune.protected), "round_to": prune.round_to,
            "residual": prune.residual}


def prune_now(run: Run, planned: PruneStep, index: int, example_inputs: torch.Tensor) -> PruneEvent:
    prune = run.settings.prune
    broadcast_buffers(run.model, run.world_size)
    event = PruneEvent(index=index, step=run.step, epoch=run.epoch, target=planned.target,
                       granularity=prune.granularity)
    batches, drawn = draw_scoring(run, index)
    event.ctx = scoring_context(run, batches, index)
    event.ctx.info.update(drawn)
    run.manager.call("before_prune", run=run, event=event)
    scores = score(None, run.measure, None, granularity=event.granularity,
                   temperature=event.ctx.temperature, ctx=event.ctx)
    replaced = run.manager.call("score", run=run, event=event, scores=scores)
    event.scores = replaced if replaced is not None else scores
    if event.granularity == FILTER:
        _prune_filters(run, event, example_inputs)
    else:
        _mask_weights(run, event, rewind=planned.rewind)
    run.manager.call("after_prune", run=run, event=event)
    return event


def _prune_filters(run: Run, event: PruneEvent, example_inputs: torch.Tensor) -> None:
    prune = run.settings.prune
    params = dict(run.model.named_parameters())
    carry = None
    if prune.preserve_momentum:
        carry = {n: run.optimizer.state[p]["momentum_buffer"] for n, p in params.items()
                 if "momentum_buffer" in run.optimizer.state.get(p, {})}
    if prune.target_type == "latency":
        result = prune_latency(run, event, example_inputs, carry)
    else:
        result = pruning.prune_filters(run.model, event.scores, event.target,
                                       example_inputs=example_inputs, dense=run.dense,
                                       carry=carry, **filter_options(run))
    # masked filters (prune.residual = "masked") are pruned filters of their layer too
    event.removed = {**result.removed, **result.masked}
    if result.masked:
        event.info["masked"] = {name: rows.tolist() for name, rows in result.masked.items()}
    event.widths_before, event.widths_after = result.widths_before, result.widths_after
    new_params = dict(run.model.named_parameters())
    momentum = {id(new_params[n]): t for n, t in (result.carried or {}).items() if n in new_params}
    run.optimizer = optim.rebuild_optimizer(run.model, run.settings.train, run.optimizer,
                                            momentum)


def _mask_weights(run: Run, event: PruneEvent, rewind: bool) -> None:
    prune = run.settings.prune
    run.masks = pruning.weight_masks(event.scores, event.target, protected=tuple(prune.protected),
                                     current=run.masks or None, max_fraction=prune.max_fraction)
    if rewind and "rewind" in run.state:
        with torch.no_grad():
            for name, p in run.model.named_parameters():
                p.copy_(run.state["rewind"][name].to(p.device))
        run.optimizer = optim.make_optimizer(run.model, run.settings.train)
        # the LR schedule restarts with the first epoch after this event (events fall at epoch ends)
        run.state["cycle_start"] = -(-run.step // len(run.train_loader))
    pruning.apply_masks(run.model, run.masks, run.optimizer)
    event.sparsity = pruning.sparsity(run.model, run.masks)
