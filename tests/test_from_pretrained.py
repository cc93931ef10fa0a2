"""hf_vit.from_pretrained against the loopback Hub server (tests/hub_server.py): repos written by the source
libraries' own writers from randomly initialised tiny models (timm `save_for_hf`, the writer of its `push_to_hf_hub`;
transformers `save_pretrained` for ViT, Dinov2 with MLP and SwiGLU, Dinov2WithRegisters), committed with
huggingface_hub's `create_commit` (its `upload_folder` needs hf_xet, which the test clients cannot import), pulled in
one line and
compared with the source library's forward loaded from the same server: at the native size (32×32) and a non-square
one (24×40). Then: the second load comes from the cache, HF_HUB_OFFLINE=1 loads without a single request, a pinned
revision gives that commit's weights, label names reach the pipeline, and unsupported features are refused in one line.

Hub clients run in subprocesses (huggingface_hub reads HF_ENDPOINT at import time), started by test_hub.run_client.
"""

import json
import math
import re
from pathlib import Path

import pytest
import torch
from test_hub import run_client

TOL = 1e-5
LABELS = ["cat", "dog", "fish"]

PUBLISH = r"""
import json, sys, tempfile
import timm, torch
from pathlib import Path
from hub_publish import commit, perturb
from timm.models._hub import save_for_hf
from transformers import (BitImageProcessor, Dinov2Config,
                          Dinov2ForImageClassification, Dinov2Model, Dinov2WithRegistersConfig,
                          Dinov2WithRegistersModel, ViTConfig, ViTForImageClassification, ViTImageProcessor)

shas = {}


def upload(model, repo, processor=None):
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        if processor is not None:
            processor.save_pretrained(folder)
        shas[repo] = commit(folder, repo)


def push_to_hf_hub(model, repo, model_config=None):
    # timm's push_to_hf_hub is save_for_hf + upload_folder; both weight formats, as it pushes by default
    with tempfile.TemporaryDirectory() as folder:
        save_for_hf(model, folder, model_config=model_config, safe_serialization="both")
        return commit(folder, repo)


def timm_vit(seed, **kwargs):
    torch.manual_seed(seed)
    args = dict(depth=2, img_size=32, patch_size=8, embed_dim=32, num_heads=4, num_classes=3, dynamic_img_size=True)
    return perturb(timm.create_model("vit_small_patch16_224", pretrained=False, **{**args, **kwargs}), seed)


# timm: registers without [CLS] positions and LayerScale (the DINOv2-reg4 style); two commits, the first pinned later
timm_args = dict(reg_tokens=2, no_embed_class=True, init_values=0.1)
LABELS = ["cat", "dog", "fish"]
cfg = {"label_names": LABELS}
shas["timm-v1"] = push_to_hf_hub(timm_vit(1, **timm_args), "tester/timm-vit", model_config=cfg)
shas["tester/timm-vit"] = push_to_hf_hub(timm_vit(2, **timm_args), "tester/timm-vit", model_config=cfg)
# timm: a CLIP image tower's shape (pre-norm, QuickGELU, LayerNorm eps 1e-5), as vit_base_patch16_clip_quickgelu_224
torch.manual_seed(10)
clip = timm.create_model("vit_base_patch16_clip_quickgelu_224", pretrained=False, depth=2, img_size=32, patch_size=8,
                         embed_dim=32, num_heads=4, num_classes=3, dynamic_img_size=True)
push_to_hf_hub(perturb(clip, 10), "tester/timm-clip")
# timm: average pooling with fc_norm, no head
push_to_hf_hub(timm_vit(3, global_pool="avg", fc_norm=True, num_classes=0), "tester/timm-avg")
# transformers ViT classifier (v4 names on disk, as save_pretrained writes them)
torch.manual_seed(4)
vit_config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=32,
                       patch_size=8, id2label=dict(enumerate(LABELS)), label2id={l: i for i, l in enumerate(LABELS)})
upload(perturb(ViTForImageClassification(vit_config), 4), "tester/vit",
       ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3))
# DINOv2: MLP, SwiGLU (as the giant models), with registers
dino_args = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8,
                 layerscale_value=0.3)
dino_processor = BitImageProcessor(size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32},
                                   image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
for seed, (repo, model) in enumerate([
    ("tester/dinov2", Dinov2Model(Dinov2Config(**dino_args))),
    ("tester/dinov2-swiglu", Dinov2Model(Dinov2Config(use_swiglu_ffn=True, **dino_args))),
    ("tester/dinov2-reg", Dinov2WithRegistersModel(Dinov2WithRegistersConfig(num_register_tokens=4, **dino_args))),
], start=5):
    torch.manual_seed(seed)
    upload(perturb(model, seed), repo, dino_processor)
# a DINO training checkpoint (teacher/student, DDP `module.` and `backbone.` prefixes, the DINO head) in a repo
# without config.json: named with filename=
torch.manual_seed(8)
dino = perturb(timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=2, img_size=32, patch_size=8,
                                 num_classes=0), 8)
teacher = ({f"module.backbone.{k}": v for k, v in dino.state_dict().items()}
           | {"module.head.last_layer.weight": torch.ones(4, 192)})
with tempfile.TemporaryDirectory() as folder:
    torch.save({"teacher": teacher, "student": teacher, "epoch": 3}, Path(folder) / "checkpoint.pth")
    shas["tester/dino"] = commit(folder, "tester/dino")
# what hf_vit cannot represent
push_to_hf_hub(timm_vit(9, scale_attn_norm=True), "tester/timm-attn-norm")
upload(Dinov2ForImageClassification(Dinov2Config(num_labels=3, **dino_args)), "tester/dinov2-classifier")
print(json.dumps(shas))
"""

