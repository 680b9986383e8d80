"""``fp intervene``, declared beside ``fp.cli`` (which registers it) to keep that module readable:
a thin wrapper over ``fp.tools.intervene.intervene``. Imports nothing heavy: ``fp --help`` stays
fast."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from fp.cli.support import device_option, out, print_table


def intervene_cmd(
    run_dirs: Annotated[list[Path], typer.Argument(help="Dense run directories (prune.target = 0) that kept epoch checkpoints (experiment.keep_epochs).")],
    measures: Annotated[str, typer.Option(help="Comma-separated measures, e.g. magnitude,snip,grasp; each prunes its own copy of every checkpoint.")],
    fraction: Annotated[float, typer.Option(help="Share of the dense filters each measure removes, between 0 and 1.")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder of interventions.jsonl (lines already there are not measured again).")],
    epochs: Annotated[Optional[str], typer.Option(help="Comma-separated checkpoint epochs, e.g. 1,2,5 (default: every kept one).")] = None,
    eval_samples: Annotated[Optional[int], typer.Option(min=1, help="Images in the evaluation set V of a run with data.eval_samples = 0, capped by the data (default: fp.tools.intervene.DEFAULT_EVAL_SAMPLES, the paper's 20 batches of 128).")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu, cuda, cuda:N or mps (default: each run's experiment.device).", callback=device_option)] = None,
) -> None:
    """Prune copies of the same kept checkpoints with each measure and record the loss, its
    first-order predictions, Θᵀg and ||g||² before and after (docs/interventions.md)."""
    from fp.tools.intervene import DEFAULT_EVAL_SAMPLES, intervene
    from fp.tools.intervene.records import FILE, HEADERS, summary_rows

    found = intervene(run_dirs, measures, fraction, out_dir, epochs=epochs, device=device,
                      eval_samples=DEFAULT_EVAL_SAMPLES if eval_samples is None else eval_samples)
    print_table(HEADERS, summary_rows(found), title=f"fraction {fraction:g}: means over runs")
    out.print(f"{len(found)} records in {out_dir / FILE}")
