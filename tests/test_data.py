"""hf_vit.data: sources, column detection, RGB conversion, transforms, splits, streaming."""

import pytest
import torch
from PIL import Image

from hf_vit import data as hdata


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "CMYK", "I;16", "1"])
def test_any_mode_becomes_rgb(mode):
    image = Image.new(mode, (5, 4))
    assert hdata.to_rgb(image).mode == "RGB"
    processor = hdata.image_processor_for(8)
    pixels = hdata.build_transforms(processor, train=False)(hdata.to_rgb(image))
    assert pixels.shape == (3, 8, 8) and pixels.dtype == torch.float32


def test_a_float_image_in_0_1_reads_as_its_8_bit_twin(tmp_path):
    """A float TIFF in [0, 1] (PIL mode "F") is scaled to 0-255, not clipped to almost black; other ranges refused."""
    import numpy as np

    ramp = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    Image.fromarray(ramp, mode="F").save(tmp_path / "float.tiff")
    Image.fromarray(np.round(ramp * 255).astype(np.uint8)).save(tmp_path / "eight_bit.png")
    ours = np.asarray(hdata.open_image(tmp_path / "float.tiff"), dtype=np.int16)
    assert np.abs(ours - np.asarray(hdata.open_image(tmp_path / "eight_bit.png"), dtype=np.int16)).max() <= 1
    Image.fromarray(ramp * 3 - 1, mode="F").save(tmp_path / "signed.tiff")
    with pytest.raises(hdata.BadImageError, match=r"signed.tiff: a float image with values in \[-1, 2\]"):
        hdata.open_image(tmp_path / "signed.tiff")


def test_transforms_match_the_image_processor():
    processor = hdata.image_processor_for(16, mean=[0.4, 0.5, 0.6], std=[0.2, 0.25, 0.3])
    image = Image.frombytes("RGB", (16, 16), bytes(range(256)) * 3)
    ours = hdata.build_transforms(processor, train=False)(image)
    theirs = processor(images=image, return_tensors="pt")["pixel_values"][0]
    assert torch.allclose(ours, theirs, atol=1e-5)
    train = hdata.build_transforms(processor, train=True)(image)
    assert train.shape == (3, 16, 16)


def test_digits_split_is_fixed_and_stratified():
    data = hdata.load_image_data()
    assert data.is_digits and (len(data.train), len(data.eval)) == (1437, 360)
    assert data.id2label == {i: str(i) for i in range(10)}
    labels = torch.tensor(data.eval["label"])
    assert torch.bincount(labels).min() >= 35  # every class present in proportion
    again = hdata.load_image_data()
    assert again.eval["label"] == data.eval["label"]
    train, eval_ = hdata.build_datasets(data, hdata.image_processor_for(8))
    batch = hdata.collate(train.__getitems__(list(range(10))))
    assert batch["pixel_values"].shape == (10, 3, 8, 8) and batch["labels"].tolist() == data.train["label"][:10]
    assert eval_[0]["pixel_values"].shape == (3, 8, 8)


def _folder(root, n=5):
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (12, 10), (i * 20, 0, 0)).save(root / name / f"{i}.png")


def test_imagefolder_labels_and_seeded_split(tmp_path):
    _folder(tmp_path / "imgs")
    data = hdata.load_image_data(train_dir=str(tmp_path / "imgs"), validation_split=0.2, split_seed=3)
    assert data.id2label == {0: "cat", 1: "dog"} and data.image_column == "image" and data.label_column == "label"
    assert (len(data.train), len(data.eval)) == (8, 2)
    assert sorted(data.eval["label"]) == [0, 1]  # stratified
    again = hdata.load_image_data(train_dir=str(tmp_path / "imgs"), validation_split=0.2, split_seed=3)
    assert [r["image"]["path"] for r in again.eval] == [r["image"]["path"] for r in data.eval]


def test_missing_columns_are_listed():
    import datasets

    table = datasets.Dataset.from_dict({"photo_bytes": [b""], "tag": ["a"]})
    with pytest.raises(hdata.DataError, match="columns are: photo_bytes, tag"):
        hdata.detect_columns(table, None, None)
    with pytest.raises(hdata.DataError, match="image column 'img' not in the dataset"):
        hdata.detect_columns(table, "img", None)


def test_streaming_local_dataset_shards(tmp_path):
    _folder(tmp_path / "ds" / "train", n=6)
    _folder(tmp_path / "ds" / "validation", n=2)
    data = hdata.load_image_data(dataset_name=str(tmp_path / "ds"), streaming=True)
    assert data.id2label == {0: "cat", 1: "dog"} and data.eval_split == "validation"
    assert data.streaming
    shard = hdata.stream_for_training(data, seed=0, buffer_size=4, process_index=1, num_processes=2)
    train, _ = hdata.build_datasets(shard, hdata.image_processor_for(8))
    rows = list(train)
    assert 0 < len(rows) < 12 and rows[0]["pixel_values"].shape == (3, 8, 8)


def test_sampler_depends_only_on_seed_and_epoch():
    a, b = hdata.EpochShuffleSampler(50, seed=1), hdata.EpochShuffleSampler(50, seed=1)
    torch.manual_seed(123)
    first = list(a)
    torch.manual_seed(999)
    assert list(b) == first
    a.set_epoch(1)
    assert list(a) != first and sorted(a) == list(range(50))