PULL = r"""
import json, sys, logging
import numpy as np, timm, torch
from PIL import Image
from transformers import AutoModel, AutoModelForImageClassification, pipeline
import hf_vit
from hf_vit.convert.pretrained import resolve_pretrained

work, mode, timm_v1 = sys.argv[1:4]
x = {"native": torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)),
     "non-square": torch.randn(2, 3, 24, 40, generator=torch.Generator().manual_seed(1))}
report, outputs = {}, {}


def compare(name, ours, theirs, key):
    report[name] = {}
    with torch.no_grad():
        for size, batch in x.items():
            mine = ours(batch)
            mine = mine.logits if key == "logits" else mine.last_hidden_state
            outputs[f"{name}/{size}"] = mine
            if theirs is not None:
                report[name][size] = (mine - theirs(batch)).abs().max().item()
    report[name]["class"] = type(ours).__name__


online = mode == "online"
timm_hub = lambda repo, **kw: timm.create_model(f"hf-hub:{repo}", pretrained=True, dynamic_img_size=True, **kw).eval()
cases = [
    ("timm", "tester/timm-vit", "image-classification", "logits", lambda: timm_hub("tester/timm-vit")),
    ("timm-pinned", "tester/timm-vit", "image-classification", "logits",
     lambda: timm_hub(f"tester/timm-vit@{timm_v1}")),
    ("timm-clip", "tester/timm-clip", "image-classification", "logits", lambda: timm_hub("tester/timm-clip")),
    ("timm-avg", "tester/timm-avg", "feature-extraction", "hidden",
     lambda: (lambda m: m.forward_features)(timm_hub("tester/timm-avg"))),
    ("vit", "tester/vit", "image-classification", "logits",
     lambda: (lambda m: lambda b: m(b, interpolate_pos_encoding=True).logits)(
         AutoModelForImageClassification.from_pretrained("tester/vit").eval())),
]
for name in ("dinov2", "dinov2-swiglu", "dinov2-reg"):
    cases.append((name, f"tester/{name}", "feature-extraction", "hidden",
                  lambda name=name: (lambda m: lambda b: m(b).last_hidden_state)(
                      AutoModel.from_pretrained(f"tester/{name}").eval())))


def dino_source():  # timm's VisionTransformer in DINO's shape with the teacher weights of the file on the server
    from huggingface_hub import hf_hub_download

    checkpoint = torch.load(hf_hub_download("tester/dino", "checkpoint.pth"), weights_only=True)["teacher"]
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=2, img_size=32, patch_size=8,
                              num_classes=0, dynamic_img_size=True)
    model.load_state_dict({k.removeprefix("module.backbone."): v for k, v in checkpoint.items() if ".backbone." in k})
    return model.eval().forward_features


cases.append(("dino", "tester/dino", "feature-extraction", "hidden", dino_source))
for name, repo, task, key, source in cases:
    revision = timm_v1 if name == "timm-pinned" else None
    filename = "checkpoint.pth" if name == "dino" else None
    resolved = resolve_pretrained(repo, revision=revision, filename=filename)
    model = hf_vit.from_pretrained(repo, task=task, revision=revision, filename=filename).eval()
    compare(name, model, source() if online else None, key)
    report[name].update(layout=resolved.layout, from_cache=resolved.from_cache, commit=resolved.commit,
                        folder=resolved.location, id2label=model.config.to_dict().get("id2label"))
    if name == "dinov2":  # the mask token is kept and used as transformers uses it
        mask = torch.zeros(2, 16, dtype=torch.bool)
        mask[:, ::3] = True
        with torch.no_grad():
            outputs["dinov2/masked"] = model(x["native"], bool_masked_pos=mask).last_hidden_state
            if online:
                reference = AutoModel.from_pretrained("tester/dinov2").eval()(x["native"], bool_masked_pos=mask)
                report[name]["masked"] = (outputs["dinov2/masked"] - reference.last_hidden_state).abs().max().item()
# the second call in the same process: from the cache
report["second_call_from_cache"] = resolve_pretrained("tester/timm-vit").from_cache
# label names reach the pipeline (converted folder, the source's preprocessing)
image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8))
classify = pipeline("image-classification", model=report["timm"]["folder"])
report["pipeline_labels"] = sorted(p["label"] for p in classify(image, top_k=3))
report["processor"] = type(classify.image_processor).__name__
if online:  # timm's own eval transform of the source model vs the converted folder's processor, on the same image
    data_config = timm.data.resolve_data_config({}, model=timm_hub("tester/timm-vit"))
    report["timm_data_config"] = data_config
    theirs = timm.data.create_transform(**data_config)(image)
    ours = classify.image_processor(images=image, return_tensors="pt")["pixel_values"][0]
    report["preprocessing_diff"] = (ours - theirs).abs().max().item() if ours.shape == theirs.shape else str(ours.shape)
# refusals
report["refusals"] = {}
for repo in ("tester/timm-attn-norm", "tester/dinov2-classifier"):
    try:
        hf_vit.from_pretrained(repo)
    except ValueError as error:
        report["refusals"][repo] = str(error)
if online:
    report["verify"] = resolve_pretrained("tester/dinov2-swiglu", verify=True).max_abs_diff
else:
    try:
        resolve_pretrained("tester/never-pulled")
    except ValueError as error:
        report["never_pulled"] = str(error)
torch.save(outputs, f"{work}/outputs-{mode}.pt")
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def pulled(hub, tmp_path_factory):
    """Publish the source repos, pull them online (fresh cache), then again with HF_HUB_OFFLINE=1."""
    work = tmp_path_factory.mktemp("pull")
    published = run_client(PUBLISH, hub, work)
    assert published.returncode == 0, published.stderr[-4000:]
    shas = json.loads(published.stdout.strip().splitlines()[-1])
    reports = {}
    for mode in ("online", "offline"):
        before = len(hub.requests)
        result = run_client(["-c", PULL, work, mode, shas["timm-v1"]], hub, work, offline=mode == "offline")
        assert result.returncode == 0, result.stderr[-4000:]
        reports[mode] = json.loads(result.stdout.strip().splitlines()[-1])
        reports[mode]["requests"] = hub.requests[before:]
    return dict(work=work, shas=shas, **reports)


FAMILIES = {
    "timm": ("timm", "HfViTForImageClassification"),
    "timm-clip": ("timm", "HfViTForImageClassification"),  # pre-norm + QuickGELU, as timm's CLIP ViTs
    "timm-avg": ("timm", "HfViTModel"),
    "vit": ("transformers", "HfViTForImageClassification"),
    "dinov2": ("dinov2", "HfViTModel"),
    "dinov2-swiglu": ("dinov2", "HfViTModel"),
    "dinov2-reg": ("dinov2", "HfViTModel"),
    "dino": ("dino", "HfViTModel"),  # DINO resizes positions its own way: compared at the native size only
}


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_matches_its_source_library(pulled, family):
    entry = pulled["online"][family]
    layout, model_class = FAMILIES[family]
    assert entry["layout"] == layout and entry["class"] == model_class and not entry["from_cache"]
    print(f"{family}: max-abs-diff {entry['native']:.2e} at 32x32, {entry['non-square']:.2e} at 24x40")
    assert entry["native"] <= TOL, entry
    if family != "dino":
        assert entry["non-square"] <= TOL, entry


@pytest.mark.slow
def test_timm_labels_reach_the_pipeline_and_its_preprocessing_comes_along(pulled):
    online = pulled["online"]
    assert online["timm"]["id2label"] == {str(i): label for i, label in enumerate(LABELS)}
    assert online["pipeline_labels"] == sorted(LABELS)
    assert online["processor"].startswith("BitImageProcessor")  # timm's resize-shortest-edge + centre crop
    folder = online["timm"]["folder"]
    processor = json.loads(Path(folder, "preprocessor_config.json").read_text())
    timm_config = online["timm_data_config"]  # timm.data.resolve_data_config of the source model
    _, height, width = timm_config["input_size"]
    assert processor["crop_size"] == {"height": height, "width": width} and timm_config["crop_mode"] == "center"
    assert processor["size"] == {"shortest_edge": math.floor(height / timm_config["crop_pct"])}
    assert timm_config["interpolation"] == "bicubic" and processor["resample"] == 3
    assert processor["image_mean"] == list(timm_config["mean"]) and processor["image_std"] == list(timm_config["std"])
    # pixel values: timm's PIL transform vs transformers' processor (resampling implementations differ slightly)
    assert online["preprocessing_diff"] < 0.1, online["preprocessing_diff"]


@pytest.mark.slow
def test_card_names_the_source_repo_and_commit(pulled):
    from huggingface_hub import ModelCard

    entry = pulled["online"]["vit"]
    card = ModelCard.load(f"{entry['folder']}/README.md")
    assert card.data.base_model == "tester/vit"
    assert entry["commit"] == pulled["shas"]["tester/vit"] and entry["commit"] in card.text
    config = json.loads(Path(entry["folder"], "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_hf_vit.HfViTModel"


@pytest.mark.slow
def test_pinned_revision_gives_that_commit(pulled):
    online = pulled["online"]
    assert online["timm-pinned"]["commit"] == pulled["shas"]["timm-v1"] != online["timm"]["commit"]
    assert online["timm-pinned"]["native"] <= TOL  # equal to timm's model at that commit
    outputs = torch.load(pulled["work"] / "outputs-online.pt")
    assert not torch.allclose(outputs["timm-pinned/native"], outputs["timm/native"])


@pytest.mark.slow
def test_mask_token_is_kept(pulled):
    assert pulled["online"]["dinov2"]["masked"] <= TOL


@pytest.mark.slow
def test_only_the_needed_files_are_downloaded(pulled):
    gets = [path for method, path in pulled["online"]["requests"] if method == "GET" and "/resolve/" in path]
    assert any(
        path.endswith("tester/timm-vit/resolve/" + pulled["shas"]["tester/timm-vit"] + "/model.safetensors")
        for path in gets
    ), gets
    assert not any(path.endswith("pytorch_model.bin") for path in gets)  # timm pushed both; safetensors is preferred


@pytest.mark.slow
def test_second_load_comes_from_the_cache_and_works_offline(pulled):
    assert pulled["online"]["second_call_from_cache"]
    offline = pulled["offline"]
    assert offline["requests"] == []  # not a single request to the Hub
    for family in (*FAMILIES, "timm-pinned"):
        assert offline[family]["from_cache"] and offline[family]["folder"] == pulled["online"][family]["folder"]
    assert "not in the Hugging Face cache" in offline["never_pulled"]  # one line saying why, not a traceback
    online_outputs = torch.load(pulled["work"] / "outputs-online.pt")
    offline_outputs = torch.load(pulled["work"] / "outputs-offline.pt")
    assert online_outputs.keys() == offline_outputs.keys()
    for key in online_outputs:
        assert torch.equal(online_outputs[key], offline_outputs[key]), key


@pytest.mark.slow
def test_verify_compares_with_the_source_library(pulled):
    assert 0 <= pulled["online"]["verify"] <= TOL


@pytest.mark.slow
@pytest.mark.parametrize(
    "repo, feature",
    [
        ("tester/timm-attn-norm", "normalisation inside attention"),
        ("tester/dinov2-classifier", "[CLS] concatenated with the mean patch token"),
    ],
)
def test_unsupported_features_are_refused_in_one_line(pulled, repo, feature):
    message = pulled["online"]["refusals"][repo]
    assert feature in message and "\n" not in message
    assert pulled["offline"]["refusals"][repo] == message  # the refusal needs no network either


# ---- everywhere a model is named -----------------------------------------------------------------------------------


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(f"{folder}/model.safetensors")


@pytest.mark.slow
@pytest.mark.parametrize(
    "script, repo, steps",
    [
        (
            "train.py",
            "tester/timm-vit",
            ["--max_train_steps", "2", "--no_progress", "--per_device_train_batch_size", "16"],
        ),
        (
            "finetune_trainer.py",
            "tester/dinov2-reg",
            ["--max_steps", "2", "--disable_tqdm", "true", "--per_device_train_batch_size", "16"],
        ),
    ],
)
def test_training_scripts_fine_tune_a_foreign_repo_with_a_new_head(hub, pulled, tmp_path, script, repo, steps):
    """The digits (10 classes) from a timm classifier (3 classes) and from a DINOv2 backbone: a new head, the
    pretrained body (moved only a little by two steps), the source's preprocessing saved with the result."""
    from helpers import REPO

    out = tmp_path / "out"
    result = run_client(
        [
            REPO / "scripts" / script,
            "--model_name_or_path",
            repo,
            "--max_train_samples",
            "32",
            "--max_eval_samples",
            "16",
            *steps,
            "--output_dir",
            out,
        ],
        hub,
        pulled["work"],
    )
    assert result.returncode == 0, result.stderr[-4000:]
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "hf_vit" and len(config["id2label"]) == 10
    family = {"tester/timm-vit": "timm", "tester/dinov2-reg": "dinov2-reg"}[repo]
    tuned, source = _weights(out), _weights(pulled["online"][family]["folder"])
    key = "vit.embeddings.patch_embeddings.projection.weight"
    source_key = key if key in source else key.removeprefix("vit.")
    assert tuned["classifier.weight"].shape[0] == 10
    assert not torch.equal(tuned[key], source[source_key])  # trained...
    assert torch.allclose(tuned[key], source[source_key], atol=0.05)  # ...from the pretrained weights
    processor = json.loads((out / "preprocessor_config.json").read_text())
    assert processor["image_processor_type"].startswith("BitImageProcessor")


