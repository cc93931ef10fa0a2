"""Reading foreign weight files safely, and writing (optionally sharded) safetensors that are checked bitwise.

Every reader turns a file problem into one `ValueError` sentence (what file, what is wrong): truncated or corrupt
safetensors / npz, pickles that need arbitrary code (refused: pickles load only with `torch.load(weights_only=True)`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pickle
import warnings
import zipfile
from pathlib import Path

import torch

# the file names, once: transformers' own constants, and the code files save_pretrained copies into a checkpoint
# (`X as X`: names only re-exported here, for hub.py and output_dir.py, kept by ruff's unused-import fix)
from transformers.utils import CONFIG_NAME as CONFIG_NAME
from transformers.utils import IMAGE_PROCESSOR_NAME as IMAGE_PROCESSOR_NAME
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME

CODE_FILES = ("configuration_hf_vit.py", "modeling_hf_vit.py")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# Wrappers added by DDP (`module.`) and torch.compile (`_orig_mod.`); they never belong to the weights' names.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
logger = logging.getLogger(__name__)


def _require_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return path


def load_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = _require_file(path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise ValueError(f"cannot read {path}: not a valid safetensors file (truncated or corrupt?): {error}") from None


def check_safetensors_file(path: str | os.PathLike) -> None:
    """Open the file's header (cheap: no tensor is read); a truncated or corrupt file raises ValueError naming it."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt"):
            pass
    except (SafetensorError, OSError) as error:
        raise ValueError(
            f"{path} is damaged: not a complete safetensors file (truncated or corrupt?): "
            f"{(str(error).splitlines() or [type(error).__name__])[0]}"
        ) from None


def check_model_location(name: str) -> None:
    """For the CLIs' MODEL argument (a local folder or a Hub id), before transformers loads it: a path that does not
    exist, which transformers would report as a malformed Hub id, and local safetensors weights that are damaged,
    which it would report with a traceback from safetensors. ValueError in one line; anything else is left to the
    loader."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    path = Path(name)
    if path.is_dir():
        try:
            files = weight_files_in(path)
        except ValueError:  # no weights here: the loader says what it expected
            return
        for file in files:
            if file.suffix == ".safetensors" and file.is_file():
                check_safetensors_file(file)
        return
    if path.exists():
        raise ValueError(f"{name} is a file; expected a model folder (config.json and weights) or a Hub id")
    try:
        validate_repo_id(name)  # also refuses "a/b/c", "./x", "~/x": paths, not repo ids
    except HFValidationError:
        raise ValueError(f"model folder {name} does not exist") from None


def _is_torch_file(path: Path) -> bool:
    """torch.save writes a zip archive (since 1.6) or, in the legacy format, a pickle (protocol 2-5 opcode first)."""
    with open(path, "rb") as handle:
        head = handle.read(2)
    return head == b"PK" or (len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5)


def _pickle_protocol(path: Path) -> int | None:
    with open(path, "rb") as handle:
        head = handle.read(2)
    return head[1] if len(head) == 2 and head[0] == 0x80 else None


def _unpickler_error(text: str) -> str:
    """What torch's unpickler found wrong, without its advice to load with weights_only=False."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    after = next((i for i, line in enumerate(lines) if "WeightsUnpickler error" in line), None)
    if after is not None and after + 1 < len(lines):
        return lines[after + 1]
    return next((line for line in lines if "weights_only" not in line), "unreadable pickle")


