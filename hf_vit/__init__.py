"""hf_vit: a Vision Transformer as a Hugging Face model plugin.

`import hf_vit` registers `model_type="hf_vit"` with transformers' Auto classes, so `AutoConfig`, `AutoModel`,
`AutoModelForImageClassification`, `AutoModelForMaskedImageModeling`, `AutoBackbone`, `AutoImageProcessor` and
`pipeline("image-classification")` load hf_vit checkpoints without `trust_remote_code`, and transformers' dense heads
(DPT, UperNet) take an `HfViTConfig` as `backbone_config`.
"""

import logging

from ._command_start import quiet_interrupt

_give_back_interrupt = quiet_interrupt()  # Ctrl-C while a command starts: one line, exit 130 (not this traceback)

# With torchao installed (the int8 extra), `import transformers` imports it and torch logs a deprecation warning for
# each enum torchao registers as a pytree constant: two lines on every tool's stderr that no user can act on.
logging.getLogger("torch.utils._pytree").addFilter(lambda record: "register_constant()" not in record.getMessage())

from transformers import (  # noqa: E402
    AutoBackbone,
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForMaskedImageModeling,
    ViTImageProcessor,
)

from .configuration_hf_vit import PRESETS, HfViTConfig  # noqa: E402
from .modeling_hf_vit import (  # noqa: E402
    HfViTBackbone,
    HfViTForImageClassification,
    HfViTForMaskedImageModeling,
    HfViTModel,
    HfViTPreTrainedModel,
)
from .quantization import int8_static_pipeline, quantize_int8, quantize_int8_static  # noqa: E402

__version__ = "0.1.0"


def _register() -> None:
    AutoConfig.register(HfViTConfig.model_type, HfViTConfig, exist_ok=True)
    AutoModel.register(HfViTConfig, HfViTModel, exist_ok=True)
    AutoModelForImageClassification.register(HfViTConfig, HfViTForImageClassification, exist_ok=True)
    AutoBackbone.register(HfViTConfig, HfViTBackbone, exist_ok=True)
    AutoModelForMaskedImageModeling.register(HfViTConfig, HfViTForMaskedImageModeling, exist_ok=True)
    # Preprocessing is transformers' own ViTImageProcessor. This mapping serves a preprocessor_config.json that does
    # not name its class; transformers needs that file to exist at all, so the models' save_pretrained writes a
    # default one (ViTImageProcessor at config.image_size) into a folder saved without a processor.
    try:
        AutoImageProcessor.register(
            HfViTConfig, image_processor_classes={"torchvision": ViTImageProcessor}, exist_ok=True
        )
    except TypeError:  # transformers 5.x before the image_processor_classes argument
        AutoImageProcessor.register(HfViTConfig, fast_image_processor_class=ViTImageProcessor, exist_ok=True)
    # save_pretrained then writes `auto_map` and copies the two code files, for trust_remote_code loading
    HfViTConfig.register_for_auto_class()
    HfViTModel.register_for_auto_class("AutoModel")
    HfViTForImageClassification.register_for_auto_class("AutoModelForImageClassification")
    HfViTBackbone.register_for_auto_class("AutoBackbone")
    HfViTForMaskedImageModeling.register_for_auto_class("AutoModelForMaskedImageModeling")


_register()
_give_back_interrupt()


def from_pretrained(
    name_or_path, *, task="image-classification", revision=None, cache_dir=None, token=None, verify=False, **kwargs
):
    """Any ViT checkpoint (hf_vit, timm, transformers ViT/DeiT/DINO, DINOv2, DINO `.pth`, Google `.npz`; a Hub repo id
    or a local path) as an `HfViTForImageClassification` (task "image-classification"), `HfViTModel` (task
    "feature-extraction") or `HfViTForMaskedImageModeling` (task "masked-image-modeling"), converted once and cached
    under the Hugging Face cache; `verify=True` compares with the source library first. All arguments:
    `hf_vit.convert.pretrained.from_pretrained`."""
    from .convert.pretrained import from_pretrained as _from_pretrained

    return _from_pretrained(
        name_or_path, task=task, revision=revision, cache_dir=cache_dir, token=token, verify=verify, **kwargs
    )


def evaluate(models=(), **kwargs):
    """How good the features of `models` (any `from_pretrained` sources) are on labelled images: DINO's weighted
    k-NN and a linear probe, with all the labels and with a few per class, side by side; returns an
    `hf_vit.evaluation.Evaluation` (markdown table, JSON, plot). All arguments: `hf_vit.evaluation.evaluate`."""
    from .evaluation import evaluate as _evaluate

    return _evaluate(models, **kwargs)


__all__ = [
    "PRESETS",
    "evaluate",
    "HfViTConfig",
    "from_pretrained",
    "HfViTBackbone",
    "HfViTForImageClassification",
    "HfViTForMaskedImageModeling",
    "HfViTModel",
    "HfViTPreTrainedModel",
    "int8_static_pipeline",
    "quantize_int8",
    "quantize_int8_static",
]
