"""Pruning: channel groups traced by torch-pruning, global ranking, physical surgery, weight
masks, model statistics and saving models as plain data.

One prune event, scored and pruned, for ``fp.prune`` and a run alike: ``prune_event`` with
``PruneOptions``, returning a ``PruneRecord`` (``event``).
Filter granularity: ``prune_filters`` = ``channel_groups`` -> ``select_channels`` ->
``prune_channels``; a latency target: ``prune_to_latency`` (timed candidates, the same ranking).
Weight granularity: ``weight_masks`` then ``apply_masks`` after every step; a model's masks live in
``model.fp_masks`` (``masks_of``, ``set_masks``). Residual channels
masked per filter (``residual``, the paper's ResNets): ``filter_masks``, applied after every step.
"""
from fp.pruning.api import prune
from fp.pruning.arch import build_model
from fp.pruning.event import PruneOptions, PruneRecord, prune_event
from fp.pruning.filters import prune_filters
from fp.pruning.groups import ChannelGroup, channel_groups
from fp.pruning.latency.target import (LatencyPrune, LatencyProbe, dense_reference, measured_latency,
                                       prune_to_latency)
from fp.pruning.filter_masks import apply_filter_masks, filter_masks, masked_filter_counts
from fp.pruning.masks import apply_masks, masks_of, set_masks, sparsity, weight_masks
from fp.pruning.residual import RESIDUAL_MODES
from fp.pruning.select import TARGET_TYPES, select_channels
from fp.pruning.serialize import load, model_from_state, model_state, save
from fp.pruning.stats import (count_flops, count_params, dense_stats, filter_widths,
                              kept_widths, prunable_filters)
from fp.pruning.surgery import PruneResult, prune_channels

__all__ = ["ChannelGroup", "LatencyPrune", "LatencyProbe", "PruneOptions", "PruneRecord", "PruneResult",
           "RESIDUAL_MODES", "TARGET_TYPES",
           "apply_filter_masks", "apply_masks", "filter_masks", "kept_widths",
           "masked_filter_counts", "masks_of", "prune_event", "set_masks",
           "build_model", "channel_groups", "count_flops", "count_params", "dense_reference",
           "dense_stats", "filter_widths", "load", "measured_latency", "model_from_state",
           "model_state", "prunable_filters", "prune", "prune_channels", "prune_filters",
           "prune_to_latency", "save", "select_channels", "sparsity", "weight_masks"]
