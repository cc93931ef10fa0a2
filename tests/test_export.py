"""Exports with dynamic batch, height and width: torch.export and ONNX (both exporters, run in onnxruntime) give the
eager model's outputs at the trained size and at other sizes, square and not, and refuse sizes that are no multiple
of the patch, as the eager model does."""

import warnings

import numpy as np
import pytest
import torch
from torch.export import Dim

from hf_vit import HfViTForImageClassification

# (config overrides, the sizes (batch, height, width) each export is checked at: the trained size first)
PLAIN = (dict(), [(1, 32, 32), (3, 32, 32), (2, 48, 48), (2, 40, 64), (1, 16, 24)])
# timm-style: non-square training size, registers, mean pooling, antialiased resizing, no [CLS] position
TIMM_STYLE = (
    dict(
        image_size=(32, 24),
        num_register_tokens=2,
        pooling="mean",
        interpolate_antialias=True,
        cls_position_embedding=False,
    ),
    [(1, 32, 24), (2, 32, 32), (2, 48, 40), (1, 16, 24)],
)
DYNAMIC = {"pixel_values": {0: Dim.AUTO, 2: Dim.AUTO, 3: Dim.AUTO}}


def _model(tiny_config, overrides):
    return HfViTForImageClassification(tiny_config(num_labels=5, **overrides)).eval()


def _example(config):
    height, width = config.image_size if isinstance(config.image_size, list) else (config.image_size,) * 2
    return torch.randn(2, 3, height, width)


NOT_WHOLE_PATCHES = [(1, 33, 32), (1, 32, 36), (2, 39, 39)]  # eager and torch.export refuse them


def _refuses_partial_patches(run):
    """The exported graph refuses, as the eager model does, a height or width that is no multiple of the patch
    (rather than dropping the extra pixels)."""
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument

    for batch, height, width in NOT_WHOLE_PATCHES:
        with pytest.raises((Fail, InvalidArgument), match="Reshape"):
            run(torch.randn(batch, 3, height, width))


def _check(model, run, sizes, atol):
    for batch, height, width in sizes:
        pixel_values = torch.randn(batch, 3, height, width)
        with torch.no_grad():
            expected = model(pixel_values).logits
        got = torch.as_tensor(np.asarray(run(pixel_values)))
        assert got.shape == expected.shape, (batch, height, width)
        torch.testing.assert_close(got, expected, rtol=0, atol=atol, msg=f"at {batch}x3x{height}x{width}")


@pytest.mark.parametrize("antialias", [False, True])
def test_position_resize_to_the_trained_grid_is_an_identity(tiny_config, antialias):
    """Why an exported graph may always resize: at the trained grid the bicubic resize gives the learned table back."""
    model = HfViTForImageClassification(tiny_config(image_size=(32, 48), interpolate_antialias=antialias))
    embeddings = model.vit.embeddings
    torch.testing.assert_close(
        embeddings.interpolate_pos_encoding((4, 6)), embeddings.position_embeddings, rtol=0, atol=1e-6
    )


@pytest.mark.slow
@pytest.mark.parametrize("case", [PLAIN, TIMM_STYLE], ids=["plain", "timm-style"])
def test_torch_export_with_dynamic_batch_height_width(tiny_config, case):
    overrides, sizes = case
    model = _model(tiny_config, overrides)
    program = torch.export.export(model, (_example(model.config),), dynamic_shapes=DYNAMIC)
    exported = program.module()
    _check(model, lambda x: exported(x).logits.detach(), sizes, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("case", [PLAIN, TIMM_STYLE], ids=["plain", "timm-style"])
def test_onnx_dynamo_exporter_runs_in_onnxruntime_at_any_size(tiny_config, tmp_path, case):
    import onnxruntime

    overrides, sizes = case
    model = _model(tiny_config, overrides)
    program = torch.onnx.export(
        model,
        (_example(model.config),),
        dynamo=True,
        dynamic_shapes=DYNAMIC,
        input_names=["pixel_values"],
        output_names=["logits"],
        verbose=False,
    )
    program.save(str(tmp_path / "model.onnx"))
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    _check(model, lambda x: session.run(["logits"], {"pixel_values": x.numpy()})[0], sizes, atol=1e-4)
    _refuses_partial_patches(lambda x: session.run(["logits"], {"pixel_values": x.numpy()}))


def test_onnx_legacy_exporter_runs_in_onnxruntime_at_any_size(tiny_config, tmp_path):
    import onnxruntime

    overrides, sizes = PLAIN
    model = _model(tiny_config, overrides)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch's notice that this exporter is the legacy one
        torch.onnx.export(
            model,
            (_example(model.config),),
            str(tmp_path / "model.onnx"),
            dynamo=False,
            input_names=["pixel_values"],
            output_names=["logits"],
            dynamic_axes={"pixel_values": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch"}},
        )
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    _check(model, lambda x: session.run(["logits"], {"pixel_values": x.numpy()})[0], sizes, atol=1e-4)
    _refuses_partial_patches(lambda x: session.run(["logits"], {"pixel_values": x.numpy()}))