@pytest.mark.slow
def test_convert_push_and_predict_scripts_take_a_hub_repo(hub, pulled, tmp_path):
    """convert_checkpoint.py --checkpoint <repo> (no --source) --verify, then push_to_hub.py of the result; predict.py
    with a timm repo prints its label names."""
    from helpers import REPO

    convert = run_client(
        [
            REPO / "scripts" / "convert_checkpoint.py",
            "--checkpoint",
            "tester/vit",
            "--verify",
            "--output_dir",
            tmp_path / "vit",
        ],
        hub,
        pulled["work"],
    )
    assert convert.returncode == 0, convert.stderr[-3000:]
    assert "layout: transformers (detected from the files)" in convert.stdout
    diff = float(convert.stdout.split("max-abs-diff vs transformers: ")[1].split()[0])
    assert diff <= TOL
    assert json.loads((tmp_path / "vit" / "config.json").read_text())["model_type"] == "hf_vit"
    pushed = run_client(
        [REPO / "scripts" / "push_to_hub.py", tmp_path / "vit", "--repo_id", "tester/vit-hf_vit"], hub, pulled["work"]
    )
    assert pushed.returncode == 0, pushed.stderr[-3000:]
    files = hub.files("tester/vit-hf_vit")
    assert files["model.safetensors"] == (tmp_path / "vit" / "model.safetensors").read_bytes()
    assert b"base_model: tester/vit" in files["README.md"] and "preprocessor_config.json" in files

    from PIL import Image

    Image.new("RGB", (40, 50), (200, 30, 30)).save(tmp_path / "red.png")
    predicted = run_client(
        [REPO / "scripts" / "predict.py", "tester/timm-vit", tmp_path / "red.png", "--json"], hub, pulled["work"]
    )
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    labels = [p["label"] for p in json.loads(predicted.stdout.strip().splitlines()[-1])["predictions"]]
    assert sorted(labels) == sorted(LABELS)


