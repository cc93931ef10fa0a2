"""Any ViT checkpoint on the Hub or on disk as an hf_vit model, in one line: `hf_vit.from_pretrained(name)`.

`name` is a Hub repo id or a local folder/file. The layout is detected from the files (an explicit `source` is still
accepted):

    hf_vit        config.json with model_type "hf_vit"                  -> loaded as it is
    timm          config.json with "architecture" (timm's push_to_hf_hub / save_for_hf), or a timm state dict file
    transformers  config.json with model_type "vit" (google/vit-*, facebook/dino-vit*, non-distilled facebook/deit-*),
                  "vit_mae", "vit_msn", "ijepa" or "deit" (distilled DeiT)
    siglip        config.json with model_type "siglip" / "siglip_vision_model" (SigLIP, SigLIP 2 fixed-resolution)
    clip          config.json with model_type "clip" / "clip_vision_model"
    dinov2        config.json with model_type "dinov2" / "dinov2_with_registers"
    dinov3        config.json with model_type "dinov3_vit" (transformers' DINOv3 ViTs, e.g. facebook/dinov3-vits16-*)
    dino          a DINO training checkpoint or backbone pickle (.pth/.pt), named with `filename=` on the Hub
    npz           a Google JAX `.npz` (vit_jax / big_vision layouts), named with `filename=` on the Hub

Foreign checkpoints are converted once: the hf_vit folder (safetensors, config with auto_map and the code files, the
source's preprocessing as a transformers image processor, a model card with the source's licence and `base_model`) is
written atomically under the Hugging Face cache, in `hf_vit-converted/models--NAMESPACE--NAME/<commit sha>/`, and
later calls (and any call with HF_HUB_OFFLINE=1) load it from there. Only the files needed are downloaded, through
huggingface_hub (revision pinning, token), safetensors preferred; pickles are read with `torch.load(weights_only=True)`
only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, WEIGHTS_INDEX_NAME, WEIGHTS_NAME

from ..checkpoint_io import PICKLE_SUFFIXES, check_safetensors_file, weight_files_in
from ..fileio import atomic_write_text, check_links_inside, read_json_object
from ..model_card import Lineage, base_model_from_metadata, license_from_metadata, read_card_metadata
from ..modeling_hf_vit import HfViTForImageClassification, HfViTForMaskedImageModeling, HfViTModel
from ..resources import LOAD_OVERHEAD, check_fits
from .core import (
    DEFAULT_MAX_SHARD_SIZE,
    VERIFY_TOLERANCE,
    Conversion,
    ConversionResult,
    verify_conversion,
    with_source_license,
    write_hf_vit_folder,
)
from .dino import convert_dino_file
from .dinov2 import DINOV2_MODEL_TYPES
from .dinov3 import DINOV3_MODEL_TYPE, convert_dinov3_folder
from .image_text import CLIP_MODEL_TYPES, SIGLIP_MODEL_TYPES, convert_image_text_folder
from .npz import convert_npz_file
from .timm import TIMM_HEADS_BY_WIDTH, convert_timm_file, convert_timm_folder
from .transformers_vit import convert_transformers_folder
from .vit_variants import VIT_VARIANT_MODEL_TYPES

logger = logging.getLogger(__name__)

TASKS = {
    "image-classification": HfViTForImageClassification,
    "feature-extraction": HfViTModel,
    "image-feature-extraction": HfViTModel,
    "masked-image-modeling": HfViTForMaskedImageModeling,
}
LAYOUTS = ("hf_vit", "timm", "transformers", "dinov2", "dinov3", "siglip", "clip", "dino", "npz")
CACHE_FOLDER = "hf_vit-converted"
# Part of every cache key: a change to the converters that changes their output gets a new conversion.
# 2: transformers ViT's mask token and ViTForMaskedImageModeling's decoder are kept; 3: the card carries the source's
# licence and commit; 4: prefix tokens generalised (distillation token, no [CLS], MAP pooling); 5: timm Eva average
# pooling without fc_norm is the mean of the normed tokens, as in timm
CONVERTER_VERSION = "5"
# In every cached conversion, written last: the size of each of its files, checked (with the safetensors headers)
# before the folder is used again.
RECORD = ".hf_vit-conversion.json"
_WEIGHT_CANDIDATES = (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, WEIGHTS_NAME, WEIGHTS_INDEX_NAME)


@dataclass
class Resolved:
    """Where the hf_vit checkpoint for a name lives, and how it got there."""

    location: str  # an hf_vit folder, or the Hub repo id of an hf_vit repo
    layout: str  # one of LAYOUTS
    load_kwargs: dict = field(default_factory=dict)  # revision/cache_dir/token for an hf_vit Hub repo
    converted: bool = False  # written by this call (False: hf_vit as it was, or a cached conversion)
    from_cache: bool = False
    max_abs_diff: float | None = None  # with verify=True
    source_repo: str | None = None
    commit: str | None = None
    conversion: Conversion | None = None


def task_class(task: str):
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    return TASKS[task]


def from_pretrained(
    name_or_path,
    *,
    task: str = "image-classification",
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    verify: bool = False,
    source: str | None = None,
    filename: str | None = None,
    **kwargs,
) -> HfViTForImageClassification | HfViTModel | HfViTForMaskedImageModeling:
    """An hf_vit model from any supported ViT checkpoint (see the module docstring), converted once and cached.

    Args:
        name_or_path: a Hub repo id ("google/vit-base-patch16-224", "timm/vit_small_patch16_224.augreg_in21k") or a
            local folder / file.
        task: "image-classification" -> `HfViTForImageClassification` (a new, randomly initialised head when the source
            has none, or with `num_labels=`/`ignore_mismatched_sizes=True` in kwargs); "feature-extraction" ->
            `HfViTModel`; "masked-image-modeling" -> `HfViTForMaskedImageModeling` (SimMIM decoder and mask token).
        revision: branch, tag or commit of a Hub repo; the conversion is cached per commit.
        cache_dir: the Hugging Face cache to use (default: HF_HUB_CACHE); conversions go to its `hf_vit-converted/`.
        token: Hub token for private or gated repos.
        verify: run the source library's own forward (timm / transformers) and hf_vit's on the same random batch and
            fail (writing nothing) if the max-abs-diff exceeds 1e-4; the figure is logged.
        source: force a layout (one of LAYOUTS) instead of detecting it.
        filename: the checkpoint file inside a Hub repo without config.json (DINO `.pth`, Google `.npz`).
        **kwargs: passed to `from_pretrained` of the hf_vit class (e.g. `num_labels`, `id2label`,
            `ignore_mismatched_sizes`, `attn_implementation`, `dtype`, `device_map`, `max_memory`, `offload_folder`).
            Without `dtype` the model comes in the checkpoint's own dtype (transformers' `dtype="auto"`): a bf16
            source gives a bf16 model. The converted weights keep the source's dtype; another `dtype` is a cast at
            load, never a second conversion. The weights are memory-mapped and assigned (transformers' loading), and
            with `device_map="auto"` Accelerate keeps what `max_memory` leaves out on disk.

    Before converting or loading, the memory and disk the step needs are compared with what the machine has
    (`hf_vit.resources`): a model that cannot fit is refused in one ValueError naming both figures and the options,
    before anything is written.
    """
    model_class = task_class(task)
    load = LoadRequest(dtype=kwargs.get("dtype"), offloaded=kwargs.get("device_map") is not None)
    resolved = resolve_pretrained(
        name_or_path,
        revision=revision,
        cache_dir=cache_dir,
        token=token,
        verify=verify,
        source=source,
        filename=filename,
        load=load,
    )
    if not resolved.converted and resolved.layout == "hf_vit" or resolved.from_cache:
        load.check_folder(resolved.location)
    resolved.conversion = None  # nothing of the source is held while the model loads
    return model_class.from_pretrained(resolved.location, **resolved.load_kwargs, **kwargs)


@dataclass
class LoadRequest:
    """What a `from_pretrained` call will load: the dtype asked for (None or "auto": the checkpoint's own) and whether
    Accelerate places the weights (`device_map`; then memory is its business, not refused here)."""

    dtype: object = None
    offloaded: bool = False

    def _target(self, stored) -> torch.dtype | None:
        if self.dtype is None or self.dtype == "auto":
            return stored
        return getattr(torch, self.dtype) if isinstance(self.dtype, str) else self.dtype

    def memory(self, nbytes: int, stored: torch.dtype) -> int | None:
        """Memory to load `nbytes` of weights stored in `stored` (None with a device map)."""
        if self.offloaded:
            return None
        target = self._target(stored) or stored
        return int(nbytes * target.itemsize / stored.itemsize * LOAD_OVERHEAD)

    def check_folder(self, location: str) -> None:
        """Refuse loading an hf_vit folder (a checkpoint or a cached conversion) that cannot fit in memory."""
        folder = Path(location)
        if self.offloaded or not folder.is_dir():
            return  # a Hub repo id: its size is known once downloaded
        try:
            files = weight_files_in(folder)
            stored = getattr(torch, str(read_json_object(folder / "config.json").get("dtype") or "float32"))
        except (ValueError, OSError, AttributeError):
            return  # the loader reports what is wrong with the folder
        if not isinstance(stored, torch.dtype):
            return
        nbytes = sum(file.stat().st_size for file in files if file.is_file())
        check_fits(f"loading {folder}", memory=self.memory(nbytes, stored))


def resolve_pretrained(
    name_or_path,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    verify: bool = False,
    source: str | None = None,
    filename: str | None = None,
    tolerance: float = VERIFY_TOLERANCE,
    load: LoadRequest | None = None,
) -> Resolved:
    """The hf_vit checkpoint for `name_or_path`: the folder/repo itself for hf_vit checkpoints, else the cached
    conversion (made now if missing, or always with `verify`). A conversion is refused before anything is written
    when the disk cannot hold it or, with `load` (what will be loaded next), the memory cannot."""
    if source is not None and source not in LAYOUTS:
        raise ValueError(f"source must be one of {', '.join(LAYOUTS)} (or None to detect it), got {source!r}")
    name = os.fspath(name_or_path)
    path = Path(name).expanduser()
    if path.exists():
        if filename is not None:
            path = path / filename if path.is_dir() else path
            if not path.exists():
                raise ValueError(f"{path} does not exist")
        return _resolve_local(path, cache_dir=cache_dir, verify=verify, source=source, tolerance=tolerance, load=load)
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        raise ValueError(f"{name!r} is neither an existing file or folder nor a Hub repo id (NAMESPACE/NAME)") from None
    return _resolve_hub(
        name,
        revision=revision,
        cache_dir=cache_dir,
        token=token,
        verify=verify,
        source=source,
        filename=filename,
        tolerance=tolerance,
        load=load,
    )


# ---------------------------------------------------------------------------------------------------------------
# layout detection
# ---------------------------------------------------------------------------------------------------------------
def detect_config_layout(config: dict, where: str = "config.json") -> str:
    """The layout a config.json describes; refuses, naming the feature, what hf_vit cannot represent."""
    model_type = config.get("model_type")
    if model_type == "hf_vit":
        return "hf_vit"
    if model_type is None and "architecture" in config:
        return "timm"
    if model_type == "vit":
        return "transformers"
    if model_type in DINOV2_MODEL_TYPES:
        return "dinov2"
    if model_type == DINOV3_MODEL_TYPE:
        return "dinov3"
    if model_type in VIT_VARIANT_MODEL_TYPES:
        return "transformers"
    if model_type in SIGLIP_MODEL_TYPES:
        return "siglip"
    if model_type in CLIP_MODEL_TYPES:
        return "clip"
    if model_type in ("siglip2", "siglip2_vision_model"):
        raise ValueError(
            f"{where} is a SigLIP 2 NaFlex model (model_type {model_type!r}): it takes variable-resolution patch "
            "sequences, not images, which hf_vit does not implement (SigLIP 2's fixed-resolution checkpoints are "
            "model_type 'siglip' and convert)"
        )
    if model_type is not None:
        known = (
            "vit",
            *DINOV2_MODEL_TYPES,
            DINOV3_MODEL_TYPE,
            *VIT_VARIANT_MODEL_TYPES,
            *SIGLIP_MODEL_TYPES,
            *CLIP_MODEL_TYPES,
        )
        raise ValueError(
            f"{where} is a {model_type!r} model; hf_vit converts hf_vit, timm ViT and Eva, transformers "
            f"{', '.join(repr(t) for t in known)} checkpoints"
        )
    raise ValueError(f"{where} is neither a transformers config (model_type) nor a timm config (architecture)")


def detect_file_layout(path: Path) -> str:
    """A single checkpoint file without config.json: `.npz` is Google's, a pickle is DINO's (training checkpoint or
    backbone), a safetensors state dict is timm-named."""
    if path.suffix == ".npz":
        return "npz"
    if path.suffix in PICKLE_SUFFIXES:
        return "dino"
    if path.suffix == ".safetensors":
        return "timm"
    raise ValueError(
        f"cannot tell the layout of {path.name}: expected a folder with config.json, a .safetensors "
        "state dict, a DINO .pth/.pt or a Google .npz (or pass source=)"
    )


def _layout_of(path: Path, source: str | None) -> str:
    if source is not None:
        return source
    if path.is_dir():
        config_file = path / "config.json"
        if not config_file.is_file():
            raise ValueError(f"{path} has no config.json: name the checkpoint file inside it, or pass source=")
        return detect_config_layout(read_json_object(config_file), str(config_file))
    return detect_file_layout(path)


def convert_layout(layout: str, path: Path) -> Conversion:
    """Convert the files at `path` (folder or file) of a foreign `layout`, with the licence the source states
    (`core.read_source_license`: every converter gets it)."""
    path = Path(path)
    return with_source_license(_convert_layout(layout, path), path)


def _convert_layout(layout: str, path: Path) -> Conversion:
    if layout == "timm":
        if path.is_dir() and (path / "config.json").is_file():
            return convert_timm_folder(path)
        return _convert_timm_state_dict(path)
    if layout in ("transformers", "dinov2"):
        return convert_transformers_folder(path)
    if layout in ("siglip", "clip"):
        return convert_image_text_folder(path)
    if layout == "dinov3":
        return convert_dinov3_folder(path)
    if layout == "dino":
        return convert_dino_file(path)
    if layout == "npz":
        return convert_npz_file(path)
    raise ValueError(f"no converter for layout {layout!r}")


# What from_pretrained's caller can do when a lone timm state dict does not say enough (its parameters name no
# architecture): load it with timm's config.json, or convert the file naming the architecture.
_TIMM_FILE_ADVICE = (
    "load it with the config.json timm writes beside it, which names the architecture (the repo or folder, without "
    "`filename`), or convert the file with hf_vit.convert.convert_checkpoint('timm', ..., timm_model=...)"
)


def _convert_timm_state_dict(path: Path) -> Conversion:
    """A timm state dict without config.json: its heads from its width (timm's ViTs), read in one pass."""
    return convert_timm_file(path, heads_by_width=TIMM_HEADS_BY_WIDTH, advice=_TIMM_FILE_ADVICE)


# ---------------------------------------------------------------------------------------------------------------
# the cache
# ---------------------------------------------------------------------------------------------------------------
def conversion_cache_root(cache_dir=None) -> Path:
    from huggingface_hub import constants

    return Path(cache_dir if cache_dir is not None else constants.HF_HUB_CACHE) / CACHE_FOLDER


def _record_files(folder: Path) -> None:
    """Write the cached conversion's record (every file's size), last: a folder without it is not used."""
    sizes = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file() and p.name != RECORD}
    atomic_write_text(folder / RECORD, json.dumps({"converter_version": CONVERTER_VERSION, "sizes": sizes}))


def _damage(folder: Path) -> str | None:
    """What is wrong with a cached conversion whose record exists: a file missing or of another size than at
    conversion, or weights whose safetensors header does not open (a cut or corrupt file); None if intact."""
    try:
        sizes = read_json_object(folder / RECORD)["sizes"]
    except (ValueError, KeyError, TypeError):
        return f"{RECORD} is unreadable"
    for name, size in sizes.items():
        file = folder / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != size:
            return f"{name} has {file.stat().st_size} bytes, {size} when it was written"
    for file in sorted(folder.glob("*.safetensors")):
        try:
            check_safetensors_file(file)
        except ValueError:
            return f"{file.name} is not a complete safetensors file"
    return None


def _usable_cache(folder: Path) -> bool:
    """A cached conversion that was completely written and is intact; a damaged one is logged (and then
    converted again over it)."""
    if not (folder / RECORD).is_file():
        return False  # none, or one cut short before its record (converted again)
    damage = _damage(folder)
    if damage:
        logger.warning("the cached conversion %s is damaged (%s): converting again", folder, damage)
    return damage is None


def _write(
    conversion: Conversion,
    target: Path,
    *,
    verify: bool,
    tolerance: float,
    base_model: str | None,
    model_name: str,
    commit: str | None = None,
    command: str | None = None,
    load: LoadRequest | None = None,
) -> float | None:
    stored = conversion.dtype
    memory = load.memory(conversion.nbytes(), stored) if load is not None else None
    if verify:  # hf_vit's model and the source library's, both in fp32
        memory = max(memory or 0, 2 * conversion.nbytes(torch.float32))
    check_fits(
        f"converting {conversion.source} ({stored})"
        + (" and verifying it" if verify else "")
        + (" and loading it" if load is not None else ""),
        memory=memory,
        disk=conversion.nbytes(),
        disk_path=target.parent,
    )
    diff = verify_conversion(conversion, tolerance) if verify else None
    if diff is not None:
        logger.info("verified against %s: max-abs-diff %.3e (fp32)", conversion.reference_name, diff)
    (target / RECORD).unlink(missing_ok=True)  # until the new record: not a usable cache, whatever happens
    write_hf_vit_folder(
        conversion,
        target,
        overwrite=True,
        max_abs_diff=diff,
        base_model=base_model,
        model_name=model_name,
        commit=commit,
        command=command,
    )
    _record_files(target)
    logger.info("converted %s into %s", conversion.source, target)
    return diff


def _local_key(path: Path) -> str:
    """Identifies a local source by its files' resolved paths, sizes and modification times."""
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha256(CONVERTER_VERSION.encode())
    for file in files:
        stat = file.stat()
        digest.update(f"{file.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


def _resolve_local(
    path: Path, *, cache_dir, verify: bool, source: str | None, tolerance: float, load: LoadRequest | None = None
) -> Resolved:
    if path.is_dir():
        check_links_inside(path)
    layout = _layout_of(path, source)
    if layout == "hf_vit":
        if not path.is_dir():
            raise ValueError(f"an hf_vit checkpoint is a folder (config.json + weights); {path} is a file")
        if verify:
            logger.info("%s is an hf_vit checkpoint: nothing converted, nothing to verify", path)
        return Resolved(location=str(path), layout=layout)
    target = conversion_cache_root(cache_dir) / "local" / f"{layout}-{_local_key(path)}"
    if not verify and _usable_cache(target):
        logger.info("loading the cached conversion of %s from %s", path, target)
        return Resolved(location=str(target), layout=layout, from_cache=True)
    conversion = convert_layout(layout, path)
    diff = _write(
        conversion,
        target,
        verify=verify,
        tolerance=tolerance,
        base_model=None,
        model_name=f"{path.stem if path.is_file() else path.name}-hf_vit",
        command=_call("hf_vit.from_pretrained", str(path), source=source),
        load=load,
    )
    return Resolved(location=str(target), layout=layout, converted=True, max_abs_diff=diff, conversion=conversion)


# ---------------------------------------------------------------------------------------------------------------
# the Hub
# ---------------------------------------------------------------------------------------------------------------
def _hub_errors():
    from huggingface_hub import errors

    return errors


def _download(repo_id: str, filename: str, *, revision, cache_dir, token) -> Path:
    """hf_hub_download with the Hub's errors as one-line ValueErrors (EntryNotFoundError passes through)."""
    from huggingface_hub import hf_hub_download

    errors = _hub_errors()
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir, token=token))
    except errors.LocalEntryNotFoundError:
        raise ValueError(
            f"{repo_id}: {filename} is not in the Hugging Face cache and the Hub cannot be reached (offline: "
            "HF_HUB_OFFLINE=1, or no network); load it once online"
        ) from None
    except errors.GatedRepoError:
        raise ValueError(f"{repo_id} is a gated repo: accept its terms on the Hub and pass token=") from None
    except errors.RepositoryNotFoundError:
        raise ValueError(f"Hub repo {repo_id!r} not found (or private: pass token=)") from None
    except errors.RevisionNotFoundError:
        raise ValueError(f"revision {revision!r} not found in the Hub repo {repo_id}") from None


def _snapshot_of(file: Path) -> tuple[Path, str]:
    """(snapshot folder, commit sha) of a file downloaded into the Hugging Face cache."""
    parts = file.parts
    index = len(parts) - 1 - parts[::-1].index("snapshots")
    return Path(*parts[: index + 2]), parts[index + 1]


def _download_weights(repo_id: str, sha: str, *, cache_dir, token) -> None:
    """The repo's weights at commit `sha` into the cache: safetensors (sharded or not) if present, else the pickle."""
    errors = _hub_errors()
    for name in _WEIGHT_CANDIDATES:
        try:
            file = _download(repo_id, name, revision=sha, cache_dir=cache_dir, token=token)
        except (errors.EntryNotFoundError, ValueError):
            continue
        if name.endswith(".index.json"):
            for shard in dict.fromkeys(read_json_object(file).get("weight_map", {}).values()):
                _download(repo_id, shard, revision=sha, cache_dir=cache_dir, token=token)
        return
    raise ValueError(
        f"{repo_id} (commit {sha[:12]}) has none of {', '.join(_WEIGHT_CANDIDATES)} (or they are not "
        "cached and the Hub cannot be reached)"
    )


@dataclass
class _HubSource:
    repo_id: str
    filename: str | None
    layout: str
    sha: str
    snapshot: Path  # the snapshot folder in the Hugging Face cache
    anchor: Path  # config.json, or the named checkpoint file


def _hub_source(repo_id: str, *, revision, cache_dir, token, source: str | None, filename: str | None) -> _HubSource:
    """Resolve the revision to a commit and detect the layout (one small download: config.json or the named file)."""
    errors = _hub_errors()
    anchor_name = filename or "config.json"
    try:
        anchor = _download(repo_id, anchor_name, revision=revision, cache_dir=cache_dir, token=token)
    except errors.EntryNotFoundError:
        hint = "" if filename else ": name the checkpoint file with filename= (a DINO .pth, a Google .npz)"
        raise ValueError(f"the Hub repo {repo_id} has no {anchor_name}{hint}") from None
    snapshot, sha = _snapshot_of(anchor)
    if filename is None:
        layout = source or detect_config_layout(read_json_object(anchor), f"{repo_id}/config.json")
    else:
        layout = source or detect_file_layout(anchor)
    return _HubSource(repo_id, filename, layout, sha, snapshot, anchor)


def _convert_hub_source(hub: _HubSource, *, cache_dir, token) -> Conversion:
    """Download what the conversion needs (the weights, safetensors preferred; the source's image processor; its card,
    for its licence) and convert."""
    errors = _hub_errors()
    try:
        _download(hub.repo_id, "README.md", revision=hub.sha, cache_dir=cache_dir, token=token)
    except (errors.EntryNotFoundError, ValueError):
        pass  # no card: the licence is unknown, and the converted card says so
    if hub.filename is None:
        _download_weights(hub.repo_id, hub.sha, cache_dir=cache_dir, token=token)
        if hub.layout in ("transformers", "dinov2", "dinov3", "siglip", "clip"):
            try:
                _download(hub.repo_id, "preprocessor_config.json", revision=hub.sha, cache_dir=cache_dir, token=token)
            except (errors.EntryNotFoundError, ValueError):
                pass  # a default processor is written instead
        conversion = convert_layout(hub.layout, hub.snapshot)
    else:
        conversion = convert_layout(hub.layout, hub.anchor)
    with_source_license(conversion, hub.snapshot)  # a named file states no licence: the repo's card does
    conversion.details += (
        f" Source: the Hub repo `{hub.repo_id}`"
        + (f", file `{hub.filename}`" if hub.filename else "")
        + f", commit `{hub.sha}`."
    )
    return conversion


def _resolve_hub(
    repo_id: str,
    *,
    revision,
    cache_dir,
    token,
    verify: bool,
    source: str | None,
    filename: str | None,
    tolerance: float,
    load: LoadRequest | None = None,
) -> Resolved:
    from huggingface_hub.file_download import repo_folder_name

    hub = _hub_source(repo_id, revision=revision, cache_dir=cache_dir, token=token, source=source, filename=filename)
    if hub.layout == "hf_vit":
        if verify:
            logger.info("%s is an hf_vit checkpoint: nothing converted, nothing to verify", repo_id)
        return Resolved(
            location=repo_id,
            layout=hub.layout,
            source_repo=repo_id,
            commit=hub.sha,
            load_kwargs={"revision": hub.sha, "cache_dir": cache_dir, "token": token},
        )
    key = "default" if filename is None else hashlib.sha256(filename.encode()).hexdigest()[:16]
    target = (
        conversion_cache_root(cache_dir)
        / repo_folder_name(repo_id=repo_id, repo_type="model")
        / hub.sha
        / f"{hub.layout}-v{CONVERTER_VERSION}-{key}"
    )
    if not verify and _usable_cache(target):
        logger.info("loading the cached conversion of %s (commit %s) from %s", repo_id, hub.sha, target)
        return Resolved(location=str(target), layout=hub.layout, from_cache=True, source_repo=repo_id, commit=hub.sha)
    conversion = _convert_hub_source(hub, cache_dir=cache_dir, token=token)
    diff = _write(
        conversion,
        target,
        verify=verify,
        tolerance=tolerance,
        base_model=repo_id,
        model_name=f"{repo_id.split('/')[-1]}-hf_vit",
        commit=hub.sha,
        command=_call("hf_vit.from_pretrained", repo_id, revision=revision, filename=filename, source=source),
        load=load,
    )
    return Resolved(
        location=str(target),
        layout=hub.layout,
        converted=True,
        max_abs_diff=diff,
        source_repo=repo_id,
        commit=hub.sha,
        conversion=conversion,
    )


def _call(function: str, *args, **kwargs) -> str:
    """A Python call as text, for the card's "how it was made": `hf_vit.from_pretrained("a/b", revision="v1")`."""
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items() if v is not None]
    return f"{function}({', '.join(parts)})"


