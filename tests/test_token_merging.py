"""Token merging (ToMe): hf_vit's `config.token_merging_r` against the paper's own reference code applied to timm's
VisionTransformer (tests/tome_reference.py), on the same weights; the run-time switch; the refusals of outputs that
need every patch token; export and compile with merging on."""

import copy

import numpy as np
import pytest
import timm
import torch
from helpers import max_diff, perturb
from PIL import Image
from tome_reference import apply_patch, parse_r
from torch.export import Dim
from transformers import ViTImageProcessor

import hf_vit
from hf_vit import (
    HfViTBackbone,
    HfViTConfig,
    HfViTForImageClassification,
    HfViTForMaskedImageModeling,
    HfViTModel,
)
from hf_vit import attention_maps as am
from hf_vit import feature_maps as fm
from hf_vit.convert import from_timm

TOL = 1e-5


def reference_run(reference, r, x):
    """The paper's patched timm model: (features, logits). Its ToMe wrapper resets the schedule in `forward` only, so
    the features are taken the same way, then the head (timm's `forward` is `forward_head(forward_features)`)."""
    reference.r = r
    reference._tome_info.update(r=parse_r(len(reference.blocks), r), size=None, source=None)
    features = reference.forward_features(x)
    return features, reference.forward_head(features)


@pytest.fixture(scope="module")
def vit_small():
    """timm's ViT-S/16 with random weights, the paper's ToMe applied to a copy, and hf_vit's conversion."""
    torch.manual_seed(0)
    source = perturb(timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=10), seed=0)
    return apply_patch(copy.deepcopy(source)), from_timm(source)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("r", [0, 8, 13, [16] * 6 + [0] * 6], ids=["r0", "r8", "r13", "r16-then-0"])
def test_matches_the_papers_code_on_timm(vit_small, r, attn):
    reference, ours = vit_small
    ours.set_attn_implementation(attn)
    ours.config.token_merging_r = r
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        features, logits = reference_run(reference, r, x)
        outputs = ours.vit(x)
        assert outputs.last_hidden_state.shape == features.shape  # the same number of tokens is left
        assert max_diff(outputs.last_hidden_state, features) <= TOL
        assert max_diff(ours.classifier(outputs.pooler_output), logits) <= TOL
    expected_tokens = 197 - sum(parse_r(12, r))
    assert features.shape[1] == expected_tokens


@pytest.mark.parametrize("class_token", [True, False], ids=["cls", "no-cls"])
def test_mean_pooling_matches_the_papers_code_on_timm(class_token):
    """timm's average pooling over the tokens left (the [CLS] excluded) is the pooled feature with merging on; without
    a [CLS] token nothing is protected (the paper's rule for class_token=False)."""
    torch.manual_seed(2)
    source = timm.create_model(
        "vit_small_patch16_224", pretrained=False, depth=3, global_pool="avg", class_token=class_token
    )
    source = perturb(source, seed=2)
    reference, ours = apply_patch(copy.deepcopy(source)), from_timm(source)
    assert ours.config.num_prefix_tokens == int(class_token)
    ours.config.token_merging_r = 40
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        features, logits = reference_run(reference, 40, x)
        assert features.shape[1] == 196 + int(class_token) - 3 * 40
        assert max_diff(ours(x).logits, logits) <= TOL


def test_config_switch_takes_effect_at_the_next_forward_and_zero_is_the_plain_model(tiny_config):
    model = perturb(HfViTForImageClassification(tiny_config(patch_size=4, num_labels=3)), seed=0)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        plain = model(x, output_hidden_states=True)
        model.config.token_merging_r = [20, 6]
        merged = model(x, output_hidden_states=True)
        assert [h.shape[1] for h in merged.hidden_states] == [65, 45, 39]
        # the same as a model built with merging on
        built = HfViTForImageClassification(tiny_config(patch_size=4, num_labels=3, token_merging_r=[20, 6])).eval()
        built.load_state_dict(model.state_dict())
        assert torch.equal(built(x).logits, merged.logits)
        assert max_diff(merged.logits, plain.logits) > 1e-4  # merging changes the result...
        model.config.token_merging_r = 0
        again = model(x, output_hidden_states=True)
    assert torch.equal(again.logits, plain.logits)  # ...and r = 0 is the plain model again, bitwise
    assert [h.shape[1] for h in again.hidden_states] == [65, 65, 65]


