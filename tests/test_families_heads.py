"""The families whose difference from a plain ViT is in the prefix tokens, the pooling or the heads: SigLIP (MAP
attention pooling, no [CLS]; vision model and whole image-text model), CLIP (pre-norm, final norm on the pooled [CLS]
only; vision model and whole model), MAE, MSN, I-JEPA (no [CLS], mean pooling), distilled DeiT (distillation token and
head), timm's SigLIP (`global_pool="map"`) and `class_token=False` ViTs.

Each source is a tiny random model written by its own library's writer (transformers `save_pretrained`, timm's
`save_for_hf`, the writer of `push_to_hf_hub`) to the loopback Hub server, loaded with `hf_vit.from_pretrained` in one
line and compared with the source library's forward at the native size (32×32) and a non-square one (24×40). Then,
per family, on the converted folders: a new classification head, the backbone, `get_intermediate_layers`, attention
maps and the feature picture, export back or a one-line refusal. The expensive checks (compile, torch.export, ONNX,
remote code, quantization, meta device, gradient checkpointing, attention implementations) run on two tiny configs
that turn the options on.
"""

import json
import logging

import pytest
import torch
from helpers import TINY, run_main, run_python
from test_hub import run_client

from hf_vit import HfViTBackbone, HfViTConfig, HfViTForImageClassification, HfViTForMaskedImageModeling

TOL = 1e-5

