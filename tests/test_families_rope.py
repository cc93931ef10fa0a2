"""The rotary-position families in one line: DINOv3 (transformers `dinov3_vit`, timm `vit_*_dinov3`), EVA-02 (timm
`eva02_*`) and timm ViTs with `qk_norm=True`.

Tiny random models are written by their source library's own writer (transformers `save_pretrained`, timm
`save_for_hf`, the writer of `push_to_hf_hub`) to the loopback Hub server, loaded with `hf_vit.from_pretrained` in one
line and compared with the source library's forward loaded from the same server, at the native size (32×32) and a
non-square one (24×40). On the converted DINOv3 the backbone is compared with transformers' `DINOv3ViTBackbone`, and
`get_intermediate_layers`, the attention maps and the feature-PCA picture with transformers' own hidden states and
attention weights; a new classification head, verification, the export refusals and short `hf-vit-train` and
`hf-vit-finetune` runs there too. All of it is one Hub client process, made once per test run (the xdist workers share
it), which first loads a saved hf_vit folder with `trust_remote_code` while it cannot import hf_vit. The rest of the
model's contract (attention implementations, compile, export, quantization, meta device, gradient checkpointing) runs
on one tiny config with every option on.
"""

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from filelock import FileLock
from helpers import TINY
from hub_server import HubServer
from test_hub import run_client
from test_save_load import REMOTE_CODE
from torch import nn

from hf_vit import HfViTConfig, HfViTForImageClassification, HfViTModel

TOL = 1e-5

PUBLISH = r"""
import json, tempfile
import timm, torch
from pathlib import Path
from hub_publish import commit, perturb
from timm.models._hub import save_for_hf
from transformers import DINOv3ViTConfig, DINOv3ViTImageProcessor, DINOv3ViTModel


def upload(model, repo, processor):  # transformers' save_pretrained + upload
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
        commit(folder, repo)


def push_to_hf_hub(name, repo, seed, **kwargs):  # timm's push_to_hf_hub is save_for_hf + upload_folder
    torch.manual_seed(seed)
    args = dict(depth=2, img_size=32, patch_size=8, embed_dim=32, num_heads=4, dynamic_img_size=True)
    model = perturb(timm.create_model(name, pretrained=False, **{**args, **kwargs}), seed)
    with tempfile.TemporaryDirectory() as folder:
        save_for_hf(model, folder, safe_serialization="both")
        commit(folder, repo)


dinov3 = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=32,
              patch_size=8, num_register_tokens=2, layerscale_value=0.3)
processor = DINOv3ViTImageProcessor(size={"height": 32, "width": 32})
torch.manual_seed(1)
upload(perturb(DINOv3ViTModel(DINOv3ViTConfig(**dinov3)), 1), "tester/dinov3", processor)
# the large models' gated MLP; no output and MLP biases (they become zeros)
torch.manual_seed(2)
gated = DINOv3ViTConfig(use_gated_mlp=True, hidden_act="silu", proj_bias=False, mlp_bias=False, **dinov3)
upload(perturb(DINOv3ViTModel(gated), 2), "tester/dinov3-gated", processor)
# EVA-02 B/L: q/k/v apart, SwiGLU with its inner LayerNorm, a position table, RoPE rescaled onto a reference grid
push_to_hf_hub("eva02_base_patch14_224", "tester/eva02", 3, num_classes=3, ref_feat_shape=(3, 5))
# EVA-02 Ti/S: fused qkv with q/v biases, packed SwiGLU; with qk_norm and average pooling (fc_norm), no head
push_to_hf_hub("eva02_tiny_patch14_224", "tester/eva02-qk-norm", 4, num_classes=0, qk_norm=True, ref_feat_shape=(4, 4))
# timm's DINOv3 ports: registers, no position table, token pooling as upstream DINOv3; the huge+ SwiGLU (fc1_g/fc1_x)
push_to_hf_hub("vit_huge_plus_patch16_dinov3", "tester/timm-dinov3", 5, num_classes=0, global_pool="token",
               num_reg_tokens=2, qkv_bias=True)
# timm's default for them: average pooling of the normed tokens without fc_norm
push_to_hf_hub("vit_small_patch16_dinov3", "tester/timm-dinov3-avg", 6, num_classes=0)
# a timm VisionTransformer with query/key normalisation
push_to_hf_hub("vit_small_patch16_224", "tester/timm-qk-norm", 7, num_classes=3, qk_norm=True)
print("published")
"""

