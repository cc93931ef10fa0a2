"""hf_vit -> timm and transformers folders, and safetensors export of hf_vit weights."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoint_io import (
    SAFE_WEIGHTS_INDEX_NAME,
    load_weights,
    save_safetensors_checked,
    strip_wrapper_prefixes,
)
from ..configuration_hf_vit import HfViTConfig, image_size_pair
from ..fileio import atomic_directory, check_links_inside, read_json_object
from ..model_card import (
    BASE_MODEL_RELATIONS,
    Lineage,
    base_model_from_metadata,
    read_card_metadata,
    render_export_card,
    render_model_card,
    write_model_card,
)
from ..modeling_hf_vit import HfViTForImageClassification, HfViTForMaskedImageModeling, HfViTModel
from ..output_dir import check_output_dir
from .core import (
    EXPORT_TARGETS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    VERIFY_TOLERANCE,
    VerificationError,
    _check_fits,
    _classification_names,
    _name_rule,
    _rename,
    _require,
    _timm_forward,
    load_hf_vit_folder,
    max_abs_diff,
    read_source_license,
)
from .timm import _TIMM_HF_VIT_NAMES
from .transformers_vit import transformers_state_dict_to_hf_vit

HF_VIT_TO_TIMM = [_name_rule(ours, timm) for timm, ours in _TIMM_HF_VIT_NAMES]


# timm architecture names for the standard shapes: (patch, width, depth, heads, mlp) -> name stem
_TIMM_NAMES = {
    (16, 192, 12, 3, 768): "vit_tiny_patch16",
    (16, 384, 12, 6, 1536): "vit_small_patch16",
    (16, 768, 12, 12, 3072): "vit_base_patch16",
    (32, 768, 12, 12, 3072): "vit_base_patch32",
    (16, 1024, 24, 16, 4096): "vit_large_patch16",
    (14, 1280, 32, 16, 5120): "vit_huge_patch14",
    (8, 384, 12, 6, 1536): "vit_small_patch8",
    (8, 768, 12, 12, 3072): "vit_base_patch8",
}


def hf_vit_to_timm(model) -> tuple[dict[str, torch.Tensor], str, dict]:
    """(timm state dict, timm architecture name, timm model_args) of an hf_vit model; refuses what timm's
    VisionTransformer cannot express."""
    return _timm_layout(model.config, _classification_names(model))


def _timm_layout(config, weights: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str, dict]:
    """`hf_vit_to_timm` of weights in hf_vit's classification naming: renamed, never copied."""
    problems = []
    if config.mlp_type != "mlp":
        problems.append(f"mlp_type {config.mlp_type!r} (the export writes timm's plain GELU MLP)")
    elif config.hidden_act != "gelu":
        problems.append(f"hidden_act {config.hidden_act!r} (timm's VisionTransformer here is built with exact GELU)")
    if config.layer_norm_eps != 1e-6:
        problems.append(
            f"layer_norm_eps {config.layer_norm_eps:g} (timm's VisionTransformer fixes LayerNorm eps at 1e-6)"
        )
    if config.num_register_tokens and config.cls_position_embedding:
        problems.append(
            "register tokens while [CLS] has a position embedding (timm gives registers positions then too)"
        )
    problems.extend(_position_problems(config, "timm's VisionTransformer"))
    if config.patch_embedding_bias == config.pre_norm:
        problems.append(
            "a patch projection " + ("with" if config.pre_norm else "without") + " bias (timm's has one "
            "exactly when there is no pre-norm)"
        )
    if config.distillation_token:
        problems.append("a distillation token (timm's distilled ViTs are another class, VisionTransformerDistilled)")
    if problems:
        raise ValueError("cannot export to timm: " + "; ".join(problems))
    fc_norm = config.final_norm_place == "pooled"  # timm's fc_norm normalises the pooled feature, its norm the tokens
    rules = HF_VIT_TO_TIMM + [(r"^vit\.layernorm\.", "fc_norm." if fc_norm else "norm.")]
    state_dict = _rename(weights, rules, "hf_vit")
    height, width = image_size_pair(config.image_size)
    model_args = dict(
        img_size=height if height == width else [height, width],
        patch_size=config.patch_size,
        in_chans=config.num_channels,
        embed_dim=config.hidden_size,
        depth=config.num_hidden_layers,
        num_heads=config.num_attention_heads,
        mlp_ratio=config.intermediate_size / config.hidden_size,
        qkv_bias=config.qkv_bias,
        init_values=config.layerscale_init,
        class_token=config.class_token,
        no_embed_class=not config.cls_position_embedding,
        reg_tokens=config.num_register_tokens,
        global_pool={"cls": "token", "mean": "avg", "map": "map"}[config.pooling],
        fc_norm=fc_norm,
        dynamic_img_size=True,
    )
    if config.pre_norm:
        model_args["pre_norm"] = True
    if config.qk_norm:
        model_args["qk_norm"] = True
    stem = _TIMM_NAMES.get(
        (
            config.patch_size,
            config.hidden_size,
            config.num_hidden_layers,
            config.num_attention_heads,
            config.intermediate_size,
        ),
        "vit_base_patch16",
    )
    architecture = f"{stem}_{height}" if f"{stem}_{height}" in _known_timm_names() else "vit_base_patch16_224"
    return state_dict, architecture, model_args


