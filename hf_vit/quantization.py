"""int8 inference on CPU: dynamic quantization of every `nn.Linear` (torch.ao's `quantize_dynamic`), and static
quantization of the whole graph (PT2E with torchao's `X86InductorQuantizer`, compiled by inductor).

Dynamic: the weights of every linear layer (qkv, attention projection, MLP, head) are stored as int8 with one scale per
tensor; at run time each input is quantized per batch and the matmul runs in int8 (oneDNN/FBGEMM kernels, VNNI where
the CPU has it), the rest (patch convolution, LayerNorms, softmax, GELU) stays float32. No calibration data, no
retraining. It combines with token merging (`config.token_merging_r`).

Static (`quantize_int8_static`, the `int8` extra): the model is exported with `torch.export`, observed on calibration
images, and every linear layer's inputs get fixed int8 scales as well; inductor then compiles the int8 graph (with
freezing). Faster than dynamic where it was measured, at the price of calibration and a compilation per batch size.
`int8_static_pipeline` puts it behind transformers' image-classification pipeline. docs/performance.md has the
measured speed and accuracy of both.
"""

from __future__ import annotations

import logging
import warnings

import torch
from torch import nn
from transformers.modeling_outputs import ImageClassifierOutput
from transformers.pipelines import ImageClassificationPipeline

logger = logging.getLogger(__name__)


def quantize_int8(model: nn.Module, inplace: bool = False) -> nn.Module:
    """`model` with every `nn.Linear` replaced by torch.ao's dynamically quantized int8 Linear, for CPU inference.

    Args:
        model: any hf_vit model (or other module) in float32 on the CPU; it is put in eval mode.
        inplace: change `model` itself instead of returning a quantized copy (saves the copy's memory).

    Returns:
        The quantized model. It runs on CPU only and is for inference: it has no gradients and `save_pretrained`
        of it is not supported (save the float model).

    Example:

    ```python
    >>> model = hf_vit.from_pretrained("timm/vit_small_patch16_224.augreg_in21k_ft_in1k", token_merging_r=8)
    >>> fast = quantize_int8(model)
    >>> logits = fast(pixel_values).logits
    ```
    """
    _check_float32_cpu(model)
    model.eval()
    with warnings.catch_warnings():  # torch.ao's notice that this API will move to torchao; it works as documented
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        quantized = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=inplace)
    quantized = model if inplace else quantized
    count = sum(isinstance(module, torch.ao.nn.quantized.dynamic.Linear) for module in quantized.modules())
    logger.debug("quantized %d linear layers to int8 (dynamic)", count)
    return quantized


def quantize_int8_static(model: nn.Module, calibration_pixel_values: torch.Tensor, batch_size: int = 8) -> nn.Module:
    """`model` as a static int8 graph compiled for x86 CPUs (PT2E: torch.export, torchao's `X86InductorQuantizer`
    with its default per-channel config, calibration, then inductor with freezing).

    Args:
        model: an hf_vit model in float32 on the CPU. Token merging is fixed at its `config.token_merging_r` of now.
        calibration_pixel_values: (N, 3, H, W) images, preprocessed as the model's inputs (a few hundred representative
            images set the activation scales); the model then takes inputs of this height and width only.
        batch_size: the calibration batch size.

    Returns:
        A module whose `forward(pixel_values)` returns what `model` returns, for any batch size (each new size is
        compiled on its first call: seconds to minutes). CPU inference only; save the float model, not this.

    Example:

    ```python
    >>> fast = hf_vit.quantize_int8_static(model, calibration_images)  # needs pip install "hf_vit[int8]"
    >>> logits = fast(pixel_values).logits
    ```
    """
    from .extras import require

    require("int8", "`quantize_int8_static`")
    from torch.export import Dim
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq

    _check_float32_cpu(model)
    if (
        not isinstance(calibration_pixel_values, torch.Tensor)
        or calibration_pixel_values.ndim != 4
        or len(calibration_pixel_values) == 0
    ):
        raise ValueError(
            "calibration_pixel_values must be a (N, 3, H, W) tensor of N >= 1 preprocessed images, got "
            f"{getattr(calibration_pixel_values, 'shape', type(calibration_pixel_values).__name__)}"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not torch.isfinite(calibration_pixel_values).all():
        bad = int((~torch.isfinite(calibration_pixel_values)).flatten(1).any(1).sum())
        raise ValueError(
            f"calibration_pixel_values must be finite: {bad} of {len(calibration_pixel_values)} images hold NaN or "
            "infinite values (the activation scales would be NaN)"
        )
    model.eval()
    # contiguous: the exported graph guards its input's strides, and inputs are made contiguous at each call too
    batches = calibration_pixel_values.float().contiguous().split(batch_size)
    example = batches[0] if len(batches[0]) > 1 else calibration_pixel_values[:1].expand(2, -1, -1, -1)
    with torch.no_grad():
        graph = torch.export.export(
            model, (), {"pixel_values": example}, dynamic_shapes={"pixel_values": {0: Dim.AUTO}}
        ).module()
        quantizer = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config())
        observed = prepare_pt2e(graph, quantizer)
        for batch in batches:
            observed(pixel_values=batch)
        quantized = convert_pt2e(observed)
    logger.info("quantized to static int8 on %d calibration images", len(calibration_pixel_values))
    return _FrozenCompiled(torch.compile(quantized), tuple(calibration_pixel_values.shape[1:]))