PULL = r"""
del sys.modules["hf_vit"]  # importable again: from here on hf_vit loads, converts and compares
import json, os, sys, tempfile
os.environ["HF_DATASETS_OFFLINE"] = "1"  # the image folder of the training run is local; `datasets` would ask the Hub
from pathlib import Path
import numpy as np, timm, torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModel, DINOv3ViTBackbone
import hf_vit
from hf_vit import HfViTBackbone, attention_maps, feature_maps
from hf_vit.convert import export_checkpoint
from hf_vit.convert.pretrained import resolve_pretrained

work = Path(sys.argv[2])
x = {"native": torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)),
     "non-square": torch.randn(2, 3, 24, 40, generator=torch.Generator().manual_seed(1))}
report = {}
diff = lambda a, b: (a - b).abs().max().item()


def transformers_source(repo):
    model = AutoModel.from_pretrained(repo).eval()
    return lambda b: (lambda out: {"hidden": out.last_hidden_state, "pooled": out.pooler_output})(model(b))


def timm_source(repo):
    model = timm.create_model(f"hf-hub:{repo}", pretrained=True, dynamic_img_size=True).eval()
    if model.num_classes:
        return lambda b: {"logits": model(b)}
    return lambda b: {"hidden": model.forward_features(b), "pooled": model(b)}


cases = [
    ("dinov3", "feature-extraction", lambda: transformers_source("tester/dinov3")),
    ("dinov3-gated", "feature-extraction", lambda: transformers_source("tester/dinov3-gated")),
    ("eva02", "image-classification", lambda: timm_source("tester/eva02")),
    ("eva02-qk-norm", "feature-extraction", lambda: timm_source("tester/eva02-qk-norm")),
    ("timm-dinov3", "feature-extraction", lambda: timm_source("tester/timm-dinov3")),
    ("timm-dinov3-avg", "feature-extraction", lambda: timm_source("tester/timm-dinov3-avg")),
    ("timm-qk-norm", "image-classification", lambda: timm_source("tester/timm-qk-norm")),
]
models = {}
for name, task, source in cases:
    repo = f"tester/{name}"
    model = hf_vit.from_pretrained(repo, task=task).eval()  # the one line
    models[name] = model
    resolved = resolve_pretrained(repo)
    reference = source()
    entry = report[name] = {"layout": resolved.layout, "class": type(model).__name__, "folder": resolved.location}
    with torch.no_grad():
        for size, batch in x.items():
            out, theirs = model(batch), reference(batch)
            ours = {"logits": getattr(out, "logits", None), "hidden": getattr(out, "last_hidden_state", None),
                    "pooled": getattr(out, "pooler_output", None)}
            entry[size] = {key: diff(ours[key], value) for key, value in theirs.items()}

# DINOv3: the backbone against transformers' DINOv3ViTBackbone, get_intermediate_layers against its hidden states
folder = report["dinov3"]["folder"]
theirs = DINOv3ViTBackbone.from_pretrained("tester/dinov3", out_indices=[1, 2]).eval()
ours = HfViTBackbone.from_pretrained(folder, out_indices=[1, 2]).eval()
source = AutoModel.from_pretrained("tester/dinov3", attn_implementation="eager").eval()
checks = report["dinov3-extra"] = {}
with torch.no_grad():
    for size, batch in x.items():
        pairs = zip(ours(batch).feature_maps, theirs(batch).feature_maps, strict=True)
        checks[f"backbone/{size}"] = max(diff(a, b) for a, b in pairs)
        hidden = source(batch, output_hidden_states=True).hidden_states
        rows, columns = batch.shape[-2] // 8, batch.shape[-1] // 8
        expected = [source.norm(h)[:, 3:].reshape(2, rows, columns, 32).permute(0, 3, 1, 2) for h in hidden[1:]]
        got = models["dinov3"].get_intermediate_layers(batch, n=2, reshape=True)
        checks[f"intermediate/{size}"] = max(diff(a, b) for a, b in zip(got, expected, strict=True))
    # attention maps and the feature-PCA picture of the RoPE model: transformers' eager attention weights and tokens
    processor = AutoImageProcessor.from_pretrained(folder)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 64, 3), dtype=np.uint8))
    maps = attention_maps.compute_attention_maps(models["dinov3"], image, processor, layer=1)
    attention = source(maps.pixel_values, output_attentions=True).attentions[1][0]
    rows, columns = maps.input_size[0] // 8, maps.input_size[1] // 8
    checks["attention_maps"] = diff(maps.heads, attention[:, 0, 3:].reshape(4, rows, columns))
    picture = feature_maps.compute_feature_pictures(models["dinov3"], [image], processor)[0]
    tokens = source(picture.pixel_values).last_hidden_state[0, 3:]
    checks["feature_picture_tokens"] = diff(feature_maps.patch_features(models["dinov3"], picture.pixel_values),
                                            tokens.reshape(*picture.rgb.shape[:2], 32))
    checks["feature_picture_shape"] = list(picture.rgb.shape)
report["processor"] = type(processor).__name__
report["processor_size"] = processor.size.get("height"), processor.size.get("width")
# a new classification head on the DINOv3 backbone
classifier = hf_vit.from_pretrained("tester/dinov3", num_labels=5).eval()
with torch.no_grad():
    report["new_head"] = {"logits": list(classifier(x["native"]).logits.shape),
                          "backbone": diff(classifier.vit(x["native"]).pooler_output,
                                           models["dinov3"](x["native"]).pooler_output)}
report["verify"] = {repo: resolve_pretrained(repo, verify=True).max_abs_diff
                    for repo in ("tester/dinov3", "tester/eva02")}
# export back to timm: the qk_norm ViT goes (verified against timm), the RoPE models are refused in one line
with tempfile.TemporaryDirectory() as out:
    result = export_checkpoint("timm", report["timm-qk-norm"]["folder"], Path(out) / "timm", verify=True)
    report["export_qk_norm"] = result["max_abs_diff"]  # timm's VisionTransformer with qk_norm, loaded from it
    try:
        export_checkpoint("timm", folder, Path(out) / "refused")
    except ValueError as error:
        report["export_refused"] = str(error)
# hf-vit-train fine-tunes the DINOv3 repo in one command (a new head for three classes)
images = work / "images"
for c, label in enumerate(("x", "y", "z")):
    (images / label).mkdir(parents=True, exist_ok=True)
    for i in range(4):
        Image.new("RGB", (40, 48), (60 * c + 10 * i, 30, 90)).save(images / label / f"{i}.png")
from hf_vit.commands.train import main as train
code = train(["--model_name_or_path", "tester/dinov3", "--train_dir", str(images), "--output_dir",
              str(work / "tuned"), "--max_train_steps", "2", "--per_device_train_batch_size", "4", "--no_progress"])
report["train"] = {"code": code, "config": json.loads((work / "tuned" / "config.json").read_text())}
# and hf-vit-finetune (transformers' Trainer) the EVA-02 repo
from hf_vit.commands.finetune import main as finetune
code = finetune(["--model_name_or_path", "tester/eva02", "--train_dir", str(images), "--output_dir",
                 str(work / "finetuned"), "--max_steps", "2", "--per_device_train_batch_size", "4",
                 "--disable_tqdm", "true", "--report_to", "none"])
report["finetune"] = {"code": code, "config": json.loads((work / "finetuned" / "config.json").read_text())}
print(json.dumps(report))
"""