def test_at_most_half_of_the_mergeable_tokens_go_per_block(tiny_config):
    model = HfViTModel(tiny_config(patch_size=4, token_merging_r=1000)).eval()
    with torch.no_grad():
        hidden_states = model(torch.randn(1, 3, 32, 32), output_hidden_states=True).hidden_states
    assert [h.shape[1] for h in hidden_states] == [65, 33, 17]  # [CLS] + 64 -> [CLS] + 32 -> [CLS] + 16


def test_prefix_tokens_are_never_merged_and_keep_their_order(tiny_config):
    """[CLS] and the registers leave a merging block exactly as they leave the plain block (merging comes after the
    attention; the MLP is per token), first and in order."""
    config = tiny_config(patch_size=4, num_register_tokens=3, num_hidden_layers=1)
    model = perturb(HfViTModel(config), seed=0)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        plain = model(x).last_hidden_state
        model.config.token_merging_r = 1000
        merged = model(x).last_hidden_state
    assert merged.shape[1] == 4 + 32  # the 64 patches halved
    torch.testing.assert_close(merged[:, :4], plain[:, :4], rtol=0, atol=1e-6)


def test_flex_attention_matches_sdpa_with_merging(tiny_config, monkeypatch):
    """Through transformers' flex-attention function, with torch's flex attention run uncompiled (compiling its CPU
    kernel takes most of a minute here; the compiled kernel computes the same scores)."""
    from torch.nn.attention.flex_attention import flex_attention
    from transformers.integrations import flex_attention as transformers_flex

    def uncompiled(query, key, value, training=False, **kwargs):
        return flex_attention(query, key, value, **kwargs)

    monkeypatch.setattr(transformers_flex, "compile_friendly_flex_attention", uncompiled)
    model = perturb(HfViTForImageClassification(tiny_config(patch_size=4, token_merging_r=[12, 12])), seed=0)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x).logits
        model.set_attn_implementation("flex_attention")
        torch.testing.assert_close(model(x).logits, expected, rtol=0, atol=1e-5)


def test_from_pretrained_with_token_merging_and_saved_config(tiny_config, tmp_path):
    HfViTForImageClassification(tiny_config(num_labels=3)).save_pretrained(tmp_path)
    model = hf_vit.from_pretrained(tmp_path, token_merging_r=13)
    assert model.config.token_merging_r == 13
    model.config.token_merging_r = [3, 1]
    model.save_pretrained(tmp_path / "merged")
    assert HfViTConfig.from_pretrained(tmp_path / "merged").token_merging_r == [3, 1]


@pytest.mark.parametrize(
    "value, message",
    [
        (-1, "token_merging_r must be >= 0, got -1"),
        ([1, 2, 3], "token_merging_r must be an integer >= 0 or a list of 2 of them \\(one per block\\), got a list"),
        ("8", "token_merging_r must be an integer >= 0 or a list of 2"),
        ([1.5, 2], "token_merging_r must be an integer >= 0 or a list of 2"),
    ],
)
def test_bad_values_are_refused_at_build_and_at_forward(tiny_config, value, message):
    with pytest.raises(ValueError, match=message):
        HfViTModel(tiny_config(token_merging_r=value))
    model = HfViTModel(tiny_config())
    model.config.token_merging_r = value
    with pytest.raises(ValueError, match=message):
        model(torch.randn(1, 3, 32, 32))


def _attention_map(config):
    model = HfViTForImageClassification(config).eval()
    am.compute_attention_maps(model, Image.new("RGB", (32, 32)), ViTImageProcessor(size={"height": 32, "width": 32}))