# ---------------------------------------------------------------------------------------------------------------
# for the command lines
# ---------------------------------------------------------------------------------------------------------------
def base_lineage(name_or_path, *, cache_dir=None, token=None) -> Lineage:
    """The lineage of weights fine-tuned from `name_or_path` (what `model_name_or_path` names): the base model's Hub
    repo id and commit, its licence (read from its card: the source's own card for a foreign checkpoint, through its
    conversion), and `relation` "finetune".

    A Hub repo is itself the base (an hf_vit repo, or a foreign one converted); a local folder names its base with its
    card's `base_model` (a conversion or a fine-tune of a Hub model), or none. ValueError as `resolve_pretrained`."""
    name = os.fspath(name_or_path)
    resolved = resolve_pretrained(name, cache_dir=cache_dir, token=token)
    card = Path(resolved.location) / "README.md"
    if resolved.layout == "hf_vit" and resolved.source_repo:  # an hf_vit repo on the Hub: its own card
        errors = _hub_errors()
        try:
            card = _download(
                resolved.source_repo, "README.md", revision=resolved.commit, cache_dir=cache_dir, token=token
            )
        except (errors.EntryNotFoundError, ValueError):
            card = None
    metadata = read_card_metadata(card) if card is not None else {}
    license = license_from_metadata(metadata)
    if resolved.source_repo:
        return Lineage(resolved.source_repo, resolved.commit, license, "finetune", origin=name)
    own_card = Path(name).expanduser() / "README.md"
    if resolved.layout != "hf_vit" and own_card.is_file():
        # a local timm/transformers folder (an export of hf_vit weights, say): the base model its own card names,
        # not that of its cached conversion, which knows only local files
        return Lineage(
            base_model_from_metadata(read_card_metadata(own_card), own_card), None, license, "finetune", origin=name
        )
    return Lineage(base_model_from_metadata(metadata, card), None, license, "finetune", origin=name)


