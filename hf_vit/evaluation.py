"""How good are a model's features on labelled images: DINO's weighted k-NN and a linear probe, with all the labels
and with a few per class, for several models side by side (`evaluate`).

- **Models**: any source `hf_vit.from_pretrained` loads (an hf_vit folder or Hub repo, a timm / transformers / DINOv2
  checkpoint, ...), run as a backbone (`HfViTModel`) on images prepared by the model's own image processor; or raw
  pixels (`RAW_PIXELS`), the baseline any backbone should beat.
- **Data**: `hf_vit.data.load_image_data`'s sources: an image folder (one sub-folder per class), a Hub data set, or
  the embedded digits (default) with their fixed stratified split. Features of the training split are the k-NN's
  memory and the probe's training set; the evaluation split is scored.
- **Features** (`FEATURES`): the model's own pooled feature (`pooler_output`), the [CLS] token and the mean of the
  patch tokens of the last block, and DINO's linear-evaluation features: the [CLS] tokens of the last 4 blocks
  concatenated (`last4`), plus the mean of the last block's patch tokens (`last4_avgpool`); every block output
  through the final LayerNorm, as DINO's `get_intermediate_layers`.
- **k-NN** (`knn_predict`): DINO's `eval_knn.py`: L2-normalised features, the `k` most similar training images by
  cosine similarity, each voting for its class with weight exp(similarity / `temperature`).
- **Linear probe** (`probe_accuracy`): scikit-learn's LogisticRegression on features standardised with the
  statistics of all the training images (which need no labels), whatever the number of labels used.
- **Few labels** (`sample_per_class`): `labels_per_class` training images of every class, drawn by each of `seeds`
  seeds (the same draws for every model), mean and standard deviation over the seeds.

Results (`Evaluation`): a markdown table, a JSON object and a plot of accuracy against labels per class, written by
`write_evaluation` as `evaluation.md`, `evaluation.json` and `evaluation.png`.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger("hf_vit")

RAW_PIXELS = "raw pixels"
FEATURES = ("pooled", "cls", "mean", "last4", "last4_avgpool")
DEFAULT_K = 20  # DINO's eval_knn.py: k=20, T=0.07
DEFAULT_TEMPERATURE = 0.07
DEFAULT_LABELS_PER_CLASS = (1, 10)
DEFAULT_SEEDS = 5
RAW_PIXELS_SIDE = 32  # raw pixels of images of different sizes (or large ones) are compared at this square size
RAW_PIXELS_MAX_SIDE = 64
OUTPUT_FILES = ("evaluation.md", "evaluation.json", "evaluation.png")
LAST_BLOCKS = 4


# ---------------------------------------------------------------------------------------------------------------
# The two evaluations, on features
# ---------------------------------------------------------------------------------------------------------------
def knn_predict(
    train_features,
    train_labels,
    test_features,
    *,
    k: int = DEFAULT_K,
    temperature: float = DEFAULT_TEMPERATURE,
    num_classes: int | None = None,
    chunk_size: int = 1024,
) -> np.ndarray:
    """DINO's weighted k-NN classifier (`eval_knn.py`): the predicted class of each test feature.

    Features are L2-normalised; the `k` training features most similar to a test feature (cosine similarity; all of
    them when there are fewer) vote for their labels with weight exp(similarity / `temperature`); the class with the
    largest sum wins (ties: the lower class index)."""
    if k < 1:
        raise ValueError(f"`k` must be at least 1, got {k}")
    if not temperature > 0:
        raise ValueError(f"`temperature` must be positive, got {temperature}")
    train = torch.nn.functional.normalize(torch.as_tensor(np.asarray(train_features), dtype=torch.float64), dim=1)
    test = torch.nn.functional.normalize(torch.as_tensor(np.asarray(test_features), dtype=torch.float64), dim=1)
    labels = torch.as_tensor(np.asarray(train_labels), dtype=torch.long)
    if len(train) == 0 or len(train) != len(labels):
        raise ValueError(
            f"`train_labels` must have one label per training feature (at least one), got {len(labels)} for "
            f"{len(train)} features"
        )
    num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
    k = min(k, len(train))
    predictions = []
    for start in range(0, len(test), chunk_size):
        similarity = test[start : start + chunk_size] @ train.T
        top_similarity, top_index = similarity.topk(k, dim=1)
        votes = torch.zeros(len(similarity), num_classes, dtype=torch.float64)
        votes.scatter_add_(1, labels[top_index], (top_similarity / temperature).exp())
        predictions.append(votes.argmax(dim=1))
    return torch.cat(predictions).numpy() if predictions else np.zeros(0, dtype=np.int64)


def probe_accuracy(
    train_features, train_labels, test_features, test_labels, *, standardise_with=None, seed: int = 0
) -> float:
    """A linear probe's accuracy: scikit-learn's LogisticRegression, trained on the standardised training features
    and scored on the test ones. The mean and standard deviation of each feature come from `standardise_with`
    (default: the training features): with a few labels per class, pass all the training images' features (their
    statistics need no labels; a handful of images give noisy ones)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    train_labels = np.asarray(train_labels)
    if len(np.unique(train_labels)) < 2:
        raise ValueError("a linear probe needs training images of at least two classes")
    train_features = np.asarray(train_features, dtype=np.float64)
    scaler = StandardScaler().fit(train_features if standardise_with is None else np.asarray(standardise_with))
    probe = LogisticRegression(max_iter=2000, random_state=seed)
    probe.fit(scaler.transform(train_features), train_labels)
    return float(probe.score(scaler.transform(np.asarray(test_features, dtype=np.float64)), np.asarray(test_labels)))