def _feature_picture(config):
    model = HfViTModel(config).eval()
    fm.compute_feature_pictures(
        model, [Image.new("RGB", (32, 32))], ViTImageProcessor(size={"height": 32, "width": 32})
    )


@pytest.mark.parametrize(
    "run, needed_by",
    [
        (lambda config: HfViTBackbone(config)(torch.randn(1, 3, 32, 32)), "get_intermediate_layers and HfViTBackbone"),
        (lambda config: HfViTModel(config).get_intermediate_layers(torch.randn(1, 3, 32, 32)), "get_intermediate"),
        (lambda config: HfViTForMaskedImageModeling(config)(torch.randn(1, 3, 32, 32)), "masked image modeling"),
        (_attention_map, "an attention map"),
        (_feature_picture, "a feature picture"),
    ],
    ids=["backbone", "intermediate-layers", "masked-image-modeling", "attention-map", "feature-picture"],
)
def test_outputs_that_need_every_patch_token_refuse_merging(tiny_config, run, needed_by):
    with pytest.raises(ValueError, match=f"{needed_by}.* needs every patch token, but token merging is on") as error:
        run(tiny_config(token_merging_r=2))
    assert "\n" not in str(error.value) and "config.token_merging_r = 0" in str(error.value)
    run(tiny_config(token_merging_r=[0, 0]))  # a schedule of zeros merges nothing


def test_an_attention_without_a_logit_bias_refuses_merging(tiny_config):
    model = HfViTModel(tiny_config(token_merging_r=2)).eval()
    model.config._attn_implementation = "paged|eager"  # transformers' paged attention: no bias on the logits
    with pytest.raises(ValueError, match="adds the log size of each token to the attention logits, which"):
        model(torch.randn(1, 3, 32, 32))


def test_torch_compile_fullgraph_with_merging(tiny_config):
    model = perturb(HfViTForImageClassification(tiny_config(patch_size=4, token_merging_r=[16, 8])), seed=0)
    x = torch.randn(2, 3, 32, 32)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)  # dynamo and AOTAutograd's decompositions
    with torch.no_grad():
        torch.testing.assert_close(compiled(x).logits, model(x).logits, rtol=0, atol=1e-6)


def test_onnx_and_torch_export_with_merging_at_any_batch(tiny_config, tmp_path):
    import onnxruntime

    model = perturb(
        HfViTForImageClassification(tiny_config(patch_size=4, num_labels=5, token_merging_r=[16, 8])), seed=0
    )
    program = torch.onnx.export(
        model,
        (torch.randn(2, 3, 32, 32),),
        dynamo=True,
        dynamic_shapes={"pixel_values": {0: Dim.AUTO}},
        input_names=["pixel_values"],
        output_names=["logits"],
        verbose=False,
    )
    program.save(tmp_path / "model.onnx")
    session = onnxruntime.InferenceSession(tmp_path / "model.onnx", providers=["CPUExecutionProvider"])
    exported = program.exported_program.module()  # the torch.export program the ONNX graph was made from
    for batch in (1, 3):
        x = torch.randn(batch, 3, 32, 32)
        with torch.no_grad():
            expected = model(x).logits
            torch.testing.assert_close(exported(x).logits, expected, rtol=0, atol=1e-5)
        got = torch.as_tensor(np.asarray(session.run(None, {"pixel_values": x.numpy()})[0]))
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def classifier_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("predict")
    torch.manual_seed(0)
    config = HfViTConfig(
        image_size=32, patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
    )
    config.id2label = {0: "zero", 1: "one", 2: "two"}
    perturb(HfViTForImageClassification(config), seed=3).save_pretrained(folder / "model")
    pixels = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "image.png")
    return folder


def _scores(result):
    import json

    assert result.returncode == 0, result.stderr
    return {p["label"]: p["score"] for p in json.loads(result.stdout)["predictions"]}


