"""The experiment-level gin configurables every user sees: ``train``, ``prune``, ``data``,
``model`` and ``experiment``. Plain dataclasses; gin injects their fields."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Annotated

import gin

from fp import device as devices
from fp.errors import ConfigError
from fp.measure import PROTOCOL_TEMPERATURE
from fp.nn import FILTER, GRANULARITIES
from fp.pruning.latency.search import DEFAULT_PROBES, MIN_PROBES
from fp.pruning.residual import RESIDUAL_MODES
from fp.pruning.select import DEFAULT_MAX_FRACTION, TARGET_TYPES
from fp.scoring import DEFAULT_SCORING_SAMPLES
from fp.scoring.autotune import LAYOUTS
from fp.scoring.layers.shortcuts import MODES as SHORTCUT_MODES
from fp.scoring.context import HVP_CHOICES  # "auto" and the methods fp.scoring.hvp provides
from fp.validation import OneOf, Range, check_fields

#: type aliases with their allowed range: the checks in fp.validation read them
Positive = Annotated[int, Range(ge=1)]
NonNegative = Annotated[float, Range(ge=0)]
Fraction = Annotated[float, Range(ge=0, lt=1)]


@dataclass
class Train:
    """Optimisation, as in the paper's protocol (SGD, 160 epochs split 80/40/40)."""

    epochs: Positive = 160
    batch_size: Positive = 128
    lr: Annotated[float, Range(gt=0)] = 0.1
    momentum: Annotated[float, Range(ge=0, lt=1)] = 0.9
    weight_decay: NonNegative = 1e-4
    nesterov: bool = False
    lr_schedule: Annotated[str, OneOf("multistep", "cosine", "constant")] = "multistep"
    milestones: tuple[int | float, ...] = (0.5, 0.75)  # fractions of epochs (floats < 1) or epoch numbers (ints)
    gamma: Annotated[float, Range(gt=0, le=1)] = 0.1  # multistep LR factor at each milestone
    temperature: Annotated[float, Range(gt=0)] = PROTOCOL_TEMPERATURE  # loss: CE of logits / T
    test_batch_size: Positive = 512

    def validate(self) -> None:
        if self.lr_schedule != "multistep":
            return
        inside = all(0 < m < 1 if isinstance(m, float) else 0 < m < self.epochs
                     for m in self.milestones)
        fractions = [isinstance(m, float) for m in self.milestones]
        increasing = all(a < b for a, b in zip(self.milestones, self.milestones[1:]))
        _check(inside and increasing and len(set(fractions)) <= 1,
               f"train.milestones = {tuple(self.milestones)!r} must increase and lie inside the "
               f"{self.epochs} epochs: all fractions below 1, or all epoch numbers "
               f"1..{self.epochs - 1}.")


