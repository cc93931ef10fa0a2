"""One data path for both training scripts: a Hub dataset, an image folder, or the embedded digits -> batches.

Sources (`load_image_data`):
- `dataset_name`: any image-classification dataset `datasets.load_dataset` can open (Hub name or local script/folder),
  map-style by default or `streaming=True` (an `IterableDataset` with a shuffle buffer, sharded across processes);
- `train_dir` / `validation_dir`: image folders (one sub-folder per class) through `datasets`' "imagefolder" builder;
- neither: the embedded default, scikit-learn's digits (1,797 real 8×8 scanned handwritten digits shipped inside the
  scikit-learn wheel) with a fixed stratified train/test split.

Preprocessing follows a `ViTImageProcessor` (size, mean, std) with torchvision v2 transforms; training adds
augmentation (RandomResizedCrop + flip for photos, or small shifts for digits and other small images). Every image is
converted to RGB first, whatever its mode. The digits (and other small images that fit in memory) are preprocessed
once into a tensor; only their augmentation runs per step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image as PILImage
from torch.utils.data import Dataset as TorchDataset
from torch.utils.data import Sampler
from torchvision.transforms import v2
from transformers import ViTImageProcessor

from .extras import require

DIGITS = "digits"
DIGITS_DESCRIPTION = "scikit-learn digits (UCI optical recognition of handwritten digits, 8x8)"
DIGITS_TEST_SIZE = 0.2
DIGITS_SPLIT_SEED = 0
_IMAGE_COLUMN_NAMES = ("image", "img", "images", "picture", "pixel_values")
_LABEL_COLUMN_NAMES = ("label", "labels", "fine_label", "class", "target", "category")
_EVAL_SPLIT_NAMES = ("validation", "valid", "val", "test", "eval")


class DataError(ValueError):
    """A user-facing problem with the data (missing folder, column, unreadable image); the CLIs print it in one line."""


@dataclass
class ImageData:
    """The raw splits plus what the model needs to know about them."""

    train: object  # datasets.Dataset | datasets.IterableDataset
    eval: object | None
    image_column: str
    label_column: str
    id2label: dict[int, str]
    name: str  # for the model card: the Hub name, the folder, or "digits"
    eval_split: str = "validation"
    streaming: bool = False
    is_digits: bool = False
    notes: list[str] = field(default_factory=list)
    from_dataset: bool = False  # loaded with datasets.load_dataset: the model card names it in `datasets`
    eval_held_out: bool = False  # the evaluation examples were held out of the `train` split (it had no other)

    @property
    def label2id(self) -> dict[str, int]:
        return {label: index for index, label in self.id2label.items()}

    @property
    def num_labels(self) -> int:
        return len(self.id2label)


def card_evaluation(data: ImageData) -> dict:
    """What a model card says about the data a model was evaluated on (`model_card.render_model_card`'s `datasets`,
    `dataset_name`, `eval_split`): a Hub dataset is named by its id (the card's model-index needs one); the digits and
    local folders, which have none, in words only. Examples held out of `train` are reported as that split."""
    hub_id = data.from_dataset and not Path(data.name).expanduser().exists()  # load_dataset also reads local paths
    if data.is_digits:
        where = DIGITS_DESCRIPTION
    elif hub_id:
        where = f"the Hub dataset `{data.name}`"
    else:
        where = f"the local data `{data.name}`"
    return {
        "datasets": [data.name] if hub_id else None,
        "dataset_name": where + (", examples held out of its `train` split" if data.eval_held_out else ""),
        "eval_split": "train" if data.eval_held_out else data.eval_split,
    }


# ---------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------
def digits_arrays():
    """The digits as (images uint8 (N, 8, 8) in 0..255, labels (N,)), and the fixed stratified split's indices."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    # the scans are 0..16 gray levels; as 8-bit images: 16 -> 255
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    labels = digits.target.astype(np.int64)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=DIGITS_TEST_SIZE, stratify=labels, random_state=DIGITS_SPLIT_SEED
    )
    return images, labels, train_idx, test_idx


