"""The prepared check for a short GPU slot, run by ``bash benchmarks/gpu_check.sh`` (which puts
``benchmarks/`` on ``PYTHONPATH``): ``cli`` reads the command line and writes the JSON report,
``check`` runs the parts in order inside one time budget, ``probes`` and ``train`` are the parts,
``monitor`` what is recorded about the machine while they run. It lives beside the installed
``fp``, not in it, and uses fp's public API only: the ``fp`` facade and its contract modules.
"""