class _FrozenCompiled(nn.Module):
    """Calls a `torch.compile`d graph with inductor's freezing on (the int8 weights folded in as constants: the
    path inductor's x86 int8 kernels need), for every compilation, the later batch sizes' too."""

    def __init__(self, compiled: nn.Module, input_shape: tuple[int, int, int]):
        super().__init__()
        self.compiled = compiled
        self.input_shape = input_shape  # (C, H, W) of the calibration: the exported graph takes no other

    def train(self, mode: bool = True) -> _FrozenCompiled:
        """eval() is a no-op and train() refused: an exported graph has no training mode (and no gradients)."""
        if mode:
            raise ValueError("a static int8 model is for inference only: train the float model")
        self.training = False
        return self

    def forward(self, pixel_values: torch.Tensor):
        from torch._inductor import config as inductor_config

        if tuple(pixel_values.shape[1:]) != self.input_shape:
            channels, height, width = self.input_shape
            raise ValueError(
                f"this static int8 model was calibrated at {height}x{width} with {channels} channels and takes only "
                f"that size, got pixel_values of shape {tuple(pixel_values.shape)}; quantize again with calibration "
                "images of the new size"
            )

        with inductor_config.patch(freezing=True), torch.no_grad(), warnings.catch_warnings():
            # inductor's own int8 lowering copies a tensor with torch.tensor(): its UserWarning is not the caller's
            warnings.filterwarnings("ignore", "To copy construct from a tensor", UserWarning)
            return self.compiled(pixel_values=pixel_values.contiguous())


def int8_static_pipeline(model: nn.Module, image_processor, calibration_images, batch_size: int = 8):
    """transformers' `pipeline("image-classification")` for `model`, whose forward pass is `model`'s static int8
    graph (`quantize_int8_static`), calibrated on `calibration_images`.

    Args:
        model: an hf_vit image classifier in float32 on the CPU (token merging fixed at its `config.token_merging_r`).
        image_processor: the model's image processor: it preprocesses the calibration images and every input.
        calibration_images: a few hundred representative images (anything the image processor takes: PIL images,
            arrays), the kind the pipeline will classify.
        batch_size: the pipeline's batch size; smaller batches (a last one) are padded to it, so that the int8 graph
            is compiled once (seconds to minutes, on the first call).

    Returns:
        An `ImageClassificationPipeline` on the CPU: preprocessing, batching, scores and labels are the pipeline's own.

    Example:

    ```python
    >>> classify = hf_vit.int8_static_pipeline(model, processor, calibration_images)  # pip install "hf_vit[int8]"
    >>> classify(images, top_k=3)
    ```
    """
    calibration_images = list(calibration_images)
    if not calibration_images:
        raise ValueError("calibration_images must hold at least one image, got none")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    pixel_values = image_processor(images=calibration_images, return_tensors="pt")["pixel_values"]
    int8_model = quantize_int8_static(model, pixel_values, batch_size=batch_size)
    return Int8StaticImageClassificationPipeline(
        model=model, image_processor=image_processor, device="cpu", batch_size=batch_size, int8_model=int8_model
    )


class Int8StaticImageClassificationPipeline(ImageClassificationPipeline):
    """transformers' image-classification pipeline with the forward pass of a static int8 model (its preprocessing,
    batching, scores and labels unchanged). A batch smaller than the pipeline's batch size is padded to it with copies
    of its last image, so that the graph compiles once; static int8 computes each image on its own (fixed scales), so
    the padding changes no result."""

    def __init__(self, *args, int8_model: nn.Module, **kwargs):
        super().__init__(*args, **kwargs)
        self.int8_model = int8_model

    def _forward(self, model_inputs):
        pixel_values = model_inputs["pixel_values"]
        count, compiled = len(pixel_values), self._batch_size or 1
        if count < compiled:
            pixel_values = torch.cat([pixel_values, pixel_values[-1:].expand(compiled - count, -1, -1, -1)])
        return ImageClassifierOutput(logits=self.int8_model(pixel_values).logits[:count])


def _check_float32_cpu(model) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    parameter = next(model.parameters(), None)
    if parameter is not None and (parameter.device.type != "cpu" or parameter.dtype != torch.float32):
        raise ValueError(
            f"int8 quantization needs a float32 model on the CPU, got {parameter.dtype} on "
            f"{parameter.device.type}: call model.float().cpu() first"
        )


__all__ = ["Int8StaticImageClassificationPipeline", "int8_static_pipeline", "quantize_int8", "quantize_int8_static"]