def test_predict_cli_token_merging_and_int8(classifier_folder):
    from helpers import run_main
    from transformers import pipeline

    model, image = classifier_folder / "model", classifier_folder / "image.png"
    plain = _scores(run_main(["scripts/predict.py", model, image, "--json", "--device", "cpu"]))
    fast = _scores(
        run_main(
            ["scripts/predict.py", model, image, "--json", "--device", "cpu", "--token_merging_r", "20,6", "--int8"]
        )
    )
    expected_model = HfViTForImageClassification.from_pretrained(model, token_merging_r=[20, 6])
    classify = pipeline("image-classification", model=hf_vit.quantize_int8(expected_model), image_processor=str(model))
    expected = {p["label"]: p["score"] for p in classify(str(image), top_k=3)}
    assert fast == pytest.approx(expected, abs=1e-6)
    assert fast != pytest.approx(plain, abs=1e-4)  # the flags changed the model that ran


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--token_merging_r", "-3"], "expected an integer >= 0 or a comma list of them"),
        (["--token_merging_r", "1,2,3"], "--token_merging_r must be an integer >= 0 or a list of 2 of them"),
    ],
)
def test_predict_cli_refuses_bad_token_merging(classifier_folder, flags, message):
    from helpers import run_main

    done = run_main(["scripts/predict.py", classifier_folder / "model", classifier_folder / "image.png", *flags])
    assert done.returncode == 2 and message in done.stderr and done.stdout == ""
    assert done.stderr.strip().count("\n") == 0 or "usage:" in done.stderr  # one line (argparse adds its usage)


def test_quantize_int8_replaces_every_linear_and_combines_with_merging(tiny_config):
    from torch import nn

    model = perturb(HfViTForImageClassification(tiny_config(patch_size=4, num_labels=10, token_merging_r=8)), seed=0)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = model(x).logits
        quantized = hf_vit.quantize_int8(model)
        got = quantized(x).logits
    assert not any(type(module) is nn.Linear for module in quantized.modules())
    assert sum(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in quantized.modules()) == 2 * 4 + 1
    assert any(type(module) is nn.Linear for module in model.modules())  # a copy: the float model is untouched
    assert torch.nn.functional.cosine_similarity(got, expected).min() > 0.99 and not torch.equal(got, expected)
    with pytest.raises(ValueError, match="needs a float32 model on the CPU, got torch.bfloat16 on cpu"):
        hf_vit.quantize_int8(model.to(torch.bfloat16))


def test_save_pretrained_of_an_int8_model_is_refused_before_anything_is_written(tmp_path, tiny_config):
    quantized = hf_vit.quantize_int8(HfViTForImageClassification(tiny_config(num_labels=3)))
    (tmp_path / "mine.txt").write_text("a user's file")
    for folder in (tmp_path / "new", tmp_path):
        with pytest.raises(ValueError, match=r"^save_pretrained of an int8 model .* save the float model it was made"):
            quantized.save_pretrained(folder)
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


@pytest.mark.slow
def test_quantize_int8_static_is_a_compiled_int8_graph_for_any_batch(tiny_config):
    """Static int8 (PT2E, torchao's X86InductorQuantizer, inductor): the same outputs as the float model up to int8
    rounding, with merging on, at a batch size other than the calibration's and the export example's (8), the
    calibration images and the input both strided views (a slice of a data set). One compilation: each takes seconds
    on 2 cores, and every batch size compiles through the same wrapper."""
    model = perturb(HfViTForImageClassification(tiny_config(patch_size=4, num_labels=10, token_merging_r=8)), seed=0)
    quantized = hf_vit.quantize_int8_static(model, torch.randn(48, 3, 32, 32)[::2])
    x = torch.randn(10, 3, 32, 32)[::2]
    with torch.no_grad():
        expected, got = model(pixel_values=x).logits, quantized(x).logits
    assert got.shape == expected.shape
    assert torch.nn.functional.cosine_similarity(got, expected).min() > 0.99 and not torch.equal(got, expected)
    assert quantized.eval() is quantized
    with pytest.raises(ValueError, match="for inference only"):
        quantized.train()
    with pytest.raises(ValueError, match=r"^this static int8 model was calibrated at 32x32 .* got pixel_values of sh"):
        quantized(torch.randn(2, 3, 48, 32))


