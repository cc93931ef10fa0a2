"""Foreign ViT checkpoints <-> hf_vit, one module per source format around a small shared core.

    core              rename rules; the lazy source (`lazy_state_dict`: `LazyTensor`s read one at a time) and the
                      streamed writer (`write_weights_streamed`: transformers' sharded safetensors layout, one tensor
                      in memory at a time); building the model from converted weights on the meta device;
                      verification against the source library (`verify_conversion`), writing the converted folder
                      (`write_hf_vit_folder`)
    timm              timm models, state dicts and folders (`from_timm`, `convert_timm_file`, `convert_timm_folder`)
    transformers_vit  transformers ViT, v4 or v5 names (`from_transformers`, `convert_transformers_folder`)
    dinov2            transformers DINOv2 / DINOv2 with registers (`from_dinov2`, `convert_dinov2_folder`)
    image_text        transformers SigLIP / CLIP vision models and image-text models' vision towers
                      (`convert_image_text_folder`)
    vit_variants      transformers MAE, MSN, I-JEPA, distilled DeiT (`convert_vit_variant_folder`)
    dinov3            transformers DINOv3 ViT (`from_dinov3`, `convert_dinov3_folder`)
    timm_eva          timm Eva: EVA-02 and timm's DINOv3 ports (`from_timm_eva`; timm folders go through `timm`)
    dino              DINO training checkpoints and backbones (`convert_dino_file`)
    npz               Google `.npz`, vit_jax and big_vision layouts (`convert_npz_file`)
    files             one file or folder of a named format -> an hf_vit folder (`convert_checkpoint`, the CLI's
                      --source)
    export            hf_vit -> timm / transformers folders (`export_to_timm`, `export_to_transformers`) and
                      `export_safetensors` (Accelerate states / .bin / legacy folders -> checked safetensors)
    pretrained        any checkpoint by name, layout detected, converted once and cached under the Hugging Face cache
                      (`from_pretrained`, also `hf_vit.from_pretrained`)

The state-dict mappings work on plain state dicts, so file-based conversion needs no source-library model object.
The public names of every module are importable from here.
"""

from .core import (  # noqa: F401  (the public names of each module)
    DEFAULT_MAX_SHARD_SIZE,
    EXPORT_TARGETS,
    GOOGLE_MEAN,
    GOOGLE_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    SOURCES,
    VERIFY_TOLERANCE,
    Conversion,
    LazyTensor,
    VerificationError,
    lazy_state_dict,
    load_hf_vit_folder,
    max_abs_diff,
    random_batch,
    verify_conversion,
    write_hf_vit_folder,
    write_weights_streamed,
)
from .dino import (  # noqa: F401  (the public names of each module)
    DINO_HEADS,
    convert_dino_file,
    dino_backbone_state_dict,
)
from .dinov2 import (  # noqa: F401  (the public names of each module)
    DINOV2_EXPECTED,
    DINOV2_MODEL_TYPES,
    DINOV2_TO_HF_VIT,
    config_from_dinov2,
    convert_dinov2_folder,
    dinov2_state_dict_to_hf_vit,
    from_dinov2,
)
from .dinov3 import DINOV3_MODEL_TYPE, config_from_dinov3, convert_dinov3_folder, from_dinov3  # noqa: F401
from .export import (  # noqa: F401  (the public names of each module)
    HF_VIT_TO_TIMM,
    export_checkpoint,
    export_safetensors,
    export_to_timm,
    export_to_transformers,
    hf_vit_to_timm,
)
from .files import (  # noqa: F401  (the public names of each module)
    convert_checkpoint,
    load_foreign_checkpoint,
)
from .npz import (  # noqa: F401  (the public names of each module)
    NPZ_EXPECTED,
    NPZ_PREFIXES,
    convert_npz_file,
    npz_to_hf_vit,
)
from .pretrained import convert_pretrained, from_pretrained, resolve_pretrained  # noqa: F401
from .timm import (  # noqa: F401  (the public names of each module)
    TIMM_EXPECTED,
    TIMM_HEADS_BY_WIDTH,
    TIMM_TO_HF_VIT,
    TIMM_UNSUPPORTED_KEYS,
    config_from_timm,
    config_from_timm_layout,
    convert_timm_file,
    convert_timm_folder,
    from_timm,
    refuse_unsupported_timm_keys,
    timm_image_processor,
    timm_layout_from_state_dict,
    timm_state_dict_to_hf_vit,
)
from .timm_eva import config_from_timm_eva, from_timm_eva  # noqa: F401
from .transformers_vit import (  # noqa: F401  (the public names of each module)
    TRANSFORMERS_EXPECTED,
    TRANSFORMERS_TO_HF_VIT,
    config_from_transformers,
    convert_transformers_folder,
    from_transformers,
    masked_image_modeling_fields,
    transformers_state_dict_to_hf_vit,
)

__all__ = [
    "Conversion",
    "LazyTensor",
    "lazy_state_dict",
    "write_weights_streamed",
    "VerificationError",
    "config_from_dinov2",
    "config_from_timm",
    "config_from_transformers",
    "convert_checkpoint",
    "convert_pretrained",
    "dinov2_state_dict_to_hf_vit",
    "export_checkpoint",
    "export_safetensors",
    "export_to_timm",
    "export_to_transformers",
    "from_dinov2",
    "from_dinov3",
    "from_pretrained",
    "from_timm",
    "from_timm_eva",
    "from_transformers",
    "hf_vit_to_timm",
    "load_foreign_checkpoint",
    "load_hf_vit_folder",
    "npz_to_hf_vit",
    "resolve_pretrained",
    "timm_layout_from_state_dict",
    "timm_state_dict_to_hf_vit",
    "transformers_state_dict_to_hf_vit",
    "verify_conversion",
]
