"""``fp report``: the tables, figures and claims verdicts of a set of finished runs."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from fp.tools.report.claims.eval_set import HORIZONS
from fp.tools.report.records import check_out, find_run_dirs, group_runs, load_run


def report(run_dirs: Sequence[str | Path], out: str | Path,
           interventions: str | Path | None = None, horizons: Sequence[int] = HORIZONS) -> Path:
    """Write report.md, report.csv, claims.md and the PNG figures into ``out``; returns
    report.md's path. ``run_dirs`` are run directories or folders of them (a sweep's ``--out``);
    ``interventions`` is fp intervene's interventions.jsonl or its folder (default: any found in
    ``run_dirs`` or their subfolders); ``horizons`` are the epochs after the last prune event at
    which claim (i) reads L_V, the first tested. Bad input is refused before anything is written,
    and never inside a run directory."""
    # matplotlib only when a report is drawn
    from fp.tools.report import plots
    from fp.tools.report.claims import interventions as intervention_lines, write_claims
    from fp.tools.report.claims.markdown import report_section
    from fp.tools.report.markdown import markdown, write_csv

    found = find_run_dirs(run_dirs)
    out = Path(out)
    check_out(out, found)
    configs = group_runs([load_run(path) for path in found])
    files = intervention_lines.find(interventions, run_dirs)
    groups = intervention_lines.load(files)
    out.mkdir(parents=True, exist_ok=True)
    rows = [config.row() for config in configs]
    write_csv(rows, out / "report.csv")
    figures = plots.draw_all(configs, out)
    judgements = write_claims(configs, groups, files, out, horizons)
    path = out / "report.md"
    path.write_text(markdown(rows, figures, configs) + "\n".join(report_section(judgements)) + "\n")
    return path