def _position_problems(config, target: str) -> list[str]:
    """What `target` (a model with a learned position table only) cannot take of hf_vit's position encodings."""
    problems = []
    if config.rope_type is not None:
        problems.append(f"rotary position encoding (rope_type {config.rope_type!r}; {target} has none)")
    if not config.absolute_position_embeddings:
        problems.append(f"no learned position table ({target} needs one)")
    return problems


def _known_timm_names() -> set[str]:
    try:
        import timm

        return set(timm.list_models("vit_*"))
    except ImportError:
        return {f"{stem}_224" for stem in _TIMM_NAMES.values()}


def _transformers_layout(config, weights: dict[str, torch.Tensor], classifier: bool):
    """(transformers ViT config, its model class name, state dict under the names transformers writes on disk) for
    weights in hf_vit's classification naming: renamed, and qkv split into views of q, k and v, never copied.
    Refuses what transformers' ViT cannot express."""
    from transformers import ViTConfig, ViTForImageClassification, ViTModel
    from transformers.core_model_loading import revert_weight_conversion

    problems = []
    if config.num_register_tokens:
        problems.append(f"{config.num_register_tokens} register tokens (transformers' ViT has none)")
    problems.extend(_position_problems(config, "transformers' ViT"))
    if config.qk_norm:
        problems.append("query/key normalisation (transformers' ViT has none)")
    if config.layerscale_init is not None:
        problems.append("LayerScale (transformers' ViT has none)")
    if config.pooling != "cls":
        problems.append(f"{config.pooling} pooling (transformers' ViT pools the [CLS] token)")
    if config.final_norm_place != "tokens":
        problems.append("the final norm on the pooled feature only (transformers' ViT norms every token)")
    if config.distillation_token:
        problems.append("a distillation token (transformers' ViT has none)")
    if config.mlp_type != "mlp":
        problems.append(f"mlp_type {config.mlp_type!r} (transformers' ViT has a plain MLP)")
    if config.pre_norm:
        problems.append("a pre-norm before the blocks (transformers' ViT has none)")
    if not config.patch_embedding_bias:
        problems.append("a patch projection without bias (transformers' ViT has one)")
    if not config.cls_position_embedding:
        problems.append("no position embedding for [CLS] (transformers' ViT always has one)")
    if problems:
        raise ValueError("cannot export to transformers: " + "; ".join(problems))
    vit_config = ViTConfig(
        image_size=config.image_size,
        patch_size=config.patch_size,
        num_channels=config.num_channels,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size,
        hidden_act=config.hidden_act,
        hidden_dropout_prob=config.hidden_dropout_prob,
        attention_probs_dropout_prob=config.attention_probs_dropout_prob,
        layer_norm_eps=config.layer_norm_eps,
        qkv_bias=config.qkv_bias,
        initializer_range=config.initializer_range,
        id2label=dict(config.id2label),
        label2id=dict(config.label2id),
        problem_type=config.problem_type,
    )
    with torch.device("meta"):  # names and shapes only: no memory for the weights
        target = ViTForImageClassification(vit_config) if classifier else ViTModel(vit_config, add_pooling_layer=False)
    prefix = "vit." if classifier else ""
    state_dict = {}
    hidden = config.hidden_size
    for key, tensor in weights.items():
        match = re.match(r"^vit\.encoder\.layers\.(\d+)\.(.*)$", key)
        if match:
            layer, rest = match.groups()
            out = f"{prefix}layers.{layer}."
            if rest.startswith("attention.qkv."):
                kind = rest.rsplit(".", 1)[1]
                for name, part in zip(("q", "k", "v"), tensor.split(hidden), strict=True):
                    state_dict[f"{out}attention.{name}_proj.{kind}"] = part
                continue
            rest = (
                rest.replace("norm1.", "layernorm_before.")
                .replace("norm2.", "layernorm_after.")
                .replace("attention.proj.", "attention.o_proj.")
            )
            state_dict[out + rest] = tensor
        elif key.startswith("vit."):
            state_dict[prefix + key[len("vit.") :]] = tensor
        else:
            state_dict[key] = tensor
    _check_fits(state_dict, target.state_dict(), "transformers' ViT")
    # the names transformers' save_pretrained writes (its v4 names, for older readers): transformers' own mapping
    on_disk = revert_weight_conversion(target, state_dict)
    vit_config.architectures = [type(target).__name__]
    dtypes = {tensor.dtype for tensor in state_dict.values()}
    if len(dtypes) == 1:
        vit_config.dtype = dtypes.pop()
    return vit_config, type(target).__name__, on_disk


