"""Small image folders in ``<root>/{train,test}/<class>/`` layout, written with PIL."""
import numpy as np
import pytest
from PIL import Image


def write_images(folder, counts, *, size=(12, 10), ext="jpg", seed=0):
    """``counts[cls]`` noisy images per class (each class its own tint), ``size`` = (W, H)."""
    rng = np.random.default_rng(seed)
    for k, (cls, count) in enumerate(sorted(counts.items())):
        (folder / cls).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = rng.integers(0, 96, (size[1], size[0], 3)) + 40 * np.eye(3, dtype=int)[k % 3]
            Image.fromarray(pixels.astype(np.uint8)).save(folder / cls / f"{i:04d}.{ext}")


@pytest.fixture
def image_folder(tmp_path):
    """A factory: ``image_folder(train_counts, test_counts, **write_images options)`` -> root."""
    def make(train, test, name="data", **options):
        root = tmp_path / name
        write_images(root / "train", train, **options)
        write_images(root / "test", test, **options)
        return root
    return make