def _digits_data() -> ImageData:
    import datasets

    images, labels, train_idx, test_idx = digits_arrays()
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=[str(i) for i in range(10)])}
    )

    def split(indices):
        return datasets.Dataset.from_dict(
            {"image": [PILImage.fromarray(images[i], mode="L") for i in indices], "label": labels[indices].tolist()},
            features=features,
        )

    return ImageData(
        train=split(train_idx),
        eval=split(test_idx),
        image_column="image",
        label_column="label",
        id2label={i: str(i) for i in range(10)},
        name=DIGITS,
        eval_split="test",
        is_digits=True,
    )


def _column_names(dataset) -> list[str]:
    names = getattr(dataset, "column_names", None)
    if names is None and getattr(dataset, "features", None) is not None:
        names = list(dataset.features)
    return list(names or [])


def detect_columns(dataset, image_column: str | None, label_column: str | None) -> tuple[str, str]:
    """The image and label columns: as named, or found by feature type (Image, ClassLabel) or usual name."""
    import datasets

    columns = _column_names(dataset)
    features = getattr(dataset, "features", None) or {}
    listing = ", ".join(columns) if columns else "(none)"
    if image_column is not None and image_column not in columns:
        raise DataError(f"image column {image_column!r} not in the dataset; its columns are: {listing}")
    if label_column is not None and label_column not in columns:
        raise DataError(f"label column {label_column!r} not in the dataset; its columns are: {listing}")
    if image_column is None:
        typed = [c for c in columns if isinstance(features.get(c), datasets.Image)]
        named = [c for c in columns if c.lower() in _IMAGE_COLUMN_NAMES]
        found = typed or named
        if not found:
            raise DataError(f"no image column found (pass `image_column`); the dataset's columns are: {listing}")
        image_column = found[0]
    if label_column is None:
        typed = [c for c in columns if isinstance(features.get(c), datasets.ClassLabel) and c != image_column]
        named = [c for c in columns if c.lower() in _LABEL_COLUMN_NAMES and c != image_column]
        found = typed or named
        if not found:
            raise DataError(f"no label column found (pass `label_column`); the dataset's columns are: {listing}")
        label_column = found[0]
    return image_column, label_column


def _id2label(dataset, label_column: str) -> dict[int, str]:
    import datasets

    feature = (getattr(dataset, "features", None) or {}).get(label_column)
    if isinstance(feature, datasets.ClassLabel):
        return {i: name for i, name in enumerate(feature.names)}
    if isinstance(dataset, datasets.IterableDataset):
        raise DataError(
            f"label column {label_column!r} has no ClassLabel feature, which streaming needs to know the label set; "
            "use a dataset with ClassLabel labels or drop `streaming`"
        )
    values = sorted(set(dataset[label_column]))
    if not all(isinstance(v, (int, np.integer)) for v in values):
        raise DataError(
            f"label column {label_column!r} must hold class indices or a ClassLabel, got values like {values[:3]}"
        )
    if values and (values[0] < 0 or values[-1] >= 100_000):
        raise DataError(f"label column {label_column!r} holds out-of-range class indices ({values[0]}..{values[-1]})")
    return {i: str(i) for i in range(int(values[-1]) + 1)} if values else {}


_METADATA_FILES = ("metadata.csv", "metadata.jsonl", "metadata.parquet")


def _check_dir(path: str, argument: str, min_classes: int = 2) -> None:
    """The folder exists and has the layout "imagefolder" infers labels from: one sub-folder of images per class.

    Checked here because otherwise `datasets` silently drops the label column (images directly in the folder, or a
    single class), and the error that follows ("no label column found") points at the wrong argument. A folder with a
    metadata file names its labels in a column instead, so its layout is not checked.
    """
    from pathlib import Path

    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"{argument} {path} does not exist or is not a folder")
    files = [p for p in folder.rglob("*") if p.is_file()]
    if not files:
        raise DataError(f"{argument} {path} is empty: expected one sub-folder of images per class")
    if any(p.name in _METADATA_FILES for p in files):
        return
    classes = sorted(
        p.name
        for p in folder.iterdir()
        if p.is_dir() and not p.name.startswith(".") and any(q.is_file() for q in p.rglob("*"))
    )
    if len(classes) < min_classes:
        found = "no class sub-folders" if not classes else f"a single class sub-folder ({classes[0]!r})"
        raise DataError(
            f"{argument} {path} has {found}: expected one sub-folder of images per class"
            f"{', at least two classes' if min_classes > 1 else ''} (e.g. {path}/cat/1.jpg, {path}/dog/2.jpg)"
        )


