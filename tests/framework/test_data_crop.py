"""The CPU and GPU crop paths against a crop written out per image, and the loader end to end."""
import pytest
import torch
import torch.nn.functional as F

from fp.data import (Augmentation, InMemoryDataset, Split, augment_params, gather_crop, row_crop,
                     shard_order)


def reference_crop(images, offsets, flips, padding):
    """Pad each image, slice its window, mirror it if flagged: one image at a time."""
    h, w = images.shape[2:]
    out = []
    for image, (dy, dx), flip in zip(images, offsets.tolist(), flips.tolist()):
        crop = F.pad(image, (padding,) * 4)[:, dy:dy + h, dx:dx + w]
        out.append(crop.flip(-1) if flip else crop)
    return torch.stack(out)


CASES = [  # (batch, channels, height, width, padding, flip pattern)
    (6, 3, 7, 5, 3, "random"), (5, 1, 4, 9, 1, "all"), (4, 2, 6, 6, 2, "none"),
    (1, 3, 5, 5, 4, "all"), (7, 2, 3, 8, 0, "random"), (9, 3, 8, 8, 4, "random"),
]


@pytest.mark.parametrize("crop", [row_crop, gather_crop])
@pytest.mark.parametrize("b, c, h, w, padding, pattern", CASES)
def test_crops_equal_the_per_image_reference(crop, b, c, h, w, padding, pattern):
    gen = torch.Generator().manual_seed(b * 100 + h)
    images = torch.randint(0, 256, (b, c, h, w), dtype=torch.uint8, generator=gen)
    offsets = torch.randint(0, 2 * padding + 1, (b, 2), generator=gen)
    flips = {"all": torch.ones(b, dtype=torch.bool), "none": torch.zeros(b, dtype=torch.bool),
             "random": torch.rand(b, generator=gen) < 0.5}[pattern]
    out = crop(images, offsets, flips, padding)
    assert out.dtype == torch.uint8 and out.is_contiguous()
    assert torch.equal(out, reference_crop(images, offsets, flips, padding))


def test_crops_read_a_strided_batch_correctly():
    images = torch.randint(0, 256, (4, 3, 6, 12), dtype=torch.uint8)[..., ::2]  # not contiguous
    offsets, flips = torch.tensor([[0, 4], [2, 2], [4, 0], [1, 3]]), torch.tensor([1, 0, 1, 0]) > 0
    assert torch.equal(row_crop(images, offsets, flips, 2),
                       reference_crop(images, offsets, flips, 2))


class Small(InMemoryDataset):
    name = "small"

    def __init__(self):
        gen = torch.Generator().manual_seed(3)

        def split(n):
            return Split(torch.randint(0, 256, (n, 3, 6, 7), dtype=torch.uint8, generator=gen),
                         torch.arange(n) % 2)

        self.set_data(split(11), split(2), num_classes=2, mean=(0.4, 0.5, 0.6),
                      std=(0.2, 0.25, 0.3), augmentation=Augmentation(2, True))


def test_an_augmented_epoch_is_the_reference_crop_of_its_plan_normalised():
    data, seed, epoch = Small(), 5, 3
    loader = data.loader("train", 4, shuffle=True, augment=True, seed=seed)
    loader.set_epoch(epoch)
    order = shard_order(11, shuffle=True, seed=seed, epoch=epoch)
    offsets, flips = augment_params(11, data.augmentation, seed=seed, epoch=epoch, rank=0)
    crops = reference_crop(data.splits["train"].images[order], offsets, flips, 2).float()
    mean, std = torch.tensor(data.mean).view(1, 3, 1, 1), torch.tensor(data.std).view(1, 3, 1, 1)
    want = (crops / 255 - mean) / std
    got = torch.cat([x for x, _ in loader])
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    assert torch.equal(torch.cat([y for _, y in loader]), data.splits["train"].labels[order])


def test_the_loader_leaves_torch_threads_as_the_caller_set_them():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        loader = Small().loader("train", 4, shuffle=True, augment=True)
        seen = [torch.get_num_threads() for _ in loader]  # what the training step would see
        assert seen == [2, 2, 2] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
