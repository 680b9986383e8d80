"""Decoding an image folder once into uint8 tensors, cached as an .npz next to the data.

JPEGs are decoded in batches by torchvision's libjpeg-turbo decoder (about 3.5x less CPU time per
32-px image than opening each one with PIL, and pixel-identical to it) on a pool of threads: the
decoder releases the GIL (another thread ran every 5 ms through a 118 ms decode), and threads
need no fork, no pickling of pixels and no shared memory. Anything else, or an image of another
size, goes through PIL exactly as the streaming loader does (``convert("RGB")``, bilinear
``resize``), so both forms of the dataset hold the same pixels.

The cache file's name carries a hash of every file's path, label, size and modification time (and
the image size), so a changed folder gets a new cache; its contents are checked against the full
hash and the expected shapes before use, and anything unreadable is rebuilt.
"""
from __future__ import annotations

import hashlib
import io
import os
import tempfile
import warnings
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fp.data import default_data_root
from fp.errors import DataError

try:  # deprecated since torchvision 0.29 in favour of TorchCodec; without it PIL decodes all
    from torchvision.io import ImageReadMode, decode_jpeg
except ImportError:  # pragma: no cover - a torchvision that has dropped it
    decode_jpeg = None

FORMAT = 1                 # bump when the same files would decode to other arrays
CHUNK = 1000               # images per decoding task: large enough to batch, small to balance
JPEG_MAGIC = b"\xff\xd8"
DEPRECATED = "The image decoding and encoding capabilities of TorchVision"  # a warning per call

Samples = dict[str, list[tuple[str, int]]]  # split -> [(file path, class index)], in order


def decoded_images(root: Path, samples: Samples, size: int,
                   workers: int) -> tuple[dict[str, torch.Tensor], Path | None, bool]:
    """Every split's (N, 3, size, size) uint8 images, from the cache when it is valid.
    Returns the images, the cache file (None when nowhere was writable) and whether it was hit."""
    key = cache_key(root, samples, size)
    counts = {split: len(files) for split, files in samples.items()}
    places = cache_dirs(root)
    for folder in places:
        images = load_cache(folder / cache_name(key, size), key, counts, size)
        if images is not None:
            return images, folder / cache_name(key, size), True
    images = {split: decode_files([path for path, _ in files], size, workers)
              for split, files in samples.items()}
    for folder in places:
        if save_cache(folder, key, size, images):
            return images, folder / cache_name(key, size), False
    return images, None, False


def cache_key(root: Path, samples: Samples, size: int) -> str:
    """A hash of the image size and every file's path (relative to ``root``), class index, size
    and modification time: a file added, removed, renamed, relabelled or rewritten changes it."""
    digest = hashlib.sha256(f"fp-imagefolder v{FORMAT} {size}px\n".encode())
    prefix = len(os.path.join(str(root), ""))  # all paths start with root/ (relpath: 8x slower)
    for split, files in samples.items():
        digest.update(f"[{split}]\n".encode())
        lines = []
        for path, label in files:
            stat = os.stat(path)
            lines.append(f"{path[prefix:]}\t{label}\t{stat.st_size}\t{stat.st_mtime_ns}\n")
        digest.update("".join(lines).encode())
    return digest.hexdigest()


def cache_name(key: str, size: int) -> str:
    return f"fp-decoded-{size}px-{key[:16]}.npz"


def cache_dirs(root: Path) -> list[Path]:
    """Next to the data first; else a folder of the data root named after this folder's path."""
    tag = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]
    return [root, default_data_root() / "imagefolder" / f"{root.name}-{tag}"]