def has_class_folders(path: str) -> bool:
    """Whether image folder `path` has the class layout (at least two sub-folders with files, or a metadata file)."""
    try:
        _check_dir(path, "folder")
    except DataError:
        return False
    return True


def load_image_data(
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    train_dir: str | None = None,
    validation_dir: str | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    validation_split: float = 0.15,
    split_seed: int = 42,
    streaming: bool = False,
    cache_dir: str | None = None,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    labels: bool = True,
) -> ImageData:
    """Load the training data from exactly one source (see the module docstring) with an evaluation split.

    When the source has no validation/test split, a stable split of `validation_split` of the training data is made
    with `split_seed` (stratified by label when the labels are a ClassLabel). `labels=False` (self-supervised
    training, `train_dir` only): any folder of images, its files read as one class "image" (label 0).
    """
    require("train", "`load_image_data`")
    import datasets

    if dataset_name and train_dir:
        raise DataError("give either `dataset_name` or `train_dir`, not both")
    if validation_dir and not train_dir:
        raise DataError("`validation_dir` needs `train_dir`")
    if streaming and not dataset_name:
        raise DataError("`streaming` works with `dataset_name` (local image folders and the digits are map-style)")

    if not dataset_name and not train_dir:
        data = _digits_data()
    else:
        if dataset_name:
            loaded = datasets.load_dataset(dataset_name, dataset_config_name, cache_dir=cache_dir, streaming=streaming)
            name = dataset_name
        elif not labels:
            if validation_dir:
                raise DataError("`validation_dir` needs labels: unlabelled images are held out of `train_dir`")
            if not Path(train_dir).is_dir() or not any(p.is_file() for p in Path(train_dir).rglob("*")):
                raise DataError(f"`train_dir` {train_dir} does not exist, is not a folder or holds no files")
            loaded = datasets.load_dataset(
                "imagefolder", data_files={"train": f"{train_dir}/**"}, cache_dir=cache_dir, drop_labels=True
            )
            loaded["train"] = loaded["train"].add_column("label", [0] * len(loaded["train"]))
            name = train_dir
        else:
            _check_dir(train_dir, "`train_dir`")
            data_files = {"train": f"{train_dir}/**"}
            if validation_dir:
                _check_dir(validation_dir, "`validation_dir`", min_classes=1)
                data_files["validation"] = f"{validation_dir}/**"
            loaded = datasets.load_dataset("imagefolder", data_files=data_files, cache_dir=cache_dir)
            name = train_dir
        if "train" not in loaded:
            raise DataError(f"dataset {name} has no 'train' split; its splits are: {', '.join(loaded)}")
        train = loaded["train"]
        eval_split = next((s for s in _EVAL_SPLIT_NAMES if s in loaded), None)
        image_column, label_column = detect_columns(train, image_column, label_column)
        id2label = _id2label(train, label_column)
        notes, held_out = [], False
        if eval_split is not None:
            eval_ds = loaded[eval_split]
        elif streaming:
            raise DataError(
                f"streaming dataset {name} has no validation/test split; splitting needs a map-style dataset"
            )
        else:
            stratify = label_column if isinstance(train.features[label_column], datasets.ClassLabel) else None
            try:
                parts = train.train_test_split(test_size=validation_split, seed=split_seed, stratify_by_column=stratify)
            except ValueError:  # too few examples of some class to stratify
                parts = train.train_test_split(test_size=validation_split, seed=split_seed)
            train, eval_ds, eval_split, held_out = parts["train"], parts["test"], "validation", True
            notes.append(f"no validation split: held out {len(eval_ds)} of the training examples (seed {split_seed})")
        if not streaming and len(train) == 0:
            raise DataError(f"the training split of {name} is empty")
        # decode images ourselves, so an unreadable file is reported by name
        if image_column in (getattr(train, "features", None) or {}) and isinstance(
            train.features[image_column], datasets.Image
        ):
            train = train.cast_column(image_column, datasets.Image(decode=False))
            eval_ds = eval_ds.cast_column(image_column, datasets.Image(decode=False))
        data = ImageData(
            train=train,
            eval=eval_ds,
            image_column=image_column,
            label_column=label_column,
            id2label=id2label,
            name=name,
            eval_split=eval_split,
            streaming=streaming,
            notes=notes,
            from_dataset=bool(dataset_name),
            eval_held_out=held_out,
        )
    if not data.streaming:
        if max_train_samples is not None:
            data.train = data.train.select(range(min(max_train_samples, len(data.train))))
        if max_eval_samples is not None and data.eval is not None:
            data.eval = data.eval.select(range(min(max_eval_samples, len(data.eval))))
    else:
        if max_eval_samples is not None and data.eval is not None:
            data.eval = data.eval.take(max_eval_samples)
    return data


