"""The importance-measure contract. Concrete measures are plugins (``fp_builtins.measures``)."""
from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:  # pragma: no cover  (torch is imported when scoring, not to list measures)
    import torch

    from fp.scoring import ScoreContext

#: the paper protocol's T: training's loss is the cross-entropy of logits / T, and a measure
#: scores at it unless its class sets its own
PROTOCOL_TEMPERATURE = 5.0


class Measure:
    """Scores every prunable weight; higher = more important = kept.

    Subclasses set ``name`` and implement ``__call__(ctx)`` returning one tensor per entry of
    ``ctx.weights`` with that weight's shape. Constructor arguments are gin-bindable.

    ``temperature`` is the default T of the loss logits/T the measure scores with (the paper's
    protocol uses the training temperature, PROTOCOL_TEMPERATURE); data-free measures set ``needs_data = False``.
    ``balanced`` is whether a prune event scores it on class-balanced samples by default
    (exactly ``prune.samples // classes`` images of each class; ``prune.balanced`` overrides):
    the seed draws them so for its Hessian-gradient measures (grasp, grad_norm) and takes the
    training loader's first batches for every other measure.
    ``uses_grad_sq = False`` says the measure never asks for ``ctx.grad_sq`` and ``uses_grad =
    False`` that it never asks for ``ctx.grad``: ``fp.score`` then leaves that statistic out of
    the gradient pass of the context it builds (asked anyway, it costs a pass).
    """

    name: ClassVar[str] = ""
    temperature: ClassVar[float] = PROTOCOL_TEMPERATURE
    needs_data: ClassVar[bool] = True
    balanced: ClassVar[bool] = False
    uses_grad: ClassVar[bool] = True
    uses_grad_sq: ClassVar[bool] = True

    def __call__(self, ctx: "ScoreContext") -> dict[str, torch.Tensor]:
        raise NotImplementedError(f"measure {self.name!r} does not implement __call__(ctx)")

    def reduce(self, weight_scores: torch.Tensor) -> torch.Tensor:
        """Filter score from weight scores: the sum over every dim but the output-channel dim."""
        from fp.nn import filter_sums  # here: `fp list measures` does not import torch

        return filter_sums(weight_scores)

    def filter_scores(self, ctx: "ScoreContext") -> dict[str, torch.Tensor]:
        """One score per output channel of each weight. Override when the filter score is not a
        reduction of weight scores (taylor's |Σ θg| needs the signed products)."""
        return {name: self.reduce(s) for name, s in self(ctx).items()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def to_weight_shape(filter_scores: "torch.Tensor", weight: "torch.Tensor") -> "torch.Tensor":
    """Broadcast one score per output channel over the rest of the weight's shape."""
    return filter_scores.reshape(-1, *[1] * (weight.dim() - 1)).expand_as(weight).clone()