def test_quantize_int8_static_refusals(tiny_config, monkeypatch):
    from hf_vit import extras

    model = HfViTForImageClassification(tiny_config())
    for calibration in (torch.randn(3, 32, 32), torch.randn(0, 3, 32, 32)):
        with pytest.raises(ValueError, match="calibration_pixel_values must be a \\(N, 3, H, W\\) tensor"):
            hf_vit.quantize_int8_static(model, calibration)
    with pytest.raises(ValueError, match="needs a float32 model on the CPU, got torch.bfloat16 on cpu"):
        hf_vit.quantize_int8_static(model.to(torch.bfloat16), torch.randn(4, 3, 32, 32))
    calibration = torch.randn(4, 3, 32, 32)
    calibration[1, 0, 5, 5] = float("nan")
    with pytest.raises(ValueError, match=r"^calibration_pixel_values must be finite: 1 of 4 images hold NaN"):
        hf_vit.quantize_int8_static(model.float(), calibration)
    monkeypatch.setattr(extras, "_installed", lambda module: module != "torchao")
    message = '`quantize_int8_static` needs torchao, not installed: pip install "hf_vit\\[int8\\]"'
    with pytest.raises(extras.MissingExtra, match=message):
        hf_vit.quantize_int8_static(model.float(), torch.randn(4, 3, 32, 32))


def _images(count, seed, size=32):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(count)]


@pytest.mark.slow
def test_int8_static_pipeline_classifies_with_the_int8_graph_padding_the_last_batch(tiny_config):
    """hf_vit.int8_static_pipeline: transformers' pipeline whose scores are the softmax of the static int8 graph's
    logits (not the float model's), with every batch padded to the pipeline's batch size (one compilation), and the
    padding changing no image's result."""
    model = perturb(HfViTForImageClassification(tiny_config(patch_size=4, num_labels=3)), seed=1)
    model.config.id2label = {0: "zero", 1: "one", 2: "two"}
    processor = ViTImageProcessor(size={"height": 32, "width": 32})
    classify = hf_vit.int8_static_pipeline(model, processor, _images(12, seed=0), batch_size=4)
    graph, batches = classify.int8_model, []
    classify.int8_model = lambda pixel_values: batches.append(len(pixel_values)) or graph(pixel_values)

    images = _images(5, seed=1)
    results = classify(images, top_k=3)
    assert batches == [4, 4]  # 4, then the fifth image padded to 4
    pixel_values = processor(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        int8_logits = torch.cat([graph(pixel_values[:4]).logits, graph(pixel_values[[4, 0, 1, 2]]).logits[:1]])
        float_logits = model(pixel_values=pixel_values).logits
    for result, logits, reference in zip(results, int8_logits, float_logits, strict=True):
        got = {p["label"]: p["score"] for p in result}
        expected = dict(zip(["zero", "one", "two"], logits.softmax(-1).tolist(), strict=True))
        float_scores = dict(zip(["zero", "one", "two"], reference.softmax(-1).tolist(), strict=True))
        assert got == pytest.approx(expected, abs=1e-6)
        assert got == pytest.approx(float_scores, abs=0.05) and got != pytest.approx(float_scores, abs=1e-6)
    with pytest.raises(ValueError, match="calibration_images must hold at least one image, got none"):
        hf_vit.int8_static_pipeline(model, processor, [])


def test_predict_calibration_sample_spreads_over_the_inputs():
    from hf_vit.commands.predict import calibration_sample

    files = [f"{i:04d}.png" for i in range(1000)]
    sample = calibration_sample(files)
    assert len(sample) == len(set(sample)) == 256 and sample[0] == files[0] and sample[-1] >= files[990]
    assert calibration_sample(files[:3]) == files[:3]


@pytest.mark.slow
def test_predict_cli_int8_static(classifier_folder, tmp_path):
    """--int8_static: the int8 graph's predictions (close to the float model's, not equal: the pipeline itself is
    checked exactly above), on stdout as JSON lines only (the quantizer's messages go to stderr), in the inputs'
    order, with a short last batch."""
    import json

    from helpers import run_main

    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(_images(3, seed=2)):
        image.save(folder / f"{i}.png")
    model_dir = classifier_folder / "model"
    argv = ["scripts/predict.py", model_dir, folder, "--json", "--batch_size", "2", "--top_k", "3"]
    static, plain = run_main([*argv, "--int8_static"]), run_main(argv)
    assert static.returncode == 0 and plain.returncode == 0, static.stderr + plain.stderr
    got = [json.loads(line) for line in static.stdout.splitlines()]
    floats = [json.loads(line) for line in plain.stdout.splitlines()]
    assert [record["file"] for record in got] == [record["file"] for record in floats]
    assert [record["file"] for record in got] == [str(folder / f"{i}.png") for i in range(3)]
    assert "static int8 on 3 calibration images" in static.stderr
    for record, reference in zip(got, floats, strict=True):
        scores = {p["label"]: p["score"] for p in record["predictions"]}
        expected = {p["label"]: p["score"] for p in reference["predictions"]}
        assert scores == pytest.approx(expected, abs=0.05) and scores != pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--int8", "--int8_static"], "argument --int8_static: not allowed with argument --int8"),
        (["--int8_static", "--device", "cuda"], "--int8_static runs on the CPU only, got --device cuda"),
        (["--int8", "--device", "cuda"], "--int8 runs on the CPU only, got --device cuda"),
        (["--int8_static", "<no torchao>"], '--int8_static needs torchao, not installed: pip install "hf_vit[int8]"'),
    ],
)
def test_predict_cli_int8_refusals(classifier_folder, flags, message, monkeypatch):
    from helpers import run_main

    from hf_vit import extras

    if "<no torchao>" in flags:
        flags = flags[:-1]
        monkeypatch.setattr(extras, "_installed", lambda module: module != "torchao")
    done = run_main(["scripts/predict.py", classifier_folder / "model", classifier_folder / "image.png", *flags])
    assert done.returncode == 2 and message in done.stderr and done.stdout == ""
    assert done.stderr.strip().count("\n") == 0 or "usage:" in done.stderr


