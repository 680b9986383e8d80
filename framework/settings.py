"""The experiment-level gin configurables every user sees: ``train``, ``prune``, ``data``,
``model`` and ``experiment``. Plain dataclasses; gin injects their fields."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import gin

from fp.errors import ConfigError


@dataclass
class Train:
    """Optimisation, as in the paper's protocol (SGD, 160 epochs split 80/40/40)."""

    epochs: int = 160
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    nesterov: bool = False
    lr_schedule: str = "multistep"        # "multistep" | "cosine" | "constant"
    milestones: tuple = (0.5, 0.75)       # fractions of epochs (floats < 1) or epoch numbers (ints)
    gamma: float = 0.1                    # multistep LR factor at each milestone
    temperature: float = 5.0              # training loss is cross-entropy of logits / T
    test_batch_size: int = 512

    def validate(self) -> None:
        _check(self.epochs >= 1, f"train.epochs = {self.epochs} must be at least 1.")
        _check(self.batch_size >= 1, f"train.batch_size = {self.batch_size} must be at least 1.")
        _check(self.lr > 0, f"train.lr = {self.lr} must be positive.")
        _check(self.temperature > 0, f"train.temperature = {self.temperature} must be positive.")
        _check(self.lr_schedule in {"multistep", "cosine", "constant"},
               f"train.lr_schedule = {self.lr_schedule!r} must be 'multistep', 'cosine' or 'constant'.")


@dataclass
class Prune:
    """What to prune, by which measure, how much and when."""

    measure: str = "magnitude"
    target: float = 0.0                   # fraction of filters (or params/FLOPs) removed at the end
    target_type: str = "filters"          # "filters" | "params" | "flops"
    rounds: int = 1
    schedule: str = "rounds"
    granularity: str = "filter"           # "filter" | "weight"
    samples: int = 2560                   # scoring samples per prune event (paper: 20 batches of 128)
    batch_size: int = 128                 # scoring batch size
    temperature: float | None = None      # None: the measure's own default
    max_fraction: float = 0.95            # never remove more than this fraction of one layer
    protected: tuple = ()                 # module-name prefixes never pruned (classifier always is)
    preserve_momentum: bool = False       # keep SGD momentum of surviving channels after surgery
    hvp_method: str = "auto"              # Hg by "double_backward" | "forward_over_reverse" | "auto"
    hvp_memory_gb: float | None = None    # cap on kept first-order graphs; None: half of free memory
    balanced: bool | None = None          # class-balanced scoring samples; None: the measure's default

    def validate(self) -> None:
        from fp.scoring.context import HVP_CHOICES  # the methods fp.scoring.hvp provides

        _check(self.hvp_method in HVP_CHOICES,
               f"prune.hvp_method = {self.hvp_method!r} must be one of {', '.join(HVP_CHOICES)}.")
        _check(self.hvp_memory_gb is None or self.hvp_memory_gb >= 0,
               f"prune.hvp_memory_gb = {self.hvp_memory_gb} must be at least 0 (or None).")
        _check(0.0 <= self.target < 1.0, f"prune.target = {self.target} must be in [0, 1).")
        _check(self.rounds >= 1, f"prune.rounds = {self.rounds} must be at least 1.")
        _check(self.granularity in {"filter", "weight"},
               f"prune.granularity = {self.granularity!r} must be 'filter' or 'weight'.")
        _check(self.target_type in {"filters", "params", "flops"},
               f"prune.target_type = {self.target_type!r} must be 'filters', 'params' or 'flops'.")
        _check(self.samples >= 1, f"prune.samples = {self.samples} must be at least 1.")
        _check(0.0 < self.max_fraction < 1.0,
               f"prune.max_fraction = {self.max_fraction} must be in (0, 1).")


@dataclass
class Data:
    """Which dataset (registry name); its own arguments bind on the dataset, e.g. cifar10.root."""

    dataset: str = "digits"
    train_per_class: int | None = None    # class-balanced training subset (None: all), seeded
    test_per_class: int | None = None     # class-balanced test subset (None: all), seeded


@dataclass
class Model:
    """Which architecture (registry name); its own arguments bind on it, e.g. vgg13.width."""

    architecture: str = "small_cnn"


@dataclass
class Experiment:
    """Run-wide settings: seed, device, numerics."""

    seed: int = 0
    device: str = "auto"                  # "auto" | "cpu" | "cuda" | "cuda:N"
    amp: bool = False                     # bf16 autocast on the forward pass
    channels_last: bool = False
    compile: bool = False                 # torch.compile the model for training steps
    name: str = ""                        # a label for reports; defaults to the config's stem


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


SETTINGS = {"train": Train, "prune": Prune, "data": Data, "model": Model, "experiment": Experiment}
for _name, _cls in SETTINGS.items():
    gin.external_configurable(_cls, name=_name)


@dataclass
class Settings:
    train: Train = field(default_factory=Train)
    prune: Prune = field(default_factory=Prune)
    data: Data = field(default_factory=Data)
    model: Model = field(default_factory=Model)
    experiment: Experiment = field(default_factory=Experiment)

    def as_dict(self) -> dict:
        return {k: asdict(getattr(self, k)) for k in SETTINGS}


def resolve() -> Settings:
    """Instantiate every settings block through gin (so bindings apply) and validate it."""
    built = {name: gin.get_configurable(name)() for name in SETTINGS}
    for block in built.values():
        getattr(block, "validate", lambda: None)()
    return Settings(**built)
