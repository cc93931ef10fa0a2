"""Attention maps (hf_vit.attention_maps), scripts/visualize_attention.py and scripts/predict.py."""

import json

import numpy as np
import pytest
import torch
from helpers import run_main, run_python
from PIL import Image
from sklearn.datasets import load_sample_image
from transformers import AutoModel, ViTImageProcessor

from hf_vit import HfViTForImageClassification
from hf_vit import attention_maps as am

LABELS = {0: "china", 1: "flower", 2: "other"}
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # not the processor's defaults, so using them shows


# --- the logic, in process ---------------------------------------------------------------------------------------
def dino_threshold(attentions: torch.Tensor, threshold: float) -> torch.Tensor:
    """DINO's visualize_attention.py, verbatim but for names: attentions (heads, patches) -> bool (heads, patches)."""
    nh = attentions.shape[0]
    val, idx = torch.sort(attentions)
    val /= torch.sum(val, dim=1, keepdim=True)
    cumval = torch.cumsum(val, dim=1)
    th_attn = cumval > (1 - threshold)
    idx2 = torch.argsort(idx)
    for head in range(nh):
        th_attn[head] = th_attn[head][idx2[head]]
    return th_attn


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.6, 0.9, 1.0])
def test_threshold_mask_is_dinos(threshold):
    attention = torch.rand(6, 5, 7, dtype=torch.float64) ** 3
    mask = am.threshold_mask(attention, threshold)
    assert mask.shape == attention.shape and mask.dtype == torch.bool
    assert torch.equal(mask.reshape(6, 35), dino_threshold(attention.reshape(6, 35).clone(), threshold))
    kept = (attention * mask).sum(dim=(1, 2)) / attention.sum(dim=(1, 2))
    assert (kept >= threshold - 1e-12).all()  # the kept patches hold at least `threshold` of the mass ...
    smallest_kept = torch.where(mask, attention, torch.inf).amin(dim=(1, 2))
    without_it = kept - smallest_kept / attention.sum(dim=(1, 2))
    assert (without_it < threshold + 1e-12).all()  # ... and no patch could be dropped


def rollout_reference(attentions):
    """Abnar & Zuidema written out with numpy, one matrix at a time."""
    result = None
    for attention in attentions:
        a = attention[0].double().numpy().mean(axis=0)
        a = 0.5 * a + 0.5 * np.eye(a.shape[0])  # rows of a sum to 1, so this is (A + I) renormalised
        result = a if result is None else a @ result
    return result