def sample_image_sizes(data: ImageData, max_images: int = 256) -> list[tuple[int, int]]:
    """The (width, height) of up to `max_images` training images, spread evenly over the split (the first ones of a
    stream). Only the file headers are read; unreadable images are left out (training names them). Raises
    `DataError` when none can be read."""
    import io
    import itertools

    if data.streaming:
        values = [row[data.image_column] for row in itertools.islice(data.train, min(max_images, 64))]
    else:
        count = len(data.train)
        indices = sorted({int(i) for i in np.linspace(0, count - 1, num=min(count, max_images))}) if count else []
        values = data.train.select(indices)[data.image_column] if indices else []

    def size(value) -> tuple[int, int] | None:
        if isinstance(value, PILImage.Image):
            return value.size
        source = None
        if isinstance(value, dict):
            source = io.BytesIO(value["bytes"]) if value.get("bytes") is not None else value.get("path")
        try:
            with PILImage.open(source) as image:
                return image.size
        except Exception:  # noqa: BLE001  no or an unreadable image: training reports it by name
            return None

    sizes = [s for s in map(size, values) if s is not None]
    if not sizes:
        raise DataError(f"none of the {len(values)} sampled training images of {data.name} could be read")
    return sizes


# ---------------------------------------------------------------------------------------------------------------
# Images and transforms
# ---------------------------------------------------------------------------------------------------------------
class BadImageError(DataError):
    pass


class _SeededAugmentation:
    """Augmentation randomness as a function of (seed, epoch, sample) only, never of the global RNG's history.

    torchvision draws its random parameters from torch's global RNG; each batch (or item) is transformed inside
    `torch.random.fork_rng` seeded from (seed, epoch, index), so a run resumed mid-epoch augments exactly as an
    uninterrupted one, whatever else consumed random numbers in between, and DataLoader workers agree too.
    """

    seed: int = 0
    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def set_seed(self, seed: int) -> None:
        self.seed = seed

    def _rng(self, index: int):
        import contextlib

        @contextlib.contextmanager
        def seeded():
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed((self.seed * 1_000_003 + self.epoch * 7_919 + int(index)) % (2**63))
                yield

        return seeded()


def to_rgb(image: PILImage.Image) -> PILImage.Image:
    """Any PIL mode (L, LA, P, RGBA, CMYK, I;16, F, ...) as RGB; transparency goes to PIL's default (black). Float
    images hold [0, 1] (scaled to 0-255) or 0-255; others raise BadImageError."""
    if image.mode == "RGB":
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode.startswith("I"):  # 16/32-bit grey: PIL cannot go straight to RGB
        image = image.convert("F").point(lambda v: v / 256.0).convert("L")
    if image.mode == "F":  # float grey (e.g. a float TIFF): [0, 1] scaled to 0-255 as PIL's users expect
        low, high = image.getextrema()
        if not (0.0 <= low and high <= 255.0):
            raise BadImageError(
                f"a float image with values in [{low:g}, {high:g}]; expected [0, 1] (or 0-255): rescale it first"
            )
        if high <= 1.0:
            image = image.point(lambda v: v * 255.0)
        image = image.convert("L")
    return image.convert("RGB")


def open_image(source, name: str | None = None) -> PILImage.Image:
    """An image file (path or file object) as RGB: the one decoding path of training and of the CLIs, so that every
    mode (16-bit grey, palette, CMYK ...) is read the same way everywhere. Raises BadImageError naming the file."""
    name = name or str(source)
    try:
        with PILImage.open(source) as image:
            image.load()  # the pixels: a truncated file fails here, not later in a transform
            return to_rgb(image)
    except PILImage.UnidentifiedImageError:
        raise BadImageError(f"cannot read image {name}: not an image file") from None
    except Exception as error:  # PIL raises several types for corrupt files (OSError, ValueError, SyntaxError ...)
        reason = (str(error).splitlines() or [type(error).__name__])[0]
        raise BadImageError(f"cannot read image {name}: {reason}") from None


