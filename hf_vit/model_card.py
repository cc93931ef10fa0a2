"""Model cards for hf_vit checkpoints, rendered from `model_cards/` with huggingface_hub's ModelCard.

A card tells the truth about the weights it describes: their licence and lineage follow the weights. A conversion
carries the source's licence (read from the source's own card, or timm's `pretrained_cfg`) and names the source repo
and commit as `base_model`; a fine-tune carries its base model's licence, with `base_model_relation: finetune`; a
licence that cannot be read is written as `license: other` with a line telling the reader to check the base model's
terms, never as a guess (`License`, `Lineage`, `resolve_license`).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from importlib import metadata as package_metadata
from importlib import resources
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .configuration_hf_vit import HfViTConfig, image_size_pair
from .fileio import atomic_write_text
from .stats import forward_flops

logger = logging.getLogger(__name__)
TEMPLATE = "hf_vit_model_card.md"
DEFAULT_LICENSE = "apache-2.0"  # weights trained from scratch, unless `license` says otherwise
# what the Hub accepts as `base_model_relation` (a conversion, the same weights in another format, has none)
BASE_MODEL_RELATIONS = ("finetune", "quantized", "merge", "adapter")
# the licence ids the Hub accepts in a card's `license` (https://huggingface.co/docs/hub/repositories-licenses)
HUB_LICENSES = frozenset(
    """apache-2.0 mit openrail bigscience-openrail-m creativeml-openrail-m bigscience-bloom-rail-1.0 bigcode-openrail-m
    afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause bsd-3-clause-clear c-uda cc cc0-1.0 cc-by-2.0 cc-by-2.5
    cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-2.0 cc-by-nc-3.0 cc-by-nc-4.0 cc-by-nd-4.0 cc-by-nc-nd-3.0
    cc-by-nc-nd-4.0 cc-by-nc-sa-2.0 cc-by-nc-sa-3.0 cc-by-nc-sa-4.0 cdla-sharing-1.0 cdla-permissive-1.0
    cdla-permissive-2.0 wtfpl ecl-2.0 epl-1.0 epl-2.0 etalab-2.0 eupl-1.1 eupl-1.2 agpl-3.0 gfdl gpl gpl-2.0 gpl-3.0
    lgpl lgpl-2.1 lgpl-3.0 isc h-research intel-research lppl-1.3c ms-pl apple-ascl apple-amlr mpl-2.0 odc-by odbl
    openmdw-1.0 openrail++ osl-3.0 postgresql ofl-1.1 ncsa unlicense zlib pddl lgpl-lr deepfloyd-if-license
    fair-noncommercial-research-license llama2 llama3 llama3.1 llama3.2 llama3.3 llama4 grok2-community gemma unknown
    other""".split()
)
# licences that let anyone use the weights for anything, with attribution at most: when two statements of a
# source's licence disagree, a careful publisher keeps the one that is not among them (`stricter_license`)
PERMISSIVE_LICENSES = frozenset(
    """apache-2.0 mit afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause bsd-3-clause-clear cc0-1.0 cc-by-2.0
    cc-by-2.5 cc-by-3.0 cc-by-4.0 wtfpl ecl-2.0 isc postgresql ncsa unlicense zlib pddl odc-by""".split()
)
_BASE_MODEL_MAX = 96 * 2 + 1
UNKNOWN_LICENSE_NOTE = (
    "The licence of the base model could not be read, so none is claimed here (`license: other`): check the base "
    "model's terms before you use or share these weights."
)


@dataclass(frozen=True)
class License:
    """A Hub licence: `id` is a Hub licence id ("apache-2.0", "cc-by-nc-4.0", "other"), None when it is not known;
    with "other", `name` and `link` are the card's `license_name` and `license_link`."""

    id: str | None = None
    name: str | None = None
    link: str | None = None
    note: str | None = None  # a line for the card's reader about where this licence came from

    def __post_init__(self):  # a source's text reaches the card only as one plain line
        object.__setattr__(self, "name", plain_value(self.name))
        object.__setattr__(self, "link", plain_link(self.link))

    @property
    def known(self) -> bool:
        return self.id is not None

    def describe(self, code: bool = True) -> str:
        """The licence in words, e.g. `other` (`dinov3-license`, https://...); `code=False` for messages, where a word
        in backticks names a parameter."""
        if self.id is None:
            return "unknown"
        quote = "`" if code else ""
        name = f"{quote}{self.name}{quote}" if self.name else None
        extra = ", ".join(part for part in (name, self.link) if part)
        return f"{quote}{self.id}{quote}" + (f" ({extra})" if extra else "")