def pretrained_location(name_or_path, cache_dir=None, token=None) -> str:
    """What to give transformers' `from_pretrained` for `name_or_path`: the name itself for an hf_vit checkpoint, else
    the folder of its cached conversion (converted now if needed). Refusals are ValueErrors."""
    return resolve_pretrained(name_or_path, cache_dir=cache_dir, token=token).location


def convert_pretrained(
    name_or_path,
    output_dir,
    *,
    revision=None,
    cache_dir=None,
    token=None,
    verify: bool = False,
    source: str | None = None,
    filename: str | None = None,
    overwrite: bool = False,
    tolerance: float = VERIFY_TOLERANCE,
    command: str | None = None,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
) -> dict:
    """Convert any supported checkpoint (layout detected; a Hub repo id or a local path) into `output_dir`, as
    scripts/convert_checkpoint.py does without --source (weights above `max_shard_size` sharded with an index).
    Returns {"output_dir", "max_abs_diff", "model" (built when first read), "conversion", "layout"}; with `verify`
    nothing is written above `tolerance`. The card carries the source's licence, and for a Hub source its repo id and
    commit as `base_model`; `command` (default: this call) is recorded in it as what converted the weights."""
    from ..output_dir import check_output_dir

    check_output_dir(output_dir, inputs={"checkpoint": Path(os.fspath(name_or_path)).expanduser()}, overwrite=overwrite)
    name = os.fspath(name_or_path)
    path = Path(name).expanduser()
    base_model, commit = None, None
    command = command or _call(
        "hf_vit.convert_pretrained", name, os.fspath(output_dir), revision=revision, filename=filename, source=source
    )
    if path.exists():
        if path.is_dir():
            check_links_inside(path)
        if filename is not None and path.is_dir():
            path = path / filename
        layout = _layout_of(path, source)
        if layout == "hf_vit":
            raise ValueError(f"{path} is already an hf_vit checkpoint; nothing to convert")
        conversion = convert_layout(layout, path)
    else:
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        try:
            validate_repo_id(name)
        except HFValidationError:
            raise ValueError(
                f"{name!r} is neither an existing file or folder nor a Hub repo id (NAMESPACE/NAME)"
            ) from None
        hub = _hub_source(name, revision=revision, cache_dir=cache_dir, token=token, source=source, filename=filename)
        if hub.layout == "hf_vit":
            raise ValueError(f"the Hub repo {name} is already an hf_vit checkpoint; nothing to convert")
        layout = hub.layout
        conversion = _convert_hub_source(hub, cache_dir=cache_dir, token=token)
        base_model, commit = name, hub.sha
    diff = verify_conversion(conversion, tolerance) if verify else None
    write_hf_vit_folder(
        conversion,
        output_dir,
        overwrite=overwrite,
        max_abs_diff=diff,
        base_model=base_model,
        commit=commit,
        command=command,
        max_shard_size=max_shard_size,
    )
    return ConversionResult(output_dir=Path(output_dir), max_abs_diff=diff, conversion=conversion, layout=layout)


__all__ = [
    "LAYOUTS",
    "Resolved",
    "base_lineage",
    "convert_pretrained",
    "detect_config_layout",
    "from_pretrained",
    "pretrained_location",
    "resolve_pretrained",
]
