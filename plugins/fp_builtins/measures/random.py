"""Random: uniform scores, reproducible from a seed (the baseline every measure must beat)."""
import fp


class Random(fp.Measure):
    """Uniform random scores in [0, 1), reproducible from a seed.

    In a run the draw is seeded from ``ctx.seed`` (the engine's, a function of
    ``experiment.seed`` and the prune event's index) and ``random.seed``, an offset a user may
    bind: ``seeded_generator(ctx.seed, random.seed)``, a SeedSequence mix of the two. So
    experiment seeds prune differently, every event draws afresh, a resumed run redoes an event
    exactly and every DDP rank draws the same scores. With ``ctx.seed`` None (``fp.score``
    called without an engine's context) the draw uses ``random.seed`` alone, as
    ``torch.Generator().manual_seed(random.seed)``.

    Seed name: none (a baseline). Filter scores are drawn per filter, not summed.
    """

    name = "random"
    needs_data = False

    def __init__(self, seed: int = 0):
        self.seed = seed

    def __call__(self, ctx):
        import torch  # here, not at import: `fp list measures` does not need torch

        generator = self._generator(ctx)
        return {n: torch.rand(w.shape, generator=generator).to(w.device)
                for n, w in ctx.weights.items()}

    def filter_scores(self, ctx):
        import torch

        generator = self._generator(ctx)
        return {n: torch.rand(w.shape[0], generator=generator).to(w.device)
                for n, w in ctx.weights.items()}

    def _generator(self, ctx):
        """A CPU generator (the same stream on every device and rank) for this draw."""
        import torch
        from fp.data import seeded_generator

        if ctx.seed is None:
            return torch.Generator().manual_seed(self.seed)
        return seeded_generator(ctx.seed, self.seed)