def _exported_model(model):
    """(model, notes): a masked-image-modeling model is exported as its encoder (what the pretraining is for)."""
    if isinstance(model, HfViTForMaskedImageModeling):
        return model.vit, ["the masked-image-modeling decoder is left out: the encoder is exported as a backbone"]
    return model, []


@dataclass
class _ExportSource:
    """An hf_vit folder's config and weights for an export: the weights memory-mapped, in hf_vit's classification
    naming, without the mask token and a masked-image-modeling decoder (neither is part of the exported model)."""

    config: HfViTConfig
    weights: dict[str, torch.Tensor]
    classifier: bool
    notes: list[str]


def _check_hf_vit_folder(path) -> Path:
    """`path` as a Path, once it is known to be a folder with an hf_vit config.json."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model folder {path} does not exist")
    if not path.is_dir() or not (path / "config.json").is_file():
        raise ValueError(f"expected an hf_vit folder with config.json and weights; {path} is not one")
    model_type = read_json_object(path / "config.json").get("model_type")
    if model_type != HfViTConfig.model_type:
        raise ValueError(f"{path / 'config.json'} has model_type {model_type!r}, not 'hf_vit'")
    return path


def _read_export_source(hf_vit_folder) -> _ExportSource:
    """The folder's weights read lazily (safetensors memory-mapped; a tensor's pages are read when it is written), and
    checked against the hf_vit model its config describes (built on the meta device, names and shapes only): an
    export never holds a copy of the weights."""
    path = _check_hf_vit_folder(hf_vit_folder)
    config = HfViTConfig.from_pretrained(path)
    weights = strip_wrapper_prefixes(load_weights(path, mmap=True))
    if not any(key.startswith("vit.") for key in weights):  # a bare HfViTModel's names
        weights = {f"vit.{key}": value for key, value in weights.items()}
    if "decoder.0.weight" in weights:
        model_class = HfViTForMaskedImageModeling
    else:
        model_class = HfViTForImageClassification if "classifier.weight" in weights else HfViTModel
    with torch.device("meta"):
        model = model_class(config)
    expected = model.state_dict()
    if model_class is HfViTModel:
        expected = {f"vit.{key}": value for key, value in expected.items()}
    _check_fits(weights, expected, f"the hf_vit model of {path / 'config.json'}")
    _, notes = _exported_model(model)
    weights = {
        key: value
        for key, value in weights.items()
        if key != "vit.embeddings.mask_token" and not key.startswith("decoder.")
    }
    return _ExportSource(config, weights, model_class is HfViTForImageClassification, notes)


def _card_lineage(folder) -> Lineage:
    """The licence, base model and relation that an hf_vit folder's card states: what its weights carry into another
    format (unknown licence, no base model for a folder without a card)."""
    metadata = read_card_metadata(Path(folder) / "README.md")
    relation = metadata.get("base_model_relation")
    return Lineage(
        base_model=base_model_from_metadata(metadata, Path(folder) / "README.md"),
        license=read_source_license(folder),
        relation=relation if relation in BASE_MODEL_RELATIONS else None,
    )


def _write_export_card(
    staging: Path, hf_vit_folder, lineage: Lineage, library: str, load: str, classifier: bool, notes
) -> None:
    """README.md for an export: the hf_vit folder's licence and base model (the same weights), and how to load it."""
    card = render_export_card(
        library,
        load=load,
        source=str(hf_vit_folder),
        license=lineage.license,
        base_model=lineage.base_model,
        base_model_relation=lineage.relation,
        pipeline_tag="image-classification" if classifier else "image-feature-extraction",
        notes=notes,
    )
    write_model_card(staging, card)


