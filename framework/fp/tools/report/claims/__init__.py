"""The paper's three claims (Lubana & Dick, ICLR 2021), judged by paired comparisons over seeds
(docs/claims.md): from full runs' summary.json and metrics.jsonl "eval_set" records, and from
the interventions of ``fp intervene`` on dense checkpoints.

One module per claim (``convergence`` (i), ``first_order`` (ii), ``gradient_norm`` (iii)); what
they read (``eval_set``, ``settings``, ``interventions``); what they share (``comparisons``:
declared comparisons, verdicts, their tables); and claims.md with its figures (``markdown``,
``plots``). The statistics are ``fp.tools.report.paired``."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from fp.tools.report.claims.eval_set import HORIZONS
from fp.tools.report.claims.interventions import Group
from fp.tools.report.records import Config


def write_claims(configs: Sequence[Config], groups: Sequence[Group], files: Sequence[Path],
                 out: Path, horizons: Sequence[int] = HORIZONS) -> list:
    """Write claims.md and its figures into ``out`` from full runs and the interventions read
    from ``files`` (``interventions.load``); returns the judgements, for report.md."""
    from fp.tools.report.claims import plots
    from fp.tools.report.claims.markdown import Inputs, claims_markdown
    from fp.tools.report.claims.settings import settings_of

    inputs = Inputs(settings_of(configs), list(groups), list(files))
    figures = plots.draw(inputs.settings, inputs.groups, out)
    text, judgements = claims_markdown(inputs, figures, horizons)
    (out / "claims.md").write_text(text)
    return judgements
