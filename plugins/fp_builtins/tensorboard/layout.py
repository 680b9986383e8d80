"""The Custom Scalars page of every run: the quantities of the gradient-flow argument (Lubana &
Dick, ICLR 2021) that are read against each other, on one chart each, every run of the folder a
line per quantity.

The charts name their tags as exact-match regexes, so they follow a run's tags and no others.
TensorBoard merges the layouts of all runs of a folder into one page (equal charts once).
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

from fp_builtins.tensorboard.tags import EPOCH_TAGS

if TYPE_CHECKING:  # pragma: no cover
    from torch.utils.tensorboard import SummaryWriter

#: category -> chart title -> the tags it plots (flow/: fp_builtins.flow, at each prune event
#: except the norm change, which is also measured at every epoch end)
CHARTS = {
    "gradient flow at each prune": {
        "loss: before vs after the prune": ("flow/loss_before", "flow/loss_after"),
        "loss change: measured vs first-order prediction": ("flow/loss_change",
                                                            "flow/loss_change_predicted"),
        "‖g‖²: before vs after the prune": ("flow/grad_norm_sq_before", "flow/grad_norm_sq_after"),
        "Δ‖θ‖²: measured vs gradient-flow prediction": ("flow/norm_change",
                                                        "flow/norm_change_predicted"),
    },
    "training": {
        "accuracy: train vs test": (EPOCH_TAGS["train_acc"], EPOCH_TAGS["test_acc"]),
    },
}


def layout() -> dict[str, dict[str, list]]:
    """The layout in the form of ``SummaryWriter.add_custom_scalars``: a multiline chart of
    exact-match tag regexes for each chart of CHARTS."""
    return {category: {title: ["Multiline", [f"^{re.escape(tag)}$" for tag in tags]]
                       for title, tags in charts.items()}
            for category, charts in CHARTS.items()}


def write_layout(writer: "SummaryWriter") -> None:
    writer.add_custom_scalars(layout())
