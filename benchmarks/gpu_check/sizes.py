"""What the GPU check runs and how big: the experiment (this checkout's gin files), the variants it
trains, and the sizes, ``FULL`` on the GPU and ``DRY`` on a CPU (the same functions, tiny
numbers). How long each part may take is ``budget``'s."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: the checkout this benchmark lives in: the experiments are its gin/ files
REPO = Path(__file__).resolve().parents[2]
EXPERIMENT = "gin/resnet56_snip.gin"
FOLDER = "gin/base/cifar10_folder.gin"
#: the protocol's fast variant: bf16 autocast, channels-last weights and inputs
AMP = ("experiment.amp = True", "experiment.channels_last = True")
COMPILED = "amp_channels_last_compile"
VARIANTS = {"fp32": (), "amp_channels_last": AMP, COMPILED: (*AMP, "experiment.compile = True")}


@dataclass(frozen=True)
class Sizes:
    """How big everything is: FULL is the paper protocol on the GPU, DRY the same code on a CPU."""

    device: str = "cuda"
    epochs: int = 3                         # epochs timed per variant
    shrink: tuple[str, ...] = ()            # bindings that make the experiment small
    synthetic: tuple[int, int, int] = (50000, 10000, 32)  # train, test images, pixels: CIFAR-10's
    folder_pixels: int | None = None        # imagefolder.image_size (None: the gin file's)
    per_class: int | None = None            # archive images unpacked per class (None: all)
    backend: str = "nccl"
    compile_backend: str = "inductor"       # experiment.compile_backend ("eager" on a CPU)
    step_batch: int | None = None           # images per paired step (None: train.batch_size)
    tf32_steps: int = 10                    # training steps per timed sample, TF32 off and on
    tf32_pairs: int = 5                     # paired samples (fp.timing.measure_ratio)
    layout_steps: int = 100                 # training steps timed per layout (--mode layout)
    layout_pairs: int = 5                   # ... in this many paired samples


FULL = Sizes()
#: 16 training images of a class at least (synthetic: 256 with random labels, 21 or more of
#: each), so the balanced draws of grasp and grad_norm find their 12 per class
DRY = Sizes(device="cpu", epochs=2, synthetic=(256, 64, 16), folder_pixels=16, per_class=16,
            backend="gloo", compile_backend="eager", step_batch=8, tf32_steps=1, tf32_pairs=2,
            layout_steps=4, layout_pairs=2,
            shrink=("model.architecture = 'resnet20'", "train.batch_size = 64",
                    "train.test_batch_size = 64", "prune.samples = 128", "prune.batch_size = 64"))
