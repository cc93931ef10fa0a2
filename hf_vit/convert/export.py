"""hf_vit -> timm and transformers folders, and safetensors export of hf_vit weights."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from ..checkpoint_io import (
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
    config = model.config
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
    state_dict = _rename(_classification_names(model), rules, "hf_vit")
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


def _hf_vit_to_transformers_model(model):
    from transformers import ViTConfig, ViTForImageClassification, ViTModel

    config = model.config
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
    has_head = isinstance(model, HfViTForImageClassification)
    target = ViTForImageClassification(vit_config) if has_head else ViTModel(vit_config, add_pooling_layer=False)
    prefix = "vit." if has_head else ""
    state_dict = {}
    hidden = config.hidden_size
    for key, tensor in _classification_names(model).items():
        match = re.match(r"^vit\.encoder\.layers\.(\d+)\.(.*)$", key)
        if match:
            layer, rest = match.groups()
            out = f"{prefix}layers.{layer}."
            if rest.startswith("attention.qkv."):
                kind = rest.rsplit(".", 1)[1]
                for name, part in zip(("q", "k", "v"), tensor.split(hidden), strict=True):
                    state_dict[f"{out}attention.{name}_proj.{kind}"] = part.clone()
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
    target.load_state_dict(state_dict, strict=True)
    return target.eval()


def _exported_model(model):
    """(model, notes): a masked-image-modeling model is exported as its encoder (what the pretraining is for)."""
    if isinstance(model, HfViTForMaskedImageModeling):
        return model.vit, ["the masked-image-modeling decoder is left out: the encoder is exported as a backbone"]
    return model, []


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
    hf_vit_folder, output_dir, verify: bool = False, overwrite: bool = False, tolerance: float = VERIFY_TOLERANCE
) -> dict:
    """hf_vit folder -> timm folder: model.safetensors (timm names) + timm's config.json (architecture, model_args,
    pretrained_cfg with the hf_vit card's licence), loadable with `timm.create_model("local-dir:DIR", pretrained=True)`,
    and a README.md model card carrying the hf_vit folder's licence and base model."""
    check_output_dir(output_dir, inputs={"checkpoint": hf_vit_folder}, overwrite=overwrite)
    model, notes = _exported_model(load_hf_vit_folder(hf_vit_folder))
    state_dict, architecture, model_args = hf_vit_to_timm(model)
    config = model.config
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
        save_safetensors_checked(state_dict, staging)
        (staging / "config.json").write_text(json.dumps(timm_config, indent=2) + "\n")
        load = (
            'import timm\n\n# this folder; once pushed to the Hub: "hf-hub:USER/REPO"\n'
            f'model = timm.create_model("local-dir:{Path(output_dir)}", pretrained=True)'
        )
        _write_export_card(staging, hf_vit_folder, lineage, "timm", load, num_classes > 0, notes)
        if verify:
            timm = _require("timm", "`verify`")
            source = timm.create_model(f"local-dir:{staging}", pretrained=True).eval()
            diff = max_abs_diff(model, _timm_forward(source, num_classes > 0))
            if not diff <= tolerance:
                raise VerificationError(
                    f"verification failed: max-abs-diff {diff:.3g} against timm exceeds {tolerance:g}"
                )
    return {"output_dir": Path(output_dir), "max_abs_diff": diff, "architecture": architecture, "notes": notes}


def export_to_transformers(
    hf_vit_folder, output_dir, verify: bool = False, overwrite: bool = False, tolerance: float = VERIFY_TOLERANCE
) -> dict:
    """hf_vit folder -> transformers `ViTForImageClassification` (or `ViTModel`) folder, safetensors, with a README.md
    model card carrying the hf_vit folder's licence and base model."""
    check_output_dir(output_dir, inputs={"checkpoint": hf_vit_folder}, overwrite=overwrite)
    model, notes = _exported_model(load_hf_vit_folder(hf_vit_folder))
    target = _hf_vit_to_transformers_model(model)
    if model.config.interpolate_antialias:
        notes.append(
            "transformers resizes position embeddings without antialiasing and this model with: outputs are "
            "identical at the native size and differ slightly at other sizes"
        )
    if not isinstance(model, HfViTForImageClassification):
        notes.append(
            "ViTModel is saved without its tanh pooler (hf_vit has none); load it with add_pooling_layer=False"
        )
    diff = None
    with atomic_directory(output_dir, overwrite=overwrite) as staging:
        target.save_pretrained(staging)  # transformers writes its v4 names on disk, for older readers
        written = transformers_state_dict_to_hf_vit(load_weights(staging))
        ours = _classification_names(model)
        if written.keys() != ours.keys() or not all(torch.equal(written[k], ours[k]) for k in ours):
            raise RuntimeError("the written transformers weights differ from the hf_vit weights")
        processor_file = Path(hf_vit_folder) / "preprocessor_config.json"
        if processor_file.is_file():
            (staging / "preprocessor_config.json").write_text(processor_file.read_text())
        classifier = isinstance(model, HfViTForImageClassification)
        cls, extra = ("ViTForImageClassification", "") if classifier else ("ViTModel", ", add_pooling_layer=False")
        load = (
            f"from transformers import {cls}\n\n# this folder, or its Hub repo id once pushed\n"
            f'model = {cls}.from_pretrained("{Path(output_dir)}"{extra})'
        )
        _write_export_card(
            staging, hf_vit_folder, _card_lineage(hf_vit_folder), "transformers", load, classifier, notes
        )
        if verify:
            from transformers import ViTForImageClassification, ViTModel

            if isinstance(model, HfViTForImageClassification):
                reloaded = ViTForImageClassification.from_pretrained(staging).eval()
                forward = lambda x: {"logits": reloaded(x).logits}  # noqa: E731
            else:
                reloaded = ViTModel.from_pretrained(staging, add_pooling_layer=False).eval()
                forward = lambda x: {"last_hidden_state": reloaded(x).last_hidden_state}  # noqa: E731
            diff = max_abs_diff(model, forward)
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
    (sharded with an index above `max_shard_size`), metadata {"format": "pt"}, and a model card with the licence and
    base model that the config folder's card states; every tensor is re-read and compared bitwise before success is
    reported."""
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
            state_dict = load_weights(weights_file)
        else:
            state_dict = load_weights(source)
    else:
        state_dict = load_weights(source)
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
