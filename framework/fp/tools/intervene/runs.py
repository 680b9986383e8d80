"""A dense run directory as an intervention reads it: its settings (config.gin read back, which
also binds the dataset's and the measures' own arguments), its dataset with the run's subsets,
and the checkpoints it kept at the end of chosen epochs (``experiment.keep_epochs``)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from fp import pruning
from fp.config import parse_recorded
from fp.config.settings import Settings
from fp.data.subsets import apply_subsets
from fp.engine import rundir
from fp.errors import CheckpointError, ConfigError
from fp.manager import Manager


@dataclass
class DenseRun:
    """A dense run directory and what an intervention needs of it."""

    path: Path
    settings: Settings
    kept: dict[int, Path]    # epoch -> the checkpoint kept at its end

    @property
    def name(self) -> str:
        return self.path.name

    def dataset(self, manager: Manager):
        """The run's dataset, cut to its own class-balanced subsets (``data.*_per_class``)."""
        st = self.settings
        return apply_subsets(manager.registries["datasets"].build(st.data.dataset), st.data,
                             st.experiment.seed)

    def model(self, epoch: int, manager: Manager, device: torch.device) -> nn.Module:
        """The model of the checkpoint kept at the end of ``epoch``, in eval mode on ``device``."""
        path = self.kept[epoch]
        state = rundir.read_checkpoint(path, "keep another epoch or rerun the run")
        if not isinstance(state, dict) or "model" not in state:
            raise CheckpointError(f"{path} is not a run checkpoint (it has no 'model' entry).")
        model = pruning.model_from_state(state["model"], manager=manager, origin=str(path))
        return model.to(device).eval()


def open_run(path: Path, manager: Manager) -> DenseRun:
    """Read ``path``'s recorded config (gin now holds it) and list its kept checkpoints; a run
    that prunes, or that kept none, is refused."""
    config = path / "config.gin"
    if not config.is_file():
        raise CheckpointError(f"{path} is not a run directory (it has no config.gin).")
    settings = parse_recorded(config, manager)
    if settings.prune.target > 0:
        raise ConfigError(f"{path} is not a dense run (prune.target = {settings.prune.target:g}); "
                          f"interventions prune copies of a dense run's checkpoints.")
    kept = rundir.kept_checkpoints(path)
    if not kept:
        raise CheckpointError(f"{path} kept no epoch checkpoints "
                              f"({rundir.CHECKPOINTS}/epoch-N.pt); run it with "
                              f"experiment.keep_epochs naming the epochs to intervene on.")
    return DenseRun(path, settings, kept)


def chosen_epochs(run: DenseRun, epochs: tuple[int, ...] | None) -> list[int]:
    """``epochs`` (None: every kept one), each of which ``run`` must have kept."""
    if epochs is None:
        return list(run.kept)
    missing = [e for e in epochs if e not in run.kept]
    if missing:
        raise CheckpointError(f"{run.path} kept no checkpoint of epoch "
                              f"{', '.join(map(str, missing))}; it kept epochs "
                              f"{', '.join(map(str, run.kept))}.")
    return list(dict.fromkeys(epochs))
