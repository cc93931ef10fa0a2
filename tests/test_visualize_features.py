"""The patch-feature picture (hf_vit.feature_maps) and scripts/visualize_features.py."""

import numpy as np
import pytest
import torch
from helpers import TINY, run_python
from PIL import Image
from transformers import ViTImageProcessor

from hf_vit import HfViTConfig, HfViTForMaskedImageModeling, HfViTModel
from hf_vit import feature_maps as fm


# --- the PCA, on features whose foreground is known ----------------------------------------------------------------
def synthetic(rows, columns, parts, dim=16, noise=0.05, seed=0):
    """A (rows, columns, dim) grid: background near 0, each part (a (row slice, column slice) -> vector) near its
    vector. Foreground vectors share a large e0 component (fg vs bg: the first PCA) and differ along e1 (the second)."""
    generator = torch.Generator().manual_seed(seed)
    grid = noise * torch.randn(rows, columns, dim, generator=generator)
    for (row_slice, column_slice), vector in parts:
        grid[row_slice, column_slice] += vector
    return grid


E = torch.eye(16)
PART_A, PART_B = 4 * E[0] + E[1], 4 * E[0] - E[1]


def expected_mask(rows, columns, boxes):
    mask = torch.zeros(rows, columns, dtype=torch.bool)
    for row_slice, column_slice in boxes:
        mask[row_slice, column_slice] = True
    return mask


def test_principal_components_match_sklearn():
    from sklearn.decomposition import PCA

    features = torch.randn(50, 8, generator=torch.Generator().manual_seed(0)) * torch.arange(1, 9)
    ours = fm.principal_components(features, 3).numpy()
    theirs = PCA(n_components=3, svd_solver="full").fit_transform(features.double().numpy())
    np.testing.assert_allclose(np.abs(ours), np.abs(theirs), atol=1e-9)
    assert fm.principal_components(features[:2], 3)[:, 2].abs().max() == 0  # two points have one component


@pytest.mark.parametrize("sign", [1, -1])
def test_foreground_is_the_object_across_images_whatever_the_sign(sign):
    # two images of different grids; the objects cover more than half of the patches (the border decides)
    boxes_1 = [(slice(1, 5), slice(1, 4)), (slice(1, 5), slice(4, 7))]
    boxes_2 = [(slice(1, 7), slice(1, 4)), (slice(1, 7), slice(4, 7))]
    first = synthetic(6, 8, zip(boxes_1, (PART_A, PART_B), strict=True), seed=1)
    second = synthetic(8, 8, zip(boxes_2, (PART_A, PART_B), strict=True), seed=2)
    pictures = fm.pca_pictures([sign * first, sign * second])
    for picture, (rows, columns), boxes in zip(pictures, [(6, 8), (8, 8)], [boxes_1, boxes_2], strict=True):
        mask = expected_mask(rows, columns, boxes)
        assert torch.equal(picture.foreground, mask)
        assert picture.rgb.shape == (rows, columns, 3) and picture.first_component.shape == (rows, columns)
        assert picture.rgb[~mask].abs().max() == 0  # background black
    # each colour channel spans [0, 1] over the foreground of both images together
    colours = torch.cat([p.rgb[p.foreground] for p in pictures])
    torch.testing.assert_close(colours.min(dim=0).values, torch.zeros(3))
    torch.testing.assert_close(colours.max(dim=0).values, torch.ones(3))
    # the two parts get two colours, the same in both images (one PCA over all images)
    part_a = torch.cat([pictures[0].rgb[1:5, 1:4].reshape(-1, 3), pictures[1].rgb[1:7, 1:4].reshape(-1, 3)])
    part_b = torch.cat([pictures[0].rgb[1:5, 4:7].reshape(-1, 3), pictures[1].rgb[1:7, 4:7].reshape(-1, 3)])
    assert (part_a[:, 0] - part_b[:, 0].mean()).abs().min() > 0.8  # pc1 of the foreground tells them apart
    assert part_a[:, 0].max() - part_a[:, 0].min() < 0.2 and part_b[:, 0].max() - part_b[:, 0].min() < 0.2


def test_invert_threshold_and_keep_background():
    box = [(slice(2, 4), slice(3, 6))]
    grid = synthetic(6, 8, zip(box, (PART_A,), strict=True))
    mask = expected_mask(6, 8, box)
    assert torch.equal(fm.pca_pictures([grid], invert=True)[0].foreground, ~mask)
    # the object is far above the mean in standard deviations; a threshold above it leaves nothing
    picture = fm.pca_pictures([grid], threshold=1.0)[0]
    assert torch.equal(picture.foreground, mask)
    assert (picture.first_component[mask] > 1.0).all() and (picture.first_component[~mask] < 0).all()
    empty = fm.pca_pictures([grid], threshold=100.0)[0]
    assert not empty.foreground.any() and empty.rgb.abs().max() == 0
    everything = fm.pca_pictures([grid], remove_background=False)[0]
    assert everything.foreground.all() and everything.rgb.max() == 1
    with pytest.raises(ValueError, match="`threshold` must be a finite number"):
        fm.pca_pictures([grid], threshold=float("nan"))
    with pytest.raises(ValueError, match="`features` is empty"):
        fm.pca_pictures([])


