"""int8 inference on CPU: dynamic quantization of every `nn.Linear` (torch.ao's `quantize_dynamic`).

The weights of every linear layer (qkv, attention projection, MLP, head) are stored as int8 with one scale per
tensor; at run time each input is quantized per batch and the matmul runs in int8 (oneDNN/FBGEMM kernels, VNNI where
the CPU has it), the rest (patch convolution, LayerNorms, softmax, GELU) stays float32. No calibration data, no
retraining. It combines with token merging (`config.token_merging_r`). docs/performance.md has the measured speed and
accuracy.
"""

from __future__ import annotations

import logging
import warnings

import torch
from torch import nn

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
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    parameter = next(model.parameters(), None)
    if parameter is not None and (parameter.device.type != "cpu" or parameter.dtype != torch.float32):
        raise ValueError(
            f"int8 dynamic quantization needs a float32 model on the CPU, got {parameter.dtype} on "
            f"{parameter.device.type}: call model.float().cpu() first"
        )
    model.eval()
    with warnings.catch_warnings():  # torch.ao's notice that this API will move to torchao; it works as documented
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        quantized = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=inplace)
    quantized = model if inplace else quantized
    count = sum(isinstance(module, torch.ao.nn.quantized.dynamic.Linear) for module in quantized.modules())
    logger.debug("quantized %d linear layers to int8 (dynamic)", count)
    return quantized


__all__ = ["quantize_int8"]
