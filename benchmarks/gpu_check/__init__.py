"""The prepared check for a short GPU slot, run by ``bash benchmarks/gpu_check.sh`` (which puts
``benchmarks/`` on ``PYTHONPATH``): ``cli`` reads the command line, picks the mode and writes the
JSON report; ``budget`` is the time plan that keeps the default check inside 6 minutes and the
layout mode inside 2; ``parts`` runs a mode's parts in order inside it; ``check`` is the default
mode, ``layout`` the layout mode (channels-last kept through surgery against contiguous, and a
post-prune recompile); ``probes``, ``rankings`` (TF32 against full fp32 rankings), ``steps``
(paired training steps) and ``train`` (epochs timed and extrapolated, compiles counted) are what
the parts do; ``sizes`` how big (GPU or dry run), ``monitor`` what is recorded about the machine.
It lives beside the installed ``fp``, not in it, and uses fp's public API only: the ``fp`` facade
and its contract modules.
"""
