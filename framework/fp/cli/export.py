"""``fp export``, declared beside ``fp.cli`` (which registers it) to keep that module readable: a
thin wrapper over ``fp.tools.export.export_images``. Imports nothing heavy: ``fp --help`` stays
fast."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from fp.cli.support import out


def export_cmd(
    dataset: Annotated[str, typer.Argument(help="A registered in-memory dataset, e.g. cifar10 or cifar100 (downloaded on first use).")],
    out_dir: Annotated[Path, typer.Argument(help="A new or empty folder for {train,test}/<class>/NNNNN.png.")],
    bind: Annotated[Optional[list[str]], typer.Option("--bind", "-b", help="A gin binding for the dataset, e.g. cifar10.root='/data'.")] = None,
) -> None:
    """Write a dataset's images out as an image folder that data.dataset = 'imagefolder' reads
    (bind imagefolder.root to it): CIFAR for an offline machine."""
    from fp.tools.export import export_images

    written = export_images(dataset, out_dir, bind or [])
    counts = ", ".join(f"{n:,} {split}" for split, n in written.items())
    out.print(f"{counts} images of {dataset} in {out_dir}")