PUBLISH_AND_PULL = r"""
import json, logging, sys, tempfile
import timm, torch, transformers
from pathlib import Path
from hub_publish import commit, perturb
from timm.models._hub import save_for_hf
from transformers import (CLIPConfig, CLIPModel, CLIPVisionConfig, CLIPVisionModel, DeiTConfig,
                          DeiTForImageClassificationWithTeacher, IJepaConfig, IJepaModel, SiglipConfig,
                          SiglipImageProcessor, SiglipModel, SiglipVisionConfig, SiglipVisionModel, Siglip2VisionConfig,
                          Siglip2VisionModel, ViTMAEConfig, ViTMAEForPreTraining, ViTMSNConfig, ViTMSNModel)
import hf_vit
from hf_vit.convert.pretrained import resolve_pretrained

messages = []
handler = logging.Handler()
handler.emit = lambda record: messages.append(record.getMessage())
logging.getLogger("hf_vit").addHandler(handler)
logging.getLogger("hf_vit").setLevel(logging.INFO)


def upload(model, repo, processor=None):
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        if processor is not None:
            processor.save_pretrained(folder)
        commit(folder, repo)


def push_to_hf_hub(model, repo):  # timm's push_to_hf_hub is save_for_hf + upload
    with tempfile.TemporaryDirectory() as folder:
        save_for_hf(model, folder, safe_serialization=True)
        commit(folder, repo)


shape = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=32,
             patch_size=8)
text = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64, vocab_size=99,
            bos_token_id=0, eos_token_id=1, pad_token_id=1)
torch.manual_seed(0)
upload(perturb(SiglipModel(SiglipConfig(vision_config=shape, text_config=text)), 1), "tester/siglip",
       SiglipImageProcessor(size={"height": 32, "width": 32}))
upload(perturb(SiglipVisionModel(SiglipVisionConfig(**shape)), 2), "tester/siglip-vision")
upload(perturb(CLIPModel(CLIPConfig(vision_config=shape, text_config=text, projection_dim=16)), 3), "tester/clip")
upload(perturb(CLIPVisionModel(CLIPVisionConfig(**shape)), 4), "tester/clip-vision")
upload(perturb(ViTMAEForPreTraining(ViTMAEConfig(**shape, decoder_hidden_size=16, decoder_num_hidden_layers=1,
                                                 decoder_num_attention_heads=2, decoder_intermediate_size=32)), 5),
       "tester/mae")
upload(perturb(ViTMSNModel(ViTMSNConfig(**shape)), 6), "tester/msn")
upload(perturb(IJepaModel(IJepaConfig(**shape)), 7), "tester/ijepa")
upload(perturb(DeiTForImageClassificationWithTeacher(DeiTConfig(**shape, num_labels=3)), 8), "tester/deit-distilled")
timm_args = dict(depth=2, img_size=32, patch_size=8, embed_dim=32, num_heads=4, num_classes=3, dynamic_img_size=True)
push_to_hf_hub(perturb(timm.create_model("vit_base_patch16_siglip_224", pretrained=False, **timm_args), 9),
               "tester/timm-siglip")
push_to_hf_hub(perturb(timm.create_model("vit_small_patch16_224", pretrained=False, class_token=False,
                                         global_pool="avg", fc_norm=False, **timm_args), 10), "tester/timm-gap")
upload(Siglip2VisionModel(Siglip2VisionConfig(**{k: v for k, v in shape.items() if k != "image_size"})),
       "tester/siglip2-naflex")

x = {"native": torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)),
     "non-square": torch.randn(2, 3, 24, 40, generator=torch.Generator().manual_seed(1))}


def vision(cls, repo):
    model = cls.from_pretrained(repo).eval()
    return lambda b: (lambda o: (o.last_hidden_state, o.pooler_output))(model(b, interpolate_pos_encoding=True))


def mae():
    model = transformers.ViTMAEModel.from_pretrained("tester/mae", mask_ratio=0.0).eval()

    def forward(b):  # no masking: every patch kept, in order
        noise = torch.arange((b.shape[-2] // 8) * (b.shape[-1] // 8), dtype=torch.float32).expand(b.shape[0], -1)
        return model(b, noise=noise, interpolate_pos_encoding=True).last_hidden_state, None

    return forward


def hidden(cls, repo):
    model = cls.from_pretrained(repo).eval()
    return lambda b: (model(b, interpolate_pos_encoding=True).last_hidden_state, None)


def logits_of(model):
    return lambda b: model(b, interpolate_pos_encoding=True).logits


timm_hub = lambda repo: timm.create_model(f"hf-hub:{repo}", pretrained=True, dynamic_img_size=True).eval()
cases = {  # name: (task, source forward -> (tokens, pooled) or logits)
    "siglip": ("feature-extraction", lambda: vision(SiglipVisionModel, "tester/siglip")),
    "siglip-vision": ("feature-extraction", lambda: vision(SiglipVisionModel, "tester/siglip-vision")),
    "clip": ("feature-extraction", lambda: vision(CLIPVisionModel, "tester/clip")),
    "clip-vision": ("feature-extraction", lambda: vision(CLIPVisionModel, "tester/clip-vision")),
    "mae": ("feature-extraction", mae),
    "msn": ("feature-extraction", lambda: hidden(ViTMSNModel, "tester/msn")),
    "ijepa": ("feature-extraction", lambda: hidden(IJepaModel, "tester/ijepa")),
    "deit-distilled": ("image-classification", lambda: logits_of(
        DeiTForImageClassificationWithTeacher.from_pretrained("tester/deit-distilled").eval())),
    "timm-siglip": ("image-classification", lambda: timm_hub("tester/timm-siglip")),
    "timm-gap": ("image-classification", lambda: timm_hub("tester/timm-gap")),
}
report = {}
for name, (task, source) in cases.items():
    before = len(messages)
    model = hf_vit.from_pretrained(f"tester/{name}", task=task).eval()
    resolved = resolve_pretrained(f"tester/{name}")
    reference = source()
    entry = report[name] = dict(layout=resolved.layout, folder=resolved.location, cls=type(model).__name__,
                                messages=messages[before:])
    with torch.no_grad():
        for size, batch in x.items():
            theirs = reference(batch)
            if task == "image-classification":
                entry[size] = (model(batch).logits - theirs).abs().max().item()
                continue
            ours = model(batch)
            entry[size] = (ours.last_hidden_state - theirs[0]).abs().max().item()
            if theirs[1] is not None:
                entry[size + "-pooled"] = (ours.pooler_output - theirs[1]).abs().max().item()
    processor = json.loads((Path(resolved.location) / "preprocessor_config.json").read_text())
    entry["processor"] = processor["image_processor_type"]
    entry["mean"] = processor["image_mean"]
report["verify"] = resolve_pretrained("tester/siglip", verify=True).max_abs_diff
try:
    hf_vit.from_pretrained("tester/siglip2-naflex")
except ValueError as error:
    report["naflex"] = str(error)
print(json.dumps(report))
"""

