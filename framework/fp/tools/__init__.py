"""Tools over runs: ``sweep`` (grids of runs), ``evaluate`` (``fp eval``), ``report`` (tables,
figures, claims) and ``bench`` (``fp bench``). They use the engine; nothing below imports them."""
