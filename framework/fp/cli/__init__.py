"""The ``fp`` command line. Each command is a thin wrapper over a plain Python function."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.text import Text

from fp.cli.export import export_cmd
from fp.cli.intervene import intervene_cmd
from fp.cli.support import device_option, err, executor_option, out, print_summary, print_table
from fp.errors import FpError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="flowprune: pruning experiments declared in gin, measures as plugins.")


@app.callback()
def _options(debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks.")] = False) -> None:
    """--debug is read by main() before typer parses anything (errors can come from parsing)."""


@app.command("run")
def run_cmd(
    configs: Annotated[list[Path], typer.Argument(help="gin files, later ones override earlier ones.")],
    bind: Annotated[Optional[list[str]], typer.Option("--bind", "-b", help="A gin binding, e.g. prune.measure='snip'.")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", "-o", help="Run directory (resumes if it holds a checkpoint).")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu, cuda, cuda:N or mps.", callback=device_option)] = None,
    nproc: Annotated[int, typer.Option(min=1, help="Processes to train with (torch.distributed).")] = 1,
    force: Annotated[bool, typer.Option(help="Continue a run directory even if its config differs.")] = False,
) -> None:
    """Run (or resume) the experiment declared by CONFIGS."""
    from fp.engine import launch
    from fp.engine.experiment import run_experiment
    from fp.engine.runlock import check_free

    files, bindings = [str(c) for c in configs], bind or []
    if nproc > 1:
        if out_dir is not None:
            check_free(out_dir)  # say so now, before starting workers; rank 0 takes the lock
        results = launch.launch(nproc, files, bindings, out_dir, device, force)
        print_summary(results[0]["summary"], Path(results[0]["out_dir"]))
        return
    if launch.launched_by_torchrun():  # `torchrun ... fp run`: this process is one rank
        result = launch.raise_failed({0: launch.worker(files, bindings, out_dir, device, force)})[0]
        if int(os.environ["RANK"]) == 0:
            print_summary(result["summary"], Path(result["out_dir"]))
        return
    outcome = run_experiment(files, bindings, out=out_dir, device=device, force=force)
    if outcome.already_finished:
        out.print(f"{outcome.out_dir} is a finished run; nothing to do (summary.json).")
    for note in outcome.notes:
        out.print(note)
    print_summary(outcome.summary, outcome.out_dir)


@app.command("plugins")
def plugins_cmd() -> None:
    """List the loaded plugins with their distribution, version and hooks (and broken ones)."""
    from fp.manager import make_manager

    rows = [(i.name, i.distribution, i.version, f"BROKEN: {i.error}" if i.error else ", ".join(i.hooks))
            for i in make_manager().infos.values()]
    print_table(("plugin", "distribution", "version", "hooks / error"), rows)


@app.command("list")
def list_cmd(kind: Annotated[Optional[str], typer.Argument(help="measures, architectures, datasets, schedules or experiments.")] = None) -> None:
    """List what is registered, with one-line descriptions; `experiments` lists the shipped gin files."""
    from fp.errors import did_you_mean
    from fp.manager import make_manager
    from fp.registry import KINDS

    choices = (*KINDS, "experiments")
    if kind is not None and kind not in choices:
        raise FpError(f"unknown kind {kind!r}{did_you_mean(kind, choices)}; choose one of {', '.join(choices)}.")
    if kind == "experiments":  # fp.config loads torch: only when the experiments are asked for
        from fp.config.files import shipped_experiments

        print_table(("config", "description"), shipped_experiments(), title="experiments")
        return
    shown = [kind] if kind else list(KINDS)
    registries = make_manager(builtins=shown).registries  # the built-ins of the listed kinds only
    for name in shown:
        print_table(("name", "description", "provided by"), registries[name].listing(), title=name)


@app.command("sweep")
def sweep_cmd(
    configs: Annotated[list[Path], typer.Argument(help="gin files of the base experiment.")],
    grid: Annotated[list[str], typer.Option("--grid", "-g", help="'a.b=v1,v2': one run per value (bare words are strings).")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder holding one run directory per grid point.")],
    bind: Annotated[Optional[list[str]], typer.Option("--bind", "-b", help="A gin binding shared by every run.")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu, cuda, cuda:N or mps.", callback=device_option)] = None,
    jobs: Annotated[Optional[int], typer.Option(min=1, help="Grid points running at once, each in its own process (default: 1 here, all on Slurm).")] = None,
    executor: Annotated[str, typer.Option(help="local (this machine) or slurm (one job per point, through submitit).", callback=executor_option)] = "local",
    gpus_per_run: Annotated[Optional[int], typer.Option(min=0, help="GPUs given to each run through CUDA_VISIBLE_DEVICES (0: all shared; default: 1 where there are GPUs).")] = None,
    partition: Annotated[Optional[str], typer.Option(help="Slurm partition (default: slurm.partition, else the cluster's).")] = None,
    time_min: Annotated[Optional[int], typer.Option(min=1, help="Slurm time limit per job, in minutes (default: slurm.time_min, 1440).")] = None,
    cpus_per_run: Annotated[Optional[int], typer.Option(min=1, help="Slurm CPUs per job (default: slurm.cpus_per_run, 4).")] = None,
    mem_gb: Annotated[Optional[float], typer.Option(min=0.001, help="Slurm memory per job in GB (default: slurm.mem_gb, else the partition's).")] = None,
) -> None:
    """Run the cartesian product of --grid values; finished runs are skipped, a failed one never stops the others."""
    from rich.live import Live

    from fp.tools.sweep import live_table, sweep

    live = Live(console=out, refresh_per_second=4)

    def show(rows: list[dict]) -> None:  # the table appears once every grid point has parsed
        live.start()
        live.update(live_table(rows))

    slurm = {k: v for k, v in dict(partition=partition, time_min=time_min, cpus_per_run=cpus_per_run,
                                   mem_gb=mem_gb, gpus_per_run=gpus_per_run).items() if v is not None}
    try:
        rows = sweep([str(c) for c in configs], grid, bindings=bind or [], out=out_dir,
                     device=device, jobs=jobs, executor=executor, gpus_per_run=gpus_per_run,
                     slurm=slurm, on_update=show)
    finally:
        live.stop()
    failed = sum(r["status"] == "failed" for r in rows)
    out.print(f"{len(rows)} runs in {out_dir} ({failed} failed); `fp report {out_dir} --out DIR` summarises them.")
    if failed:
        raise typer.Exit(1)


@app.command("report")
def report_cmd(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories or sweep folders.")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Where report.md, report.csv, claims.md and plots go.")],
    interventions: Annotated[Optional[Path], typer.Option(help="fp intervene's interventions.jsonl, or its folder (default: any in the folders given or their subfolders).")] = None,
) -> None:
    """Summarise runs: report.md and report.csv (mean ± std over seeds), claims.md (the paper's claims, paired over seeds) and PNG plots."""
    from fp.tools.report.document import report

    path = report(run_dirs, out_dir, interventions=interventions)
    out.print(f"wrote {path} (report.csv and figures beside it)")


@app.command("eval")
def eval_cmd(
    target: Annotated[Path, typer.Argument(help="A run directory or a saved model file.")],
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda, cuda:N or mps (default: the run's own device, else cpu).", callback=device_option)] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per batch for accuracy.")] = 256,
    dataset: Annotated[Optional[str], typer.Option(help="Dataset name (needed for a bare model file).")] = None,
    dtype: Annotated[str, typer.Option(help="float32 or bfloat16 (autocast) for the timings.")] = "float32",
    channels_last: Annotated[bool, typer.Option(help="Time in channels-last memory format.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (every number) instead of a table.")] = False,
) -> None:
    """Accuracy, params, FLOPs, batch-1 latency and saturated throughput of a pruned model against its dense architecture."""
    import json
    from fp.tools.evaluate import evaluate, format_eval

    result = evaluate(target, device=device, batch_size=batch_size, dataset=dataset, dtype=dtype, channels_last=channels_last)
    print(json.dumps(result)) if as_json else out.print(format_eval(result))


app.command("intervene")(intervene_cmd)
app.command("export")(export_cmd)


@app.command("bench")
def bench_cmd(
    quick: Annotated[bool, typer.Option("--quick", help="Smaller sizes: a few minutes on 2 CPU cores.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto.", callback=device_option)] = "cpu",
    data: Annotated[Optional[Path], typer.Option(help="CIFAR-10 JPEGs ({train,test}/<class>/, a folder or a tar archive) for folder_train; without it, images written for the bench.")] = None,
) -> None:
    """Benchmark the hot paths as ratios against bounds measured in the same run."""
    import json
    from fp.tools.bench import bench, format_rows

    progress = (lambda row: None) if as_json else (lambda row: err.print(f"done: {row['name']}"))
    rows = bench(quick=quick, device=device, data=data, on_row=progress)
    print(json.dumps(rows)) if as_json else out.print(format_rows(rows))


def main(argv: list[str] | None = None) -> None:
    """Console entry point. Usage errors get typer's own usage message and exit 2; user errors
    (``FpError``) one line on stderr and their exit code; anything else one line and exit 1,
    with ``--debug`` (or ``FP_DEBUG=1``) showing the traceback instead."""
    args = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in args or os.environ.get("FP_DEBUG", "") not in ("", "0")
    try:
        app(args=args, prog_name="fp")  # standalone mode: typer reports usage errors itself
    except FpError as exc:
        if debug:
            raise
        err.print(Text.assemble(("error:", "bold red"), " ", one_line(exc)), highlight=False,
                  soft_wrap=True)
        raise SystemExit(exc.exit_code) from None
    except KeyboardInterrupt:
        err.print("interrupted")
        raise SystemExit(130) from None
    except Exception as exc:  # a bug in fp or a plugin, not a user's mistake
        if debug:
            raise
        err.print(f"internal error: {type(exc).__name__}: {one_line(exc)}; rerun with --debug for "
                  f"the traceback.", highlight=False, soft_wrap=True)
        raise SystemExit(1) from None


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (gin and torch add context lines)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


if __name__ == "__main__":  # pragma: no cover
    main()