def _once_per_run(tmp_path_factory, name, make):
    """`make(folder)`, a JSON-able result, made once per test run: pytest-xdist spreads a module's tests over its
    workers, so the first worker to get here makes it in its own temporary folder and the others, waiting on a file
    lock, read it from the run's shared temporary folder."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return make(tmp_path_factory.mktemp(name))
    shared = tmp_path_factory.getbasetemp().parent / f"{name}.json"  # the parent is this run's, shared by its workers
    with FileLock(f"{shared}.lock"):
        if not shared.exists():
            shared.write_text(json.dumps(make(tmp_path_factory.mktemp(name))))
        return json.loads(shared.read_text())


def _publish_and_pull(work):
    """One Hub client process: it cannot import hf_vit at first, so it loads a saved all-options hf_vit folder with
    `trust_remote_code` as a user without hf_vit would, publishes the source repos with their libraries' writers, then
    imports hf_vit and pulls them."""
    server = HubServer(work / "server").start()  # work/hub is the client's cache (HF_HOME=work)
    try:
        saved = work / "saved"
        _model().save_pretrained(saved)
        torch.save(torch.randn(2, 3, 32, 48), saved / "x.pt")
        result = run_client(["-c", REMOTE_CODE + PUBLISH + PULL, saved, work], server, work)
        assert result.returncode == 0, result.stderr[-4000:]
        return dict(json.loads(result.stdout.strip().splitlines()[-1]), saved=str(saved), stdout=result.stdout)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def pulled(tmp_path_factory):
    """The Hub client's report; its tests are marked slow (the process takes over 10 s of CPU on its own)."""
    return _once_per_run(tmp_path_factory, "rope-families", _publish_and_pull)


