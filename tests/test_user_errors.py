"""Nothing lost, nothing silent: what users get wrong, said in one line, with their files left alone.

Every CLI runs as users run it (a subprocess): the exit code, the one-line message, and what is on disk afterwards
(byte for byte where files must survive). Hub pushes run against the loopback Hub-protocol server (tests/hub_server.py),
whose request log shows what was sent.
"""

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REPO, TINY, error_line, run_main, run_python
from hub_server import TOKEN, USER
from PIL import Image
from transformers import ViTImageProcessor

from hf_vit import HfViTConfig, HfViTForImageClassification
from hf_vit import data as hdata

LABELS = {0: "dark", 1: "light"}
CLIENT_SITE = Path(__file__).resolve().parent / "hub_client_site"


def snapshot(folder: Path) -> dict:
    """Every file under `folder` (hidden ones too), by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny hf_vit classifier folder (32x32 input, mean/std 0.5)."""
    folder = tmp_path_factory.mktemp("model") / "model"
    torch.manual_seed(0)
    HfViTForImageClassification(HfViTConfig(**TINY, id2label=LABELS)).eval().save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


# ---- 6: 16-bit images decode as in training, in every CLI --------------------------------------------------------


@pytest.fixture(scope="module")
def gray16(tmp_path_factory):
    """A 16-bit grayscale PNG (PIL mode "I;16"): a ramp over the full 0..65535 range, mid-grey on average."""
    path = tmp_path_factory.mktemp("images") / "ramp16.png"
    Image.fromarray(np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)).save(path)
    with Image.open(path) as image:
        assert image.mode == "I;16"
        assert np.asarray(image.convert("RGB")).mean() > 250  # what convert("RGB") makes of it: almost white
    assert 120 < np.asarray(hdata.open_image(path)).mean() < 135  # training's decoding keeps the grey levels
    return path


def test_predict_reads_16bit_png_as_training_does(model_dir, gray16):
    import json

    from transformers import pipeline

    import hf_vit  # noqa: F401

    result = run_main(["scripts/predict.py", str(model_dir), str(gray16), "--json"])
    assert result.returncode == 0, result.stderr[-3000:]
    got = {p["label"]: p["score"] for p in json.loads(result.stdout.strip().splitlines()[-1])["predictions"]}
    classify = pipeline("image-classification", model=str(model_dir), device="cpu")
    expected = {p["label"]: p["score"] for p in classify(hdata.open_image(gray16), top_k=2)}
    with Image.open(gray16) as image:
        white = {p["label"]: p["score"] for p in classify(image.convert("RGB"), top_k=2)}
    assert max(abs(white[k] - expected[k]) for k in LABELS.values()) > 1e-3  # the two decodings are told apart
    assert got == pytest.approx(expected, abs=1e-6)