@dataclass
class Prune:
    """What to prune, by which measure, how much and when."""

    measure: str = "magnitude"
    target: Fraction = 0.0                # fraction of filters (params, FLOPs, latency) gone at the end
    target_type: Annotated[str, OneOf(*TARGET_TYPES)] = "filters"
    round_to: Positive = 1                # pruned layers keep a multiple of this many filters
    latency_batch: Positive | None = None  # None: the dense model's saturating batch
    # timed candidates per latency prune event
    latency_probes: Annotated[int, Range(ge=MIN_PROBES)] = DEFAULT_PROBES
    rounds: Positive = 1
    schedule: str = "rounds"
    granularity: Annotated[str, OneOf(*GRANULARITIES)] = FILTER
    samples: Positive = DEFAULT_SCORING_SAMPLES  # scoring samples per prune event
    batch_size: Positive = 128            # scoring batch size (fewer samples: one batch of them)
    temperature: Annotated[float | None, Range(gt=0)] = None  # None: the measure's own default
    # the most of one layer ever removed
    max_fraction: Annotated[float, Range(gt=0, lt=1)] = DEFAULT_MAX_FRACTION
    protected: tuple[str, ...] = ()       # module-name prefixes never pruned (classifier always is)
    preserve_momentum: bool = False       # keep SGD momentum of surviving channels after surgery
    # how Hg is computed: the two methods round differently, so a run fixes one and its numbers
    # never depend on a timing ("auto": the one timed faster here)
    hvp_method: Annotated[str, OneOf(*HVP_CHOICES)] = "double_backward"
    hvp_memory_gb: Annotated[float | None, Range(ge=0)] = None  # kept graphs; None: half the free memory
    scoring_layout: Annotated[str, OneOf(*LAYOUTS)] = "contiguous"  # the images' memory layout
                                          # ("auto": timed, faster, but then rounding, rarely a
                                          # tie, may vary)
    # exact shortcuts in the scoring passes (matrix-product weight gradients, folded BatchNorms):
    # "off" keeps torch's own layers, so a run's numbers never depend on a timing; "auto" times
    # each against torch's layer on this machine; "on" takes them wherever they apply
    scoring_shortcuts: Annotated[str, OneOf(*SHORTCUT_MODES)] = "off"
    balanced: bool | None = None          # class-balanced scoring samples; None: the measure's default
    scoring_augment: bool = False         # score on augmented training images (the paper's code does)
    residual: Annotated[str, OneOf(*RESIDUAL_MODES)] = "tied"  # channels feeding a residual add:
                                          # "tied" removes them across the add (dependency graph);
                                          # "masked" zeroes them per filter (the paper's ResNets)

    def validate(self) -> None:
        _check(self.residual == "tied" or (self.granularity == FILTER
                                            and self.target_type != "latency"),
               "prune.residual = 'masked' needs prune.granularity = 'filter' and a filters, "
               "params or flops target (masks neither act on single weights nor save latency).")
        _check(self.target_type != "latency" or self.granularity == FILTER,
               "prune.target_type = 'latency' needs prune.granularity = 'filter' (masked weights "
               "do not make the model faster).")


@dataclass
class Data:
    """Which dataset (registry name); its own arguments bind on the dataset, e.g. cifar10.root."""

    dataset: str = "digits"
    train_per_class: Positive | None = None  # class-balanced training subset (None: all), seeded
    test_per_class: Positive | None = None   # class-balanced test subset (None: all), seeded
    eval_samples: Annotated[int, Range(ge=0)] = 0  # fixed evaluation set V: class-balanced training
                                             # images, seeded, never scored on (0: none)


@dataclass
class Model:
    """Which architecture (registry name); its own arguments bind on it, e.g. vgg13.width."""

    architecture: str = "small_cnn"
    init: Annotated[str | None, OneOf("torch_default", "kaiming_fan_out")] = None
    # None: the architecture's own default ("torch_default" for the paper's models)


@dataclass
class Experiment:
    """Run-wide settings: seed, device, numerics."""

    seed: Annotated[int, Range(ge=0)] = 0
    device: str = "auto"                  # "auto" | "cpu" | "cuda" | "cuda:N" | "mps"
    amp: bool = False                     # bf16 autocast on the forward pass
    channels_last: bool = False
    compile: bool = False                 # torch.compile the model for training steps
    compile_backend: str = "inductor"     # torch.compile's backend ("eager": graphs, no kernels)
    tf32: bool = False                    # TF32 in training's convs/matmuls on a GPU (fp.precision)
    name: str = ""                        # a label for reports; defaults to the config's stem
    keep_epochs: tuple[int, ...] = ()     # also keep the checkpoints of these epochs (interventions)

    def validate(self) -> None:
        problem = devices.problem(self.device)
        _check(problem is None, f"experiment.device = {self.device!r} {problem}.")
        if self.compile:
            import torch

            known = torch.compiler.list_backends(exclude_tags=())
            _check(self.compile_backend in known,
                   f"experiment.compile_backend = {self.compile_backend!r} is not a "
                   f"torch.compile backend here; known: {', '.join(known)}.")


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
    for name, block in built.items():
        check_fields(name, block)  # types and ranges first: validate() may compare values
    for block in built.values():
        getattr(block, "validate", lambda: None)()
    return Settings(**built)
