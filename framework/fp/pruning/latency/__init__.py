"""Latency targets: prune until the model runs in at most (1 - target) of the dense model's time
(``target``), by a bisection over candidate counts of ranked slots (``search``). The clock is
``fp.timing``."""