def test_visualize_attention_reads_16bit_png_as_training_does(model_dir, gray16, tmp_path):
    result = run_main(
        [
            "scripts/visualize_attention.py",
            str(model_dir),
            str(gray16),
            "--output_dir",
            str(tmp_path),
            "--size",
            "32",
            "32",
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    pixel_values = np.load(tmp_path / "ramp16_maps.npz")["pixel_values"]
    processor = ViTImageProcessor.from_pretrained(model_dir)
    expected = processor(hdata.open_image(gray16), return_tensors="np")["pixel_values"][0]
    np.testing.assert_allclose(pixel_values, expected, atol=1e-6)
    assert abs(float(pixel_values.mean())) < 0.1  # mid-grey after normalisation (white would be about +1)


# ---- 13: damaged weights -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cli", ["predict", "visualize_attention"])
def test_truncated_weights_are_named(cli, model_dir, gray16, tmp_path):
    folder = tmp_path / "cut"
    folder.mkdir()
    for file in model_dir.iterdir():
        (folder / file.name).write_bytes(file.read_bytes())
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    before = snapshot(folder)
    args = [f"scripts/{cli}.py", str(folder), str(gray16)]
    if cli == "visualize_attention":
        args += ["--output_dir", str(tmp_path / "maps")]
    line = error_line(run_main(args))
    assert line.startswith(f"error: {weights} is damaged: not a complete safetensors file (truncated or corrupt?)"), (
        line
    )
    assert snapshot(folder) == before and not (tmp_path / "maps").exists()


# ---- 14: a model folder that does not exist -----------------------------------------------------------------------


@pytest.mark.parametrize("cli", ["predict", "visualize_attention", "convert_to_timm"])
def test_missing_model_folder_is_said_to_be_missing(cli, gray16, tmp_path):
    missing = tmp_path / "no-such-model"
    if cli == "convert_to_timm":
        args, code = (
            [
                "scripts/convert_checkpoint.py",
                "--to",
                "timm",
                "--checkpoint",
                str(missing),
                "--output_dir",
                str(tmp_path / "out"),
            ],
            2,
        )
    else:
        args, code = [f"scripts/{cli}.py", str(missing), str(gray16), "--output_dir", str(tmp_path / "out")], 2
        if cli == "predict":
            args = args[:-2]
    line = error_line(run_main(args), code=code)
    assert line == f"error: model folder {missing} does not exist", line
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# ---- 13/14: files that are not what the flag says -----------------------------------------------------------------


def _text_pth(path):
    path.write_text("hello, the weights are in the other folder\n")  # torch.load: KeyError: 101 (the "e")


def _random_pth(path):
    data = random.Random(11).randbytes(4096)
    assert data[:2] != b"PK" and data[0] != 0x80  # neither of torch.save's formats
    path.write_bytes(data)


NOT_CHECKPOINTS = {
    "convert_text_pth": (
        ["scripts/convert_checkpoint.py", "--source", "timm", "--timm_model", "vit_small_patch16_224", "--checkpoint"],
        "weights.pth",
        _text_pth,
    ),
    "convert_random_pth": (
        ["scripts/convert_checkpoint.py", "--source", "dino", "--checkpoint"],
        "weights.pth",
        _random_pth,
    ),
    "export_text_pth": (["scripts/export_safetensors.py", "--input"], "weights.pth", _text_pth),
}


@pytest.mark.parametrize("case", list(NOT_CHECKPOINTS))
def test_file_that_is_not_a_pytorch_checkpoint(case, tmp_path):
    args, name, make = NOT_CHECKPOINTS[case]
    path = tmp_path / name
    make(path)
    before = path.read_bytes()
    line = error_line(run_main([*args, str(path), "--output_dir", str(tmp_path / "out")]))
    assert line == (
        f"error: {path} is not a PyTorch checkpoint: torch.save writes a zip archive or a pickle, "
        "and this file is neither"
    ), line
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [name]


@pytest.mark.parametrize("protocol", [4, 5])
def test_a_pickle_at_protocol_4_or_5_is_refused_saying_what_it_is_and_what_to_do(protocol, tmp_path):
    import pickle

    path = tmp_path / "weights.pth"
    with open(path, "wb") as handle:
        pickle.dump({"pos_embed": torch.zeros(1, 5, 8)}, handle, protocol=protocol)
    args = ["scripts/convert_checkpoint.py", "--source", "dino", "--checkpoint", path]
    line = error_line(run_main([*args, "--output_dir", tmp_path / "out"]))
    assert line.startswith(f"error: refusing to load {path}: a pickle written at pickle protocol {protocol}, "), line
    assert "re-save it as safetensors, or with torch.save at its default protocol" in line
    assert "corrupt" not in line and "weights_only=False" not in line and "weights_only` set to `False" not in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.pth"]


def test_file_that_is_not_an_npz_archive(tmp_path):
    path = tmp_path / "ViT-B_16.npz"
    path.write_text("<html>404: not found</html>\n")  # what a failed download leaves behind
    line = error_line(
        run_main(
            [
                "scripts/convert_checkpoint.py",
                "--source",
                "npz",
                "--checkpoint",
                str(path),
                "--output_dir",
                str(tmp_path / "out"),
            ]
        ),
    )
    assert line == f"error: {path} is not an .npz archive (a zip of NumPy arrays, as np.savez writes)", line
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


@pytest.mark.parametrize("source", ["timm", "dino", "transformers"])
def test_hf_vit_folder_given_to_convert(source, model_dir, tmp_path):
    before = snapshot(model_dir)
    args = [
        "scripts/convert_checkpoint.py",
        "--source",
        source,
        "--checkpoint",
        str(model_dir),
        "--output_dir",
        str(tmp_path / "out"),
    ]
    if source == "timm":
        args += ["--timm_model", "vit_small_patch16_224"]
    line = error_line(run_main(args))
    assert line == (
        f"error: {model_dir} is already an hf_vit folder: nothing to convert; load it directly with "
        "AutoModel.from_pretrained (after `import hf_vit`)"
    ), line
    assert snapshot(model_dir) == before and not (tmp_path / "out").exists()


# ---- 14: an image folder without the class layout -----------------------------------------------------------------


def _images(folder: Path, count: int = 4):
    folder.mkdir(parents=True)
    for i in range(count):
        Image.new("RGB", (8, 8), (60 * i, 0, 0)).save(folder / f"{i}.png")


@pytest.mark.parametrize("layout", ["flat", "one_class"])
def test_train_dir_without_class_folders(layout, tmp_path):
    train_dir = tmp_path / "images"
    if layout == "flat":
        _images(train_dir)
        found = "no class sub-folders"
    else:
        _images(train_dir / "cat")
        found = "a single class sub-folder ('cat')"
    before = snapshot(train_dir)
    result = run_main(
        [
            "scripts/train.py",
            "--train_dir",
            str(train_dir),
            "--output_dir",
            str(tmp_path / "run"),
            "--max_train_steps",
            "1",
            "--no_progress",
        ]
    )
    line = error_line(result)
    assert line == (
        f"error: --train_dir {train_dir} has {found}: expected one sub-folder of images per class, "
        f"at least two classes (e.g. {train_dir}/cat/1.jpg, {train_dir}/dog/2.jpg)"
    ), line
    assert snapshot(train_dir) == before and not (tmp_path / "run").exists()


def test_image_folder_layout_in_the_library(tmp_path):
    """Two classes load; a metadata file (labels in a column) is not held to the folder layout."""
    _images(tmp_path / "two" / "cat")
    _images(tmp_path / "two" / "dog")
    data = hdata.load_image_data(train_dir=str(tmp_path / "two"), cache_dir=str(tmp_path / "cache"))
    assert sorted(data.id2label.values()) == ["cat", "dog"]
    _images(tmp_path / "meta")
    (tmp_path / "meta" / "metadata.csv").write_text(
        "file_name,label\n" + "".join(f"{i}.png,{i % 2}\n" for i in range(4))
    )
    data = hdata.load_image_data(train_dir=str(tmp_path / "meta"), cache_dir=str(tmp_path / "cache"))
    assert data.label_column == "label"


# ---- 15: a push that cannot succeed touches neither the folder nor the Hub's write endpoints -----------------------


def push(hub, home, folder, repo_id, token=TOKEN):
    """scripts/push_to_hub.py as a Hub client of `hub` (HF_ENDPOINT read at import time, HF_HOME a temp dir, no proxy,
    no other network: tests/hub_client_site/sitecustomize.py); `token=None` runs it without any token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_") and "proxy" not in k.lower()}
    env.update(
        HF_ENDPOINT=hub.url,
        HF_HOME=str(home),
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        PYTHONUNBUFFERED="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        PYTHONPATH=os.pathsep.join([str(CLIENT_SITE), str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
    if token is not None:
        env["HF_TOKEN"] = token
    result = run_python(
        [REPO / "scripts" / "push_to_hub.py", folder, "--repo_id", repo_id], env=env, cwd=home, timeout=300
    )
    assert "NON-LOOPBACK NETWORK ACCESS" not in result.stderr, result.stderr[-3000:]
    return result


@pytest.fixture
def uncarded(model_dir, tmp_path):
    """A copy of the model folder without README.md (so a push would generate one)."""
    folder = tmp_path / "ckpt"
    folder.mkdir()
    for file in model_dir.iterdir():
        (folder / file.name).write_bytes(file.read_bytes())
    assert not (folder / "README.md").exists()
    return folder


@pytest.mark.slow
def test_push_without_a_token(hub, uncarded, tmp_path):
    before, sent = snapshot(uncarded), len(hub.requests)
    line = error_line(push(hub, tmp_path, uncarded, f"{USER}/no-token", token=None))
    assert line == (
        f"error: no Hugging Face token: pushing to {USER}/no-token needs one with write access; "
        "log in with `hf auth login` or set HF_TOKEN"
    ), line
    assert hub.requests[sent:] == []  # nothing sent at all, in particular no POST /api/repos/create
    assert snapshot(uncarded) == before  # no README.md written


@pytest.mark.slow
@pytest.mark.parametrize("case", ["invalid_token", "foreign_namespace"])
def test_push_that_cannot_write_checks_before_creating(case, hub, uncarded, tmp_path):
    repo_id, token = (f"{USER}/bad-token", "hf_not_the_token") if case == "invalid_token" else ("someone-else/x", TOKEN)
    before, sent = snapshot(uncarded), len(hub.requests)
    line = error_line(push(hub, tmp_path, uncarded, repo_id, token=token))
    if case == "invalid_token":
        assert line.startswith("error: the Hub rejected the Hugging Face token (") and "hf auth login" in line, line
    else:
        assert line == (
            f"error: the Hugging Face token of '{USER}' cannot write to someone-else/x: 'someone-else' is "
            f"neither that user nor one of their organizations ('{USER}')"
        ), line
    sent = hub.requests[sent:]
    assert ("GET", "/api/whoami-v2") in sent and all(method == "GET" for method, _ in sent), sent  # nothing created
    assert not hub.store.exists(repo_id)
    assert snapshot(uncarded) == before


@pytest.mark.slow
def test_failed_push_leaves_the_folder_unchanged_and_a_later_one_writes_the_card(hub, uncarded, tmp_path):
    repo_id = f"{USER}/flaky"
    before = snapshot(uncarded)
    hub.fail_commits(2)  # the commit and its automatic retry
    try:
        line = error_line(push(hub, tmp_path, uncarded, repo_id), code=1)
    finally:
        hub.clear_faults()
    assert line.startswith(f"error: push to {repo_id} failed") and "500" in line, line
    assert snapshot(uncarded) == before  # the generated card was not written
    assert hub.history(repo_id) == ["initial commit"]

    pushed = push(hub, tmp_path, uncarded, repo_id)
    assert pushed.returncode == 0, pushed.stderr[-3000:]
    card = (uncarded / "README.md").read_bytes()
    assert hub.files(repo_id)["README.md"] == card  # the folder and the repo hold the same card
    assert snapshot(uncarded) == {**before, "README.md": card}


# ---- predict: what hf_vit refuses is refused by hf_vit, and no auto_map's code ever runs ---------------------------


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _vit_config(folder):
    from transformers import ViTConfig

    ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64).save_pretrained(folder)


def _code_pickle(folder):
    _vit_config(folder)
    torch.save({"payload": RunsCode(folder.parent / "pwned")}, folder / "pytorch_model.bin")
    return "needs arbitrary code"


def _no_weights(folder):
    _vit_config(folder)
    return "found no unique weight file"


def _bert(folder):
    from transformers import BertConfig

    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64).save_pretrained(folder)
    return "is a 'bert' model"


PREDICT_REFUSALS = {"pickle that would run code": _code_pickle, "no weights": _no_weights, "BERT": _bert}


@pytest.mark.parametrize("cli", ["predict", "visualize_attention"])
@pytest.mark.parametrize("case", PREDICT_REFUSALS)
def test_models_hf_vit_refuses_are_refused_in_its_own_words(cli, case, gray16, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    expected = PREDICT_REFUSALS[case](folder)
    args = [f"scripts/{cli}.py", str(folder), str(gray16)]
    line = error_line(run_main(args + (["--output_dir", str(tmp_path / "o")] if cli != "predict" else [])))
    assert line.startswith(f"error: cannot load a model from '{folder}'") and expected in line, line
    assert "weights_only` set to `False`" not in line and not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("case", ["missing", "folder"])
def test_attention_refuses_a_missing_image_or_a_folder_as_image_before_any_work(case, model_dir, tmp_path):
    image = tmp_path / "images"
    if case == "folder":
        image.mkdir()
    args = ["scripts/visualize_attention.py", str(model_dir), str(image), "--output_dir", str(tmp_path / "maps")]
    line = error_line(run_main(args))
    assert line == (
        f"error: image {image} does not exist"
        if case == "missing"
        else f"error: {image} is a folder; expected an image file (give the images inside it)"
    ), line
    assert not (tmp_path / "maps").exists()


def test_predict_never_runs_the_code_a_processor_auto_map_names(model_dir, gray16, tmp_path, monkeypatch):
    monkeypatch.setattr("builtins.input", lambda *args: "y")  # a user who answers "y" to transformers' question
    folder = tmp_path / "model"
    folder.mkdir()
    for file in model_dir.iterdir():
        (folder / file.name).write_bytes(file.read_bytes())
    (folder / "evil.py").write_text(
        f"open({str(tmp_path / 'pwned')!r}, 'w').close()\nfrom transformers import ViTImageProcessor as EvilProcessor\n"
    )
    import json

    settings = json.loads((folder / "preprocessor_config.json").read_text())
    settings["auto_map"] = {"AutoImageProcessor": "evil.EvilProcessor"}
    (folder / "preprocessor_config.json").write_text(json.dumps(settings))
    result = run_main(["scripts/predict.py", str(folder), str(gray16)])
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (tmp_path / "pwned").exists()


# ---- values refused when the flags are parsed, before any data or model is loaded ----------------------------------
@pytest.mark.parametrize(
    "argv, fragments",
    [
        (
            ["scripts/export_safetensors.py", "--input", "{tmp}/model", "--max_shard_size", "banana"],
            ["--max_shard_size", "expected a size like 5GB or 500MB, got 'banana'"],
        ),
        (
            ["scripts/train.py", "--report_to", "none,banana"],
            ['--report_to must be "none", "all" or a comma list of', "tensorboard", "'none,banana'"],
        ),
        (["scripts/finetune_trainer.py", "--report_to", "banana"], ["--report_to banana: expected none, all", "wandb"]),
    ],
)
def test_a_bad_size_or_tracker_is_refused_before_any_work(argv, fragments, tmp_path):
    result = run_main([a.replace("{tmp}", str(tmp_path)) for a in argv] + ["--output_dir", str(tmp_path / "out")])
    error_line(result, *fragments)
    assert result.stdout == "" and not (tmp_path / "out").exists()


def test_report_to_none_means_no_tracker():
    from hf_vit.fit import FitSettings

    for value in ("none", None):
        FitSettings(report_to=value).validate()
        assert FitSettings(report_to=value).trackers is None
    assert FitSettings(report_to="tensorboard,wandb").trackers == ["tensorboard", "wandb"]


def test_a_source_image_size_the_weights_contradict_is_refused_before_anything_is_allocated(tmp_path):
    """A transformers ViT whose config says image_size 1e9: its 17 positions against the (1e9/8)^2 + 1 the config
    implies, refused in one line instead of allocating a 2e18-byte position table."""
    import json

    from transformers import ViTConfig, ViTModel

    import hf_vit

    ViTModel(ViTConfig(**TINY)).save_pretrained(tmp_path / "vit")
    config = json.loads((tmp_path / "vit" / "config.json").read_text())
    (tmp_path / "vit" / "config.json").write_text(json.dumps({**config, "image_size": 10**9}))
    with pytest.raises(ValueError) as refused:
        hf_vit.from_pretrained(str(tmp_path / "vit"), task="feature-extraction", cache_dir=tmp_path / "cache")
    assert str(refused.value) == (
        "shape mismatch for embeddings.position_embeddings: the checkpoint has (1, 17, 32), the config implies "
        "(1, 15625000000000001, 32) (from its image_size and patch_size)"
    )