def decode_image(value) -> PILImage.Image:
    """A datasets image cell (decoded PIL image, or {"path", "bytes"} when decoding is off) as an RGB PIL image."""
    import io

    if isinstance(value, PILImage.Image):
        return to_rgb(value)
    path = value.get("path") if isinstance(value, dict) else None
    if isinstance(value, dict) and value.get("bytes") is not None:
        return open_image(io.BytesIO(value["bytes"]), path or "(in-memory bytes)")
    if path is not None:
        return open_image(path)
    raise BadImageError("cannot read image (in-memory bytes): no image data")


def image_processor_for(size: int | tuple[int, int], mean=None, std=None) -> ViTImageProcessor:
    """The `ViTImageProcessor` saved with the model; its statistics drive the training transforms."""
    height, width = (size, size) if isinstance(size, int) else size
    kwargs = {}
    if mean is not None:
        kwargs.update(image_mean=list(mean), image_std=list(std))
    return ViTImageProcessor(size={"height": height, "width": width}, **kwargs)


def _size(processor: ViTImageProcessor) -> tuple[int, int]:
    """The model's input size: the crop of a resize-then-crop processor (timm's and DINOv2's eval transform, as a
    BitImageProcessor), else the resize target."""
    crop = getattr(processor, "crop_size", None) if getattr(processor, "do_center_crop", False) else None
    size = crop or processor.size
    return (size["height"], size["width"]) if "height" in size else (size["shortest_edge"],) * 2


def _eval_resize(processor: ViTImageProcessor) -> list[v2.Transform]:
    """The processor's own resize (and centre crop) as torchvision transforms."""
    size = processor.size
    if getattr(processor, "do_center_crop", False) and getattr(processor, "crop_size", None):
        resize = (size["height"], size["width"]) if "height" in size else size["shortest_edge"]  # int: shortest edge
        return [v2.Resize(resize, antialias=True), v2.CenterCrop(_size(processor))]
    return [v2.Resize(_size(processor), antialias=True)]


AUGMENTATIONS = ("shift", "crop_flip")


def build_transforms(
    processor: ViTImageProcessor, train: bool, digits: bool = False, augmentation: str | None = None
) -> v2.Compose:
    """PIL RGB image -> normalized float tensor (C, H, W), as the processor would, plus augmentation for training.

    `augmentation` "crop_flip" (photos): RandomResizedCrop + horizontal flip; "shift" (digits and other small images,
    which a flip or a large crop can change): small random shifts. Default: "shift" for `digits`, else "crop_flip".
    """
    augmentation = augmentation or ("shift" if digits else "crop_flip")
    if augmentation not in AUGMENTATIONS:
        raise ValueError(f"augmentation must be one of {', '.join(AUGMENTATIONS)}, got {augmentation!r}")
    size = _size(processor)
    steps = [v2.ToImage()]
    if train and augmentation == "crop_flip":
        steps += [v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip()]
    else:
        steps += _eval_resize(processor)
        if train:
            steps += [digits_augmentation(size)]
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(processor.image_mean, processor.image_std)]
    return v2.Compose(steps)


def digits_augmentation(size: tuple[int, int]) -> v2.Transform:
    """Small shifts (up to 1/8 of the side) and slight rotation/scale: what handwriting varies by, no flips."""
    return v2.RandomAffine(degrees=8, translate=(0.125, 0.125), scale=(0.9, 1.1))


class _TransformedRows:
    """Rows of a `datasets` dataset -> {"pixel_values", "labels"} through the transform; a bad image raises
    `BadImageError` naming the file, or with `skip_bad_images` yields None (dropped by `collate`)."""

    def __init__(self, dataset, image_column: str, label_column: str, transform, skip_bad_images: bool = False):
        self.dataset = dataset
        self.image_column = image_column
        self.label_column = label_column
        self.transform = transform
        self.skip_bad_images = skip_bad_images
        self.bad_images: set[str] = set()


class TransformedDataset(_TransformedRows, _SeededAugmentation, TorchDataset):
    """A map-style `datasets.Dataset` through the transform (see `_TransformedRows`)."""

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        row = self.dataset[int(index)]
        with self._rng(index):
            return example(
                row, self.image_column, self.label_column, self.transform, self.skip_bad_images, self.bad_images
            )