FAMILIES = {
    "dinov3": ("dinov3", "HfViTModel"),
    "dinov3-gated": ("dinov3", "HfViTModel"),
    "eva02": ("timm", "HfViTForImageClassification"),
    "eva02-qk-norm": ("timm", "HfViTModel"),
    "timm-dinov3": ("timm", "HfViTModel"),
    "timm-dinov3-avg": ("timm", "HfViTModel"),
    "timm-qk-norm": ("timm", "HfViTForImageClassification"),
}


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_loads_in_one_line_and_matches_its_source_library(pulled, family):
    entry = pulled[family]
    assert (entry["layout"], entry["class"]) == FAMILIES[family]
    for size in ("native", "non-square"):
        print(f"{family} {size}: {entry[size]}")
        assert entry[size] and max(entry[size].values()) <= TOL, (size, entry)
    expected = {"logits"} if entry["class"] == "HfViTForImageClassification" else {"hidden", "pooled"}
    assert set(entry["native"]) == expected


@pytest.mark.slow
def test_dinov3_backbone_intermediate_layers_and_pictures_match_transformers(pulled):
    checks = pulled["dinov3-extra"]
    for name, value in checks.items():
        if name != "feature_picture_shape":
            assert value <= TOL, (name, value)
    assert len(checks["feature_picture_shape"]) == 3


@pytest.mark.slow
def test_dinov3_preprocessing_new_head_verify_and_export_refusal(pulled):
    assert pulled["processor"].startswith("DINOv3ViTImageProcessor") and pulled["processor_size"] == [32, 32]
    assert pulled["new_head"]["logits"] == [2, 5] and pulled["new_head"]["backbone"] <= TOL
    assert all(0 <= value <= 1e-4 for value in pulled["verify"].values()), pulled["verify"]
    message = pulled["export_refused"]
    assert "rotary position encoding" in message and "\n" not in message
    assert 0 <= pulled["export_qk_norm"] <= TOL
    card = (Path(pulled["dinov3"]["folder"]) / "README.md").read_text()
    assert "rotary position encoding (dinov3) computed for the input's grid" in card