FAMILIES = {  # name: (layout, class, what is compared)
    "siglip": ("siglip", "HfViTModel", "tokens+pooled"),
    "siglip-vision": ("siglip", "HfViTModel", "tokens+pooled"),
    "clip": ("clip", "HfViTModel", "tokens+pooled"),
    "clip-vision": ("clip", "HfViTModel", "tokens+pooled"),
    "mae": ("transformers", "HfViTModel", "tokens"),
    "msn": ("transformers", "HfViTModel", "tokens"),
    "ijepa": ("transformers", "HfViTModel", "tokens"),
    "deit-distilled": ("transformers", "HfViTForImageClassification", "logits"),
    "timm-siglip": ("timm", "HfViTForImageClassification", "logits"),
    "timm-gap": ("timm", "HfViTForImageClassification", "logits"),
}


@pytest.fixture(scope="module")
def pulled(hub, tmp_path_factory):
    work = tmp_path_factory.mktemp("families")
    result = run_client(PUBLISH_AND_PULL, hub, work)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_loads_in_one_line_and_matches_its_source_library(pulled, family):
    entry = pulled[family]
    layout, model_class, compared = FAMILIES[family]
    assert entry["layout"] == layout and entry["cls"] == model_class
    pooled = {size: entry.get(f"{size}-pooled") for size in ("native", "non-square")}
    print(f"{family}: max-abs-diff {entry['native']:.2e} at 32x32, {entry['non-square']:.2e} at 24x40; pooled {pooled}")
    for size in ("native", "non-square"):
        assert entry[size] <= TOL, entry
        if "pooled" in compared:
            assert entry[size + "-pooled"] <= TOL, entry


@pytest.mark.slow
def test_whole_image_text_models_give_their_vision_tower_and_say_so(pulled):
    for family, left_out in (("siglip", "text_model"), ("clip", "visual_projection")):
        said = [m for m in pulled[family]["messages"] if "vision tower" in m]
        assert len(said) == 1 and left_out in said[0] and "text_model" in said[0], pulled[family]["messages"]
    assert not any("vision tower" in m for m in pulled["siglip-vision"]["messages"])
    assert 0 <= pulled["verify"] <= TOL


@pytest.mark.slow
def test_the_source_preprocessing_comes_along(pulled):
    assert pulled["siglip"]["processor"].startswith("SiglipImageProcessor") and pulled["siglip"]["mean"] == [0.5] * 3
    assert pulled["siglip-vision"]["processor"].startswith("SiglipImageProcessor")  # SigLIP's defaults: no crop
    assert pulled["clip-vision"]["processor"].startswith("CLIPImageProcessor")
    assert pulled["clip-vision"]["mean"] == pytest.approx([0.48145466, 0.4578275, 0.40821073])


@pytest.mark.slow
def test_the_converted_card_names_the_prefix_tokens_and_pooling(pulled):
    from pathlib import Path

    card = (Path(pulled["siglip"]["folder"]) / "README.md").read_text()
    assert "| tokens | patches; pooling: attention pooling (MAP head) |" in card
    card = (Path(pulled["deit-distilled"]["folder"]) / "README.md").read_text()
    assert "| tokens | [CLS] + distillation + patches; pooling: [CLS] token |" in card


@pytest.mark.slow
def test_siglip2_naflex_is_refused_in_one_line(pulled):
    message = pulled["naflex"]
    assert "NaFlex" in message and "'siglip'" in message and "\n" not in message


# ---- everything else, per family, on the converted folders -------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_family_works_everywhere(pulled, family):
    """A new classification head, the backbone, intermediate layers, attention maps and the feature picture."""
    from PIL import Image

    from hf_vit.attention_maps import compute_attention_maps
    from hf_vit.feature_maps import compute_feature_pictures

    folder = pulled[family]["folder"]
    classifier = HfViTForImageClassification.from_pretrained(folder, num_labels=5, ignore_mismatched_sizes=True).eval()
    x = torch.randn(1, 3, 24, 40)
    with torch.no_grad():
        assert classifier(x).logits.shape == (1, 5)
        backbone = HfViTBackbone.from_pretrained(folder, out_indices=[1, 2]).eval()
        maps = backbone(x).feature_maps
        assert [tuple(m.shape) for m in maps] == [(1, 32, 3, 5)] * 2
        layers = classifier.vit.get_intermediate_layers(x, n=2, reshape=True)
        torch.testing.assert_close(layers[1], maps[1], rtol=0, atol=1e-6)
    processor = _processor(folder)
    image = Image.new("RGB", (50, 30), (120, 40, 200))
    attention = compute_attention_maps(classifier, image, processor, size=(24, 40), rollout=True)
    assert attention.heads.shape == (4, 3, 5) and torch.isfinite(attention.rollout).all()
    (picture,) = compute_feature_pictures(classifier, [image], processor, size=(24, 40))
    assert picture.rgb.shape[:2] == (3, 5)


