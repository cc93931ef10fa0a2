"""The shared core of the converters: rename rules, building the hf_vit model from converted weights, verification
against the source library, and writing the converted folder."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..checkpoint_io import (
    load_image_processor,
    load_weights,
    strip_wrapper_prefixes,
)
from ..configuration_hf_vit import HfViTConfig, image_size_pair
from ..fileio import atomic_directory, read_json_object
from ..model_card import (
    License,
    Lineage,
    license_from_metadata,
    read_card_metadata,
    render_model_card,
    write_model_card,
)
from ..modeling_hf_vit import HfViTForImageClassification, HfViTForMaskedImageModeling, HfViTModel
from ..stats import count_parameters

# ---------------------------------------------------------------------------------------------------------------
# shared
# ---------------------------------------------------------------------------------------------------------------


def _rename(
    state_dict: dict[str, torch.Tensor], rules: list[tuple[str, str]], source: str, expected: str | None = None
) -> dict[str, torch.Tensor]:
    """Apply the first matching (regex, replacement) rule to every key; unmatched keys are an error that names them
    (first few) and the names expected."""
    renamed, unmatched = {}, []
    for key, tensor in state_dict.items():
        for pattern, replacement in rules:
            new_key, hits = re.subn(pattern, replacement, key)
            if hits:
                renamed[new_key] = tensor
                break
        else:
            unmatched.append(key)
    if unmatched:
        raise ValueError(
            f"{len(unmatched)} {source} parameter(s) have no hf_vit equivalent (first: {', '.join(unmatched[:5])}); "
            f"expected {source} names like {expected or _expected_names(rules)}: either the file has another layout "
            "(check `source`) or the model uses a feature hf_vit does not implement"
        )
    return renamed


def _expected_names(rules: list[tuple[str, str]]) -> str:
    names = [
        re.sub(r"\(\\d\+\)", "N", pattern).replace("\\.", ".").strip("^$").replace("(vit.)?", "[vit.]")
        for pattern, _ in rules
    ]
    return ", ".join(names[:8]) + ", ..."


def _build(
    config: HfViTConfig, state_dict: dict[str, torch.Tensor]
) -> HfViTModel | HfViTForImageClassification | HfViTForMaskedImageModeling:
    """An hf_vit model for `config` holding exactly `state_dict` (keys in hf_vit's classification naming); a SimMIM
    decoder (`decoder.0.*`) makes it an `HfViTForMaskedImageModeling`."""
    has_head = "classifier.weight" in state_dict or "decoder.0.weight" in state_dict
    if "decoder.0.weight" in state_dict:
        model = HfViTForMaskedImageModeling(config)
    else:
        model = HfViTForImageClassification(config) if has_head else HfViTModel(config)
    if not has_head:  # a bare backbone's keys carry no "vit." prefix
        state_dict = {key.removeprefix("vit."): value for key, value in state_dict.items()}
    expected = model.state_dict()
    for key, tensor in state_dict.items():
        if key in expected and expected[key].shape != tensor.shape:
            raise ValueError(
                f"shape mismatch for {key}: the checkpoint has {tuple(tensor.shape)}, the config implies "
                f"{tuple(expected[key].shape)}"
            )
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"converted weights do not fit the hf_vit model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    return model.eval()


def _name_rule(source: str, target: str) -> tuple[str, str]:
    """A (regex, replacement) rule for `_rename` from a pair of names of the list above."""
    pattern = "^" + re.escape(source).replace(re.escape("{i}"), r"(\d+)") + ("" if source.endswith(".") else "$")
    return pattern, target.replace("{i}", r"\1")


# ---------------------------------------------------------------------------------------------------------------
# Files: architecture from tensor shapes, per source
# ---------------------------------------------------------------------------------------------------------------
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


GOOGLE_MEAN, GOOGLE_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


SOURCES = ("timm", "dino", "transformers", "npz")


EXPORT_TARGETS = ("timm", "transformers")


VERIFY_TOLERANCE = 1e-4


def _square_side(n: int) -> int | None:
    side = math.isqrt(n) if n > 0 else 0
    return side if side and side * side == n else None


def _block_count(keys, pattern: str) -> int:
    indices = [int(m.group(1)) for key in keys if (m := re.match(pattern, key))]
    return 1 + max(indices) if indices else 0


def _check_fits(state_dict: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], what: str) -> None:
    """Shape mismatches name the tensor and both shapes; missing/unexpected keys are listed (first few)."""
    for key, tensor in state_dict.items():
        if key in expected and tuple(expected[key].shape) != tuple(tensor.shape):
            raise ValueError(
                f"shape mismatch for {key}: the checkpoint has {tuple(tensor.shape)}, "
                f"{what} expects {tuple(expected[key].shape)}"
            )
    unexpected = [key for key in state_dict if key not in expected]
    missing = [key for key in expected if key not in state_dict]
    if unexpected or missing:
        raise ValueError(
            f"the checkpoint does not fit {what}: {len(unexpected)} unexpected key(s) {unexpected[:5]}, "
            f"{len(missing)} missing key(s) {missing[:5]}"
        )


def _require(module: str, flag: str):
    try:
        return __import__(module)
    except ImportError:
        raise ValueError(f"{flag} needs {module} installed (pip install {module})") from None


@dataclass
class Conversion:
    """A converted model plus what the output folder needs to describe it."""

    model: HfViTModel | HfViTForImageClassification | HfViTForMaskedImageModeling
    source: str  # short, for the card's first line
    details: str  # the card's "Source" section
    image_mean: tuple = IMAGENET_MEAN
    image_std: tuple = IMAGENET_STD
    resample: int = 3  # PIL bicubic (timm, DINO); Google's models use bilinear (2)
    reference: Callable[[], Callable[[torch.Tensor], dict]] | None = None  # builds the source library's forward
    reference_name: str = ""
    notes: list[str] = field(default_factory=list)
    # the source's own preprocessing, when it is more than resize + normalise: a transformers image processor
    # (written instead of the ViTImageProcessor built from the fields above)
    image_processor: object | None = None
    # the source's licence: set by `read_source_license` for every conversion (a converter that knows its format's
    # licence may set it first); None or License() is unknown, and the card says so instead of guessing
    license: License | None = None


def read_source_license(path) -> License:
    """The licence a source checkpoint states: its card's metadata (`README.md` next to the weights: `license`, or
    `other` with `license_name`/`license_link`), else timm's `pretrained_cfg` licence in its config.json; `License()`
    (unknown) when it states none. `path` is the source folder (a file: nothing is read, a bare file states no
    licence)."""
    path = Path(path)
    if not path.is_dir():
        return License()
    stated = license_from_metadata(read_card_metadata(path / "README.md"))
    if stated.known:
        return stated
    try:
        pretrained_cfg = read_json_object(path / "config.json").get("pretrained_cfg")
    except (OSError, ValueError):
        pretrained_cfg = None
    if isinstance(pretrained_cfg, dict):
        return license_from_metadata({"license": pretrained_cfg.get("license")})
    return License()


def with_source_license(conversion: Conversion, path) -> Conversion:
    """`conversion` with the licence its source folder states (`read_source_license`), unless its converter set one."""
    if conversion.license is None or not conversion.license.known:
        conversion.license = read_source_license(path)
    return conversion


def _timm_forward(model: nn.Module, has_head: bool) -> Callable[[torch.Tensor], dict]:
    def forward(x):
        if has_head:
            return {"logits": model(x)}
        return {"last_hidden_state": model.forward_features(x), "pooler_output": model(x)}

    return forward


def _transformers_forward(source: nn.Module, **call_kwargs) -> Callable[[torch.Tensor], dict]:
    """A transformers vision model as a verification reference: its last hidden state and pooled output."""

    def forward(x):
        out = source(x, **call_kwargs)
        return {"last_hidden_state": out.last_hidden_state, "pooler_output": out.pooler_output}

    return forward


def _source_processor(path: Path):
    """The folder's own image processor (its preprocessor_config.json), or None."""
    if not (path / "preprocessor_config.json").is_file():
        return None
    return load_image_processor(path)  # transformers' own class: an auto_map in the file is never carried over