@pytest.mark.slow
@pytest.mark.parametrize("run, rope_type", [("train", "dinov3"), ("finetune", "eva02")])
def test_both_trainers_fine_tune_the_rope_families_in_one_command(pulled, run, rope_type):
    """hf-vit-train on the DINOv3 repo, hf-vit-finetune (Trainer) on the EVA-02 one: a new head for three classes."""
    assert pulled[run]["code"] == 0
    config = pulled[run]["config"]
    assert config["rope_type"] == rope_type
    assert config["id2label"] == {"0": "x", "1": "y", "2": "z"}


# ---- one tiny config with every option on ---------------------------------------------------------------------------
ALL_OPTIONS = dict(
    rope_type="dinov3",
    absolute_position_embeddings=False,
    qk_norm=True,
    mlp_type="swiglu_norm",
    num_register_tokens=2,
    layerscale_init=0.5,
    rope_shift=0.1,
    rope_jitter=1.2,
    rope_rescale=2.0,
)


def _model(**overrides):
    torch.manual_seed(0)
    return HfViTForImageClassification(HfViTConfig(**{**TINY, "num_labels": 3, **ALL_OPTIONS, **overrides})).eval()


def test_rope_augmentations_are_dinov3s_and_only_in_training():
    from transformers import DINOv3ViTConfig
    from transformers.models.dinov3_vit.modeling_dinov3_vit import DINOv3ViTRopePositionEmbedding

    from hf_vit.modeling_hf_vit import HfViTRotaryEmbedding

    ours = HfViTRotaryEmbedding(HfViTConfig(**TINY, **ALL_OPTIONS))
    theirs = DINOv3ViTRopePositionEmbedding(
        DINOv3ViTConfig(hidden_size=32, num_attention_heads=4, patch_size=8, pos_embed_shift=0.1, pos_embed_jitter=1.2)
    )
    pixels = torch.zeros(1, 3, 24, 40)
    for mode in ("train", "eval"):
        getattr(ours, mode)(), getattr(theirs, mode)()
        torch.manual_seed(5)
        expected = theirs(pixels)
        torch.manual_seed(5)
        got = ours((3, 5), pixels)
        for a, b in zip(got, expected, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    torch.manual_seed(6)
    assert not torch.allclose(ours.train()((3, 5), pixels)[0], ours.eval()((3, 5), pixels)[0])


def test_patch_tokens_are_the_last_ones_whatever_the_prefix():
    """RoPE rotates the last rows·columns tokens: more or fewer prefix tokens before them change nothing there."""
    from hf_vit.modeling_hf_vit import apply_rotary_to_patches, rotate_half

    cos, sin = torch.randn(6, 8), torch.randn(6, 8)
    patches = torch.randn(1, 2, 6, 8)
    for prefix in (0, 1, 5):
        tokens = torch.cat((torch.randn(1, 2, prefix, 8), patches), dim=2)
        rotated = apply_rotary_to_patches(tokens, cos, sin, rotate_half)
        assert torch.equal(rotated[:, :, :prefix], tokens[:, :, :prefix])
        torch.testing.assert_close(rotated[:, :, prefix:], patches * cos + rotate_half(patches) * sin)


def test_config_checks_the_rope_options():
    with pytest.raises(ValueError, match="rope_type must be None or one of"):
        HfViTModel(HfViTConfig(**TINY, rope_type="alibi"))
    with pytest.raises(ValueError, match="absolute_position_embeddings=False needs a rope_type"):
        HfViTModel(HfViTConfig(**TINY, absolute_position_embeddings=False))
    with pytest.raises(ValueError, match="rope_reference_grid is an 'eva02' RoPE option"):
        HfViTModel(HfViTConfig(**TINY, rope_type="dinov3", rope_reference_grid=[2, 2]))
    with pytest.raises(ValueError, match="rope_jitter must be None"):
        HfViTModel(HfViTConfig(**TINY, rope_type="dinov3", rope_jitter=0.5))
    with pytest.raises(ValueError, match="head width .* divisible by 4"):
        HfViTModel(HfViTConfig(**{**TINY, "hidden_size": 24}, rope_type="eva02"))
    assert "position_embeddings" not in dict(_model().named_parameters())


@pytest.mark.parametrize("rope_type", ["dinov3", "eva02"])
def test_eager_sdpa_and_compile_agree(rope_type):
    overrides = {} if rope_type == "dinov3" else dict(rope_type="eva02", rope_reference_grid=[3, 3], rope_shift=None)
    model = _model(**overrides)
    x = torch.randn(2, 3, 24, 40)
    with torch.no_grad():
        expected = model(x).logits
        compiled = torch.compile(model, fullgraph=True, backend="eager")
        torch.testing.assert_close(compiled(x).logits, expected, rtol=0, atol=1e-6)
        model.set_attn_implementation("eager")
        torch.testing.assert_close(model(x).logits, expected, rtol=0, atol=1e-5)


@pytest.mark.slow  # inductor compiles flex attention's C++ kernel: about 15 s of CPU when its cache is cold
def test_flex_attention_agrees_with_sdpa():
    model = _model()
    x = torch.randn(2, 3, 24, 40)
    with torch.no_grad():
        expected = model(x).logits
        model.set_attn_implementation("flex_attention")  # as a user runs it: transformers compiles the kernel
        torch.testing.assert_close(model(x).logits, expected, rtol=0, atol=1e-5)


def test_torch_export_and_onnx_with_dynamic_height_and_width(tmp_path):
    import onnxruntime
    from torch.export import Dim

    model = _model(rope_type="eva02", rope_reference_grid=[3, 3], absolute_position_embeddings=True, pooling="mean")
    example = torch.randn(2, 3, 32, 32)
    dynamic = {"pixel_values": {0: Dim.AUTO, 2: Dim.AUTO, 3: Dim.AUTO}}
    exported = torch.export.export(model, (example,), dynamic_shapes=dynamic).module()
    # ONNX through the TorchScript exporter (a traced graph; the dynamo exporter is torch.export's graph, above)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (example,),
            str(tmp_path / "model.onnx"),
            dynamo=False,
            input_names=["pixel_values"],
            output_names=["logits"],
            dynamic_axes={"pixel_values": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch"}},
        )
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    for shape in ((1, 3, 32, 32), (2, 3, 24, 40), (1, 3, 48, 16)):
        x = torch.randn(shape)
        with torch.no_grad():
            expected = model(x).logits
        torch.testing.assert_close(exported(x).logits, expected, rtol=0, atol=1e-5)
        onnx = torch.as_tensor(np.asarray(session.run(["logits"], {"pixel_values": x.numpy()})[0]))
        torch.testing.assert_close(onnx, expected, rtol=0, atol=1e-4)


def test_int8_quantization_meta_device_and_gradient_checkpointing():
    model = _model()
    x, labels = torch.randn(4, 3, 32, 24), torch.tensor([0, 1, 2, 0])
    quantized = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    assert not any(type(m) is nn.Linear for m in quantized.modules())
    with torch.no_grad():
        assert (quantized(x).logits - model(x).logits).abs().max() < 0.1
    with torch.device("meta"):
        empty = HfViTForImageClassification(model.config)
    assert all(p.device.type == "meta" for p in empty.parameters())
    model = _model().train()  # training: the RoPE augmentations are drawn, reseeded for each run
    torch.manual_seed(1)
    model(x, labels=labels).loss.backward()
    plain = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    model.gradient_checkpointing_enable()
    torch.manual_seed(1)
    model(x, labels=labels).loss.backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, plain[name], rtol=0, atol=1e-6, msg=name)