def license_from_metadata(card_metadata: dict | None) -> License:
    """The licence a model card's metadata states (`license`, and with `other` its `license_name`/`license_link`, as
    plain one-line values); `License()` (unknown) when it states none, or "unknown". A licence in words that is no
    Hub licence id ("Apache 2.0") is `other` with those words as its name and a note for the card's reader."""
    card_metadata = card_metadata if isinstance(card_metadata, dict) else {}
    value = card_metadata.get("license")
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, str) or value.strip().lower() in ("", "unknown"):
        return License()
    stated, value = plain_value(value), value.strip().lower()
    if value != "other" and value in HUB_LICENSES:
        return License(value)
    if value != "other" and not stated:
        return License()
    if value != "other" and stated:  # "Apache 2.0": a licence in words, which the Hub would refuse as an id
        return License(
            "other",
            stated,
            None,
            note=f"The source states its licence as `{stated}`, which is not a Hub licence id, so it is written "
            "`license: other`: check the source's terms.",
        )
    name, link = plain_value(card_metadata.get("license_name")), plain_link(card_metadata.get("license_link"))
    # "other" naming no licence says only that some terms apply, not which: as unknown as no licence at all
    return License("other", name, link) if name or link else License()


def plain_value(value, limit: int = 200) -> str | None:
    """A value from someone else's card as one plain line: whitespace (newlines) collapsed, no HTML, no Markdown
    structure (backticks, brackets, emphasis, table bars, heading or list markers, `---` rules); None if nothing
    is left."""
    if not isinstance(value, str):
        return None
    text = re.sub(r"<[^>]*>?", " ", value)  # tags, and a tag left open
    text = re.sub(r"[`<>\[\]{}|*#~\\\"]", " ", text)
    text = re.sub(r"-{2,}|={2,}", "-", text)
    text = " ".join(text.split())
    text = re.sub(r"^(?:[-+>:]|\d+[.)])(?:\s+|$)", "", text).strip(" -")  # a list or quote marker at its start
    return text[:limit] or None


def plain_link(value) -> str | None:
    """A licence link from someone else's card: a plain http(s) URL (no spaces, quotes, brackets or HTML), else
    None."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    url = re.fullmatch(r"https?://[A-Za-z0-9.-]+(?::\d+)?(?:/[A-Za-z0-9._~%/?#=&+:@!$,;-]*)?", value)
    return value if url else None


def base_model_from_metadata(card_metadata: dict | None, source) -> str | None:
    """The `base_model` a card's metadata names, accepted only as a valid Hub repo id (huggingface_hub's validator);
    anything else is dropped with a warning naming `source`."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    value = (card_metadata or {}).get("base_model") if isinstance(card_metadata, dict) else None
    value = value[0] if isinstance(value, list) and len(value) == 1 else value
    if value is None:
        return None
    try:
        if not isinstance(value, str) or value.count("/") != 1:
            raise HFValidationError("not NAMESPACE/NAME")
        validate_repo_id(value)
    except HFValidationError:
        logger.warning(
            "%s: the card's base_model %s is not a Hub repo id (NAMESPACE/NAME); left out of the new card",
            source,
            (plain_value(repr(value), 80) or "?"),
        )
        return None
    return value


