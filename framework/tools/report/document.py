"""``fp report``: the tables, figures and claims verdicts of a set of finished runs."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from fp.tools.report.records import check_out, find_run_dirs, group_runs, load_run


def report(run_dirs: Sequence[str | Path], out: str | Path) -> Path:
    """Write report.md, report.csv, claims.md and the PNG figures into ``out``; returns
    report.md's path. ``run_dirs`` are run directories or folders of them (a sweep's ``--out``).
    Bad input is refused before anything is written, and never inside a run directory."""
    # matplotlib only when a report is drawn
    from fp.tools.report import claims_markdown, claims_plots, plots
    from fp.tools.report.markdown import markdown, write_csv

    found = find_run_dirs(run_dirs)
    out = Path(out)
    check_out(out, found)
    configs = group_runs([load_run(path) for path in found])
    out.mkdir(parents=True, exist_ok=True)
    rows = [config.row() for config in configs]
    write_csv(rows, out / "report.csv")
    figures = plots.draw_all(configs, out)
    claims_text, verdicts = claims_markdown.claims_markdown(configs, claims_plots.draw_claims(configs, out))
    (out / "claims.md").write_text(claims_text)
    path = out / "report.md"
    path.write_text(markdown(rows, figures, configs) + "\n".join(claims_markdown.report_section(verdicts)) + "\n")
    return path