@pytest.mark.slow
def test_saved_folder_loads_with_remote_code_without_hf_vit(pulled):
    folder, model = Path(pulled["saved"]), _model()  # the model the fixture saved (the same seed)
    assert "transformers_modules" in pulled["stdout"] and "HfViTForImageClassification HfViTModel" in pulled["stdout"]
    remote, x = torch.load(folder / "remote.pt"), torch.load(folder / "x.pt")
    with torch.no_grad():
        torch.testing.assert_close(remote["logits"], model(x).logits, rtol=0, atol=0)
        torch.testing.assert_close(remote["pooled"], model.vit(x).pooler_output, rtol=0, atol=0)
    assert json.loads((folder / "config.json").read_text())["rope_type"] == "dinov3"


def test_convert_cli_detects_and_verifies_a_dinov3_folder(tmp_path):
    from helpers import run_main
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    torch.manual_seed(0)
    config = DINOv3ViTConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64, image_size=32, patch_size=8
    )
    DINOv3ViTModel(config).save_pretrained(tmp_path / "dinov3")
    out = tmp_path / "converted"
    result = run_main(
        ["scripts/convert_checkpoint.py", "--checkpoint", tmp_path / "dinov3", "--output_dir", out, "--verify"]
    )
    assert result.returncode == 0, result.stderr
    assert "layout: dinov3 (detected from the files)" in result.stdout
    converted = json.loads((out / "config.json").read_text())
    assert converted["rope_type"] == "dinov3" and converted["use_mask_token"] is True
    processor = json.loads((out / "preprocessor_config.json").read_text())
    assert processor["size"] == {"height": 32, "width": 32} and processor["image_mean"] == [0.485, 0.456, 0.406]