def test_rotary_position_encoding_refuses_merging(tiny_config):
    message = "token_merging_r must be 0 with rotary position encoding \\(rope_type 'dinov3'\\)"
    with pytest.raises(ValueError, match=message):
        HfViTModel(tiny_config(rope_type="dinov3", token_merging_r=2))
    model = HfViTModel(tiny_config(rope_type="dinov3", token_merging_r=[0, 0])).eval()
    model(torch.randn(1, 3, 32, 32))
    model.config.token_merging_r = 2
    with pytest.raises(ValueError, match=message):
        model(torch.randn(1, 3, 32, 32))


def _accuracy_script():
    import importlib.util

    from helpers import REPO

    spec = importlib.util.spec_from_file_location("tome_accuracy", REPO / "scripts" / "dev" / "tome_accuracy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_accuracy_script_reports_what_the_trained_model_does(tmp_path, capsys, monkeypatch):
    """scripts/dev/tome_accuracy.py (two short epochs: a model no longer at chance, on which the variants differ): its
    table's token counts and accuracies are those of the model it saved, evaluated here on the held-out digits dense,
    merged and int8; its static int8 rows those of the graphs it built (each compiled once), at the right r, from
    the 256 calibration digits."""
    from transformers import AutoModelForImageClassification

    from hf_vit.data import digits_arrays

    script = _accuracy_script()
    built, static_int8 = [], script.static_int8

    def recording_static_int8(model, calibration):
        built.append((model.config.token_merging_r, calibration, static_int8(model, calibration)))
        return built[-1][2]

    monkeypatch.setattr(script, "static_int8", recording_static_int8)
    images, labels, train_idx, test_idx = digits_arrays()
    out, model_dir = tmp_path / "table.md", tmp_path / "model"
    argv = [
        "--epochs",
        "2",
        "--r",
        "2,8",
        "--int8_r",
        "8",
        "--int8_static",
        "--timing_reps",
        "1",
        "--train_threads",
        "1",
    ]
    assert script.main([*argv, "--out", str(out), "--output_dir", str(model_dir)]) == 0
    table = out.read_text()
    assert table in capsys.readouterr().out
    assert f"{len(test_idx)} held-out digits" in table and "64 patch tokens" in table
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 5 and cells[2].endswith("%"):
            rows[cells[0]] = (int(cells[1]), float(cells[2].rstrip("%")), float(cells[4].rstrip("×")))
    assert list(rows) == [
        "dense (fp32)",
        "int8",
        "merged r=2",
        "merged r=8",
        "merged r=8 + int8",
        "int8 static",
        "merged r=8 + int8 static",
    ]
    # 65 tokens ([CLS] + 64 patches), 4 blocks, r pairs merged after each block's attention
    assert [rows[name][0] for name in rows] == [65, 65, 65 - 4 * 2, 65 - 4 * 8, 65 - 4 * 8, 65, 65 - 4 * 8]
    assert all(speed > 0 for _, _, speed in rows.values())

    x, y = script.digits_32(test_idx, images), torch.from_numpy(labels[test_idx])
    model = AutoModelForImageClassification.from_pretrained(model_dir).eval()
    int8 = hf_vit.quantize_int8(model)

    def accuracy(net, r):
        net.config.token_merging_r = r
        with torch.inference_mode():
            logits = torch.cat([net(pixel_values=batch).logits for batch in x.split(8)])
        return round(100.0 * (logits.argmax(-1) == y).float().mean().item(), 2)

    assert rows["dense (fp32)"][1] == accuracy(model, 0)
    assert rows["merged r=8"][1] == accuracy(model, 8)
    assert rows["int8"][1] == accuracy(int8, 0)
    assert rows["merged r=8 + int8"][1] == accuracy(int8, 8)
    train = script.digits_32(train_idx, images)
    assert [r for r, _, _ in built] == [0, 8]
    for r, calibration, static in built:
        assert len(calibration) == 256 and torch.equal(calibration, train[:: len(train) // 256][:256])
        with torch.inference_mode():
            logits = torch.cat([static(batch).logits for batch in x.split(8)])
        got = round(100.0 * (logits.argmax(-1) == y).float().mean().item(), 2)
        assert rows["merged r=8 + int8 static" if r else "int8 static"][1] == got


def test_accuracy_script_never_replaces_a_users_file(tmp_path, capsys):
    script = _accuracy_script()
    table, folder = tmp_path / "table.md", tmp_path / "model"
    table.write_text("mine")
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    assert script.main(["--out", str(table)]) == 2
    assert script.main(["--output_dir", str(folder)]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 2 and "already exists" in errors[0] and "not empty" in errors[1]
    assert table.read_text() == "mine" and (folder / "notes.txt").read_text() == "mine"


def test_the_picture_tools_turn_off_the_merging_a_folder_was_saved_with(tmp_path, tiny_config):
    """hf-vit-attention / hf-vit-features on a folder saved with token merging on: the pictures need every patch
    token, so the model runs unmerged (a note says so) instead of failing."""
    from helpers import run_main

    model = HfViTForImageClassification(tiny_config(patch_size=4, token_merging_r=4, num_labels=2))
    model.save_pretrained(tmp_path / "model")
    Image.new("RGB", (32, 32), (10, 200, 30)).save(tmp_path / "image.png")
    note = "note: token merging (token_merging_r = 4) is off here: the pictures need every patch token"
    for script, picture in [
        ("visualize_attention.py", "image_mean.png"),
        ("visualize_features.py", "image_features.png"),
    ]:
        out = tmp_path / script
        done = run_main([f"scripts/{script}", tmp_path / "model", tmp_path / "image.png", "--output_dir", out])
        assert done.returncode == 0 and note in done.stderr, done.stderr
        assert (out / picture).is_file()
