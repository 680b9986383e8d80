"""The bundled scikit-learn digits: fixed split, sizes, and that a small model can learn them."""
import pytest
import torch

from fp_builtins.datasets.digits import Digits


def test_fixed_stratified_split_and_shapes():
    data = Digits()
    train, test = data.splits["train"], data.splits["test"]
    assert (len(train.labels), len(test.labels)) == (1437, 360)
    assert (data.num_classes, data.in_channels, data.image_size) == (10, 1, (16, 16))
    assert train.images.dtype == torch.uint8 and train.images.max() > 200
    assert torch.bincount(test.labels, minlength=10).min() >= 35  # stratified: every digit ~36
    again = Digits()
    assert torch.equal(again.splits["test"].images, test.images)
    assert torch.equal(again.splits["train"].labels, train.labels)


def test_size_argument_and_training_statistics():
    data = Digits(size=8)
    assert data.image_size == (8, 8)
    x = torch.cat([x for x, _ in data.loader("train", 500)])
    assert abs(x.mean().item()) < 1e-3 and abs(x.std().item() - 1) < 1e-2


def test_digits_are_cropped_but_never_mirrored():
    assert Digits().augmentation.crop_padding == 2 and Digits().augmentation.flip is False
    assert not Digits(augment=False).augmentation.active


@pytest.fixture
def one_thread():
    # a model this small runs many times faster on one thread than on busy shared cores
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_a_small_mlp_learns_digits_through_the_loader(one_thread):
    torch.manual_seed(0)
    data = Digits()
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 64), torch.nn.ReLU(),
                                torch.nn.Linear(64, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    train = data.loader("train", 64, shuffle=True, augment=True, seed=0)
    for epoch in range(8):
        train.set_epoch(epoch)
        for x, y in train:
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    with torch.no_grad():
        correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in data.loader("test", 128))
    assert correct / 360 > 0.85
