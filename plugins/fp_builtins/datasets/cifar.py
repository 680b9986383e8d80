"""CIFAR-10 and CIFAR-100 (Krizhevsky 2009), the paper's datasets, held in memory as uint8."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ClassVar, Sequence

import numpy as np
import torch
import torchvision

from fp.data import Augmentation, InMemoryDataset, Split, default_data_root
from fp.errors import DataError
from fp.validation import check


@dataclass(frozen=True)
class PerChannel:
    """A constraint (read by ``fp.validation``): one finite number per colour channel (R, G, B),
    each above zero when ``positive`` (a std divides the pixels)."""

    positive: bool = False

    def allows(self, values: Sequence[float]) -> bool:
        return len(values) == 3 and all(math.isfinite(v) and (v > 0 or not self.positive)
                                        for v in values)

    def describe(self) -> str:
        return f"three {'positive ' if self.positive else ''}numbers, one per channel (R, G, B)"


#: normalisation arguments; None means the dataset's own training-set statistics
ChannelMean = Annotated[Sequence[float], PerChannel()] | None
ChannelStd = Annotated[Sequence[float], PerChannel(positive=True)] | None


class _TorchvisionCifar(InMemoryDataset):
    """Shared loading for the torchvision CIFAR classes; subclasses name the variant.

    Pixels are normalised per channel as (x - mean) / std on the 0..1 scale; by default with the
    training set's own statistics (``channel_mean``, ``channel_std``). The paper's code uses
    mean = std = 0.5 instead, which the paper's gin bases bind (gin/base/cifar10.gin).
    """

    title: ClassVar[str]
    torchvision_class: ClassVar[type]
    archive: ClassVar[str]
    folder: ClassVar[str]
    class_count: ClassVar[int]
    channel_mean: ClassVar[tuple[float, float, float]]  # of the training images, 0..1 scale
    channel_std: ClassVar[tuple[float, float, float]]

    def __init__(self, root: str | None = None, download: bool = True, augment: bool = True,
                 crop_padding: int = 4, flip: bool = True, mean: ChannelMean = None,
                 std: ChannelStd = None):
        check(f"{self.name}.mean", mean, ChannelMean)  # before any download
        check(f"{self.name}.std", std, ChannelStd)
        self.root = Path(root).expanduser() if root else default_data_root()
        train, test = (self._read(train, download) for train in (True, False))
        # paper: random 32x32 crop of the 4-pixel zero-padded image and a random horizontal flip
        policy = Augmentation(crop_padding if augment else 0, flip and augment)
        self.set_data(train, test, num_classes=self.class_count,
                      mean=self.channel_mean if mean is None else mean,
                      std=self.channel_std if std is None else std, augmentation=policy)

    def _read(self, train: bool, download: bool) -> Split:
        try:
            source = self.torchvision_class(str(self.root), train=train, download=download)
        except (OSError, RuntimeError) as exc:  # URLError is an OSError; torchvision: RuntimeError
            raise DataError(self._missing_message(download, exc)) from None
        self.classes = list(source.classes)  # names in label order (fp export's folders)
        images = torch.from_numpy(np.ascontiguousarray(source.data)).permute(0, 3, 1, 2)
        labels = torch.as_tensor(np.asarray(source.targets), dtype=torch.int64)
        return Split(images.contiguous(), labels)

    def _missing_message(self, download: bool, exc: Exception) -> str:
        reason = f"could not be downloaded ({exc})" if download else "download is off"
        return (f"{self.title} is missing or corrupt in {self.root} and {reason}; run once online "
                f"with download=True, or place the extracted {self.folder} folder (or "
                f"{self.archive}, unpacked when download=True) under {self.root}.")


class Cifar10(_TorchvisionCifar):
    """CIFAR-10: 50k/10k 32x32 colour images, 10 classes (downloaded on first use)."""

    name = "cifar10"
    title = "CIFAR-10"
    torchvision_class = torchvision.datasets.CIFAR10
    archive = "cifar-10-python.tar.gz"
    folder = "cifar-10-batches-py"
    class_count = 10
    channel_mean = (0.4914, 0.4822, 0.4465)
    channel_std = (0.2470, 0.2435, 0.2616)


class Cifar100(_TorchvisionCifar):
    """CIFAR-100: 50k/10k 32x32 colour images, 100 fine classes (downloaded on first use)."""

    name = "cifar100"
    title = "CIFAR-100"
    torchvision_class = torchvision.datasets.CIFAR100
    archive = "cifar-100-python.tar.gz"
    folder = "cifar-100-python"
    class_count = 100
    channel_mean = (0.5071, 0.4865, 0.4409)
    channel_std = (0.2673, 0.2564, 0.2762)