def export_to_timm(
    hf_vit_folder,
    output_dir,
    verify: bool = False,
    overwrite: bool = False,
    tolerance: float = VERIFY_TOLERANCE,
    max_shard_size: int | str | None = None,
) -> dict:
    """hf_vit folder -> timm folder: model.safetensors (timm names; shards of at most `max_shard_size` + index above
    it, default transformers' `save_pretrained` default) + timm's config.json (architecture, model_args,
    pretrained_cfg with the hf_vit card's licence), loadable with `timm.create_model("local-dir:DIR", pretrained=True)`
    when unsharded, and a README.md model card carrying the hf_vit folder's licence and base model. The weights keep
    their dtype and are streamed from the memory-mapped source into the output, about 1x their size in memory."""
    check_output_dir(output_dir, inputs={"checkpoint": hf_vit_folder}, overwrite=overwrite)
    source = _read_export_source(hf_vit_folder)
    config, notes = source.config, source.notes
    state_dict, architecture, model_args = _timm_layout(config, source.weights)
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    processor_file = Path(hf_vit_folder) / "preprocessor_config.json"
    if processor_file.is_file():
        processor = read_json_object(processor_file)
        mean, std = processor.get("image_mean", mean), processor.get("image_std", std)
    height, width = image_size_pair(config.image_size)
    num_classes = state_dict["head.weight"].shape[0] if "head.weight" in state_dict else 0
    timm_config = {
        "architecture": architecture,
        "num_classes": num_classes,
        "num_features": config.hidden_size,
        "global_pool": model_args["global_pool"],
        "model_args": model_args,
        "pretrained_cfg": {
            "tag": "hf_vit",
            "custom_load": False,
            "input_size": [config.num_channels, height, width],
            "fixed_input_size": False,
            "interpolation": "bicubic",
            "crop_pct": 1.0,
            "crop_mode": "center",
            "mean": list(mean),
            "std": list(std),
            "num_classes": num_classes,
            "pool_size": None,
            "first_conv": "patch_embed.proj",
            "classifier": "head",
        },
    }
    if num_classes and config.id2label and len(config.id2label) == num_classes:
        timm_config["label_names"] = [config.id2label[i] for i in range(num_classes)]
    lineage = _card_lineage(hf_vit_folder)
    if lineage.license.known and lineage.license.id != "other":  # timm's own field; "other" and its name: the card
        timm_config["pretrained_cfg"]["license"] = lineage.license.id
    if not config.interpolate_antialias:
        notes.append(
            "timm resizes position embeddings with antialiasing and this model without: outputs are identical "
            "at the native size and differ slightly at other sizes"
        )
    diff = None
    with atomic_directory(output_dir, overwrite=overwrite) as staging:
        files = save_safetensors_checked(state_dict, staging, max_shard_size=max_shard_size)
        sharded = any(file.name == SAFE_WEIGHTS_INDEX_NAME for file in files)
        if sharded:
            notes.append(
                "the weights are sharded: timm's create_model(pretrained=True) reads one model.safetensors, so "
                "build the model with timm.create_model(architecture, **model_args) from config.json and load the "
                "shards with huggingface_hub.load_torch_model(model, folder)"
            )
        (staging / "config.json").write_text(json.dumps(timm_config, indent=2) + "\n")
        load = (
            'import timm\n\n# this folder; once pushed to the Hub: "hf-hub:USER/REPO"\n'
            f'model = timm.create_model("local-dir:{Path(output_dir)}", pretrained=True)'
        )
        _write_export_card(staging, hf_vit_folder, lineage, "timm", load, num_classes > 0, notes)
        if verify:
            timm = _require("timm", "`verify`")
            model, _ = _exported_model(load_hf_vit_folder(hf_vit_folder))
            if sharded:
                from huggingface_hub import load_torch_model

                reference = timm.create_model(architecture, pretrained=False, num_classes=num_classes, **model_args)
                load_torch_model(reference, staging, strict=True)
            else:
                reference = timm.create_model(f"local-dir:{staging}", pretrained=True)
            diff = max_abs_diff(model.float(), _timm_forward(reference.float().eval(), num_classes > 0))
            if not diff <= tolerance:
                raise VerificationError(
                    f"verification failed: max-abs-diff {diff:.3g} against timm exceeds {tolerance:g}"
                )
    return {"output_dir": Path(output_dir), "max_abs_diff": diff, "architecture": architecture, "notes": notes}


