"""The shared core of the converters: rename rules, building the hf_vit model from converted weights, verification
against the source library, and writing the converted folder."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..checkpoint_io import (
    default_max_shard_size,
    load_image_processor,
    strip_wrapper_prefixes,
)
from ..configuration_hf_vit import HfViTConfig, image_size_pair
from ..fileio import atomic_directory, check_links_inside, read_json_object
from ..model_card import (
    License,
    Lineage,
    license_from_metadata,
    read_card_metadata,
    render_model_card,
    stricter_license,
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
    config: HfViTConfig, state_dict, dtype: torch.dtype | None = None
) -> HfViTModel | HfViTForImageClassification | HfViTForMaskedImageModeling:
    """An hf_vit model for `config` holding exactly `state_dict` (keys in hf_vit's classification naming; values
    tensors or `LazyTensor`s); a SimMIM decoder (`decoder.0.*`) makes it an `HfViTForMaskedImageModeling`.

    The model is built on the meta device and each tensor is read (or computed), cast to `dtype` (default: the
    weights' own, `weights_dtype`) and assigned in turn, so building it needs the memory of the weights once."""
    model_class = _model_class(state_dict)
    dtype = dtype or weights_dtype(state_dict)
    with torch.device("meta"):
        model = model_class(config)
    if model_class is HfViTModel:  # a bare backbone's keys carry no "vit." prefix
        state_dict = _BackboneNames(state_dict)
    expected = model.state_dict()
    _check_weights_fit(state_dict, expected)
    for key in expected:  # the model's own order: a layer's tensors one after another
        tensor = materialize(state_dict[key])
        tensor = tensor.to(dtype) if tensor.is_floating_point() else tensor
        module_name, _, name = key.rpartition(".")
        module = model.get_submodule(module_name)
        module._parameters[name] = nn.Parameter(tensor.contiguous(), requires_grad=tensor.is_floating_point())
    return model.eval()


def _check_weights_fit(state_dict, expected) -> None:
    """Refuse converted weights that are not exactly the names and shapes of `expected` (a meta-device model's state
    dict), before anything is allocated or written: a config that disagrees with the weights (an image_size of 1e9
    implies a position table of 1e15 rows) is one line, not an allocation."""
    for key in state_dict:
        if key in expected and tuple(expected[key].shape) != tuple(state_dict[key].shape):
            hint = " (from its image_size and patch_size)" if key.endswith("position_embeddings") else ""
            raise ValueError(
                f"shape mismatch for {key}: the checkpoint has {tuple(state_dict[key].shape)}, the config implies "
                f"{tuple(expected[key].shape)}{hint}"
            )
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    if missing or unexpected:
        raise ValueError(
            f"converted weights do not fit the hf_vit model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )


def _model_class(state_dict) -> type:
    if "decoder.0.weight" in state_dict:
        return HfViTForMaskedImageModeling
    return HfViTForImageClassification if "classifier.weight" in state_dict else HfViTModel


class _BackboneNames(Mapping):
    """A classification-named state dict seen with `HfViTModel`'s names (no "vit." prefix), nothing copied."""

    def __init__(self, state_dict):
        self._state_dict = state_dict

    def __getitem__(self, key):
        return self._state_dict[f"vit.{key}"]

    def __iter__(self):
        return (key.removeprefix("vit.") for key in self._state_dict)

    def __len__(self):
        return len(self._state_dict)


def _mean_abs(tensor) -> float | None:
    """The mean absolute value of a (lazy) tensor, e.g. a LayerScale's gamma; None for a meta tensor, which has no
    values (a model built on the meta device to read its architecture)."""
    if isinstance(tensor, torch.Tensor) and tensor.is_meta:
        return None
    return float(materialize(tensor).detach().float().abs().mean())


def _materialized(state_dict) -> dict[str, torch.Tensor]:
    """Every tensor of a (lazy) state dict read: for the source library's reference model (`verify`) only."""
    return {key: materialize(value) for key, value in state_dict.items()}


def _name_rule(source: str, target: str) -> tuple[str, str]:
    """A (regex, replacement) rule for `_rename` from a pair of names of the list above."""
    pattern = "^" + re.escape(source).replace(re.escape("{i}"), r"(\d+)") + ("" if source.endswith(".") else "$")
    return pattern, target.replace("{i}", r"\1")


# ---------------------------------------------------------------------------------------------------------------
# Streaming: source tensors read one at a time, converted per key, never a whole state dict in memory
# ---------------------------------------------------------------------------------------------------------------
class LazyTensor:
    """A tensor known by its shape and dtype (a meta tensor) and read, or computed from other tensors, only by
    `load()`. The converters rename, reshape and fuse these as they would tensors (`cat`, `zeros`, `reshape`, `T`,
    ...), so a converted state dict is a recipe: each hf_vit tensor is made when it is written, then dropped."""

    __slots__ = ("meta", "_load")

    def __init__(self, meta: torch.Tensor, load: Callable[[], torch.Tensor]):
        self.meta, self._load = meta, load

    def load(self) -> torch.Tensor:
        tensor = self._load()
        if tuple(tensor.shape) != tuple(self.meta.shape):  # a header that lies about its tensor
            raise ValueError(f"a tensor read as {tuple(tensor.shape)} was announced as {tuple(self.meta.shape)}")
        return tensor

    shape = property(lambda self: self.meta.shape)
    dtype = property(lambda self: self.meta.dtype)
    ndim = property(lambda self: self.meta.ndim)
    T = property(lambda self: self.apply(lambda t: t.T))

    def numel(self) -> int:
        return self.meta.numel()

    def size(self, dim: int | None = None):
        return self.meta.size() if dim is None else self.meta.size(dim)

    def is_floating_point(self) -> bool:
        return self.meta.is_floating_point()

    def apply(self, function: Callable[[torch.Tensor], torch.Tensor]) -> LazyTensor:
        """`function` (a shape operation, a cast) applied when the tensor is loaded; its shape now, on meta."""
        return LazyTensor(function(self.meta), lambda: function(self.load()))

    def reshape(self, *shape) -> LazyTensor:
        return self.apply(lambda t: t.reshape(*shape))

    def permute(self, *dims) -> LazyTensor:
        return self.apply(lambda t: t.permute(*dims))

    def transpose(self, dim0: int, dim1: int) -> LazyTensor:
        return self.apply(lambda t: t.transpose(dim0, dim1))

    def flatten(self, *args) -> LazyTensor:
        return self.apply(lambda t: t.flatten(*args))

    def __getitem__(self, index) -> LazyTensor:
        return self.apply(lambda t: t[index])

    def new_zeros(self, *size) -> LazyTensor:
        return zeros(size[0] if len(size) == 1 and not isinstance(size[0], int) else size, self.dtype)

    def __repr__(self) -> str:
        return f"LazyTensor(shape={tuple(self.shape)}, dtype={self.dtype})"


def materialize(value) -> torch.Tensor:
    """The tensor itself: read now if it is a `LazyTensor`."""
    return value.load() if isinstance(value, LazyTensor) else value


def _meta(value) -> torch.Tensor:
    return value.meta if isinstance(value, LazyTensor) else value.detach().to("meta")


def cat(tensors, dim: int = 0):
    """`torch.cat` of tensors or `LazyTensor`s; lazy if any part is (the parts are read when the result is)."""
    tensors = list(tensors)
    if not any(isinstance(t, LazyTensor) for t in tensors):
        return torch.cat(tensors, dim)
    return LazyTensor(
        torch.cat([_meta(t) for t in tensors], dim), lambda: torch.cat([materialize(t) for t in tensors], dim)
    )


def zeros(shape, dtype: torch.dtype) -> LazyTensor:
    """Zeros of `shape`, made only when written (a bias the source does not have)."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    return LazyTensor(torch.empty(shape, dtype=dtype, device="meta"), lambda: torch.zeros(shape, dtype=dtype))


def weights_dtype(state_dict) -> torch.dtype:
    """The dtype of a state dict's floating-point weights: the one holding most of their elements (a bf16 checkpoint
    with an fp32 scalar is bf16); float32 when it has none."""
    counts: dict[torch.dtype, int] = {}
    for value in state_dict.values():
        if value.is_floating_point():
            counts[value.dtype] = counts.get(value.dtype, 0) + value.numel()
    return max(counts, key=counts.get) if counts else torch.float32


def weights_nbytes(state_dict, dtype: torch.dtype | None = None) -> int:
    """Bytes of a state dict's tensors (floating-point ones counted in `dtype` if given)."""
    total = 0
    for value in state_dict.values():
        size = dtype.itemsize if dtype is not None and value.is_floating_point() else value.dtype.itemsize
        total += value.numel() * size
    return total


_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


class _SafetensorsFile:
    """One safetensors file, opened (memory-mapped by safetensors) while some of its tensors are still to be read:
    once each has been read the file is closed, so the pages read are released with it."""

    def __init__(self, path: Path):
        from safetensors import SafetensorError, safe_open

        self.path = path
        try:
            with safe_open(str(path), framework="pt") as handle:
                self.entries = {key: handle.get_slice(key) for key in handle.keys()}
                self.entries = {
                    key: (tuple(s.get_shape()), _SAFETENSORS_DTYPES.get(s.get_dtype()))
                    for key, s in self.entries.items()
                }
        except (SafetensorError, OSError) as error:
            raise ValueError(
                f"cannot read {path}: not a valid safetensors file (truncated or corrupt?): {error}"
            ) from None
        unknown = [key for key, (_, dtype) in self.entries.items() if dtype is None]
        if unknown:
            raise ValueError(f"{path}: tensor {unknown[0]} has a dtype hf_vit does not convert")
        self._handle = None
        self._unread: set[str] = set(self.entries)

    def read(self, key: str) -> torch.Tensor:
        from safetensors import safe_open

        if self._handle is None:
            self._handle = safe_open(str(self.path), framework="pt")
        tensor = self._handle.get_tensor(key)
        self._unread.discard(key)
        if not self._unread:  # every tensor read once: let the mapping go
            self._handle, self._unread = None, set(self.entries)
        return tensor

    def lazy(self, key: str) -> LazyTensor:
        shape, dtype = self.entries[key]
        return LazyTensor(torch.empty(shape, dtype=dtype, device="meta"), lambda: self.read(key))


def _lazy_pickle(path: Path) -> dict:
    """A `torch.load(weights_only=True)` pickle with `mmap=True` (zip format: the tensors stay in the file until
    read); a legacy, non-zip pickle cannot be mapped and is read whole."""
    from ..checkpoint_io import _is_torch_file, load_pickle

    with open(path, "rb") as handle:
        zipped = handle.read(2) == b"PK"
    if not zipped or not _is_torch_file(path):
        return load_pickle(path)
    try:
        with torch.serialization.safe_globals([__import__("argparse").Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001  (every failure is reported by the plain reader's one-line messages)
        return load_pickle(path)
    return _wrap_tensors(obj)


def _wrap_tensors(obj):
    """Every tensor in a loaded pickle (nested dicts kept) as a `LazyTensor` over its memory-mapped storage."""
    if isinstance(obj, torch.Tensor):
        return LazyTensor(obj.detach().to("meta"), lambda: obj)
    if isinstance(obj, dict):
        return {key: _wrap_tensors(value) for key, value in obj.items()}
    return obj


def _lazy_npz(path: Path) -> dict[str, LazyTensor]:
    """A `.npz` archive's arrays, each read from the archive when needed (members are zipped: they cannot be mapped,
    so each is read alone). Shapes and dtypes come from the members' .npy headers."""
    import zipfile

    import numpy as np

    from ..checkpoint_io import _require_file

    path = _require_file(path)
    with open(path, "rb") as handle:
        if handle.read(2) != b"PK":
            raise ValueError(f"{path} is not an .npz archive (a zip of NumPy arrays, as np.savez writes)")
    entries = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                if not member.endswith(".npy"):
                    continue
                with archive.open(member) as file:
                    version = np.lib.format.read_magic(file)
                    read_header = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    shape, _, dtype = read_header(file)
                entries[member[: -len(".npy")]] = (shape, dtype)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as error:
        raise ValueError(f"cannot read {path}: not a valid .npz archive (truncated or corrupt?): {error}") from None

    def read(name):
        try:
            with np.load(path, allow_pickle=False) as archive:
                return torch.from_numpy(np.ascontiguousarray(archive[name]))
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as error:
            raise ValueError(f"cannot read {name} from {path} (truncated or corrupt?): {error}") from None

    lazy = {}
    for name, (shape, dtype) in entries.items():
        if dtype.kind not in "fiub":
            raise ValueError(f"{path}: array {name} has dtype {dtype}, not a number type")
        meta = torch.empty(shape, dtype=torch.from_numpy(np.zeros(0, dtype=dtype)).dtype, device="meta")
        lazy[name] = LazyTensor(meta, lambda name=name: read(name))
    return lazy


def lazy_state_dict(path, unwrap: bool = True) -> dict:
    """The tensors of a weight file or checkpoint folder (sharded or not) as `LazyTensor`s: nothing is read until a
    tensor is. safetensors through `safe_open` (each file mapped only while some of its tensors are unread), `.pth`
    / `.bin` through `torch.load(mmap=True, weights_only=True)`, `.npz` member by member. `unwrap`: the state dict
    inside a training checkpoint (`{"model": ..., "optimizer": ...}`), as `checkpoint_io.load_weights`."""
    from ..checkpoint_io import _require_file, unwrap_state_dict, weight_files_in

    path = _require_file(path)
    files = weight_files_in(path) if path.is_dir() else [path]
    merged = {}
    for file in files:
        if file.suffix == ".npz":
            merged.update(_lazy_npz(file))
            continue
        if file.suffix == ".safetensors":
            source = _SafetensorsFile(file)
            merged.update({key: source.lazy(key) for key in source.entries})
            continue
        obj = _lazy_pickle(file)
        merged.update(_unwrap_lazy(obj, file, unwrap_state_dict) if unwrap else obj)
    return merged


def _unwrap_lazy(obj, path, unwrap_state_dict):
    """`checkpoint_io.unwrap_state_dict` for a pickle whose tensors are `LazyTensor`s."""
    if isinstance(obj, dict) and obj and all(isinstance(v, LazyTensor) for v in obj.values()):
        return obj
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "module", "state_dict_ema", "model_ema"):
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, LazyTensor) for v in inner.values()):
                return inner
    return unwrap_state_dict(obj, path)  # not a state dict: its one-line refusal


# transformers' own default for `save_pretrained` (50GB in 5.x), also the cache's: a 7B in bf16 is one file
DEFAULT_MAX_SHARD_SIZE = default_max_shard_size()


def write_weights_streamed(
    state_dict, folder, order: Iterable[str], dtype: torch.dtype, max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE
) -> list[Path]:
    """Write a (lazy) state dict into `folder` in transformers' layout (model.safetensors, or
    model-0000i-of-0000n.safetensors shards + model.safetensors.index.json; metadata format=pt), one tensor at a
    time: each is read (or computed), cast to `dtype` if floating-point, appended to its file and dropped, so writing
    needs the memory of one tensor whatever the shard size. `order` (the model's own) keeps a layer together."""
    from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME
    from transformers.utils.hub import convert_file_size_to_int

    limit = convert_file_size_to_int(max_shard_size)
    folder = Path(folder)
    shards: list[dict[str, dict]] = [{}]
    size = 0
    for key in order:
        value = state_dict[key]
        out_dtype = dtype if value.is_floating_point() else value.dtype
        nbytes = value.numel() * out_dtype.itemsize
        if shards[-1] and size + nbytes > limit:
            shards.append({})
            size = 0
        shards[-1][key] = {"dtype": out_dtype, "shape": list(value.shape), "data_offsets": [size, size + nbytes]}
        size += nbytes
    names = (
        [SAFE_WEIGHTS_NAME]
        if len(shards) == 1
        else [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    )
    for name, entries in zip(names, shards, strict=True):
        _write_safetensors_file(folder / name, entries, state_dict)
    _return_freed_memory()
    written = [folder / name for name in names]
    if len(shards) > 1:
        index = {
            "metadata": {"total_size": sum(e["data_offsets"][1] for shard in shards for e in shard.values())},
            "weight_map": {key: name for name, entries in zip(names, shards, strict=True) for key in entries},
        }
        (folder / SAFE_WEIGHTS_INDEX_NAME).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        written.append(folder / SAFE_WEIGHTS_INDEX_NAME)
    return written


def _return_freed_memory() -> None:
    """Give the memory of the tensors just written back to the system: glibc keeps freed blocks under its adaptive
    mmap threshold (up to 32 MB) in the heap for reuse, so after streaming thousands of tensors the process would
    hold tens of MB it no longer uses on top of the model loaded next; `malloc_trim` returns them (elsewhere: no-op)."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


_SAFETENSORS_NAMES = {dtype: name for name, dtype in _SAFETENSORS_DTYPES.items()}


def _write_safetensors_file(path: Path, entries: dict[str, dict], state_dict) -> None:
    """A safetensors file (the format's 8-byte header length, JSON header padded to 8 bytes, then the data in
    header order) written tensor by tensor; `safe_open` checks it after."""
    header = {"__metadata__": {"format": "pt"}}
    for key, entry in entries.items():
        header[key] = {**entry, "dtype": _SAFETENSORS_NAMES[entry["dtype"]]}
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as file:
        file.write(len(encoded).to_bytes(8, "little"))
        file.write(encoded)
        for key, entry in entries.items():
            tensor = materialize(state_dict[key]).to(entry["dtype"]).contiguous()
            if tuple(tensor.shape) != tuple(entry["shape"]):
                raise ValueError(f"{key} has shape {tuple(tensor.shape)}, announced {tuple(entry['shape'])}")
            if tensor.numel():
                file.write(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))
            del tensor
    from ..checkpoint_io import check_safetensors_file

    check_safetensors_file(path)


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
    """A converted checkpoint plus what the output folder needs to describe it.

    The weights are `weights` (hf_vit's classification naming; tensors or `LazyTensor`s still in the source file)
    with `config`: nothing is read until they are written (`write_hf_vit_folder`, one tensor at a time) or `model`
    is asked for (built then, in the weights' own dtype, once)."""

    source: str  # short, for the card's first line
    details: str  # the card's "Source" section
    config: HfViTConfig | None = None
    weights: Mapping | None = None
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
    built: HfViTModel | HfViTForImageClassification | HfViTForMaskedImageModeling | None = None

    @property
    def model(self) -> HfViTModel | HfViTForImageClassification | HfViTForMaskedImageModeling:
        """The hf_vit model, built from `weights` on first use (the memory of the weights, once)."""
        if self.built is None:
            self.built = _build(self.config, self.weights)
        return self.built

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the source's weights are in, which the converted folder keeps."""
        return self.built.dtype if self.built is not None else weights_dtype(self.weights)

    def nbytes(self, dtype: torch.dtype | None = None) -> int:
        """The converted weights' size in `dtype` (default: the source's)."""
        if self.built is not None:
            return weights_nbytes(self.built.state_dict(), dtype)
        return weights_nbytes(self.weights, dtype or self.dtype)


def read_source_license(path) -> License:
    """The licence a source checkpoint states: its card's metadata (`README.md` next to the weights: `license`, or
    `other` with `license_name`/`license_link`), else timm's `pretrained_cfg` licence in its config.json; `License()`
    (unknown) when it states none. `path` is the source folder (a file: nothing is read, a bare file states no
    licence)."""
    path = Path(path)
    if not path.is_dir():
        return License()
    stated = license_from_metadata(read_card_metadata(path / "README.md"))
    try:
        pretrained_cfg = read_json_object(path / "config.json").get("pretrained_cfg")
    except (OSError, ValueError):
        pretrained_cfg = None
    if isinstance(pretrained_cfg, dict) and pretrained_cfg.get("license"):
        # both stated and different: the stricter, with a warning and a note naming both (`stricter_license`)
        return stricter_license(stated, license_from_metadata({"license": pretrained_cfg["license"]}), path)
    return stated


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
    """The max-abs-diff between the converted model and the source library's own forward, both in fp32 (a bf16
    source is compared in fp32 too, so the tolerance means the same); VerificationError above `tolerance`."""
    if conversion.reference is None:
        raise ValueError("`verify`: no reference implementation for this source")
    try:
        forward = conversion.reference()
    except ImportError as error:
        raise ValueError(f"`verify` needs the source library installed ({error.name or error})") from None
    if conversion.dtype == torch.float32:
        model = conversion.model
    else:  # an fp32 copy for the comparison only: the converted folder keeps the source's dtype
        model = _build(conversion.config, conversion.weights, dtype=torch.float32)
    diff = max_abs_diff(model, forward)
    if not diff <= tolerance:
        raise VerificationError(
            f"verification failed: max-abs-diff {diff:.3g} against {conversion.reference_name} exceeds {tolerance:g}"
        )
    return diff


def save_converted_weights(conversion: Conversion, folder, max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE) -> None:
    """config.json (auto_map, `dtype`: the source's), the code files and the weights of `conversion` into `folder`,
    as the model's `save_pretrained` writes them, but streamed from the source one tensor at a time (a model already
    built is written from memory)."""
    from transformers.dynamic_module_utils import custom_object_save

    from ..modeling_hf_vit import AUTO_MAP

    if conversion.built is not None:
        model = conversion.built
        state_dict, dtype = model.state_dict(), model.dtype
        config = model.config
    else:
        weights, config, dtype = conversion.weights, conversion.config, conversion.dtype
        with torch.device("meta"):
            model = _model_class(weights)(config)
        state_dict = _BackboneNames(weights) if isinstance(model, HfViTModel) else weights
        _check_weights_fit(state_dict, model.state_dict())
    config.dtype = str(dtype).removeprefix("torch.")
    config.architectures = [type(model).__name__]
    custom_object_save(model, str(folder), config=config)
    config.auto_map = dict(AUTO_MAP)
    config.save_pretrained(folder)
    write_weights_streamed(state_dict, folder, model.state_dict().keys(), dtype, max_shard_size)


class ConversionResult(dict):
    """What `convert_checkpoint` / `convert_pretrained` return: {"output_dir", "max_abs_diff", "conversion", ...};
    its "model" is built from the conversion only when asked for, so a command that converts a giant into a folder
    never holds the model as well."""

    def __missing__(self, key):
        if key != "model":
            raise KeyError(key)
        self["model"] = model = self["conversion"].model
        return model


def write_hf_vit_folder(
    conversion: Conversion,
    output_dir,
    overwrite: bool = False,
    max_abs_diff: float | None = None,
    base_model: str | None = None,
    model_name: str | None = None,
    commit: str | None = None,
    command: str | None = None,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
) -> Path:
    """config.json (with auto_map), model.safetensors (shards of `max_shard_size` and their index if bigger; in the
    source's dtype, written tensor by tensor from the source), the code files, preprocessor_config.json and a model card
    (`base_model`: the source's Hub repo id at `commit`, linked in the card's metadata; the source's licence,
    `conversion.license`; `command`: what converted it); atomically (nothing is left in `output_dir` if any step
    fails)."""
    from transformers import ViTImageProcessor

    config = conversion.built.config if conversion.built is not None else conversion.config
    height, width = image_size_pair(config.image_size)
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
        processor.save_pretrained(staging)
        save_converted_weights(conversion, staging, max_shard_size)
        config = conversion.built.config if conversion.built is not None else conversion.config
        card = render_model_card(
            config,
            num_parameters=_parameter_count(conversion),
            model_name=model_name or output_dir.name,
            source=conversion.source,
            source_details=details,
            license=conversion.license or License(),
            lineage=Lineage(base_model=base_model, commit=commit, license=conversion.license or License()),
            command=command,
        )
        write_model_card(staging, card)
    return output_dir


def _parameter_count(conversion: Conversion) -> int:
    if conversion.built is not None:
        return count_parameters(conversion.built)
    return sum(value.numel() for value in conversion.weights.values())


# ---------------------------------------------------------------------------------------------------------------
# Export: hf_vit -> timm, hf_vit -> transformers
# ---------------------------------------------------------------------------------------------------------------
def load_hf_vit_folder(path) -> HfViTModel | HfViTForImageClassification | HfViTForMaskedImageModeling:
    """An hf_vit folder (safetensors, or legacy weights_only pickles) as a model, in the dtype it is stored in; no
    remote code is run."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model folder {path} does not exist")
    if not path.is_dir() or not (path / "config.json").is_file():
        raise ValueError(f"expected an hf_vit folder with config.json and weights; {path} is not one")
    check_links_inside(path)
    model_type = read_json_object(path / "config.json").get("model_type")
    if model_type != HfViTConfig.model_type:
        raise ValueError(f"{path / 'config.json'} has model_type {model_type!r}, not 'hf_vit'")
    config = HfViTConfig.from_pretrained(path)
    state_dict = strip_wrapper_prefixes(lazy_state_dict(path))  # read one tensor at a time into the model
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