def load_pickle(path: str | os.PathLike, mmap: bool = False):
    """`torch.load(weights_only=True)`: tensors, containers, numbers and `argparse.Namespace` (training scripts such
    as DINO's and timm's store their arguments in it); anything that would run code is refused. `mmap`: tensors of
    a zip-format file are memory-mapped, not read (the legacy format has no such layout and is read)."""
    path = _require_file(path)
    # Checked first: torch.load feeds any other bytes to its unpickler, which fails with KeyError: 101 or
    # "Unsupported operand", messages that say nothing about what the file is.
    if not _is_torch_file(path):
        raise ValueError(
            f"{path} is not a PyTorch checkpoint: torch.save writes a zip archive or a pickle, and this file is neither"
        )
    with open(path, "rb") as handle:
        mmap = mmap and handle.read(2) == b"PK"
    try:
        with torch.serialization.safe_globals([argparse.Namespace]), warnings.catch_warnings():
            # torch's notice about a protocol other than its own: the refusal below says what matters
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        text = str(error)
        # torch's message mentions weights_only for every failure; only an unsupported GLOBAL means code to run
        needs_code = next((line.strip() for line in text.splitlines() if "unsupported global" in line.lower()), None)
        if needs_code:
            raise ValueError(
                f"refusing to load {path}: this pickle needs arbitrary code to unpickle ({needs_code.rstrip('.')}); "
                "hf_vit only loads pickles with torch.load(weights_only=True). Re-save the plain state dict "
                "(or safetensors) in an environment you trust"
            ) from None
        # an intact pickle that torch's safe unpickler cannot read: pickle protocol 4/5 (pickle.dump, or torch.save
        # with pickle_protocol=4) frames its data with an instruction that unpickler does not know
        operand = next((line.strip() for line in text.splitlines() if "unsupported operand" in line.lower()), None)
        if operand:
            raise ValueError(
                f"refusing to load {path}: a pickle written at pickle protocol {_pickle_protocol(path) or '4 or 5'}, "
                f"which torch.load(weights_only=True), the only way hf_vit reads pickles, cannot read ({operand}); "
                "re-save it as safetensors, or with torch.save at its default protocol, in an environment you trust"
            ) from None
        raise ValueError(
            f"cannot read {path}: not a valid PyTorch checkpoint (truncated or corrupt?): {_unpickler_error(text)}"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, KeyError, IndexError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(
            f"cannot read {path}: not a valid PyTorch checkpoint (truncated or corrupt?): {first}"
        ) from None


def load_npz(path: str | os.PathLike) -> dict:
    """A JAX/Flax `.npz` as {name: numpy array} (read fully, so a damaged member fails here, with one message)."""
    import numpy as np

    path = _require_file(path)
    # An .npz is a zip archive; checked first because np.load takes any other bytes for a pickle and says so
    with open(path, "rb") as handle:
        if handle.read(2) != b"PK":
            raise ValueError(f"{path} is not an .npz archive (a zip of NumPy arrays, as np.savez writes)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as error:
        raise ValueError(f"cannot read {path}: not a valid .npz archive (truncated or corrupt?): {error}") from None


def strip_wrapper_prefixes(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state_dict.items():
        changed = True
        while changed:
            changed = False
            for prefix in WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix) :], True
        out[key] = value
    return out


def is_state_dict(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def unwrap_state_dict(obj, path, keys=("state_dict", "model", "module", "state_dict_ema", "model_ema")) -> dict:
    """The tensor dict inside a training checkpoint (`{"state_dict": ..., "optimizer": ...}`) or the dict itself."""
    if is_state_dict(obj):
        return obj
    if isinstance(obj, dict):
        for key in keys:
            if is_state_dict(obj.get(key)):
                return obj[key]
        found = ", ".join(sorted(str(k) for k in obj)[:8])
        raise ValueError(f"{path} holds no state dict (a dict of tensors); its top-level keys are: {found}")
    raise ValueError(f"{path} holds a {type(obj).__name__}, not a state dict (a dict of tensors)")


def weight_files_in(folder: Path) -> list[Path]:
    """The weight file(s) of a checkpoint folder: safetensors first, then pickles; shards via their index."""
    for index_name in (SAFE_WEIGHTS_INDEX_NAME, "pytorch_model.bin.index.json"):
        index = folder / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (ValueError, KeyError) as error:
                raise ValueError(f"cannot read the shard index {index}: {error}") from None
            return [folder / name for name in dict.fromkeys(weight_map.values())]
    for name in (SAFE_WEIGHTS_NAME, "pytorch_model.bin", "model.bin", "pytorch_model.pt", "model.pt", "model.pth"):
        if (folder / name).is_file():
            return [folder / name]
    candidates = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", *PICKLE_SUFFIXES))
    if len(candidates) == 1:
        return candidates
    listing = ", ".join(p.name for p in sorted(folder.iterdir())[:10]) or "nothing"
    raise ValueError(
        f"found no unique weight file in {folder} (expected model.safetensors or pytorch_model.bin; it has {listing})"
    )


def load_weights(path: str | os.PathLike, unwrap: bool = True, mmap: bool = False) -> dict:
    """Tensors from a file or folder (safetensors or a weights_only pickle; sharded folders merged). safetensors are
    always memory-mapped (pages are read as a tensor is used); `mmap` maps zip-format pickles too."""
    path = _require_file(path)
    files = weight_files_in(path) if path.is_dir() else [path]
    merged = {}
    for file in files:
        if file.suffix == ".npz":
            raise ValueError(
                f"{file} is a JAX/Flax .npz archive, not a PyTorch/safetensors state dict; use --source npz"
            )
        obj = load_safetensors(file) if file.suffix == ".safetensors" else load_pickle(file, mmap=mmap)
        merged.update(unwrap_state_dict(obj, file) if unwrap else obj)
    return merged


def load_image_processor(location: str | os.PathLike, **hub_kwargs):
    """The image processor saved with a checkpoint (a folder or Hub repo's preprocessor_config.json) as the class
    transformers ships that it names (`image_processor_type`; `ViTImageProcessor` if it names none of them). An
    `auto_map` in the file (code of some other repo) is dropped and never executed or written back; OSError when
    there is no such file. `hub_kwargs`: revision, cache_dir, token."""
    import transformers
    from transformers.image_processing_utils import ImageProcessingMixin

    settings, _ = transformers.ViTImageProcessor.get_image_processor_dict(os.fspath(location), **hub_kwargs)
    settings = dict(settings)
    if settings.pop("auto_map", None) is not None:
        logger.warning(
            "%s: the image processor's auto_map (code from elsewhere) is ignored; using transformers' own class",
            location,
        )
    name = settings.pop("image_processor_type", None)
    settings.pop("processor_class", None)
    cls = getattr(transformers, name, None) if isinstance(name, str) else None
    if not (
        isinstance(cls, type) and issubclass(cls, ImageProcessingMixin) and cls.__module__.startswith("transformers.")
    ):
        if name is not None:
            logger.warning(
                "%s: image processor %r is not one transformers ships; using ViTImageProcessor with its settings",
                location,
                name,
            )
        cls = transformers.ViTImageProcessor
    return cls.from_dict(settings)


# ---------------------------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------------------------
def default_max_shard_size() -> int | str:
    """transformers' own default shard size for `save_pretrained` (read from its signature, so the writers here shard
    exactly as transformers does)."""
    import inspect

    from transformers import PreTrainedModel

    return inspect.signature(PreTrainedModel.save_pretrained).parameters["max_shard_size"].default


def _separate_shared(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors stores no aliases: a tensor whose bytes overlap another's (tied/shared weights) gets its own copy.
    Disjoint views of one storage (q, k and v split from a fused qkv, a memory-mapped file's tensors) are written as
    they are, without a copy."""
    ranges: dict[tuple, list[tuple[int, int]]] = {}
    out = {}
    for key, tensor in state_dict.items():
        tensor = tensor.detach()
        if tensor.numel():
            storage = (tensor.untyped_storage().data_ptr(), tensor.device)
            start = tensor.data_ptr()
            end = start + tensor.numel() * tensor.element_size()
            taken = ranges.setdefault(storage, [])
            if any(start < other_end and other_start < end for other_start, other_end in taken):
                tensor = tensor.clone()
            else:
                taken.append((start, end))
        out[key] = tensor.contiguous()
    return out


def save_safetensors_checked(
    state_dict: dict[str, torch.Tensor], folder: str | os.PathLike, max_shard_size: int | str | None = None
) -> list[Path]:
    """Write `state_dict` into `folder` as model.safetensors, or shards of at most `max_shard_size` (default:
    transformers' `save_pretrained` default) + index, split by huggingface_hub as transformers does, metadata
    {"format": "pt"}; then re-read every file and check each tensor bitwise (same dtype, shape and bytes). Returns
    the files written.

    Nothing is copied: memory-mapped tensors (`load_weights(..., mmap=True)`) and views of them are written as they
    are, one shard at a time, so writing costs about the weights' own size in memory, once."""
    from huggingface_hub import split_torch_state_dict_into_shards
    from safetensors.torch import save_file

    folder = Path(folder)
    tensors = _separate_shared(state_dict)
    split = split_torch_state_dict_into_shards(
        tensors,
        filename_pattern="model{suffix}.safetensors",
        max_shard_size=default_max_shard_size() if max_shard_size is None else max_shard_size,
    )
    written = []
    for filename, keys in split.filename_to_tensors.items():
        save_file({key: tensors[key] for key in keys}, str(folder / filename), metadata={"format": "pt"})
        written.append(folder / filename)
    if split.is_sharded:
        index = {
            "metadata": {"total_size": sum(t.numel() * t.element_size() for t in tensors.values())},
            "weight_map": split.tensor_to_filename,
        }
        (folder / SAFE_WEIGHTS_INDEX_NAME).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        written.append(folder / SAFE_WEIGHTS_INDEX_NAME)
    check_safetensors_bitwise(state_dict, folder)
    return written


# safetensors' dtype names (its format's header), for the dtypes checkpoints hold
_SAFETENSORS_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
    torch.float8_e4m3fn: "F8_E4M3",
    torch.float8_e5m2: "F8_E5M2",
}


def _safetensors_layout(path: Path) -> tuple[dict, int]:
    """(header, offset of the data) of a safetensors file: an 8-byte little-endian header length, then the JSON
    header giving each tensor's dtype, shape and byte range in the data that follows."""
    with open(path, "rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(length))
    return header, 8 + length


_COMPARE_CHUNK = 1 << 24  # bytes read and compared at a time: the check's own memory, whatever the tensor's size


def _same_bytes(raw, offset: int, expected: torch.Tensor, buffer: torch.Tensor) -> bool:
    """Whether the file `raw` holds the bytes of `expected` (a flat uint8 tensor) at `offset`, read chunk by chunk."""
    raw.seek(offset)
    view = memoryview(buffer.numpy())
    for start in range(0, expected.numel(), _COMPARE_CHUNK):
        size = min(_COMPARE_CHUNK, expected.numel() - start)
        got = 0
        while got < size:
            count = raw.readinto(view[got:size])
            if not count:
                return False
            got += count
        if not torch.equal(buffer[:size], expected[start : start + size]):
            return False
    return True


def check_safetensors_bitwise(state_dict, folder: str | os.PathLike) -> int:
    """Re-read the safetensors in `folder` and compare every tensor with `state_dict` (a mapping of names to tensors)
    bit for bit; returns the count. Shard by shard, tensor by tensor and 16 MB at a time, with plain reads: the check
    holds no more of the written files in memory than that, whatever the size of the checkpoint."""
    from safetensors import safe_open

    folder = Path(folder)
    found = set()
    buffer = torch.empty(_COMPARE_CHUNK, dtype=torch.uint8)
    for file in weight_files_in(folder):
        with safe_open(str(file), framework="pt") as handle:  # a file safetensors cannot open fails here
            if (handle.metadata() or {}).get("format") != "pt":
                raise RuntimeError(f"{file} lacks the safetensors metadata format=pt")
        header, data_start = _safetensors_layout(file)
        with open(file, "rb", buffering=0) as raw:
            for key, entry in header.items():
                if key == "__metadata__" or key not in state_dict:
                    found.add(key)
                    continue
                tensor = state_dict[key].detach().cpu().contiguous()
                start, end = entry["data_offsets"]
                same = (
                    entry["dtype"] == _SAFETENSORS_DTYPES.get(tensor.dtype)
                    and tuple(entry["shape"]) == tuple(tensor.shape)
                    and end - start == tensor.numel() * tensor.element_size()
                    and _same_bytes(raw, data_start + start, tensor.reshape(-1).view(torch.uint8), buffer)
                )
                if not same:
                    raise RuntimeError(f"tensor {key} differs after writing and re-reading {folder}")
                found.add(key)
    found.discard("__metadata__")
    if found != set(state_dict):
        raise RuntimeError(
            f"written tensors differ from the source: missing {sorted(set(state_dict) - found)[:5]}, "
            f"extra {sorted(found - set(state_dict))[:5]}"
        )
    return len(state_dict)