class VerificationError(ValueError):
    """The converted model's outputs differ from the source library's beyond the tolerance: the conversion is wrong
    (a failure of the run, not of the user's inputs)."""


# ---------------------------------------------------------------------------------------------------------------
# Verification against the source library, and the output folder
# ---------------------------------------------------------------------------------------------------------------
def random_batch(config: HfViTConfig, batch_size: int = 2, seed: int = 0) -> torch.Tensor:
    height, width = image_size_pair(config.image_size)
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch_size, config.num_channels, height, width, generator=generator)


def _masked_image_modeling_outputs(model, x) -> dict[str, torch.Tensor]:
    """Loss and reconstruction of a masked-image-modeling model (hf_vit's or transformers') on `x` with a fixed mask:
    every other patch, in a checkerboard over the patch grid, so the mask token and the loss are compared too."""
    patch = model.config.patch_size
    patch = patch if isinstance(patch, int) else patch[0]
    rows, columns = x.shape[-2] // patch, x.shape[-1] // patch
    checkerboard = (torch.arange(rows)[:, None] + torch.arange(columns)[None, :]) % 2 == 0
    out = model(x, bool_masked_pos=checkerboard.reshape(1, -1).expand(x.shape[0], -1))
    return {"reconstruction": out.reconstruction, "loss": out.loss}