# ---- local folders (no Hub) ----------------------------------------------------------------------------------------


def _timm_folder(folder, seed=11, embed_dim=64, num_heads=4):
    import timm
    from timm.models._hub import save_for_hf

    torch.manual_seed(seed)
    model = timm.create_model(
        "vit_small_patch16_224",
        pretrained=False,
        depth=2,
        img_size=32,
        patch_size=8,
        embed_dim=embed_dim,
        num_heads=num_heads,
        num_classes=3,
        global_pool="avg",
        fc_norm=True,
        init_values=0.2,
        dynamic_img_size=True,
    )
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    save_for_hf(model.eval(), folder, model_config={"label_names": LABELS}, safe_serialization=True)
    return model.eval()


def test_local_timm_folder_is_converted_once_and_verify_failure_writes_nothing(tmp_path):
    import hf_vit
    from hf_vit.convert.pretrained import resolve_pretrained

    source = _timm_folder(tmp_path / "timm")
    cache = tmp_path / "cache"
    first = resolve_pretrained(tmp_path / "timm", cache_dir=cache, verify=True)
    assert first.converted and first.layout == "timm" and first.max_abs_diff <= TOL
    assert resolve_pretrained(tmp_path / "timm", cache_dir=cache).from_cache
    model = hf_vit.from_pretrained(tmp_path / "timm", cache_dir=cache).eval()
    assert model.config.id2label == dict(enumerate(LABELS)) and model.config.pooling == "mean"
    x = torch.randn(2, 3, 24, 40)
    with torch.no_grad():
        assert (model(x).logits - source(x)).abs().max().item() <= TOL
    with pytest.raises(ValueError, match="verification failed"):
        resolve_pretrained(tmp_path / "timm", cache_dir=tmp_path / "other", verify=True, tolerance=-1.0)
    assert not (tmp_path / "other").exists()