def _processor(folder):
    from transformers import AutoImageProcessor

    return AutoImageProcessor.from_pretrained(folder)


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
def test_export_back_or_a_one_line_refusal(pulled, family, tmp_path):
    from hf_vit.convert.export import export_to_timm, export_to_transformers

    folder = pulled[family]["folder"]
    for export in (export_to_timm, export_to_transformers):
        try:
            result = export(folder, tmp_path / export.__name__, verify=True)
        except ValueError as error:
            assert str(error).startswith("cannot export") and "\n" not in str(error)
            assert not (tmp_path / export.__name__).exists()
        else:
            assert result["max_abs_diff"] <= TOL


# ---- the options, on two tiny configs ------------------------------------------------------------------------------
# every option of this file at once: [CLS] + distillation token + a register, MAP pooling, final norm on the pooled
# feature only, a pre-norm; and no [CLS] with the mean of the normed tokens (I-JEPA)
HEADS = dict(distillation_token=True, num_register_tokens=1, pooling="map", final_norm="pooled", pre_norm=True)
NO_CLS = dict(class_token=False, pooling="mean", final_norm="tokens")
CONFIGS = {"heads": HEADS, "no-cls": NO_CLS}


def _model(options, **extra):
    torch.manual_seed(0)
    model = HfViTForImageClassification(HfViTConfig(**TINY, num_labels=3, **options, **extra)).eval()
    with torch.no_grad():  # away from the init (zero probe / tokens), so every piece matters
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def test_prefix_tokens_are_in_front_and_counted():
    model = _model(HEADS)
    assert model.vit.num_prefix_tokens == 3 and model.vit.embeddings.num_prefix_tokens == 3
    x = torch.randn(2, 3, 24, 40)
    with torch.no_grad():
        out = model.vit(x)
        assert out.last_hidden_state.shape == (2, 3 + 15, 32)
        embeddings = model.vit.embeddings(x)  # before the pre-norm
        torch.testing.assert_close(embeddings[0, 2], model.vit.embeddings.register_tokens[0, 0])  # no position
        patches = model.vit.embeddings.patch_embeddings(x)
        positions = model.vit.embeddings.interpolate_pos_encoding((3, 5))
        torch.testing.assert_close(embeddings[:, 3:], patches + positions[:, 2:], rtol=0, atol=1e-6)
        torch.testing.assert_close(embeddings[0, 1], model.vit.embeddings.distillation_token[0, 0] + positions[0, 1])
        # the tokens stay un-normed; the pooled feature is the MAP head's output, normed
        pooled = model.vit.layernorm(model.vit.attention_pool(out.last_hidden_state[:, 3:]))
        torch.testing.assert_close(out.pooler_output, pooled, rtol=0, atol=1e-6)
        # the prediction is the mean of the two heads
        distilled = model.distillation_classifier(model.vit.layernorm(out.last_hidden_state[:, 1]))
        expected = (model.classifier(out.pooler_output) + distilled) / 2
        torch.testing.assert_close(model(x).logits, expected, rtol=0, atol=1e-6)
    no_cls = _model(NO_CLS)
    with torch.no_grad():
        out = no_cls.vit(x)
    assert no_cls.vit.embeddings.cls_token is None and out.last_hidden_state.shape == (2, 15, 32)
    torch.testing.assert_close(out.pooler_output, out.last_hidden_state.mean(dim=1), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="needs a \\[CLS\\] token"):
        no_cls.vit.get_intermediate_layers(x, return_class_token=True)
    # masked image modeling decodes the patch tokens only, whatever comes before them
    for options in (HEADS, NO_CLS):
        mim = HfViTForMaskedImageModeling(HfViTConfig(**TINY, **options)).eval()
        mask = torch.zeros(2, 15, dtype=torch.bool)
        mask[:, ::2] = True
        with torch.no_grad():
            out = mim(x, bool_masked_pos=mask)
        assert out.reconstruction.shape == x.shape and torch.isfinite(out.loss)