def test_attention_rollout():
    attentions = [torch.softmax(torch.randn(1, 3, 9, 9, dtype=torch.float64), dim=-1) for _ in range(4)]
    rollout = am.attention_rollout(attentions)
    np.testing.assert_allclose(rollout[0].numpy(), rollout_reference(attentions), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(rollout.sum(-1).numpy(), 1.0, atol=1e-12)
    np.testing.assert_allclose(
        am.attention_rollout(attentions, num_layers=2)[0].numpy(), rollout_reference(attentions[:2]), atol=1e-12
    )
    with pytest.raises(ValueError, match="at least one layer"):
        am.attention_rollout([])


def test_input_size_keeps_the_aspect_ratio_on_the_patch_grid():
    assert am.input_size_for((427, 640), (224, 224), 16) == (176, 272)  # 1.545 vs 1.499; 187 patches vs 196
    assert am.input_size_for((640, 427), (224, 224), 16) == (272, 176)
    assert am.input_size_for((100, 100), (224, 224), 16) == (224, 224)
    assert am.input_size_for((10, 5000), (32, 32), 8) == (8, 712)  # at least one patch
    assert am.processor_size(ViTImageProcessor(size={"height": 48, "width": 64}), (1, 1)) == (48, 64)


def test_maps_on_sdpa_match_the_eager_attention_nonsquare_with_registers(tiny_config):
    config = tiny_config(num_register_tokens=3, num_hidden_layers=3)
    model = HfViTForImageClassification(config).eval()
    eager = HfViTForImageClassification(tiny_config(num_register_tokens=3, num_hidden_layers=3)).eval()
    eager.load_state_dict(model.state_dict())
    eager.config._attn_implementation = "eager"
    assert model.config._attn_implementation == "sdpa"
    processor = ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=MEAN, image_std=STD)
    image = Image.fromarray(load_sample_image("flower.jpg"))  # 427x640
    maps = am.compute_attention_maps(model, image, processor, layer=1, threshold=0.6, rollout=True)
    assert maps.input_size == (24, 40) and maps.heads.shape == (4, 3, 5) and maps.layer == 1
    # the processor's own resize, rescale, mean and std, at the image's aspect ratio
    expected = processor(image, size={"height": 24, "width": 40}, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(maps.pixel_values, expected, rtol=0, atol=0)
    with torch.no_grad():
        attention = eager(maps.pixel_values, output_attentions=True).attentions[1][0]  # (heads, 19, 19)
    torch.testing.assert_close(maps.heads, attention[:, 0, 4:].reshape(4, 3, 5), rtol=1e-5, atol=1e-6)
    # per head, [CLS] -> patches sums to the softmax mass left after [CLS] and the three registers
    torch.testing.assert_close(maps.heads.sum(dim=(1, 2)), 1 - attention[:, 0, :4].sum(-1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(maps.mean, maps.heads.mean(0))
    assert torch.equal(maps.mask, am.threshold_mask(maps.mean, 0.6))
    assert maps.rollout.shape == (3, 5) and float(maps.rollout.sum()) == pytest.approx(1.0, abs=1e-6)
    # explicit size, portrait; bad sizes and layers are refused
    assert am.compute_attention_maps(model, image, processor, size=(40, 16)).heads.shape == (4, 5, 2)
    with pytest.raises(ValueError, match="multiples of the patch size 8"):
        am.compute_attention_maps(model, image, processor, size=(30, 16))
    with pytest.raises(ValueError, match=r"layer must be in \[-3, 2\]"):
        am.compute_attention_maps(model, image, processor, layer=3)


def test_display_image_undoes_the_normalisation():
    processor = ViTImageProcessor(size={"height": 16, "width": 24}, image_mean=MEAN, image_std=STD)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8))
    pixel_values = am.preprocess(image, processor, (16, 24))
    shown = np.asarray(am.display_image(pixel_values, processor)).astype(int)
    assert shown.shape == (16, 24, 3) and np.abs(shown - np.asarray(image).astype(int)).max() <= 1


# --- the CLIs, in subprocesses, on real photographs ------------------------------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny classifier with 2 registers (processor 64x64, ImageNet mean/std), the sklearn photos, a truncated
    JPEG and a text file."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("attention")
    from helpers import TINY

    from hf_vit import HfViTConfig

    model = HfViTForImageClassification(HfViTConfig(**{**TINY, "num_register_tokens": 2}, id2label=LABELS)).eval()
    model.save_pretrained(root / "model")
    ViTImageProcessor(size={"height": 64, "width": 64}, image_mean=MEAN, image_std=STD).save_pretrained(root / "model")
    images = root / "images"
    (images / "more").mkdir(parents=True)
    Image.fromarray(load_sample_image("china.jpg")).save(images / "china.jpg", quality=90)  # 427x640
    Image.fromarray(load_sample_image("flower.jpg")).rotate(90, expand=True).save(images / "more" / "flower.png")
    data = (images / "china.jpg").read_bytes()
    (images / "broken.jpg").write_bytes(data[: len(data) // 3])
    (images / "notes.txt").write_text("not a picture\n")
    return root


@pytest.mark.slow
def test_visualize_attention_cli(files):
    out = files / "maps"
    images = files / "images"
    result = run_python(
        [
            "scripts/visualize_attention.py",
            str(files / "model"),
            str(images / "china.jpg"),
            str(images / "broken.jpg"),
            str(images / "more" / "flower.png"),
            str(images / "notes.txt"),
            "--output_dir",
            str(out),
            "--rollout",
            "--threshold",
            "0.5",
        ]
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert f"cannot read image {images / 'broken.jpg'}" in result.stderr
    assert f"cannot read image {images / 'notes.txt'}: not an image file" in result.stderr
    assert "2 of 4 images could not be read" in result.stderr
    assert "attention sdpa" in result.stdout  # the model ran on SDPA; the maps are still the real weights

    model = AutoModel.from_pretrained(files / "model").eval()
    # landscape 427x640 at about 64x64 pixels -> 56x80 (7x10 patches); the rotated flower is portrait
    for stem, (height, width) in {"china": (56, 80), "flower": (80, 56)}.items():
        names = [f"{stem}_head{i}.png" for i in range(4)] + [f"{stem}_{k}.png" for k in ("mean", "mask", "rollout")]
        for name in names:
            with Image.open(out / name) as picture:
                assert picture.size == (width, height), name
        assert (out / f"{stem}_summary.png").stat().st_size > 1000
        arrays = np.load(out / f"{stem}_maps.npz")
        grid = (height // 8, width // 8)
        heads = torch.from_numpy(arrays["heads"])
        assert heads.shape == (4, *grid) and arrays["mask"].shape == grid and arrays["rollout"].shape == grid
        with torch.no_grad():
            attention = model(torch.from_numpy(arrays["pixel_values"])[None], output_attentions=True).attentions[-1][0]
        assert attention.shape == (4, 3 + grid[0] * grid[1], 3 + grid[0] * grid[1])
        torch.testing.assert_close(heads.sum(dim=(1, 2)), 1 - attention[:, 0, :3].sum(-1), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(heads, attention[:, 0, 3:].reshape(4, *grid), rtol=1e-5, atol=1e-6)
        assert np.array_equal(arrays["mask"], am.threshold_mask(torch.from_numpy(arrays["mean"]), 0.5).numpy())
    assert not list(out.glob(".*"))  # no temporary files left behind
    assert not list(out.glob("broken*")) and not list(out.glob("notes*"))


@pytest.mark.slow
def test_visualize_attention_cli_explicit_size_and_user_errors(files):
    out = files / "maps_sized"
    china = str(files / "images" / "china.jpg")
    result = run_python(
        [
            "scripts/visualize_attention.py",
            str(files / "model"),
            china,
            "--output_dir",
            str(out),
            "--size",
            "32",
            "48",
            "--layer",
            "0",
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "input 32x48 (4x6 patches), layer 0" in result.stdout
    with Image.open(out / "china_mean.png") as picture:
        assert picture.size == (48, 32)
    assert not (out / "china_rollout.png").exists()

    # the files of an earlier run (or a user's of those names) are refused, unless --overwrite
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    again = run_main(["scripts/visualize_attention.py", str(files / "model"), china, "--output_dir", str(out)])
    assert again.returncode == 2 and again.stderr.strip().splitlines() == [
        f"error: --output_dir {out} already holds files (china_head0.png, china_head1.png, china_head2.png, ...); "
        "choose another folder, or pass --overwrite to replace the files this command writes (nothing else is touched)"
    ]
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before

    bad = run_main(
        [
            "scripts/visualize_attention.py",
            *(str(files / "model"), china, "--output_dir", str(out), "--size", "30", "48", "--overwrite"),
        ]
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    no_device = run_main(
        [
            "scripts/visualize_attention.py",
            str(files / "model"),
            china,
            "--output_dir",
            str(out),
            "--device",
            "nope",
            "--overwrite",
        ]
    )
    assert no_device.returncode == 2 and no_device.stderr.startswith("error: --device nope:"), no_device.stderr
    assert len(no_device.stderr.strip().splitlines()) == 1
    assert bad.stderr.strip().splitlines() == [
        "error: --size must be positive multiples of the patch size 8, got 30 48"
    ]


@pytest.mark.slow
def test_predict_cli(files):
    images = files / "images"
    result = run_python(["scripts/predict.py", str(files / "model"), str(images), "--top_k", "2", "--batch_size", "2"])
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    lines = result.stdout.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(images / "china.jpg"), str(images / "more" / "flower.png")]
    for line in lines:
        predictions = line.split("\t")[1].split(" | ")
        assert len(predictions) == 2 and all(p.split(" (")[0] in LABELS.values() for p in predictions)
    assert f"cannot read image {images / 'broken.jpg'}" in result.stderr
    assert f"cannot read image {images / 'notes.txt'}: not an image file" in result.stderr
    assert "2 of 4 inputs could not be classified" in result.stderr
    assert "4/4" in result.stderr  # the progress bar, shown for folders

    # JSON lines, all good files -> exit 0; top_k is capped at the number of labels
    result = run_python(
        [
            "scripts/predict.py",
            str(files / "model"),
            str(images / "china.jpg"),
            str(images / "more" / "flower.png"),
            "--json",
            "--top_k",
            "10",
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert [r["file"] for r in records] == [str(images / "china.jpg"), str(images / "more" / "flower.png")]
    for record in records:
        assert {p["label"] for p in record["predictions"]} == set(LABELS.values())
        assert sum(p["score"] for p in record["predictions"]) == pytest.approx(1.0, abs=1e-5)

    # user errors: one line, no traceback
    result = run_python(["scripts/predict.py", str(files / "no-such-model"), str(images / "china.jpg")])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert [
        line for line in result.stderr.splitlines() if line.startswith("error:")
    ] == result.stderr.strip().splitlines()[-1:]
    assert f"model folder {files / 'no-such-model'} does not exist" in result.stderr