@pytest.mark.slow
def test_timm_folder_without_timm_uses_the_heads_table(tmp_path):
    """timm not importable: the heads come from model_args, else hf_vit's table of timm's widths."""
    from helpers import run_python

    source = _timm_folder(tmp_path / "timm", seed=12, embed_dim=192, num_heads=3)  # ViT-Ti width: 3 heads
    config = json.loads((tmp_path / "timm" / "config.json").read_text())
    del config["model_args"]  # as timm's own vit_* repos have it: heads only from the architecture's registry entry
    (tmp_path / "timm" / "config.json").write_text(json.dumps(config))
    x = torch.randn(2, 3, 32, 32)
    torch.save(x, tmp_path / "x.pt")
    code = f"""
import sys, torch
sys.modules["timm"] = None
import hf_vit
model = hf_vit.from_pretrained({str(tmp_path / "timm")!r}, cache_dir={str(tmp_path / "cache")!r}).eval()
with torch.no_grad():
    torch.save(model(torch.load({str(tmp_path / "x.pt")!r})).logits, {str(tmp_path / "out.pt")!r})
print(model.config.num_attention_heads, model.config.pooling, model.config.num_labels)
"""
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["3", "mean", "3"]
    with torch.no_grad():
        assert (torch.load(tmp_path / "out.pt") - source(x)).abs().max().item() <= TOL


