"""Model cards for hf_vit checkpoints, rendered from `model_cards/` with huggingface_hub's ModelCard."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .configuration_hf_vit import HfViTConfig, image_size_pair
from .fileio import atomic_write_text
from .stats import forward_flops

TEMPLATE = "hf_vit_model_card.md"


def _template_text() -> str:
    # installed: packaged as hf_vit.model_cards; a source checkout: the top-level model_cards/ folder
    try:
        return resources.files("hf_vit.model_cards").joinpath(TEMPLATE).read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError):
        return (Path(__file__).resolve().parents[1] / "model_cards" / TEMPLATE).read_text(encoding="utf-8")


def _si(number: int) -> str:
    return f"{number / 1e6:.1f}M" if number >= 1e6 else f"{number / 1e3:.1f}K"


def _prefix_tokens(config) -> str:
    """The tokens before the patches, as the card's table shows them: "[CLS] + distillation + 4 registers + "."""
    parts = ["[CLS]"] if getattr(config, "class_token", True) else []
    if getattr(config, "distillation_token", False):
        parts.append("distillation")
    if config.num_register_tokens:
        parts.append(f"{config.num_register_tokens} registers")
    return "".join(f"{part} + " for part in parts)


def render_model_card(
    config: HfViTConfig,
    *,
    num_parameters: int,
    model_name: str = "hf_vit model",
    repo_id: str | None = None,
    license: str = "apache-2.0",
    datasets: list[str] | None = None,
    dataset_name: str | None = None,
    results: dict[str, float] | None = None,
    hyperparameters: dict[str, object] | None = None,
    source: str | None = None,
    source_details: str | None = None,
    description: str | None = None,
    base_model: str | None = None,
) -> ModelCard:
    """A ModelCard with metadata (library, pipeline tag, tags, license, datasets, model-index) and the architecture.

    `results` maps metric names (e.g. "accuracy") to values measured on `dataset_name`'s evaluation split; they go into
    the model-index so the Hub shows them. `source` (free text) names where converted weights came from; `base_model`
    (a Hub repo id, when the source is one) links the card to it on the Hub.
    """
    eval_results = None
    if results:
        dataset = dataset_name or (datasets[0] if datasets else "unknown")
        eval_results = [
            EvalResult(
                task_type="image-classification",
                dataset_type=dataset,
                dataset_name=dataset,
                metric_type=name,
                metric_value=float(value),
            )
            for name, value in results.items()
        ]
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="image-classification",
        tags=["vision", "vit", "hf_vit", "image-classification"],
        license=license,
        datasets=datasets,
        model_name=model_name,
        eval_results=eval_results,
        base_model=base_model,
    )
    height, width = image_size_pair(config.image_size)
    grid_h, grid_w = config.grid_size
    flops = forward_flops(config)
    return ModelCard.from_template(
        card_data,
        template_str=_template_text(),
        model_name=model_name,
        repo_id=repo_id or model_name,
        patch_size=config.patch_size,
        image_height=height,
        image_width=width,
        grid_h=grid_h,
        grid_w=grid_w,
        depth=config.num_hidden_layers,
        width=config.hidden_size,
        heads=config.num_attention_heads,
        mlp=config.intermediate_size,
        prefix_tokens=_prefix_tokens(config),
        pooling={"cls": "[CLS] token", "mean": "mean of patch tokens", "map": "attention pooling (MAP head)"}.get(
            config.pooling, config.pooling
        ),
        parameters=_si(num_parameters),
        gflops=f"{flops / 1e9:.2f}",
        gmacs=f"{flops / 2e9:.2f}",
        source=source,
        source_details=source_details
        or (f"Weights converted from {source} with hf_vit's converters." if source else None),
        hyperparameters=hyperparameters,
        results={k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in (results or {}).items()},
        description=description,
    )


def write_model_card(folder: str | os.PathLike, card: ModelCard) -> Path:
    """Write `card` as `folder/README.md`, atomically."""
    path = Path(folder) / "README.md"
    atomic_write_text(path, str(card))
    return path
