"""The default model, training recipe and augmentation chosen from the images' size."""

import dataclasses
import json
import re

import pytest
from helpers import REPO, run_python

from hf_vit import data as hdata
from hf_vit.configuration_hf_vit import PRESETS
from hf_vit.model_setup import (
    DEFAULT_PRESET,
    DIGITS_MODEL,
    build_model,
    recipe_for_data,
    recipe_for_images,
)

TRAIN = str(REPO / "scripts" / "train.py")
FINETUNE = str(REPO / "scripts" / "finetune_trainer.py")
ENV = {"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def test_small_images_get_the_digits_recipe():
    recipe = recipe_for_images([(8, 8)] * 5)
    assert recipe.kind == "small" and recipe.model == DIGITS_MODEL
    assert (recipe.num_train_epochs, recipe.learning_rate, recipe.augment, recipe.augmentation) == (
        20,
        1e-3,
        False,
        "shift",
    )
    assert recipe.num_threads == 1 and recipe.pretrained_hint is None


@pytest.mark.parametrize(
    "size, image_size, patch_size",
    [
        ((3, 2), 8, 4),
        ((12, 12), 12, 4),
        ((16, 15), 16, 4),
        ((24, 24), 24, 8),
        ((32, 30), 32, 8),
        ((28, 28), 32, 8),
        ((40, 40), 48, 16),
        ((64, 64), 64, 16),
    ],
)
def test_small_images_keep_a_grid_of_at_most_4x4(size, image_size, patch_size):
    recipe = recipe_for_images([size])
    assert recipe.kind == "small" and (recipe.image_size, recipe.patch_size) == (image_size, patch_size)
    assert 2 <= recipe.image_size // recipe.patch_size <= 4
    assert recipe.model == {**DIGITS_MODEL, "image_size": image_size, "patch_size": patch_size}
    assert not recipe.augment and recipe.augmentation == "shift"  # when on: no flips, no large crops


def test_photos_keep_the_default_preset_and_hear_about_pretrained_models():
    recipe = recipe_for_images([(640, 480), (500, 375), (1024, 768), (12, 12)])  # the median decides, not an outlier
    assert recipe.kind == "photo" and recipe.model == {**PRESETS[DEFAULT_PRESET], "pooling": "cls"}
    assert (recipe.num_train_epochs, recipe.learning_rate, recipe.augment, recipe.augmentation) == (
        3,
        1e-3,
        True,
        "crop_flip",
    )
    assert "`model_name_or_path`=google/vit-base-patch16-224" in recipe.pretrained_hint
    assert recipe.typical_size == (570, 428)
    assert (
        "typically 570x428 px" in recipe.describe() and "224x224 input, patch 16 (14x14 patches)" in recipe.describe()
    )
    # medium images: rounded to the patch grid, never above 224
    assert (recipe_for_images([(150, 120)]).image_size, recipe_for_images([(5000, 5000)]).image_size) == (128, 224)
    assert recipe_for_images([(96, 96)]).image_size == 96


def test_no_sizes_is_one_clear_error():
    with pytest.raises(ValueError, match="no image sizes"):
        recipe_for_images([])
    with pytest.raises(ValueError, match="at least 1x1"):
        recipe_for_images([(0, 5)])


def _folder(root, size, per_class=6, mode="L"):
    from PIL import Image

    for c, name in enumerate(("a", "b")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new(mode, size, 40 * c + 5 * i if mode == "L" else (40 * c, 5 * i, 0)).save(root / name / f"{i}.png")
    return root


@pytest.mark.parametrize(
    "size, kind, image_size", [((8, 8), "small", 8), ((40, 36), "small", 32), ((300, 200), "photo", 224)]
)
def test_the_recipe_of_an_image_folder(tmp_path, size, kind, image_size):
    data = hdata.load_image_data(train_dir=str(_folder(tmp_path / "images", size, mode="L" if size[0] < 10 else "RGB")))
    assert set(hdata.sample_image_sizes(data, max_images=4)) == {size}
    recipe = recipe_for_data(data)
    assert (recipe.kind, recipe.image_size) == (kind, image_size)
    model, processor = build_model(data.id2label, recipe=recipe)
    assert model.config.image_size == image_size and model.config.patch_size == recipe.patch_size
    assert processor.size == {"height": image_size, "width": image_size}
    train_set, _ = hdata.build_datasets(data, processor, augment=recipe.augment, augmentation=recipe.augmentation)
    # small images are preprocessed once into a tensor; photos go through the per-image transforms
    assert isinstance(train_set, hdata.TensorImageDataset) == (kind != "photo")


def test_augmentation_kinds():
    processor = hdata.image_processor_for(32)
    shift = [type(t).__name__ for t in hdata.build_transforms(processor, train=True, augmentation="shift").transforms]
    crop_flip = [
        type(t).__name__ for t in hdata.build_transforms(processor, train=True, augmentation="crop_flip").transforms
    ]
    assert "RandomAffine" in shift and "RandomHorizontalFlip" not in shift and "RandomResizedCrop" not in shift
    assert "RandomResizedCrop" in crop_flip and "RandomHorizontalFlip" in crop_flip
    with pytest.raises(ValueError, match="shift, crop_flip"):
        hdata.build_transforms(processor, train=True, augmentation="mirror")


def test_train_settings_take_the_recipe_and_the_flags_override_it():
    from hf_vit.cli import fit_settings
    from hf_vit.commands.train import parse_args
    from hf_vit.fit import FitSettings

    def settings(recipe, *argv, model_from_data=True, digits=False):
        return fit_settings(
            parse_args(["--train_dir", "x", *argv]), recipe, model_from_data=model_from_data, digits=digits
        )

    def chosen(s):
        return (s.num_train_epochs, s.learning_rate, s.augment, s.augmentation)

    small, photo = recipe_for_images([(8, 8)]), recipe_for_images([(640, 480)])
    assert chosen(settings(small)) == (20, 1e-3, False, "shift")
    given = settings(small, "--augment", "on", "--num_train_epochs", "2", "--learning_rate", "3e-4")
    assert chosen(given) == (2, 3e-4, True, "shift")
    assert chosen(settings(photo, "--augment", "off")) == (3, 1e-3, False, "crop_flip")
    # small images that are not digits: crop + flip chosen on the command line (which turns augmentation on)
    assert chosen(settings(small, "--augmentation", "crop_flip")) == (20, 1e-3, True, "crop_flip")
    assert chosen(settings(small, "--augmentation", "crop_flip", "--augment", "off"))[2:] == (False, "crop_flip")
    # a given model: augmentation on but for the digits (their recipe's schedule), 5e-5 when fine-tuned
    assert chosen(settings(small, "--preset", "vit-tiny-patch16-224", model_from_data=False)) == (
        3,
        1e-3,
        True,
        "shift",
    )
    digits = settings(small, "--model_name_or_path", "m", model_from_data=False, digits=True)
    assert chosen(digits) == (20, 5e-5, False, "shift")
    # the other settings: FitSettings' defaults, or the flags given
    assert settings(photo) == dataclasses.replace(FitSettings(), augment=True, augmentation="crop_flip")
    flags = settings(photo, "--seed", "3", "--checkpointing_steps", "5", "--no_progress", "--skip_bad_images")
    assert (flags.seed, flags.checkpointing_steps, flags.progress, flags.skip_bad_images) == (3, 5, False, True)


def _digits_folder(root, per_class):
    import numpy as np
    from PIL import Image

    images, labels, _, _ = hdata.digits_arrays()
    for label in range(10):
        (root / str(label)).mkdir(parents=True)
        for i in np.flatnonzero(labels == label)[:per_class]:
            Image.fromarray(images[i], mode="L").save(root / str(label) / f"{i}.png")
    return root


@pytest.mark.slow
def test_a_folder_of_small_digits_trains_by_default(tmp_path):
    """`hf-vit-train --train_dir digits/` with no model flags: the digits recipe, chosen from the images' size."""
    images = _digits_folder(tmp_path / "digits", per_class=40)
    out = tmp_path / "out"
    result = run_python(
        [TRAIN, "--train_dir", str(images), "--output_dir", str(out), "--no_progress"], env_extra=ENV, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "model chosen from the data: the images are typically 8x8 px" in result.stdout
    assert "8x8 input, patch 4 (2x2 patches)" in result.stdout and "no augmentation" in result.stdout
    config = json.loads((out / "config.json").read_text())
    assert {k: config[k] for k in DIGITS_MODEL} == DIGITS_MODEL
    accuracy = float(re.search(r"validation accuracy: (\d+\.\d\d)%", result.stdout).group(1))
    assert accuracy > 80.0  # chance is 10%; 340 training images, the recipe's 20 epochs


@pytest.mark.slow
def test_the_trainer_command_chooses_the_same_model(tmp_path):
    images = _folder(tmp_path / "images", (8, 8), per_class=4)
    out = tmp_path / "out"
    result = run_python(
        [
            FINETUNE,
            "--train_dir",
            str(images),
            "--output_dir",
            str(out),
            "--max_steps",
            "2",
            "--per_device_train_batch_size",
            "4",
            "--disable_tqdm",
            "true",
        ],
        env_extra=ENV,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "model chosen from the data" in result.stdout
    config = json.loads((out / "config.json").read_text())
    assert {k: config[k] for k in DIGITS_MODEL} == DIGITS_MODEL