def example(row, image_column, label_column, transform, skip_bad_images=False, bad_images=None):
    try:
        image = decode_image(row[image_column])
    except BadImageError as error:
        if not skip_bad_images:
            raise
        if bad_images is not None:
            bad_images.add(str(error))
        return None
    return {"pixel_values": transform(image), "labels": int(row[label_column])}


class TensorImageDataset(_SeededAugmentation, TorchDataset):
    """Images preprocessed once into one tensor; only augmentation and normalization run per batch.

    Used for the digits: the processor runs once over all 1,797 images, so the training loop does no PIL work.
    `DataLoader` fetches whole batches through `__getitems__`; the augmentation is applied to groups of
    `group_size` images at a time (torchvision v2 draws one set of parameters per call), which keeps it cheap
    while every group gets its own random shift.
    """

    def __init__(
        self, pixel_values: torch.Tensor, labels: torch.Tensor, augment=None, normalize=None, group_size: int = 4
    ):
        self.pixel_values = pixel_values
        self.labels = labels
        self.augment = augment
        self.normalize = normalize
        self.group_size = group_size

    def __len__(self):
        return len(self.labels)

    def _transform(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.augment is not None:
            pixels = torch.cat([self.augment(group) for group in pixels.split(self.group_size)])
        if self.normalize is not None:
            pixels = self.normalize(pixels)
        return pixels

    def __getitem__(self, index):
        with self._rng(index):
            pixels = self._transform(self.pixel_values[index : index + 1])[0]
        return {"pixel_values": pixels, "labels": int(self.labels[index])}

    def __getitems__(self, indices):
        index = torch.as_tensor(indices, dtype=torch.long)
        with self._rng(indices[0] if len(indices) else 0):
            pixels = self._transform(self.pixel_values[index])
        return [Batch(pixel_values=pixels, labels=self.labels[index])]


def preprocess_all(dataset, image_column: str, label_column: str, processor: ViTImageProcessor):
    """Run the image processor once (resize, rescale; normalization is left to the caller) over a small map-style
    dataset: (pixel_values (N, 3, H, W) in [0, 1], labels (N,))."""
    images = [decode_image(value) for value in dataset[image_column]]
    pixel_values = processor(images=images, do_normalize=False, return_tensors="pt")["pixel_values"].contiguous()
    return pixel_values, torch.tensor(dataset[label_column], dtype=torch.long)


class Batch(dict):
    """{"pixel_values", "labels"} of a whole batch, as `TensorImageDataset.__getitems__` gives it: `collate` passes
    it through instead of stacking."""


def collate(examples):
    """Stack examples into a batch, dropping the ones that `skip_bad_images` turned into None."""
    examples = [e for e in examples if e is not None]
    if len(examples) == 1 and isinstance(examples[0], Batch):  # already a batch
        return dict(examples[0])
    if not examples:
        return {"pixel_values": torch.empty(0), "labels": torch.empty(0, dtype=torch.long)}
    return {
        "pixel_values": torch.stack([e["pixel_values"] for e in examples]),
        "labels": torch.tensor([e["labels"] for e in examples], dtype=torch.long),
    }


def build_datasets(
    data: ImageData,
    processor: ViTImageProcessor,
    skip_bad_images: bool = False,
    augment: bool = True,
    augmentation: str | None = None,
):
    """(train, eval) torch datasets of {"pixel_values", "labels"}: tensors for the digits and other small images
    (`preprocessed_once`), transformed rows otherwise. `augment=False` trains on the evaluation transform (resize +
    normalize) only; `augmentation` is its kind (`build_transforms`; default: shifts for the digits, RandomResizedCrop
    + flip otherwise).

    Streaming data gives `IterableDataset`s whose rows are transformed lazily.
    """
    if preprocessed_once(data, processor, skip_bad_images, augment, augmentation):
        train_pixels, train_labels = preprocess_all(data.train, data.image_column, data.label_column, processor)
        eval_pixels, eval_labels = preprocess_all(data.eval, data.image_column, data.label_column, processor)
        normalize = v2.Normalize(processor.image_mean, processor.image_std)
        return (
            TensorImageDataset(
                train_pixels,
                train_labels,
                augment=digits_augmentation(_size(processor)) if augment else None,
                normalize=normalize,
            ),
            TensorImageDataset(normalize(eval_pixels), eval_labels),
        )
    train_tf = build_transforms(processor, train=augment, augmentation=augmentation)
    eval_tf = build_transforms(processor, train=False)
    if data.streaming:
        return (
            _StreamingDataset(data.train, data.image_column, data.label_column, train_tf, skip_bad_images),
            _StreamingDataset(data.eval, data.image_column, data.label_column, eval_tf, skip_bad_images),
        )
    return (
        TransformedDataset(data.train, data.image_column, data.label_column, train_tf, skip_bad_images),
        TransformedDataset(data.eval, data.image_column, data.label_column, eval_tf, skip_bad_images),
    )


PREPROCESS_MAX_SIDE = 64  # model inputs up to this size ...
PREPROCESS_MAX_BYTES = 256 * 2**20  # ... and all of them in at most this much memory (float32) are preprocessed once


def preprocessed_once(
    data: ImageData,
    processor: ViTImageProcessor,
    skip_bad_images: bool = False,
    augment: bool = True,
    augmentation: str | None = None,
) -> bool:
    """Whether `build_datasets` preprocesses every image once into a tensor (`TensorImageDataset`) rather than per
    step: the digits, and other map-style data of small images (a folder of 8x8 digits trains ~35% faster) that fit
    in memory, when augmenting is off or small shifts. Not with `skip_bad_images` (the per-row path skips and
    counts)."""
    if augment and augmentation not in ("shift", None if data.is_digits else "shift"):  # the digits' default: shifts
        return False
    if data.is_digits:
        return True
    if data.streaming or skip_bad_images or data.eval is None:
        return False
    height, width = _size(processor)
    return (
        max(height, width) <= PREPROCESS_MAX_SIDE
        and (len(data.train) + len(data.eval)) * 3 * height * width * 4 <= PREPROCESS_MAX_BYTES
    )


class _StreamingDataset(_TransformedRows, torch.utils.data.IterableDataset):
    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __iter__(self):
        for row in self.dataset:
            yield example(
                row, self.image_column, self.label_column, self.transform, self.skip_bad_images, self.bad_images
            )


def stream_for_training(
    data: ImageData, seed: int, buffer_size: int, process_index: int, num_processes: int
) -> ImageData:
    """A copy of streaming `data` whose training split is shuffled with a buffer, each process reading its own shard
    of both splits. `data` itself is not changed: training twice on it shuffles and shards it once each time."""
    import dataclasses

    from datasets.distributed import split_dataset_by_node

    train, evaluation = data.train.shuffle(seed=seed, buffer_size=buffer_size), data.eval
    if num_processes > 1:
        train = split_dataset_by_node(train, rank=process_index, world_size=num_processes)
        if evaluation is not None:
            evaluation = split_dataset_by_node(evaluation, rank=process_index, world_size=num_processes)
    return dataclasses.replace(data, train=train, eval=evaluation)


# ---------------------------------------------------------------------------------------------------------------
# Data order
# ---------------------------------------------------------------------------------------------------------------
class EpochShuffleSampler(Sampler[int]):
    """A permutation of range(n) that depends only on (seed, epoch): no global RNG is touched, so a resumed run
    sees exactly the data order of an uninterrupted one (with `accelerate.skip_first_batches`)."""

    def __init__(self, num_samples: int, seed: int):
        self.num_samples = num_samples
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self):
        return self.num_samples

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.num_samples, generator=generator).tolist())


def steps_per_epoch(num_samples: int, batch_size: int, num_processes: int, accumulation: int) -> int:
    batches = math.ceil(num_samples / (batch_size * num_processes))
    return math.ceil(batches / accumulation)


__all__ = [
    "AUGMENTATIONS",
    "DIGITS",
    "BadImageError",
    "Batch",
    "DataError",
    "EpochShuffleSampler",
    "ImageData",
    "TensorImageDataset",
    "TransformedDataset",
    "build_datasets",
    "build_transforms",
    "collate",
    "decode_image",
    "detect_columns",
    "digits_arrays",
    "image_processor_for",
    "load_image_data",
    "open_image",
    "preprocess_all",
    "preprocessed_once",
    "sample_image_sizes",
    "stream_for_training",
    "to_rgb",
]
