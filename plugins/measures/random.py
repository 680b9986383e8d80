"""Random: uniform scores, reproducible from a seed (the baseline every measure must beat)."""
import fp


class Random(fp.Measure):
    """Uniform random scores in [0, 1), reproducible from a seed.

    Seed name: none (a baseline). Filter scores are drawn per filter, not summed.
    """

    name = "random"
    needs_data = False

    def __init__(self, seed: int = 0):
        self.seed = seed

    def __call__(self, ctx):
        import torch  # here, not at import: `fp list measures` does not need torch

        generator = torch.Generator().manual_seed(self.seed)
        return {n: torch.rand(w.shape, generator=generator).to(w.device)
                for n, w in ctx.weights.items()}

    def filter_scores(self, ctx):
        import torch

        generator = torch.Generator().manual_seed(self.seed)
        return {n: torch.rand(w.shape[0], generator=generator).to(w.device)
                for n, w in ctx.weights.items()}