def export_to_transformers(
    hf_vit_folder,
    output_dir,
    verify: bool = False,
    overwrite: bool = False,
    tolerance: float = VERIFY_TOLERANCE,
    max_shard_size: int | str | None = None,
) -> dict:
    """hf_vit folder -> transformers `ViTForImageClassification` (or `ViTModel`) folder: safetensors under the names
    transformers' `save_pretrained` writes (shards of at most `max_shard_size` + index above it, default
    transformers'), with a README.md model card carrying the hf_vit folder's licence and base model. The weights keep
    their dtype and are streamed from the memory-mapped source (qkv split into views of q, k and v), about 1x their
    size in memory."""
    check_output_dir(output_dir, inputs={"checkpoint": hf_vit_folder}, overwrite=overwrite)
    source = _read_export_source(hf_vit_folder)
    config, notes, classifier = source.config, source.notes, source.classifier
    vit_config, cls, state_dict = _transformers_layout(config, source.weights, classifier)
    # transformers' names on disk map back onto exactly hf_vit's (names and shapes only: meta tensors, nothing read)
    back = transformers_state_dict_to_hf_vit({key: value.to("meta") for key, value in state_dict.items()})
    if {key: tuple(value.shape) for key, value in back.items()} != {
        key: tuple(value.shape) for key, value in source.weights.items()
    }:
        raise RuntimeError("the transformers names written do not map back onto the hf_vit weights")
    if config.interpolate_antialias:
        notes.append(
            "transformers resizes position embeddings without antialiasing and this model with: outputs are "
            "identical at the native size and differ slightly at other sizes"
        )
    if not classifier:
        notes.append(
            "ViTModel is saved without its tanh pooler (hf_vit has none); load it with add_pooling_layer=False"
        )
    diff = None
    with atomic_directory(output_dir, overwrite=overwrite) as staging:
        vit_config.save_pretrained(staging)
        save_safetensors_checked(state_dict, staging, max_shard_size=max_shard_size)
        processor_file = Path(hf_vit_folder) / "preprocessor_config.json"
        if processor_file.is_file():
            (staging / "preprocessor_config.json").write_text(processor_file.read_text())
        extra = "" if classifier else ", add_pooling_layer=False"
        load = (
            f"from transformers import {cls}\n\n# this folder, or its Hub repo id once pushed\n"
            f'model = {cls}.from_pretrained("{Path(output_dir)}"{extra})'
        )
        _write_export_card(
            staging, hf_vit_folder, _card_lineage(hf_vit_folder), "transformers", load, classifier, notes
        )
        if verify:
            from transformers import ViTForImageClassification, ViTModel

            model, _ = _exported_model(load_hf_vit_folder(hf_vit_folder))
            if classifier:
                reloaded = ViTForImageClassification.from_pretrained(staging, dtype=torch.float32).eval()
                forward = lambda x: {"logits": reloaded(x).logits}  # noqa: E731
            else:
                reloaded = ViTModel.from_pretrained(staging, add_pooling_layer=False, dtype=torch.float32).eval()
                forward = lambda x: {"last_hidden_state": reloaded(x).last_hidden_state}  # noqa: E731
            diff = max_abs_diff(model.float(), forward)
            if not diff <= tolerance:
                raise VerificationError(
                    f"verification failed: max-abs-diff {diff:.3g} against transformers exceeds {tolerance:g}"
                )
    return {"output_dir": Path(output_dir), "max_abs_diff": diff, "notes": notes}


def export_checkpoint(target: str, hf_vit_folder, output_dir, **kwargs) -> dict:
    if target == "timm":
        return export_to_timm(hf_vit_folder, output_dir, **kwargs)
    if target == "transformers":
        return export_to_transformers(hf_vit_folder, output_dir, **kwargs)
    raise ValueError(f"unknown export target {target!r}; choose one of {', '.join(EXPORT_TARGETS)}")


# ---------------------------------------------------------------------------------------------------------------
# safetensors export of hf_vit weights (Accelerate save_state folders, .bin/.pt state dicts, legacy folders)
# ---------------------------------------------------------------------------------------------------------------
def _accelerate_weights(folder: Path, model_index: int) -> Path | None:
    names = (
        ("model.safetensors", "pytorch_model.bin")
        if model_index == 0
        else (f"model_{model_index}.safetensors", f"pytorch_model_{model_index}.bin")
    )
    for name in names:
        if (folder / name).is_file():
            return folder / name
    return None