def sample_per_class(labels, per_class: int, seed: int, class_names: dict[int, str] | None = None) -> np.ndarray:
    """The indices (sorted) of exactly `per_class` examples of every class in `labels`, drawn without replacement by
    `seed`. Raises ValueError naming a class with fewer examples."""
    labels = np.asarray(labels)
    if per_class < 1:
        raise ValueError(f"`labels_per_class` must be at least 1, got {per_class}")
    classes = sorted(set(labels.tolist()) | set(class_names or {}))
    generator = np.random.default_rng(seed)
    chosen = []
    for label in classes:
        members = np.flatnonzero(labels == label)
        if len(members) < per_class:
            name = (class_names or {}).get(label, label)
            raise ValueError(
                f"class {name!r} has {len(members)} training images, fewer than `labels_per_class` {per_class}"
            )
        chosen.append(generator.choice(members, size=per_class, replace=False))
    return np.sort(np.concatenate(chosen))


# ---------------------------------------------------------------------------------------------------------------
# Features
# ---------------------------------------------------------------------------------------------------------------
def check_feature(feature: str) -> None:
    if feature not in FEATURES:
        raise ValueError(f"`feature` must be one of {', '.join(FEATURES)}, got {feature!r}")


@torch.no_grad()
def model_features(model, pixel_values: torch.Tensor, feature: str = "pooled") -> torch.Tensor:
    """(batch, D) features of an `HfViTModel` for a batch of preprocessed images (see the module docstring)."""
    check_feature(feature)
    config = model.config
    if feature == "pooled":
        output = model(pixel_values=pixel_values)
        if output.pooler_output is None:
            raise ValueError(f"this model (pooling {config.pooling!r}) has no pooled feature; choose another `feature`")
        return output.pooler_output
    needs_cls = feature != "mean"
    if needs_cls and not config.class_token:
        raise ValueError(f"`feature` {feature!r} needs a [CLS] token; this model has none: use 'mean' or 'pooled'")
    blocks = LAST_BLOCKS if feature.startswith("last4") else 1
    if blocks > config.num_hidden_layers:
        raise ValueError(
            f"`feature` {feature!r} needs at least {blocks} blocks; this model has {config.num_hidden_layers}"
        )
    if feature == "mean":  # the patch tokens only: [CLS] and registers left out, as DINO's avgpool
        (patches,) = model.get_intermediate_layers(pixel_values, n=1, norm=True)
        return patches.mean(dim=1)
    outputs = model.get_intermediate_layers(pixel_values, n=blocks, return_class_token=True, norm=True)
    parts = [cls for _, cls in outputs]
    if feature == "last4_avgpool":
        parts.append(outputs[-1][0].mean(dim=1))
    return torch.cat(parts, dim=-1)