@pytest.mark.parametrize("options", list(CONFIGS.values()), ids=list(CONFIGS))
def test_attention_implementations_agree_and_training_works(options):
    eager = _model(options, attn_implementation="eager")
    x, labels = torch.randn(2, 3, 24, 40), torch.tensor([0, 2])
    with torch.no_grad():
        reference = eager(x).logits
    for implementation in ("sdpa", "flex_attention"):
        eager.set_attn_implementation(implementation)
        with torch.no_grad():
            torch.testing.assert_close(eager(x).logits, reference, rtol=0, atol=1e-5, msg=implementation)
    eager.set_attn_implementation("eager")
    model = eager.train()
    model(x, labels=labels).loss.backward()
    plain = {name: p.grad.clone() for name, p in model.named_parameters()}
    assert all(g.abs().sum() > 0 for g in plain.values())  # every prefix token, the probe and both heads learn
    model.zero_grad()
    model.gradient_checkpointing_enable()
    model(x, labels=labels).loss.backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, plain[name], rtol=0, atol=1e-6, msg=name)


@pytest.mark.parametrize("options", list(CONFIGS.values()), ids=list(CONFIGS))
def test_meta_device_and_int8_quantization(options):
    with torch.device("meta"):
        meta = HfViTForImageClassification(HfViTConfig(**TINY, num_labels=3, **options))
    assert all(p.device.type == "meta" for p in meta.parameters())
    model = _model(options)
    quantized = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (quantized(x).logits - model(x).logits).abs().max() < 0.05


def test_compile_fullgraph_and_exports_with_dynamic_height_width(tmp_path):
    import onnxruntime
    from torch.export import Dim

    model = _model(HEADS)
    x = torch.randn(2, 3, 32, 32)
    sizes = [torch.randn(1, 3, 32, 32), torch.randn(2, 3, 24, 40)]
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    dynamic = {"pixel_values": {0: Dim.AUTO, 2: Dim.AUTO, 3: Dim.AUTO}}
    program = torch.export.export(model, (x,), dynamic_shapes=dynamic)
    exported = program.module()
    onnx_program = torch.onnx.export(program, input_names=["pixel_values"], output_names=["logits"])  # the same graph
    onnx_program.save(str(tmp_path / "model.onnx"))
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        for batch in sizes:
            expected = model(batch).logits
            torch.testing.assert_close(compiled(batch).logits, expected, rtol=0, atol=1e-6)
            torch.testing.assert_close(exported(batch).logits, expected, rtol=0, atol=1e-5)
            onnx = torch.as_tensor(session.run(["logits"], {"pixel_values": batch.numpy()})[0])
            torch.testing.assert_close(onnx, expected, rtol=0, atol=1e-4)


@pytest.mark.slow
def test_remote_code_load_without_hf_vit(tmp_path):
    from test_save_load import REMOTE_CODE

    model = _model(HEADS)
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    x = torch.randn(2, 3, 32, 48)
    torch.save(x, folder / "x.pt")
    result = run_python(["-c", REMOTE_CODE, str(folder)], env_extra={"HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    remote = torch.load(folder / "remote.pt")
    with torch.no_grad():
        torch.testing.assert_close(remote["logits"], model(x).logits, rtol=0, atol=0)
        torch.testing.assert_close(remote["pooled"], model.vit(x).pooler_output, rtol=0, atol=0)


def _source_folder(family, folder):
    """A tiny random SigLIP / CLIP vision model or distilled DeiT, as transformers' save_pretrained writes it."""
    import transformers

    torch.manual_seed(0)
    shape = dict(TINY)
    model = {
        "siglip": lambda: transformers.SiglipVisionModel(transformers.SiglipVisionConfig(**shape)),
        "clip": lambda: transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**shape)),
        "deit": lambda: transformers.DeiTForImageClassificationWithTeacher(
            transformers.DeiTConfig(**shape, num_labels=3)
        ),
    }[family]()
    model.save_pretrained(folder)
    return folder


QUICK_RUN = ["--max_train_samples", "32", "--max_eval_samples", "16", "--per_device_train_batch_size", "16"]


