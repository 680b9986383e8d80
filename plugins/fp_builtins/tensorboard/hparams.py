"""The hparams summaries of a run: its settings against its final metrics, one row per run in
TensorBoard's HPARAMS tab, for comparing the runs of a sweep (or any folder of runs).

Which hparam columns the table shows by default (TensorBoard 2.14 to 2.21): the tab's query pane
moves the hparams flagged ``differs`` in the experiment summary to the front and ticks the first
five; the rest wait behind unticked checkboxes. From 2.15 on, the backend
(``backend_context._sort_and_reduce_to_hparams_limit``) first sorts the hparams by that flag and
then by name, so the order of the summary no longer counts: the flag alone picks the five, which
then appear in alphabetical order. The experiment summary written here flags exactly the columns
of ``default_columns``: the keys the folder's sweeps vary, then COMPARED, five in all, and lists
them first as well (the order 2.14 goes by). TensorBoard shows one experiment summary for a whole
folder of runs, whichever run's it reads first, so every run of a folder flags the same columns:
they depend on the folder's sweep record (``fp_builtins.tensorboard.sweep``), not on the run.

The metric columns (all four shown: the pane ticks the first five) take their values from the
run's own scalars, so a run still training shows its latest ones.
"""
from __future__ import annotations

import ast
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import gin
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

from fp_builtins.tensorboard.tags import EPOCH_TAGS

if TYPE_CHECKING:  # pragma: no cover
    from torch.utils.tensorboard import SummaryWriter

#: the settings blocks (``run.config`` keys) whose every field becomes an hparam ("train.lr")
HPARAM_BLOCKS = ("train", "prune", "data", "model")
#: the settings a comparison of pruned runs needs, most telling first
COMPARED = ("prune.measure", "prune.target", "model.architecture", "data.dataset",
            "experiment.seed")
#: how many hparam columns TensorBoard's HParams table ticks by default (a constant of its page)
SHOWN_BY_DEFAULT = 5
#: metric tag -> its column title; the table shows the tag's last value
METRICS = {EPOCH_TAGS["test_acc"]: "test acc (final)",
           EPOCH_TAGS["best_test_acc"]: "test acc (best)",
           EPOCH_TAGS["params_frac"]: "params kept", EPOCH_TAGS["flops_frac"]: "FLOPs kept"}
METRIC_TAGS = tuple(METRICS)

Value = int | float | str


def hparam_value(value: Any) -> Value:
    """Numbers stay numbers (the parallel-coordinates view needs them); anything else becomes its
    text as gin writes it: booleans "True"/"False", tuples "(0.5, 0.75)"."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    return value if isinstance(value, str) else str(value)


def hparam_values(config: dict[str, Any], swept: Sequence[str] = ()) -> dict[str, Value]:
    """``block.field`` -> value for the settings blocks plus the seed, and the value this run
    binds to each ``swept`` key outside them (``digits.size``); unset (None) values are left
    out, as are swept keys this run does not bind."""
    values: dict[str, Any] = {}
    for block in HPARAM_BLOCKS:
        for key, value in config.get(block, {}).items():
            values[f"{block}.{key}"] = value
    if "seed" in config.get("experiment", {}):
        values["experiment.seed"] = config["experiment"]["seed"]
    for name in swept:
        if name not in values:
            values[name] = bound_value(name)
    return {name: hparam_value(value) for name, value in values.items() if value is not None}


def bound_value(name: str) -> Any:
    """The value gin binds to ``name`` in this run, or None where it binds none."""
    try:
        return gin.query_parameter(name)
    except ValueError:
        return None


def default_columns(swept: Sequence[str], known: Sequence[str] | None = None) -> list[str]:
    """The hparams the table shows by default: the swept keys, then COMPARED, SHOWN_BY_DEFAULT
    in all; with ``known``, only names among those."""
    wanted = dict.fromkeys([*swept, *COMPARED])
    return [name for name in wanted if known is None or name in known][:SHOWN_BY_DEFAULT]


def experiment(values: Mapping[str, Value],
               grid: Mapping[str, Sequence[str]]) -> api_pb2.Experiment:
    """The experiment summary: one hparam per name of ``values`` and of the sweep ``grid``
    (swept name -> gin literals), the default columns first and flagged, then the metrics."""
    infos = {name: hparam_info(name, values.get(name), grid.get(name, ()))
             for name in dict.fromkeys([*values, *grid])}
    infos = {name: info for name, info in infos.items() if info is not None}
    shown = default_columns(list(grid), list(infos))
    for name in shown:
        infos[name].differs = True
    order = [*shown, *(name for name in infos if name not in shown)]
    metrics = [api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag), display_name=title)
               for tag, title in METRICS.items()]
    return api_pb2.Experiment(hparam_infos=[infos[name] for name in order], metric_infos=metrics)


def hparam_info(name: str, value: Value | None,
                literals: Sequence[str]) -> api_pb2.HParamInfo | None:
    """The hparam's type from its values; a swept one also gets its domain (the grid's values),
    which the table's filters offer. None for a name with no value at all."""
    swept = [hparam_value(v) for v in map(literal, literals) if v is not None]
    domain = list(dict.fromkeys([*swept, *([] if value is None else [value])]))
    if not domain:
        return None
    info = api_pb2.HParamInfo(name=name)
    if all(isinstance(v, (int, float)) for v in domain):
        info.type = api_pb2.DATA_TYPE_FLOAT64
        if swept:
            info.domain_interval.min_value = min(domain)
            info.domain_interval.max_value = max(domain)
    else:
        info.type = api_pb2.DATA_TYPE_STRING
        if swept:
            info.domain_discrete.extend([str(v) for v in domain])
    return info


def literal(text: str) -> Any:
    """A gin literal's Python value; a ``@reference`` or ``%MACRO`` stays its text."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def write_hparams_start(writer: "SummaryWriter", config: dict[str, Any],
                        grid: Mapping[str, Sequence[str]], step: int) -> None:
    """The experiment summary and this run's session start (its hparam values), written into
    the writer's own event file, so the run has its row while it trains. (``add_hparams`` would
    open a timestamped subfolder, which TensorBoard shows as a separate run.)"""
    values = hparam_values(config, list(grid))
    start = plugin_data_pb2.SessionStartInfo()
    for name, value in values.items():
        if isinstance(value, str):
            start.hparams[name].string_value = value
        else:
            start.hparams[name].number_value = value
    writer.file_writer.add_summary(
        summary(metadata.EXPERIMENT_TAG, plugin_data_pb2.HParamsPluginData(
            experiment=experiment(values, grid))), step)
    writer.file_writer.add_summary(
        summary(metadata.SESSION_START_INFO_TAG, plugin_data_pb2.HParamsPluginData(
            session_start_info=start)), step)


def write_hparams_end(writer: "SummaryWriter", step: int) -> None:
    """The session end: the run's row reads "Success"."""
    end = plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS)
    writer.file_writer.add_summary(
        summary(metadata.SESSION_END_INFO_TAG, plugin_data_pb2.HParamsPluginData(
            session_end_info=end)), step)


def summary(tag: str, data: plugin_data_pb2.HParamsPluginData) -> Summary:
    return Summary(value=[Summary.Value(tag=tag, metadata=metadata.create_summary_metadata(data),
                                        tensor=metadata.NULL_TENSOR)])