def raw_pixel_size(*image_sets) -> tuple[int, int] | None:
    """The (width, height) raw pixels are compared at: None (as they are) when every image of `image_sets` has the
    same size of at most RAW_PIXELS_MAX_SIDE, else RAW_PIXELS_SIDE square."""
    sizes = {image.size for images in image_sets for image in images}
    if len(sizes) == 1 and max(next(iter(sizes))) <= RAW_PIXELS_MAX_SIDE:
        return None
    return (RAW_PIXELS_SIDE, RAW_PIXELS_SIDE)


def raw_pixel_features(images, size: tuple[int, int] | None = None) -> np.ndarray:
    """RGB pixel values in [0, 1], flattened: one row per image (resized to `size` (width, height) when given)."""
    from PIL import Image

    rows = []
    for image in images:
        if size is not None and image.size != tuple(size):
            image = image.resize(tuple(size), Image.Resampling.BILINEAR)
        rows.append(np.asarray(image.convert("RGB"), dtype=np.float32).reshape(-1) / 255.0)
    return np.stack(rows)


class DecodedImages:
    """The images of a `datasets` column, decoded as RGB PIL images when read (`len`, an index or a slice): a large
    data set is never held in memory decoded."""

    def __init__(self, dataset, column: str):
        self.dataset, self.column = dataset, column

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        from .data import decode_image

        if isinstance(index, slice):
            return [decode_image(value) for value in self.dataset[index][self.column]]
        return decode_image(self.dataset[int(index)][self.column])

    def __iter__(self):
        for start in range(0, len(self), 256):
            yield from self[start : start + 256]


@dataclass
class LabelledImages:
    """The images (decoded when read) and integer labels of a training and an evaluation split."""

    train_images: list
    train_labels: np.ndarray
    eval_images: list
    eval_labels: np.ndarray
    id2label: dict[int, str]
    name: str
    eval_split: str


def load_labelled_images(
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    train_dir: str | None = None,
    validation_dir: str | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    validation_split: float = 0.15,
    split_seed: int = 42,
    cache_dir: str | None = None,
) -> LabelledImages:
    """The images of one source (`hf_vit.data.load_image_data`: the digits by default), decoded as RGB when read."""
    from .data import load_image_data

    data = load_image_data(
        dataset_name=dataset_name,
        dataset_config_name=dataset_config_name,
        train_dir=train_dir,
        validation_dir=validation_dir,
        image_column=image_column,
        label_column=label_column,
        validation_split=validation_split,
        split_seed=split_seed,
        cache_dir=cache_dir,
    )
    if data.eval is None or len(data.eval) == 0:
        raise ValueError(f"the data {data.name} has no images to evaluate on")

    def split(dataset):
        return DecodedImages(dataset, data.image_column), np.asarray(dataset[data.label_column], dtype=np.int64)

    train_images, train_labels = split(data.train)
    eval_images, eval_labels = split(data.eval)
    return LabelledImages(
        train_images, train_labels, eval_images, eval_labels, dict(data.id2label), data.name, data.eval_split
    )


def load_backbone(source, *, cache_dir=None, token=None, device=None):
    """(model, image_processor) of any `hf_vit.from_pretrained` source, as an `HfViTModel` in eval mode
    on `device`; the processor saved with it, else ViTImageProcessor's defaults at its image size."""
    from .checkpoint_io import load_image_processor
    from .convert.pretrained import from_pretrained, pretrained_location
    from .data import image_processor_for

    model = from_pretrained(source, task="feature-extraction", cache_dir=cache_dir, token=token)
    location = pretrained_location(source, cache_dir=cache_dir, token=token)
    try:
        processor = load_image_processor(location)
    except OSError:
        processor = image_processor_for(model.config.image_size)
        logger.warning("%s has no preprocessor_config.json: ViTImageProcessor's defaults at its size", source)
    return model.to(device or "cpu").eval(), processor