def license_id_problem(license) -> str | None:
    """Why `license` is not a Hub licence id (with the closest one, for a typo), or None when it is one."""
    import difflib

    if isinstance(license, str) and license in HUB_LICENSES:
        return None
    close = difflib.get_close_matches(str(license).lower(), sorted(HUB_LICENSES), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else " such as apache-2.0, mit, cc-by-nc-4.0 or other"
    return f"must be a Hub licence id, got {license!r}{hint} (the list: https://huggingface.co/docs/hub/repositories-licenses)"


def stricter_license(card: License, pretrained_cfg: License, source) -> License:
    """The licence of a source whose card and timm `pretrained_cfg` both state one: the same, or when they disagree
    the stricter (one that is not permissive over one that is; the `pretrained_cfg`'s, which timm records for these
    very weights, between two of a kind), with a warning and a note for the card naming both."""
    if not card.known or card.id == pretrained_cfg.id or not pretrained_cfg.known:
        return card if card.known else pretrained_cfg
    card_open, cfg_open = card.id in PERMISSIVE_LICENSES, pretrained_cfg.id in PERMISSIVE_LICENSES
    kept, other = (card, pretrained_cfg) if cfg_open and not card_open else (pretrained_cfg, card)
    where = {id(card): "its card", id(pretrained_cfg): "its timm pretrained_cfg"}
    message = (
        f"{where[id(card)]} says {card.describe(code=False)} and {where[id(pretrained_cfg)]} says "
        f"{pretrained_cfg.describe(code=False)}: kept {kept.id}, the stricter"
    )
    logger.warning("%s: the source's licence statements disagree: %s", source, message)
    return License(
        kept.id,
        kept.name,
        kept.link,
        note=f"The source's licence statements disagree ({message.replace(kept.id, '`' + kept.id + '`')}); check the "
        "source's terms.",
    )


def read_card_metadata(path: str | os.PathLike) -> dict:
    """The YAML metadata of a model card file (a README.md), {} if the file is missing or has none (or it is not
    a mapping)."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        data = ModelCard.load(path, ignore_metadata_errors=True).data.to_dict()
    except Exception:  # noqa: BLE001  a card that cannot be parsed states nothing we can rely on
        return {}
    return data if isinstance(data, dict) else {}


@dataclass(frozen=True)
class Lineage:
    """Where weights came from, for their card: the base model's Hub repo id (`base_model`, None for a local source
    that names none), its commit, its licence, how these weights relate to it (`relation`: None for a conversion,
    else one of BASE_MODEL_RELATIONS) and what the user named (`origin`: a Hub id or a local path)."""

    base_model: str | None = None
    commit: str | None = None
    license: License = field(default_factory=License)
    relation: str | None = None
    origin: str | None = None


def check_license_id(license: str) -> None:
    """ValueError unless `license` is one of the Hub's licence ids (`HUB_LICENSES`), suggesting the closest."""
    problem = license_id_problem(license)
    if problem:
        raise ValueError(f"`license` {problem}")


def resolve_license(
    base: License | None, license: str | None = None, override_base_license: bool = False
) -> tuple[License, str | None]:
    """(licence of the new weights, a note for their card) for weights trained from `base`'s licence (None: trained
    from scratch) with an explicit `license` (None: not given).

    From scratch: `license`, default apache-2.0. From a base: the base's licence; an explicit `license` that differs
    from a known base licence is refused unless `override_base_license` (the card then says so); with a base whose
    licence is unknown, `license` is what the trainer states (the card says the base's could not be read). ValueError
    for a refusal, naming the parameters."""
    if license is not None:
        check_license_id(license)
    if override_base_license and license is None:
        raise ValueError("`override_base_license` needs `license`: the licence to apply instead of the base model's")
    if base is None:
        if override_base_license:
            raise ValueError(
                "`override_base_license` applies to weights fine-tuned from a base model; these are trained from "
                "scratch (set their licence with `license` alone)"
            )
        return License(license or DEFAULT_LICENSE), None
    if license is None:
        return base, (None if base.known else UNKNOWN_LICENSE_NOTE)
    if not base.known:
        return License(license), (
            f"The base model's licence could not be read; `{license}` is the licence stated by whoever trained these "
            "weights: check the base model's terms too."
        )
    if license == base.id:
        return base, None
    if not override_base_license:
        raise ValueError(
            f"`license` {license} would relabel weights derived from a base model licensed "
            f"{base.describe(code=False)}: leave `license` unset to keep the base model's licence, or, if you hold the "
            "right to relicense them, add `override_base_license`"
        )
    return License(license), (
        f"Licensed `{license}` by whoever trained these weights, overriding the base model's licence "
        f"{base.describe()} (`override_base_license`): make sure that licence allows it."
    )


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


