"""The ``slurm`` gin configurable: how ``fp sweep --executor slurm`` submits each grid point.

A gin file (or ``--bind``) may set these beside the experiment; ``fp sweep``'s options of the
same meaning win over them. They never change what a run computes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import gin

from fp.errors import ConfigError
from fp.validation import Range, check_fields


@dataclass
class Slurm:
    """One Slurm job per grid point, one task per job."""

    partition: str = ""                   # "": the cluster's default partition
    time_min: Annotated[int, Range(ge=1)] = 1440  # wall-clock limit of each job, in minutes
    gpus_per_run: Annotated[int, Range(ge=0)] = 1  # GPUs per job; more than 1 trains with DDP
    cpus_per_run: Annotated[int, Range(ge=1)] = 4
    mem_gb: Annotated[float | None, Range(gt=0)] = None  # None: the partition's default
    signal_delay_s: Annotated[int, Range(ge=1)] = 120  # warning before the limit: requeue then
    extra: tuple[str, ...] = ()           # further sbatch options, "name=value": ("account=lab",)

    def validate(self) -> None:
        for option in self.extra:
            name, equals, value = option.partition("=")
            if not equals or not name.strip() or not value.strip():
                raise ConfigError(f"slurm.extra option {option!r} is not of the form "
                                  f"'name=value' (an sbatch option without its dashes).")

    def sbatch_extra(self) -> dict[str, str]:
        return {n.strip(): v.strip() for n, _, v in (o.partition("=") for o in self.extra)}


gin.external_configurable(Slurm, name="slurm")


def resolve() -> Slurm:
    """The ``slurm`` block as the current gin config binds it, checked."""
    block = gin.get_configurable("slurm")()
    check_fields("slurm", block)
    block.validate()
    return block