def image_features(model, processor, images, *, feature: str = "pooled", batch_size: int = 128, device=None):
    """The features (N, D) of `images` (PIL) through `processor` and `model` (`model_features`), in batches."""
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be at least 1, got {batch_size}")
    rows = []
    for start in range(0, len(images), batch_size):
        pixel_values = processor(images=images[start : start + batch_size], return_tensors="pt")["pixel_values"]
        rows.append(model_features(model, pixel_values.to(device or "cpu"), feature).float().cpu())
    return torch.cat(rows).numpy()


# ---------------------------------------------------------------------------------------------------------------
# One evaluation of several models
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class ModelResult:
    name: str
    feature: str  # "pixels" for the raw-pixel baseline
    dim: int
    knn: float
    probe: float
    few_labels: dict[int, dict[str, list[float]]] = field(default_factory=dict)  # N -> {"knn": [...], "probe": [...]}


@dataclass
class Evaluation:
    data: dict
    settings: dict
    results: list[ModelResult]

    def to_dict(self) -> dict:
        def summary(values):
            return {"mean": float(np.mean(values)), "std": float(np.std(values)), "runs": [float(v) for v in values]}

        return {
            "data": self.data,
            "settings": self.settings,
            "models": [
                {
                    "model": r.name,
                    "feature": r.feature,
                    "dim": r.dim,
                    "knn": r.knn,
                    "probe": r.probe,
                    "labels_per_class": {
                        str(n): {kind: summary(values) for kind, values in runs.items()}
                        for n, runs in r.few_labels.items()
                    },
                }
                for r in self.results
            ],
        }

    def markdown(self) -> str:
        """The results as a markdown table (accuracy on the evaluation split, %; few labels: mean ± std over the
        seeds), with a line saying what was measured."""
        settings, data = self.settings, self.data
        counts = settings["labels_per_class"]
        header = ["model", "feature", "dim", f"k-NN (k={settings['k']})", "linear probe"]
        for n in counts:
            header += [f"k-NN, {n}/class", f"probe, {n}/class"]
        lines = ["| " + " | ".join(header) + " |", "|---|---|---:|" + "---:|" * (len(header) - 3)]
        for r in self.results:
            cells = [r.name, r.feature, str(r.dim), _percent(r.knn), _percent(r.probe)]
            for n in counts:
                cells += [_spread(r.few_labels[n]["knn"]), _spread(r.few_labels[n]["probe"])]
            lines.append("| " + " | ".join(cells) + " |")
        note = (
            f"Accuracy on {data['eval_images']} {data['eval_split']} images of {data['name']} ({data['classes']} "
            f"classes), {data['train_images']} training images. k-NN: DINO's weighted vote (cosine similarity, "
            f"T={settings['temperature']}); linear probe: logistic regression on features standardised with the "
            "statistics of all training images"
        )
        if counts:
            note += f"; N/class: N training images per class, mean ± std over {settings['seeds']} seeds"
        return "\n".join(lines) + "\n\n" + note + ".\n"

    def plot(self):
        """A matplotlib figure: accuracy against labels per class (log scale), one colour per model: the probe solid,
        the k-NN dashed, with the standard deviation over the seeds as error bars; all labels at the right."""
        from .extras import require

        require("viz", "the evaluation plot")
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axes = plt.subplots(figsize=(7, 4.5))
        all_x = self.data["train_images"] / max(1, self.data["classes"])
        counts = list(self.settings["labels_per_class"])
        for index, r in enumerate(self.results):
            colour = f"C{index}"
            for kind, style, label in (("probe", "-", "linear probe"), ("knn", "--", "k-NN")):
                xs = counts + [all_x]
                means = [100 * np.mean(r.few_labels[n][kind]) for n in counts] + [100 * getattr(r, kind)]
                stds = [100 * np.std(r.few_labels[n][kind]) for n in counts] + [0.0]
                axes.errorbar(
                    xs, means, yerr=stds, fmt="o" + style, color=colour, capsize=3, label=f"{r.name}: {label}"
                )
        axes.set_xscale("log")
        axes.set_xticks(counts + [all_x], [str(n) for n in counts] + [f"all ({all_x:.0f})"])
        axes.minorticks_off()
        axes.set_xlabel("labelled training images per class (rightmost: all)")
        axes.set_ylabel(f"accuracy on {self.data['eval_split']} (%)")
        axes.set_title(f"{self.data['name']}: features by k-NN and linear probe")
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize=7, loc="lower right")
        figure.tight_layout()
        return figure