# --- on a model ------------------------------------------------------------------------------------------------------
def test_pictures_of_a_model_keep_each_images_aspect_ratio():
    torch.manual_seed(0)
    model = HfViTModel(HfViTConfig(**TINY, num_register_tokens=2)).eval()
    processor = ViTImageProcessor(size={"height": 32, "width": 32})
    wide = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 100, 3), dtype=np.uint8))
    tall = wide.transpose(Image.Transpose.ROTATE_90)
    pictures = fm.compute_feature_pictures(model, [wide, tall], processor)
    # 40x100 at about 32x32 pixels -> 24x48 (3x6 patches); the rotated image is 48x24
    assert [p.input_size for p in pictures] == [(24, 48), (48, 24)]
    assert pictures[0].rgb.shape == (3, 6, 3) and pictures[1].foreground.shape == (6, 3)
    image = fm.picture_image(pictures[0].rgb, pictures[0].input_size)
    assert image.size == (48, 24)
    assert np.array_equal(np.asarray(image)[8:16, 16:24], np.broadcast_to(np.asarray(image)[8, 16], (8, 8, 3)))
    assert fm.side_by_side(image, image).size == (100, 24)
    with torch.no_grad():
        tokens = model(pictures[0].pixel_values).last_hidden_state[0, 3:]  # [CLS] and 2 registers dropped
    torch.testing.assert_close(fm.patch_features(model, pictures[0].pixel_values), tokens.reshape(3, 6, 32))
    # a model with a head on the backbone: its backbone's features
    mim = HfViTForMaskedImageModeling(HfViTConfig(**TINY)).eval()
    assert fm.patch_features(mim, pictures[0].pixel_values).shape == (3, 6, 32)
    assert fm.compute_feature_pictures(model, [wide], processor, size=(16, 32))[0].input_size == (16, 32)
    with pytest.raises(ValueError, match="`size` must be positive multiples of the patch size 8"):
        fm.compute_feature_pictures(model, [wide], processor, size=(20, 32))


# --- the CLI ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("features")
    HfViTModel(HfViTConfig(**TINY)).save_pretrained(root / "model")
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(root / "model")
    pixels = np.random.default_rng(1).integers(0, 255, (60, 90, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(root / "wide.png")
    Image.fromarray(pixels.transpose(1, 0, 2)).save(root / "tall.png")
    (root / "notes.txt").write_text("not a picture\n")
    return root


@pytest.mark.slow
def test_cli_writes_the_pictures(files):
    out = files / "out"
    result = run_python(
        ["scripts/visualize_features.py", files / "model", files / "wide.png", files / "tall.png", "--output_dir", out]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # 60x90 at about 32x32 pixels -> 24x40 (3x5 patches), the tall one 40x24
    assert f"{files / 'wide.png'}: input 24x40 (3x5 patches), foreground " in result.stdout
    for stem, (height, width) in {"wide": (24, 40), "tall": (40, 24)}.items():
        with Image.open(out / f"{stem}_features.png") as picture:
            assert picture.size == (width, height) and picture.mode == "RGB"
        with Image.open(out / f"{stem}_side_by_side.png") as picture:
            assert picture.size == (2 * width + 4, height)
        arrays = np.load(out / f"{stem}_features.npz")
        assert arrays["rgb"].shape == (height // 8, width // 8, 3) and arrays["foreground"].dtype == bool
        assert arrays["pixel_values"].shape == (3, height, width)
    assert not list(out.glob(".*"))  # no temporary files left behind


def test_cli_refuses_mistakes_in_one_line_and_touches_no_users_file(files, tmp_path, capsys):
    from hf_vit.commands.features import main

    model, wide = files / "model", files / "wide.png"
    (tmp_path / "wide_features.png").write_bytes(b"the user's own file")
    (tmp_path / "a_file").write_text("a file, not a folder")
    cases = {
        "already holds files (wide_features.png": [model, wide, "--output_dir", tmp_path],
        "exists and is not a folder": [model, wide, "--output_dir", tmp_path / "a_file"],
        "not an image file": [model, wide, files / "notes.txt", "--output_dir", tmp_path / "new"],
        f"model folder {files / 'missing'} does not exist": [files / "missing", wide, "--output_dir", tmp_path / "new"],
        "--size must be positive multiples of the patch size 8": [
            model,
            wide,
            "--output_dir",
            tmp_path,
            "--size",
            "8",
            "12",
        ],
        "--threshold must be a finite number": [model, wide, "--output_dir", tmp_path / "new", "--threshold", "nan"],
        "--device no-such-device:": [model, wide, "--output_dir", tmp_path / "new", "--device", "no-such-device"],
    }
    for message, argv in cases.items():
        capsys.readouterr()
        assert main([*argv, "--overwrite"] if "--size" in argv else argv) == 2, message
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (message, lines)
    assert (tmp_path / "wide_features.png").read_bytes() == b"the user's own file"
    assert not (tmp_path / "new").exists()
    # --overwrite replaces this command's own files, and nothing else
    (tmp_path / "notes.md").write_text("mine")
    assert main([model, wide, "--output_dir", tmp_path, "--overwrite"]) == 0
    with Image.open(tmp_path / "wide_features.png") as picture:
        assert picture.size == (40, 24)
    assert (tmp_path / "notes.md").read_text() == "mine"