def export_safetensors(
    source,
    output_dir,
    config=None,
    max_shard_size: int | str | None = None,
    model_index: int = 0,
    overwrite: bool = False,
) -> dict:
    """hf_vit weights from an Accelerate `save_state` folder, a `.bin`/`.pt` state dict or an hf_vit folder with legacy
    weights -> `output_dir` with config.json (+ code files, preprocessor_config.json if found) and model.safetensors
    (sharded with an index above `max_shard_size`, default transformers' `save_pretrained` default), metadata
    {"format": "pt"}, and a model card with the licence and
    base model that the config folder's card states; every tensor is re-read and compared bitwise before success is
    reported. The source is memory-mapped (safetensors, zip-format pickles) and written as it is: about 1x the
    weights in memory."""
    check_output_dir(output_dir, inputs={"weights": source, "config": config}, overwrite=overwrite)
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"{source} does not exist")
    check_links_inside(source) if source.is_dir() else check_links_inside(source.parent, [source.name])
    if source.is_dir():
        is_accelerate = any(source.glob("random_states_*.pkl")) or (source / "optimizer.bin").is_file()
        if is_accelerate:
            weights_file = _accelerate_weights(source, model_index)
            if weights_file is None:
                raise ValueError(
                    f"{source} (an Accelerate save_state folder) has no weights for model {model_index} "
                    "(model.safetensors / pytorch_model.bin; FSDP sharded states are not supported)"
                )
            state_dict = load_weights(weights_file, mmap=True)
        else:
            state_dict = load_weights(source, mmap=True)
    else:
        state_dict = load_weights(source, mmap=True)
    state_dict = strip_wrapper_prefixes(state_dict)
    config_path = Path(config) if config is not None else (source if source.is_dir() else source.parent)
    if config_path.is_dir():
        config_path = config_path / "config.json"
    if not config_path.is_file():
        raise ValueError(
            f"no config.json for these weights at {config_path}; pass `config` (an hf_vit config.json or folder)"
        )
    read = (config_path.name, "preprocessor_config.json", "README.md")
    check_links_inside(config_path.parent, [name for name in read if (config_path.parent / name).exists()])
    model_type = read_json_object(config_path).get("model_type")
    if model_type != HfViTConfig.model_type:
        raise ValueError(f"{config_path} has model_type {model_type!r}; export_safetensors handles hf_vit checkpoints")
    hf_config = HfViTConfig.from_json_file(str(config_path))
    if "decoder.0.weight" in state_dict:
        model_class = HfViTForMaskedImageModeling
    elif any(key.startswith(("vit.", "classifier.")) for key in state_dict):
        model_class = HfViTForImageClassification
    else:
        model_class = HfViTModel
    with torch.device("meta"):  # names and shapes only: the weights are written from the memory-mapped source
        model = model_class(hf_config)
    _check_fits(state_dict, model.state_dict(), f"the hf_vit model of {config_path}")
    with atomic_directory(output_dir, overwrite=overwrite) as staging:
        model.config.save_pretrained(staging)  # writes config.json and copies configuration_hf_vit.py
        _copy_code_files(model, staging)
        files = save_safetensors_checked(state_dict, staging, max_shard_size=max_shard_size)
        processor_file = config_path.parent / "preprocessor_config.json"
        if processor_file.is_file():
            (staging / "preprocessor_config.json").write_text(processor_file.read_text())
        lineage = _card_lineage(config_path.parent)  # the run's (or model's) card: its licence and base model
        card = render_model_card(
            model.config,
            num_parameters=sum(p.numel() for p in model.parameters()),
            model_name=Path(output_dir).name,
            license=lineage.license,
            lineage=lineage,
            source=f"`{source}`",
            source_details=f"Weights of `{source}` written as safetensors by hf_vit (`hf-vit-export`), with the "
            f"configuration in `{config_path.parent}`; the licence and base model are those its card states.",
        )
        write_model_card(staging, card)
    return {"output_dir": Path(output_dir), "files": [f.name for f in files], "num_tensors": len(state_dict)}


def _copy_code_files(model, folder: Path) -> None:
    """auto_map + the two code files, as save_pretrained writes them, so trust_remote_code loading works."""
    import shutil

    from .. import configuration_hf_vit, modeling_hf_vit

    for module in (configuration_hf_vit, modeling_hf_vit):
        shutil.copy(module.__file__, folder / Path(module.__file__).name)
    config_file = folder / "config.json"
    config = json.loads(config_file.read_text())
    config["auto_map"] = dict(modeling_hf_vit.AUTO_MAP)
    config["architectures"] = [type(model).__name__]
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