def _in_unit(number: float) -> str:
    """A count with the SI prefix that fits its size: "17.6 G", "2.31 M", "850 K" (never "0.00 G")."""
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if number >= scale:
            value = number / scale
            return f"{value:.3g} {prefix}" if value < 100 else f"{value:.0f} {prefix}"
    return f"{number:.0f} "


def project_url() -> str | None:
    """The project's home page as the installed package's metadata states it (`Project-URL` / `Home-page`), or None:
    a card links the project only where its real location is known."""
    try:
        meta = package_metadata.metadata("hf_vit")
    except package_metadata.PackageNotFoundError:
        return None
    urls = [entry.split(",", 1)[-1].strip() for entry in meta.get_all("Project-URL") or []]
    home = meta.get("Home-page")
    candidates = [*urls, *([home] if home and home != "UNKNOWN" else [])]
    return next((url for url in candidates if url.startswith("https://")), None)


def render_model_card(
    config: HfViTConfig,
    *,
    num_parameters: int,
    model_name: str = "hf_vit model",
    repo_id: str | None = None,
    license: str | License = DEFAULT_LICENSE,
    license_note: str | None = None,
    datasets: list[str] | None = None,
    dataset_name: str | None = None,
    eval_split: str | None = None,
    results: dict[str, float] | None = None,
    hyperparameters: dict[str, object] | None = None,
    source: str | None = None,
    source_details: str | None = None,
    description: str | None = None,
    base_model: str | None = None,
    base_model_relation: str | None = None,
    lineage: Lineage | None = None,
    command: str | None = None,
    pipeline_tag: str = "image-classification",
) -> ModelCard:
    """A ModelCard with metadata (library, pipeline tag, tags, licence, base model, datasets, model-index) and a body
    a reader can use: how to load it, how it was made, its result and split, its base model and licence.

    `license`: a Hub licence id or a `License` (an unknown one is written `license: other` with a line saying to check
    the base model's terms); `license_note`: a line on it for the reader (`resolve_license` gives both). `lineage`
    gives the base model (`base_model`, its commit, `base_model_relation`) when the weights have one; `base_model` and
    `base_model_relation` alone do too. `results` maps metric names (e.g. "accuracy") to values measured on
    `dataset_name`'s `eval_split`; they go into the model-index only for `datasets` (Hub dataset ids) — the Hub needs
    a dataset id there — and into the card's text always. `source` (free text) names where converted weights came
    from. `command`: the command that trained or converted the weights. `pipeline_tag`: the Hub task
    ("image-feature-extraction" for a backbone without a classifier, e.g. a DINO-pretrained one).
    """
    if lineage is not None:
        base_model = base_model or lineage.base_model
        base_model_relation = base_model_relation or lineage.relation
    base_model = base_model_from_metadata({"base_model": base_model}, "the model card")
    if base_model_relation is not None and base_model_relation not in BASE_MODEL_RELATIONS:
        raise ValueError(
            f"`base_model_relation` must be one of {', '.join(BASE_MODEL_RELATIONS)} (or None for a conversion), "
            f"got {base_model_relation!r}"
        )
    license = license if isinstance(license, License) else License(license)
    if license.id is not None and license.id != "other":
        check_license_id(license.id)
    if not license.known and license_note is None:
        license_note = UNKNOWN_LICENSE_NOTE
    license_note = license_note or license.note
    eval_results = None
    if results and datasets:
        eval_results = [
            EvalResult(
                task_type="image-classification",
                task_name="Image Classification",
                dataset_type=datasets[0],
                dataset_name=datasets[0],
                dataset_split=eval_split,
                metric_type=name,
                metric_name=name.replace("_", " ").capitalize(),
                metric_value=float(value),
            )
            for name, value in results.items()
            if name != "loss"  # a training objective, not a metric the Hub lists; it stays in the card's text
        ] or None
    extra = _license_and_relation_metadata(license, base_model, base_model_relation)
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag=pipeline_tag,
        tags=["vision", "vit", "hf_vit", pipeline_tag],
        license=license.id or "other",
        datasets=datasets,
        model_name=model_name,
        eval_results=eval_results,
        base_model=base_model,
        **extra,
    )
    height, width = image_size_pair(config.image_size)
    grid_h, grid_w = config.grid_size
    flops = forward_flops(config)
    return ModelCard.from_template(
        card_data,
        template_str=_template_text(),
        model_name=model_name,
        repo_id=repo_id or model_name,
        project_url=project_url(),
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
        positions=_positions(config),
        parameters=_si(num_parameters),
        flops=_in_unit(flops),
        macs=_in_unit(flops / 2).rstrip(),
        source=source,
        source_details=source_details
        or (f"Weights converted from {source} with hf_vit's converters." if source else None),
        hyperparameters=hyperparameters,
        results={k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in (results or {}).items()},
        evaluated_on=dataset_name or (datasets[0] if datasets else None),
        eval_split=eval_split,
        license_text=license.describe() if license.known else "not known",
        license_note=license_note,
        license_known=license.known,
        license_from=(
            ("the base model's" if base_model_relation else "the source's")
            if lineage is not None and license.known and license == lineage.license and license_note is None
            else None
        ),
        base_model=base_model,
        base_commit=lineage.commit if lineage else None,
        base_origin=lineage.origin if lineage and lineage.origin != base_model else None,
        base_model_relation=base_model_relation,
        command=command,
    )