# ---- transformers DINOv3 folders on disk: GeGLU, and a bias the config declares but the weights lack --------------
DINOV3_TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=32,
                   patch_size=8, num_register_tokens=2, layerscale_value=0.3)  # fmt: skip


def test_a_dinov3_gated_mlp_with_gelu_converts_as_geglu(tmp_path):
    """A DINOv3 gated MLP with hidden_act="gelu" (GeGLU) against transformers' DINOv3ViTModel, fp32."""
    from helpers import max_diff, perturb
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    import hf_vit

    config = DINOv3ViTConfig(use_gated_mlp=True, hidden_act="gelu", **DINOV3_TINY)
    source = perturb(DINOv3ViTModel(config), seed=3)
    source.save_pretrained(tmp_path / "dinov3")
    converted = hf_vit.from_pretrained(str(tmp_path / "dinov3"), task="feature-extraction", cache_dir=tmp_path / "c")
    assert (converted.config.mlp_type, converted.config.gate_act) == ("swiglu", "gelu")
    for x in (torch.randn(2, 3, 32, 32), torch.randn(1, 3, 24, 40)):
        with torch.no_grad():
            assert max_diff(converted.eval()(x).last_hidden_state, source(x).last_hidden_state) <= 1e-5


def test_dinov3_weights_without_a_bias_their_config_declares_are_refused(tmp_path):
    from helpers import perturb
    from safetensors.torch import load_file, save_file
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    import hf_vit

    config = DINOv3ViTConfig(**DINOV3_TINY)  # query_bias=True, key_bias=False (DINOv3 has no key bias)
    perturb(DINOv3ViTModel(config), seed=4).save_pretrained(tmp_path / "dinov3")
    weights = tmp_path / "dinov3" / "model.safetensors"
    tensors = load_file(weights)
    assert not any(".k_proj.bias" in key for key in tensors)  # the bias the config does not declare: converts
    del tensors["layer.0.attention.q_proj.bias"]
    save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(ValueError) as refused:
        hf_vit.from_pretrained(str(tmp_path / "dinov3"), task="feature-extraction", cache_dir=tmp_path / "c")
    message = str(refused.value)
    assert "layer.0.attention.q_proj.bias" in message and "query_bias=True" in message and "\n" not in message