DAMAGE = {
    "cut weights": lambda folder: (folder / "model.safetensors").write_bytes(
        (folder / "model.safetensors").read_bytes()[:-100]
    ),
    "weights of another size": lambda folder: (folder / "model.safetensors").write_bytes(
        (folder / "model.safetensors").read_bytes() + b" "
    ),
    "config removed": lambda folder: (folder / "config.json").unlink(),
}


@pytest.mark.parametrize("case", DAMAGE)
def test_damaged_cached_conversion_is_converted_again(case, tmp_path, caplog):
    import logging

    import hf_vit
    from hf_vit.convert.pretrained import resolve_pretrained

    source = _timm_folder(tmp_path / "timm", embed_dim=32)
    cache = tmp_path / "cache"
    folder = Path(resolve_pretrained(tmp_path / "timm", cache_dir=cache).location)
    DAMAGE[case](folder)
    with caplog.at_level(logging.WARNING, logger="hf_vit"):
        model = hf_vit.from_pretrained(tmp_path / "timm", cache_dir=cache).eval()
    assert f"the cached conversion {folder} is damaged" in caplog.text
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (model(x).logits - source(x)).abs().max().item() <= TOL
    assert resolve_pretrained(tmp_path / "timm", cache_dir=cache).from_cache  # repaired: used again from now on


def test_a_lone_timm_weights_file_is_refused_with_advice_from_pretrained_can_follow(tmp_path):
    """filename= picks the weights without timm's config.json: the refusal names no parameter from_pretrained lacks."""
    import inspect

    import hf_vit
    from hf_vit.convert import pretrained

    _timm_folder(tmp_path / "timm", embed_dim=32)  # a width timm's ViTs do not have: the heads are unknown
    with pytest.raises(ValueError, match="the heads cannot be inferred") as refused:
        hf_vit.from_pretrained(tmp_path / "timm", filename="model.safetensors", cache_dir=tmp_path / "cache")
    accepted = set(inspect.signature(pretrained.from_pretrained).parameters)  # what hf_vit's passes on
    named = set(re.findall(r"`(\w+)`", str(refused.value)))
    assert named and named <= accepted, named - accepted
    assert "without `filename`" in str(refused.value)