def render_export_card(
    library: str,
    *,
    load: str,
    source: str,
    license: License,
    base_model: str | None = None,
    base_model_relation: str | None = None,
    pipeline_tag: str = "image-classification",
    notes: list[str] | tuple[str, ...] = (),
) -> ModelCard:
    """The card of hf_vit weights exported to `library` ("timm" or "transformers"): the same weights under that
    library's names, so the licence and base model are those of the hf_vit folder they came from (`source`), and an
    unknown licence is written `license: other` with the line telling the reader to check the base model's terms.
    `load` is the Python that loads the folder with `library`; `notes` what the export changed (a left-out decoder)."""
    if base_model_relation is not None and base_model_relation not in BASE_MODEL_RELATIONS:
        base_model_relation = None  # a value the Hub would refuse says nothing about these weights
    base_model = base_model_from_metadata({"base_model": base_model}, source)
    extra = _license_and_relation_metadata(license, base_model, base_model_relation)
    data = ModelCardData(
        library_name=library,
        pipeline_tag=pipeline_tag,
        tags=["vision", "vit", "hf_vit", pipeline_tag],
        license=license.id or "other",
        base_model=base_model,
        **extra,
    )
    lines = [
        f"# {Path(source).name or source} ({library})",
        "",
        f"hf_vit weights exported to {library}'s format by hf_vit (`hf-vit-convert --to {library}`) from `{source}`: "
        f"the same weights, under the names and configuration {library} reads.",
        "",
        "## Use",
        "",
        "```python",
        load,
        "```",
        "",
        "## Licence and lineage",
        "",
        f"- Licence: {license.describe()}, as the hf_vit model's card states."
        if license.known
        else f"- Licence: not known. {UNKNOWN_LICENSE_NOTE}",
        *([f"- {license.note}"] if license.note else []),
    ]
    if base_model:
        how = {None: "converted", "finetune": "fine-tuned into these weights"}.get(
            base_model_relation, base_model_relation
        )
        lines.append(f"- Base model: `{base_model}` ({how}).")
    lines += [f"- Note: {note}." for note in notes]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n")


def _license_and_relation_metadata(license: License, base_model: str | None, relation: str | None) -> dict:
    """The card metadata besides `license` and `base_model`: an `other` licence's name and link, and the relation to
    the base model (the Hub accepts a relation only with a base model)."""
    extra = {}
    if license.id == "other":
        extra.update({k: v for k, v in (("license_name", license.name), ("license_link", license.link)) if v})
    if base_model and relation:
        extra["base_model_relation"] = relation
    return extra


def _positions(config) -> str:
    """How the model knows where a patch is, for the card's size line."""
    rope = getattr(config, "rope_type", None)
    learned = getattr(config, "absolute_position_embeddings", True)
    if rope is None:
        return "positions are interpolated"
    encoding = f"rotary position encoding ({rope}) computed for the input's grid"
    return f"learned positions are interpolated, {encoding}" if learned else encoding


def write_model_card(folder: str | os.PathLike, card: ModelCard) -> Path:
    """Write `card` as `folder/README.md`, atomically, with every secret left out (`atomic_write_text`)."""
    path = Path(folder) / "README.md"
    atomic_write_text(path, str(card))
    return path
