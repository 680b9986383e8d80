"""``fp report``: records of finished runs (``records``), grouped into configurations and drawn
as tables (``markdown``), figures (``plots``) and the paper's claims (the ``claims`` package, on
the paired statistics of ``paired``)."""
