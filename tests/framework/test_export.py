"""``fp export``: a dataset written out as an image folder reads back through ``imagefolder`` as
the same pixels and labels; bad targets are one sentence."""
import torch

from fp import config
from fp.tools.export import class_folders, export_images


def read_back(manager, root, size):
    config.parse([], ["data.dataset = 'imagefolder'", f"imagefolder.root = '{root}'",
                      f"imagefolder.image_size = {size}", "imagefolder.in_memory = True"], manager)
    return manager.registries["datasets"].build("imagefolder")


def by_label(split):
    """Each label's images, as sorted bytes (a folder lists a class's files in its own order)."""
    return {int(k): sorted(bytes(img.numpy().tobytes()) for img in split.images[split.labels == k])
            for k in split.labels.unique()}


def test_an_exported_dataset_reads_back_as_the_same_pixels_and_labels(tmp_path, manager):
    written = export_images("digits", tmp_path / "digits", manager=manager)
    config.parse([], ["data.dataset = 'digits'"], manager)
    digits = manager.registries["datasets"].build("digits")
    assert written == {s: len(digits.splits[s].labels) for s in ("train", "test")}
    assert sorted(p.name for p in (tmp_path / "digits" / "train").iterdir()) == \
        [str(k) for k in range(10)]
    folder = read_back(manager, tmp_path / "digits", digits.image_size[0])
    for split in ("train", "test"):
        mine, theirs = folder.splits[split], digits.splits[split]
        if theirs.images.shape[1] == 1:  # a grey image is read back as three equal channels
            assert torch.equal(mine.images[:, 0], mine.images[:, 2])
            mine = type(mine)(mine.images[:, :1].contiguous(), mine.labels)
        assert by_label(mine) == by_label(theirs)


def test_class_folders_keep_names_only_where_sorting_keeps_the_label_order():
    assert class_folders(["airplane", "bird", "cat"], 3) == ["airplane", "bird", "cat"]
    assert class_folders(["cat", "airplane"], 2) == ["0", "1"]
    assert class_folders(None, 11) == [f"{k:02d}" for k in range(11)]
    assert class_folders(["a/b", "c"], 2) == ["0", "1"]


def test_export_into_a_folder_with_files_is_one_sentence_and_leaves_it_alone(tmp_path,
                                                                             installed_fp):
    (tmp_path / "kept.txt").write_text("a finished run")
    done = installed_fp("export", "digits", str(tmp_path))
    assert done.returncode != 0 and done.stdout == ""
    assert done.stderr.strip() == (f"error: {tmp_path} already exists and is not an empty folder; "
                                   f"fp export writes only into a new or empty one.")
    assert [p.name for p in tmp_path.iterdir()] == ["kept.txt"]


def test_an_unknown_dataset_is_one_sentence(tmp_path, installed_fp):
    done = installed_fp("export", "cifar11", str(tmp_path / "out"))
    assert done.returncode != 0 and len(done.stderr.strip().splitlines()) == 1
    assert "cifar11" in done.stderr and not (tmp_path / "out").exists()