def load_cache(path: Path, key: str, counts: dict[str, int],
               size: int) -> dict[str, torch.Tensor] | None:
    """The cached images, or None if the file is missing, corrupt, or not for these files."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            if str(archive["key"]) != key:
                return None
            arrays = {split: archive[split] for split in counts}  # reading checks the zip CRCs
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    for split, count in counts.items():
        if arrays[split].dtype != np.uint8 or arrays[split].shape != (count, 3, size, size):
            return None
    return {split: torch.from_numpy(array) for split, array in arrays.items()}


def save_cache(folder: Path, key: str, size: int, images: dict[str, torch.Tensor]) -> bool:
    """Write the cache atomically (a reader never sees half a file) and drop this folder's older
    caches of the same image size, which no longer match its files. False if not writable."""
    name = cache_name(key, size)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{name}.", delete=False) as handle:
            temp = Path(handle.name)
            try:
                np.savez(handle, key=np.array(key),
                         **{split: array.numpy() for split, array in images.items()})
            except BaseException:
                handle.close()
                temp.unlink(missing_ok=True)
                raise
        os.chmod(temp, 0o644)  # a temporary file is private; the cache is as readable as the data
        os.replace(temp, folder / name)
    except OSError:
        return False
    for stale in folder.glob(f"fp-decoded-{size}px-*.npz"):
        if stale.name != name:
            stale.unlink(missing_ok=True)
    return True


def decode_files(paths: list[str], size: int, workers: int) -> torch.Tensor:
    """(N, 3, size, size) uint8 RGB images of ``paths``, in order."""
    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)

    def decode_chunk(start: int) -> None:
        out[start:start + CHUNK] = decode_batch(paths[start:start + CHUNK], size)

    starts = range(0, len(paths), CHUNK)
    with warnings.catch_warnings():  # set before the threads start: the filters are global
        warnings.filterwarnings("ignore", DEPRECATED, DeprecationWarning)
        if workers <= 1 or len(starts) == 1:
            for start in starts:
                decode_chunk(start)
        else:
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(decode_chunk, starts))  # list(): re-raise a worker's error here
    return out


def decode_batch(paths: list[str], size: int) -> torch.Tensor:
    blobs = [read_bytes(path) for path in paths]
    jpegs = [i for i, blob in enumerate(blobs) if blob[:2] == JPEG_MAGIC]
    decoded: list[torch.Tensor | None] = [None] * len(paths)
    for i, image in zip(jpegs, decode_jpegs([blobs[i] for i in jpegs])):
        decoded[i] = image
    return torch.stack([image if image is not None and tuple(image.shape[1:]) == (size, size)
                        else pil_decode(blobs[i], paths[i], size, image)
                        for i, image in enumerate(decoded)])


def read_bytes(path: str) -> bytearray:
    try:
        with open(path, "rb") as handle:
            return bytearray(handle.read())  # writable: torch.frombuffer wants to own it
    except OSError as exc:
        raise DataError(f"could not read {path} ({exc.strerror or exc}).") from None


def decode_jpegs(blobs: list[bytearray]) -> list[torch.Tensor | None]:
    """RGB (3, H, W) tensors; None for a file the batched decoder refuses (PIL then tries it)."""
    if decode_jpeg is None:
        return [None] * len(blobs)
    tensors = [torch.frombuffer(blob, dtype=torch.uint8) for blob in blobs]
    try:
        return decode_jpeg(tensors, mode=ImageReadMode.RGB) if tensors else []
    except RuntimeError:  # one bad file fails the whole batch: find it by decoding one by one
        return [_decode_one(tensor) for tensor in tensors]


def _decode_one(tensor: torch.Tensor) -> torch.Tensor | None:
    try:
        return decode_jpeg(tensor, mode=ImageReadMode.RGB)
    except RuntimeError:
        return None


def pil_decode(blob: bytearray, path: str, size: int,
               decoded: torch.Tensor | None) -> torch.Tensor:
    """What the streaming loader makes of the file: PIL, RGB, bilinear resize to size x size."""
    try:
        if decoded is not None:
            image = Image.fromarray(decoded.permute(1, 2, 0).numpy())
        else:
            with Image.open(io.BytesIO(blob)) as opened:
                image = opened.convert("RGB")
        if image.size != (size, size):
            image = image.resize((size, size), Image.BILINEAR)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path} is not a readable image ({exc}).") from None
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)