def _percent(value: float) -> str:
    return f"{100 * value:.1f} %"


def _spread(values) -> str:
    return f"{100 * np.mean(values):.1f} ± {100 * np.std(values):.1f} %"


def _is_local(source) -> bool:
    return isinstance(source, (str, os.PathLike)) and Path(os.fspath(source)).expanduser().exists()


def check_evaluation_output(output_dir, *, inputs: dict, overwrite: bool) -> None:
    """The output folder's check (`hf_vit.output_dir.check_output_dir`), before any slow work: refused when it is a
    file, overlaps an input, or (unless `overwrite`) holds a file of `OUTPUT_FILES`; other files do not matter."""
    from .output_dir import check_output_dir

    check_output_dir(output_dir, inputs=inputs, overwrite=overwrite, ours=lambda name: name in OUTPUT_FILES)


def write_evaluation(evaluation: Evaluation, output_dir, *, overwrite: bool = False) -> list[Path]:
    """Write `evaluation.md`, `evaluation.json` and `evaluation.png` into `output_dir` (created if missing), each
    atomically; a file of those names is replaced only with `overwrite`. Returns the paths."""
    import io
    import json

    from .fileio import atomic_write_bytes, atomic_write_text

    check_evaluation_output(output_dir, inputs={}, overwrite=overwrite)
    figure = evaluation.plot()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    import matplotlib.pyplot as plt

    plt.close(figure)
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / name for name in OUTPUT_FILES]
    atomic_write_text(paths[0], evaluation.markdown())
    atomic_write_text(paths[1], json.dumps(evaluation.to_dict(), indent=2) + "\n")
    atomic_write_bytes(paths[2], buffer.getvalue())
    return paths