@pytest.mark.parametrize(
    "script, family, steps",
    [
        ("scripts/train.py", "siglip", ["--max_train_steps", "2", "--no_progress"]),
        ("scripts/finetune_trainer.py", "clip", ["--max_steps", "2", "--disable_tqdm", "true", "--report_to", "none"]),
    ],
)
def test_training_scripts_fine_tune_a_family_folder(tmp_path, monkeypatch, script, family, steps):
    """train.py / finetune_trainer.py --model_name_or_path <a SigLIP / CLIP folder as transformers saves it>: the
    digits (10 classes) with a new head on the converted body."""
    from safetensors.torch import load_file

    source = _source_folder(family, tmp_path / family)
    out = tmp_path / "out"
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "cache"))  # the conversion's cache
    result = run_main([script, "--model_name_or_path", source, *QUICK_RUN, *steps, "--output_dir", out])
    logging.getLogger("hf_vit").setLevel(logging.WARNING)
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((out / "config.json").read_text())
    assert len(config["id2label"]) == 10 and config["pooling"] == {"siglip": "map", "clip": "cls"}[family]
    weights = load_file(out / "model.safetensors")
    assert weights["classifier.weight"].shape == (10, 32)
    assert ("vit.attention_pool.probe" in weights) == (family == "siglip")


def test_convert_script_takes_a_distilled_deit_folder(tmp_path):
    source = _source_folder("deit", tmp_path / "deit")
    out = tmp_path / "out"
    result = run_main(["scripts/convert_checkpoint.py", "--checkpoint", source, "--verify", "--output_dir", out])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "layout: transformers (detected from the files)" in result.stdout
    assert float(result.stdout.split("max-abs-diff vs transformers: ")[1].split()[0]) <= TOL
    config = json.loads((out / "config.json").read_text())
    assert config["distillation_token"] is True and len(config["id2label"]) == 3


@pytest.mark.parametrize("fc_norm", [False, True], ids=["norm-then-mean", "mean-then-fc_norm"])
def test_timm_state_dict_without_class_token(tmp_path, fc_norm):
    """A bare timm state dict (no config.json) of a class_token=False ViT: the layout read from the weights."""
    import timm
    from safetensors.torch import save_file

    from hf_vit.convert.timm import convert_timm_file

    torch.manual_seed(0)
    source = timm.create_model(
        "vit_small_patch16_224",
        pretrained=False,
        class_token=False,
        global_pool="avg",
        fc_norm=fc_norm,
        depth=2,
        img_size=32,
        patch_size=8,
        embed_dim=32,
        num_heads=4,
        num_classes=3,
        dynamic_img_size=True,
    ).eval()
    with torch.no_grad():
        for p in source.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "model.safetensors"))
    model = convert_timm_file(tmp_path / "model.safetensors", num_heads=4).model
    assert not model.config.class_token and model.config.final_norm == ("pooled" if fc_norm else "tokens")
    x = torch.randn(2, 3, 24, 40)
    with torch.no_grad():
        assert (model(x).logits - source(x)).abs().max() <= TOL


def _clip_folder(folder):
    """A whole transformers CLIP model saved with its own writer (tiny towers)."""
    from helpers import perturb
    from transformers import CLIPConfig, CLIPModel

    vision = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=32,
                  patch_size=8)  # fmt: skip
    text = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64, vocab_size=99)
    model = perturb(CLIPModel(CLIPConfig(vision_config=vision, text_config=text, projection_dim=16)), seed=5)
    model.save_pretrained(folder)
    return folder


def test_a_clip_repo_loads_its_vision_tower_whatever_its_text_config_and_needs_one(tmp_path):
    import json

    from safetensors.torch import load_file, save_file
    from transformers import CLIPVisionModel

    import hf_vit

    # a text config transformers refuses (width 30, 4 heads): the intact image tower still loads, as transformers' own
    # CLIPVisionModel loads it
    folder = _clip_folder(tmp_path / "clip")
    config = json.loads((folder / "config.json").read_text())
    config["text_config"]["hidden_size"] = 30
    (folder / "config.json").write_text(json.dumps(config))
    model = hf_vit.from_pretrained(str(folder), task="feature-extraction", cache_dir=tmp_path / "cache").eval()
    theirs = CLIPVisionModel.from_pretrained(folder).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (model(x).pooler_output - theirs(x).pooler_output).abs().max().item() <= TOL

    # no image tower at all: one line saying so, not a KeyError
    weights = folder / "model.safetensors"
    save_file({k: v for k, v in load_file(weights).items() if not k.startswith("vision_model.")}, weights)
    with pytest.raises(ValueError, match=r"^the weights hold no SigLIP/CLIP image tower \(no vision_model\."):
        hf_vit.from_pretrained(str(folder), task="feature-extraction", cache_dir=tmp_path / "cache2")