def _outputs(model, x) -> dict[str, torch.Tensor]:
    if isinstance(model, HfViTForMaskedImageModeling):
        return _masked_image_modeling_outputs(model, x)
    if isinstance(model, HfViTForImageClassification):
        return {"logits": model(x).logits}
    out = model(x)
    return {"last_hidden_state": out.last_hidden_state, "pooler_output": out.pooler_output}


def max_abs_diff(model, reference_forward: Callable[[torch.Tensor], dict], x: torch.Tensor | None = None) -> float:
    """Max |ours - theirs| over the outputs both produce, on one random batch at the native size (fp32)."""
    x = random_batch(model.config) if x is None else x
    with torch.no_grad():
        ours = _outputs(model.eval(), x)
        theirs = reference_forward(x)
    common = [name for name in theirs if name in ours]
    if not common:
        raise RuntimeError(f"nothing to compare: the reference gives {sorted(theirs)}, hf_vit {sorted(ours)}")
    return max((ours[name] - theirs[name]).abs().max().item() for name in common)


def verify_conversion(conversion: Conversion, tolerance: float = VERIFY_TOLERANCE) -> float:
    if conversion.reference is None:
        raise ValueError("`verify`: no reference implementation for this source")
    try:
        forward = conversion.reference()
    except ImportError as error:
        raise ValueError(f"`verify` needs the source library installed ({error.name or error})") from None
    diff = max_abs_diff(conversion.model, forward)
    if not diff <= tolerance:
        raise VerificationError(
            f"verification failed: max-abs-diff {diff:.3g} against {conversion.reference_name} exceeds {tolerance:g}"
        )
    return diff


def write_hf_vit_folder(
    conversion: Conversion,
    output_dir,
    overwrite: bool = False,
    max_abs_diff: float | None = None,
    base_model: str | None = None,
    model_name: str | None = None,
    commit: str | None = None,
    command: str | None = None,
) -> Path:
    """config.json (with auto_map), model.safetensors, the code files, preprocessor_config.json and a model card
    (`base_model`: the source's Hub repo id at `commit`, linked in the card's metadata; the source's licence,
    `conversion.license`; `command`: what converted it); atomically (nothing is left in `output_dir` if any step
    fails)."""
    from transformers import ViTImageProcessor

    model = conversion.model
    height, width = image_size_pair(model.config.image_size)
    details = conversion.details
    if max_abs_diff is not None:
        details += (
            f" Verified against {conversion.reference_name}: max-abs-diff {max_abs_diff:.2e} "
            f"(fp32, random batch at {height}×{width})."
        )
    output_dir = Path(output_dir)
    with atomic_directory(output_dir, overwrite=overwrite) as staging:
        processor = conversion.image_processor or ViTImageProcessor(
            do_resize=True,
            size={"height": height, "width": width},
            resample=conversion.resample,
            image_mean=list(conversion.image_mean),
            image_std=list(conversion.image_std),
        )
        processor.save_pretrained(staging)  # first: the model then writes no default one of its own
        model.save_pretrained(staging)
        card = render_model_card(
            model.config,
            num_parameters=count_parameters(model),
            model_name=model_name or output_dir.name,
            source=conversion.source,
            source_details=details,
            license=conversion.license or License(),
            lineage=Lineage(base_model=base_model, commit=commit, license=conversion.license or License()),
            command=command,
        )
        write_model_card(staging, card)
    return output_dir


# ---------------------------------------------------------------------------------------------------------------
# Export: hf_vit -> timm, hf_vit -> transformers
# ---------------------------------------------------------------------------------------------------------------
def load_hf_vit_folder(path) -> HfViTModel | HfViTForImageClassification | HfViTForMaskedImageModeling:
    """An hf_vit folder (safetensors, or legacy weights_only pickles) as a model; no remote code is run."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model folder {path} does not exist")
    if not path.is_dir() or not (path / "config.json").is_file():
        raise ValueError(f"expected an hf_vit folder with config.json and weights; {path} is not one")
    model_type = read_json_object(path / "config.json").get("model_type")
    if model_type != HfViTConfig.model_type:
        raise ValueError(f"{path / 'config.json'} has model_type {model_type!r}, not 'hf_vit'")
    config = HfViTConfig.from_pretrained(path)
    state_dict = strip_wrapper_prefixes(load_weights(path))
    if not any(key.startswith("vit.") for key in state_dict):  # a bare HfViTModel's names
        state_dict = {f"vit.{key}": value for key, value in state_dict.items()}
    return _build(config, state_dict)


def _classification_names(model) -> dict[str, torch.Tensor]:
    """The model's weights in classification naming, for export: the mask token (only used for masked-image
    modelling, never in an ordinary forward) is left out, as timm's and transformers' ViTs have none."""
    state_dict = model.state_dict()
    if isinstance(model, HfViTModel):
        state_dict = {f"vit.{key}": value for key, value in state_dict.items()}
    return {key: value for key, value in state_dict.items() if key != "vit.embeddings.mask_token"}