def evaluate(
    models: Sequence[str | os.PathLike] = (),
    *,
    raw_pixels: bool = False,
    names: Sequence[str] | None = None,
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    train_dir: str | None = None,
    validation_dir: str | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    validation_split: float = 0.15,
    split_seed: int = 42,
    feature: str = "pooled",
    k: int = DEFAULT_K,
    temperature: float = DEFAULT_TEMPERATURE,
    labels_per_class: Sequence[int] = DEFAULT_LABELS_PER_CLASS,
    seeds: int = DEFAULT_SEEDS,
    batch_size: int = 128,
    device: str | None = None,
    cache_dir: str | None = None,
    token: str | bool | None = None,
    output_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> Evaluation:
    """Evaluate the features of `models` (any `hf_vit.from_pretrained` sources) and, with `raw_pixels`, of the raw
    pixels, on one labelled data set (see the module docstring): k-NN and linear probe with every training label,
    and with `labels_per_class` labels per class drawn by each of `seeds` seeds (0, 1, ...). With `output_dir`, the
    folder is checked before any work and the table, JSON and plot are written there (`write_evaluation`). `names`:
    what the results call each model (default: the sources as given)."""
    from .extras import require

    require("train", "`evaluate`")  # the data sets and scikit-learn
    models = [os.fspath(m) for m in models]
    if not models and not raw_pixels:
        raise ValueError("nothing to evaluate: give `models` or `raw_pixels`")
    names = list(models if names is None else names)
    if len(names) != len(models):
        raise ValueError(f"`names` must name each of the {len(models)} models, got {len(names)} names")
    check_feature(feature)
    if k < 1:
        raise ValueError(f"`k` must be at least 1, got {k}")
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"`temperature` must be a positive number, got {temperature}")
    counts = sorted(set(int(n) for n in labels_per_class))
    if any(n < 1 for n in counts):
        raise ValueError(f"`labels_per_class` must be at least 1, got {min(counts)}")
    if counts and seeds < 1:
        raise ValueError(f"`seeds` must be at least 1 with `labels_per_class`, got {seeds}")
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be at least 1, got {batch_size}")
    if output_dir is not None:
        inputs = {"`train_dir`": train_dir, "`validation_dir`": validation_dir, "`dataset_name`": dataset_name}
        inputs.update({f"model {m}": m for m in models if _is_local(m)})
        check_evaluation_output(output_dir, inputs=inputs, overwrite=overwrite)
        require("viz", "the evaluation plot")
    from .checkpoint_io import check_model_location

    for model in models:  # a missing folder or damaged weights are said before the data is loaded
        if not Path(model).expanduser().is_file():  # a single checkpoint file (DINO .pth, .npz) is the loader's
            check_model_location(model)

    data = load_labelled_images(
        dataset_name=dataset_name,
        dataset_config_name=dataset_config_name,
        train_dir=train_dir,
        validation_dir=validation_dir,
        image_column=image_column,
        label_column=label_column,
        validation_split=validation_split,
        split_seed=split_seed,
        cache_dir=cache_dir,
    )
    num_classes = len(data.id2label)
    draws = {n: [sample_per_class(data.train_labels, n, seed, data.id2label) for seed in range(seeds)] for n in counts}
    logger.info(
        "%s: %d training and %d %s images, %d classes",
        data.name,
        len(data.train_labels),
        len(data.eval_labels),
        data.eval_split,
        num_classes,
    )

    def score(name, kind, train_x, test_x) -> ModelResult:
        def knn(indices=None):
            x, y = (train_x, data.train_labels) if indices is None else (train_x[indices], data.train_labels[indices])
            predicted = knn_predict(x, y, test_x, k=k, temperature=temperature, num_classes=num_classes)
            return float(np.mean(predicted == data.eval_labels))

        def probe(indices=None, seed=0):
            x, y = (train_x, data.train_labels) if indices is None else (train_x[indices], data.train_labels[indices])
            return probe_accuracy(x, y, test_x, data.eval_labels, standardise_with=train_x, seed=seed)

        result = ModelResult(name, kind, int(train_x.shape[1]), knn(), probe())
        for n, subsets in draws.items():
            result.few_labels[n] = {
                "knn": [knn(subset) for subset in subsets],
                "probe": [probe(subset, seed) for seed, subset in enumerate(subsets)],
            }
        logger.info("%s (%s): k-NN %s, linear probe %s", name, kind, _percent(result.knn), _percent(result.probe))
        return result

    results = []
    if raw_pixels:
        size = raw_pixel_size(data.train_images, data.eval_images)
        results.append(
            score(
                RAW_PIXELS,
                "pixels" if size is None else f"pixels {size[0]}x{size[1]}",
                raw_pixel_features(data.train_images, size),
                raw_pixel_features(data.eval_images, size),
            )
        )
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    for source, name in zip(models, names, strict=True):
        model, processor = load_backbone(source, cache_dir=cache_dir, token=token, device=device)
        features = [
            image_features(model, processor, images, feature=feature, batch_size=batch_size, device=device)
            for images in (data.train_images, data.eval_images)
        ]
        results.append(score(name, feature, *features))
        del model

    evaluation = Evaluation(
        data={
            "name": data.name,
            "train_images": int(len(data.train_labels)),
            "eval_images": int(len(data.eval_labels)),
            "eval_split": data.eval_split,
            "classes": num_classes,
        },
        settings={
            "feature": feature,
            "k": k,
            "temperature": temperature,
            "labels_per_class": counts,
            "seeds": seeds,
            "probe": "LogisticRegression on features standardised with all training images' statistics",
        },
        results=results,
    )
    if output_dir is not None:
        write_evaluation(evaluation, output_dir, overwrite=overwrite)
    return evaluation


__all__ = [
    "FEATURES",
    "OUTPUT_FILES",
    "RAW_PIXELS",
    "DecodedImages",
    "Evaluation",
    "LabelledImages",
    "ModelResult",
    "evaluate",
    "image_features",
    "knn_predict",
    "load_backbone",
    "load_labelled_images",
    "model_features",
    "probe_accuracy",
    "raw_pixel_features",
    "sample_per_class",
    "write_evaluation",
]
