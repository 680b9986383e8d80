"""Training from a folder of JPEGs: one epoch of ``fp run``'s training path on ``imagefolder``
(decoded cache warm, so the images are held in memory) against a bare PyTorch loop over the same
uint8 images in memory, augmented as a user would write it in plain torch. The images are real
CIFAR-10 where ``fp bench --data`` names its JPEGs (an archive or a folder of
``{train,test}/<class>/``), else smooth random ones written for the bench."""
from __future__ import annotations

import tarfile
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from fp.timing import measure_ratio, seconds
from fp.tools.bench.rows import make_row
from fp.tools.bench.training import built_run, fp_epoch
from fp.engine.build import Setup
from fp.errors import DataError
from fp.manager import Manager

TARGET = "<= 1.10"
CLASSES = 10


def folder_row(manager: Manager, *, architecture: str, batches: int, batch_size: int,
               repeats: int, device: torch.device, shape: tuple[int, int, int],
               data: Path | None = None) -> dict[str, Any]:
    per_class = max(1, batches * batch_size // CLASSES)  # about ``batches`` steps an epoch
    with tempfile.TemporaryDirectory(prefix="fp-bench-folder-") as tmp:
        root = Path(tmp)
        use_real = data is not None and shape == (3, 32, 32)
        if use_real:
            extract_cifar(data, root, per_class)
        else:
            write_jpegs(root, per_class, shape[1:])
        cold, warm = decode_seconds(manager, root, shape[1])
        bindings = ["data.dataset = 'imagefolder'", f"imagefolder.root = '{root}'",
                    f"imagefolder.image_size = {shape[1]}", "imagefolder.in_memory = True"]
        with built_run(manager, architecture=architecture, batches=batches,
                       batch_size=batch_size, device=device, extra=bindings) as setup:
            timing = measure_ratio(fp_epoch(setup), bare_folder_epoch(setup), repeats=repeats, device=device)
            images = len(setup.run.dataset)
    source = "real CIFAR-10 JPEGs" if use_real else "JPEGs written for the bench"
    return make_row("folder_train", timing, TARGET,
                    baseline="bare PyTorch loop over the same uint8 images in memory, random "
                             "crop + flip written in plain torch",
                    notes=f"{architecture}, {images} {source} of {shape[1]} px, batch "
                          f"{batch_size}; decode {cold:.2f} s cold, cache {warm:.2f} s warm")


def decode_seconds(manager: Manager, root: Path, size: int) -> tuple[float, float]:
    """Build the dataset twice: the first decodes and writes the cache, the second reads it."""
    cls = manager.registries["datasets"].get("imagefolder")
    cold, warm = (seconds(lambda: cls(root=str(root), image_size=size, in_memory=True),
                          torch.device("cpu")) for _ in range(2))
    return cold, warm


def bare_folder_epoch(setup: Setup):
    """What a user writes over images held as a uint8 tensor: shuffle, pad, one random crop and
    flip per image by advanced indexing, normalise, step. Same model, optimizer and loss."""
    run = setup.run
    data = run.dataset
    held = data.on_device("train", run.device)
    images, labels = held.images, held.labels
    model, optimizer = run.model, run.optimizer
    temperature, batch_size = run.settings.train.temperature, run.settings.train.batch_size
    pad = data.augmentation.crop_padding
    mean = torch.tensor(data.mean, device=run.device).view(1, -1, 1, 1)
    std = torch.tensor(data.std, device=run.device).view(1, -1, 1, 1)
    gen = torch.Generator(device=run.device).manual_seed(0)

    def epoch() -> None:
        model.train()
        order = torch.randperm(len(images), generator=gen, device=run.device)
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            x = crop_and_flip(images[index], pad, gen).float().div_(255).sub_(mean).div_(std)
            loss = F.cross_entropy(model(x) / temperature, labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return epoch


def crop_and_flip(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    b, c, h, w = x.shape
    padded = F.pad(x, (pad,) * 4)
    dy, dx = torch.randint(0, 2 * pad + 1, (2, b, 1), generator=gen, device=x.device)
    rows = (dy + torch.arange(h, device=x.device)).view(b, 1, h, 1)
    cols = (dx + torch.arange(w, device=x.device)).view(b, 1, 1, w)
    flip = (torch.rand(b, generator=gen, device=x.device) < 0.5).view(b, 1, 1, 1)
    cols = torch.where(flip, 2 * dx.view(b, 1, 1, 1) + w - 1 - cols, cols)  # mirrored window
    batch = torch.arange(b, device=x.device).view(b, 1, 1, 1)
    channel = torch.arange(c, device=x.device).view(1, c, 1, 1)
    return padded[batch, channel, rows, cols]


def check_data(data: Path) -> Path:
    """``data`` as ``fp bench --data`` needs it: a readable tar archive or a folder holding a
    ``train/`` folder; else one sentence."""
    if data.is_dir() and (data / "train").is_dir():
        return data
    if data.is_file() and tarfile.is_tarfile(data):
        return data
    raise DataError(f"--data {data} is neither a folder with train/ and test/ class folders of "
                    f"CIFAR-10 JPEGs nor a tar archive of one.")


def extract_cifar(data: Path, root: Path, per_class: int, test_per_class: int = 10) -> None:
    """The first ``per_class`` training and ``test_per_class`` test images (by file number) of
    every class of ``data`` (an archive or a folder of ``{train,test}/<class>/NNNN.jpg``)."""
    wanted = {"train": per_class, "test": test_per_class}
    for parts, read in image_files(data):
        number = Path(parts[-1]).stem
        if (len(parts) == 3 and parts[0] in wanted and number.isdigit()
                and int(number) < wanted[parts[0]]):
            target = root.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(read())


def image_files(data: Path) -> Iterator[tuple[tuple[str, ...], Callable[[], bytes]]]:
    """Every file of the folder or archive ``data``: its path parts and a reader of its bytes."""
    if data.is_dir():
        for path in sorted(p for p in data.rglob("*") if p.is_file()):
            yield path.relative_to(data).parts, path.read_bytes
        return
    with tarfile.open(data, "r:*") as archive:
        for member in archive:
            if member.isfile():
                yield Path(member.name).parts, lambda m=member: archive.extractfile(m).read()


def write_jpegs(root: Path, per_class: int, size: tuple[int, int], test_per_class: int = 4) -> None:
    """Smooth random images, one tint per class, saved as JPEGs (about CIFAR's byte size)."""
    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("test", test_per_class)):
        for k in range(CLASSES):
            folder = root / split / f"class{k}"
            folder.mkdir(parents=True)
            for i in range(count):
                coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
                image = Image.fromarray(coarse).resize(size[::-1], Image.BILINEAR)
                image.save(folder / f"{i:04d}.jpg", quality=90)
