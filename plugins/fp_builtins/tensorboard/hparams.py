"""The hparams summary of a run: its settings against its final metrics, for comparing the runs
of a sweep in TensorBoard's HPARAMS tab."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from torch.utils.tensorboard import SummaryWriter

#: the settings blocks (``run.config`` keys) whose every field becomes an hparam ("train.lr")
HPARAM_BLOCKS = ("train", "prune", "data", "model")
#: the columns a comparison needs, first: TensorBoard's HParams table shows the first five
#: hparams of the experiment by default and hides the rest behind checkboxes
DEFAULT_COLUMNS = ("prune.measure", "prune.target", "model.architecture", "data.dataset",
                   "experiment.seed")
#: scalar tags the hparams table shows; it reads their last values from this run's scalars
METRIC_TAGS = ("test/acc", "test/best_acc", "model/params_frac", "model/flops_frac")


def hparam_values(config: dict[str, Any]) -> dict[str, bool | int | float | str]:
    """``block.field`` -> value for the settings blocks plus the seed. Numbers stay numbers (the
    parallel-coordinates view needs them); booleans and tuples become their text, which torch
    would otherwise store as 0/1 or refuse; unset (None) fields are left out."""
    values: dict[str, Any] = {}
    for block in HPARAM_BLOCKS:
        for key, value in config.get(block, {}).items():
            values[f"{block}.{key}"] = value
    if "seed" in config.get("experiment", {}):
        values["experiment.seed"] = config["experiment"]["seed"]
    order = [n for n in DEFAULT_COLUMNS if n in values] + [n for n in values if n not in DEFAULT_COLUMNS]
    return {name: values[name] if isinstance(values[name], (int, float, str))
            and not isinstance(values[name], bool) else str(values[name])
            for name in order if values[name] is not None}


def write_hparams(writer: "SummaryWriter", config: dict[str, Any], step: int) -> None:
    """Write the three hparams summaries into the writer's own event file. (``add_hparams``
    would open a timestamped subfolder, which TensorBoard shows as a separate run.)"""
    from torch.utils.tensorboard.summary import hparams

    # only the metric names are written; TensorBoard takes their values from this run's scalars
    experiment, session_start, session_end = hparams(hparam_values(config),
                                                     dict.fromkeys(METRIC_TAGS))
    for summary in (experiment, session_start, session_end):
        writer.file_writer.add_summary(summary, step)
