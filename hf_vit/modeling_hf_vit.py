"""hf_vit: the Vision Transformer of "An Image is Worth 16x16 Words", in Hugging Face's conventions.

The file reads in the order of the model's story: the image is cut into P×P patches and each patch is projected to a
D-dimensional token; the prefix tokens (a learned [CLS] token, a distillation token, register tokens, each optional)
join them in front; learned position embeddings, interpolated for other image sizes, are added (and/or, as in DINOv3
and EVA-02, the patch tokens' queries and keys are rotated by their grid position: RoPE); pre-norm Transformer blocks
mix the tokens; the pooled feature comes out ([CLS], the mean of the patch tokens, or an attention-pooling probe), and
a linear head classifies it.

This file is copied into every saved checkpoint (with `configuration_hf_vit.py`) so that
`AutoModel.from_pretrained(folder, trust_remote_code=True)` works without hf_vit installed: it imports only `torch`,
`transformers` and the config.
"""

import contextlib
import copy
import logging
import math
import os
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BackboneOutput,
    BaseModelOutputWithPooling,
    ImageClassifierOutput,
    MaskedImageModelingOutput,
)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

try:
    from transformers.backbone_utils import BackboneMixin
except ImportError:  # transformers 5.x before the module moved out of transformers.utils
    from transformers.utils.backbone_utils import BackboneMixin

from .configuration_hf_vit import HfViTConfig, image_size_pair, token_merging_problem

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------------
# Linear layers
# ---------------------------------------------------------------------------------------------------------------
# The model's linear layers are plain `nn.Linear` (quantization, pruning, PEFT and other tools match that exact
# type). For float32 inference on CPU, F.linear runs on MKL's sgemm, which on AMD CPUs does not pick its AVX-512
# kernels; oneDNN's matmul, also inside every x86 torch build, does. So during such a forward a TorchFunctionMode
# hands each F.linear on plain float32 CPU tensors to oneDNN: the modules, their hooks and parameters stay as they
# are, only the kernel changes. It is on only where it was measured faster: AMD CPUs with AVX-512 (docs/performance.md
# has the figures and the CPUs). HF_VIT_ONEDNN_LINEAR=0 turns it off (then outputs are bitwise those of
# F.linear; otherwise they differ by summation order, ~1e-6), =1 turns it on on any CPU.
def _onednn_linear_available() -> bool:
    """Whether this torch build has the (private) oneDNN linear op and it agrees with F.linear; checked once at import,
    so a torch release that drops or changes the op silently falls back to F.linear instead of breaking checkpoints."""
    if not torch.backends.mkldnn.is_available():
        return False
    if not hasattr(torch._C, "_len_torch_dispatch_stack"):
        return False
    try:
        with torch.no_grad():  # fixed values: the probe must not consume the global RNG
            x = torch.linspace(-1.0, 1.0, 24).reshape(3, 8)
            w = torch.linspace(-0.5, 0.5, 40).reshape(5, 8)
            b = torch.linspace(0.0, 1.0, 5)
            out = torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")
        return bool(torch.allclose(out, F.linear(x, w, b), rtol=0.0, atol=1e-5))
    except Exception:
        return False


def _onednn_linear_pays_off() -> bool:
    """Whether this CPU is one where oneDNN's float32 matmul beat F.linear's (MKL sgemm) in a same-run measurement:
    AMD with AVX-512, whose AVX-512 kernels MKL does not select. On an AVX2-only EPYC no gain was shown."""
    choice = os.environ.get("HF_VIT_ONEDNN_LINEAR", "auto")
    if choice in ("0", "1"):
        return choice == "1"
    get_capability = getattr(torch.backends.cpu, "get_cpu_capability", None)
    if get_capability is None or not get_capability().startswith("AVX512"):
        return False
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return "AuthenticAMD" in cpuinfo.read(2048)
    except OSError:
        return False


_ONEDNN_LINEAR_WORKS = _onednn_linear_available()  # the op itself: the tests exercise it on any CPU
_ONEDNN_LINEAR = _ONEDNN_LINEAR_WORKS and _onednn_linear_pays_off()
_PLAIN_TENSOR_TYPES = (torch.Tensor, nn.Parameter)


def _plain_float32_cpu(tensor) -> bool:
    return (
        type(tensor) in _PLAIN_TENSOR_TYPES  # not a subclass (DTensor, quantized weights...): those handle F.linear
        and tensor.device.type == "cpu"
        and tensor.dtype == torch.float32
        and tensor.layout == torch.strided
    )


class _OneDNNLinears(torch.overrides.TorchFunctionMode):
    """Within the context, `F.linear` on plain float32 CPU tensors runs oneDNN's matmul; every other call is
    untouched."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear and not torch.is_grad_enabled():  # the oneDNN op has no autograd
            bound = dict(zip(("input", "weight", "bias"), args, strict=False), **kwargs)
            input, weight, bias = bound.get("input"), bound.get("weight"), bound.get("bias")
            if (
                _plain_float32_cpu(input)
                and _plain_float32_cpu(weight)
                and weight.ndim == 2
                and (bias is None or _plain_float32_cpu(bias))
            ):
                return torch.ops.mkldnn._linear_pointwise(input, weight, bias, "none", [], "")
        return func(*args, **kwargs)


def _fast_linears(reference: torch.Tensor):
    """The oneDNN context for a float32 CPU inference forward; anything else (training or any autograd, autocast,
    other dtypes or devices, torch.compile and torch.export, which lower matmuls themselves, tracing, dispatch modes
    such as FlopCounterMode) keeps the ordinary F.linear."""
    if (
        _ONEDNN_LINEAR
        and reference.device.type == "cpu"
        and reference.dtype == torch.float32
        and not torch.is_grad_enabled()
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
        and not torch.jit.is_tracing()
        and not torch._C._len_torch_dispatch_stack()  # FlopCounterMode, FakeTensorMode... know only aten ops
    ):
        return _OneDNNLinears()
    return contextlib.nullcontext()


def _capturing_graph() -> bool:
    """Whether this forward is being recorded as a graph to run elsewhere: torch.export (also under the dynamo ONNX
    exporter) or jit tracing (the legacy ONNX exporter). Python branches on input sizes would be frozen into it."""
    return torch.jit.is_tracing() or torch.compiler.is_exporting()


# ---------------------------------------------------------------------------------------------------------------
# Patches -> tokens
# ---------------------------------------------------------------------------------------------------------------
class HfViTPatchEmbeddings(nn.Module):
    """Cuts the image into non-overlapping P×P patches and projects each to D: a Conv2d with kernel = stride = P."""

    def __init__(self, config: HfViTConfig):
        super().__init__()
        self.patch_size = config.patch_size
        self.projection = nn.Conv2d(
            config.num_channels,
            config.hidden_size,
            kernel_size=config.patch_size,
            stride=config.patch_size,
            bias=config.patch_embedding_bias,
        )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # (B, C, H, W) -> (B, D, H/P, W/P) -> (B, N, D)
        if _capturing_graph():
            pixel_values = _whole_patches(pixel_values, self.patch_size)
        return self.projection(pixel_values).flatten(2).transpose(1, 2)


def _whole_patches(pixel_values: torch.Tensor, patch: int) -> torch.Tensor:
    """The size check that survives export: a reshape into whole patches and back, which an exported graph (ONNX in
    onnxruntime too) runs and which fails when the height or width is not a multiple of the patch, where the Python
    check is frozen or dropped."""
    batch, channels, height, width = pixel_values.shape
    return pixel_values.reshape(batch, channels, height // patch, patch, width // patch, patch).reshape(
        batch, channels, height, width
    )


# ---------------------------------------------------------------------------------------------------------------
# Tokens -> prefix tokens ([CLS], distillation, registers) + positions
# ---------------------------------------------------------------------------------------------------------------
def _check_mask_values(bool_masked_pos: torch.Tensor) -> None:
    """A mask is boolean, or integers 0/1: a float mask (a forgotten `< ratio`) would mask every non-zero patch. The
    dtype is checked always, integer values only in eager mode (a traced graph has no data-dependent branch)."""
    if bool_masked_pos.is_floating_point() or bool_masked_pos.is_complex():
        raise ValueError(
            f"bool_masked_pos must be a boolean (or 0/1 integer) tensor, got {bool_masked_pos.dtype}: "
            "compare random numbers with the mask ratio, e.g. torch.rand(batch, patches) < 0.6"
        )
    if bool_masked_pos.dtype != torch.bool and not torch.compiler.is_compiling():
        if bool(((bool_masked_pos != 0) & (bool_masked_pos != 1)).any()):
            raise ValueError("bool_masked_pos must hold only 0 and 1 (or be a boolean tensor)")


class HfViTEmbeddings(nn.Module):
    """Patch tokens, the prefix tokens (learned [CLS] and distillation tokens, registers; each optional), and learned
    position embeddings.

    Position embeddings are learned for the patch grid of `config.image_size`; for any other grid they are resized
    bicubically (the ViT paper's 2D interpolation of the pre-trained position embeddings), so the model runs at any
    size divisible by the patch size.
    Token order is [CLS, distillation, registers..., patches...] (`num_prefix_tokens` before the patches, which are
    always last); registers get no position embedding (DINOv2), [CLS] and the distillation token one each if
    `config.cls_position_embedding`.
    With `config.use_mask_token`, the patch tokens marked in `bool_masked_pos` are replaced by a learned mask token
    before positions are added (DINOv2/iBOT masked-image modelling).
    """

    def __init__(self, config: HfViTConfig):
        super().__init__()
        self.patch_embeddings = HfViTPatchEmbeddings(config)
        self.grid_size = config.grid_size
        self.cls_position_embedding = config.cls_position_embedding
        self.interpolate_antialias = config.interpolate_antialias
        hidden_size = config.hidden_size

        self.cls_token = nn.Parameter(torch.zeros(1, 1, hidden_size)) if config.class_token else None
        self.distillation_token = nn.Parameter(torch.zeros(1, 1, hidden_size)) if config.distillation_token else None
        self.num_prefix_tokens = config.num_prefix_tokens  # before the patch tokens; never merged or pooled over
        self.register_tokens = (
            nn.Parameter(torch.zeros(1, config.num_register_tokens, hidden_size))
            if config.num_register_tokens
            else None
        )
        # [CLS] and the distillation token have positions of their own (before the patches') unless no_embed_class
        self.num_positioned_prefix = (
            int(config.class_token) + int(config.distillation_token) if self.cls_position_embedding else 0
        )
        num_positions = self.grid_size[0] * self.grid_size[1] + self.num_positioned_prefix
        self.position_embeddings = (
            nn.Parameter(torch.zeros(1, num_positions, hidden_size)) if config.absolute_position_embeddings else None
        )
        self.mask_token = nn.Parameter(torch.zeros(1, hidden_size)) if config.use_mask_token else None
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def interpolate_pos_encoding(self, grid_size: tuple[int, int]) -> torch.Tensor:
        """Position embeddings resized from the learned grid to `grid_size` (rows, columns)."""
        num_prefix = self.num_positioned_prefix
        prefix_pos = self.position_embeddings[:, :num_prefix]
        patch_pos = self.position_embeddings[:, num_prefix:]
        dim = patch_pos.shape[-1]
        patch_pos = patch_pos.reshape(1, *self.grid_size, dim).permute(0, 3, 1, 2)
        # bicubic resizing needs float32 on CPU; the result goes back to the parameter's dtype
        patch_pos = F.interpolate(
            patch_pos.float(), size=grid_size, mode="bicubic", align_corners=False, antialias=self.interpolate_antialias
        ).to(prefix_pos.dtype)
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, grid_size[0] * grid_size[1], dim)
        return torch.cat((prefix_pos, patch_pos), dim=1)

    def forward(
        self,
        pixel_values: torch.Tensor,
        interpolate_pos_encoding: bool | None = None,
        bool_masked_pos: torch.Tensor | None = None,
    ) -> torch.Tensor:
        batch_size, _, height, width = pixel_values.shape
        patch_size = self.patch_embeddings.patch_size
        grid_size = (height // patch_size, width // patch_size)
        if self.position_embeddings is None:  # positions come from rotary encoding in the attention alone
            position_embeddings = None
        elif interpolate_pos_encoding is not False and _capturing_graph():
            # A graph for any size (ONNX, torch.export): the resize is always in it, and is an identity at the
            # trained grid. Comparing the sizes here would freeze the example's size into the graph.
            position_embeddings = self.interpolate_pos_encoding(grid_size)
        elif grid_size == self.grid_size:  # eager mode at the trained size: no interpolation work
            position_embeddings = self.position_embeddings
        elif interpolate_pos_encoding is False:
            raise ValueError(
                f"Input image size ({height}x{width}) differs from the model's "
                f"({self.grid_size[0] * patch_size}x{self.grid_size[1] * patch_size}) "
                "and interpolate_pos_encoding=False; "
                "pass interpolate_pos_encoding=True (or None) to resize the position embeddings, or resize the image"
            )
        else:
            position_embeddings = self.interpolate_pos_encoding(grid_size)

        embeddings = self.patch_embeddings(pixel_values)
        if bool_masked_pos is not None:
            if self.mask_token is None:
                raise ValueError("bool_masked_pos needs a mask token: build the model with config.use_mask_token=True")
            if bool_masked_pos.shape != embeddings.shape[:2]:
                raise ValueError(
                    f"bool_masked_pos must have shape (batch, patches) = {tuple(embeddings.shape[:2])}, "
                    f"got {tuple(bool_masked_pos.shape)}"
                )
            _check_mask_values(bool_masked_pos)
            mask_token = self.mask_token.to(embeddings.dtype).unsqueeze(0)
            embeddings = torch.where(bool_masked_pos.bool().unsqueeze(-1), mask_token, embeddings)
        leading = [t.expand(batch_size, -1, -1) for t in (self.cls_token, self.distillation_token) if t is not None]
        if position_embeddings is None:
            embeddings = torch.cat((*leading, embeddings), dim=1)
        elif self.cls_position_embedding:
            embeddings = torch.cat((*leading, embeddings), dim=1) + position_embeddings
        else:
            embeddings = torch.cat((*leading, embeddings + position_embeddings), dim=1)
        if self.register_tokens is not None:
            registers = self.register_tokens.expand(batch_size, -1, -1)
            embeddings = torch.cat((embeddings[:, : len(leading)], registers, embeddings[:, len(leading) :]), dim=1)
        return self.dropout(embeddings)


# ---------------------------------------------------------------------------------------------------------------
# Rotary position encoding (RoPE) of the patch tokens
# ---------------------------------------------------------------------------------------------------------------
def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """[x1, x2] -> [-x2, x1] over the last dimension's two halves (DINOv3's RoPE layout)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rotate_pairs(x: torch.Tensor) -> torch.Tensor:
    """[x0, x1, x2, x3, ...] -> [-x1, x0, -x3, x2, ...]: adjacent channel pairs rotated (EVA-02's RoPE layout)."""
    return torch.stack((-x[..., 1::2], x[..., ::2]), dim=-1).flatten(-2)


def dinov3_rope_coordinates(rows: int, columns: int, reference_grid, device: torch.device) -> torch.Tensor:
    """Patch centres in [-1, 1] per axis, (rows·columns, 2) as (row, column)."""
    axes = [torch.arange(0.5, size, dtype=torch.float32, device=device) / size for size in (rows, columns)]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).flatten(0, 1)
    return 2.0 * grid - 1.0


def eva02_rope_coordinates(rows: int, columns: int, reference_grid, device: torch.device) -> torch.Tensor:
    """Patch indices per axis, (rows·columns, 2) as (row, column), rescaled to span `reference_grid` when given."""
    axes = [torch.arange(size, device=device).to(torch.float32) for size in (rows, columns)]
    if reference_grid is not None:
        axes = [axes[0] / rows * reference_grid[0], axes[1] / columns * reference_grid[1]]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).flatten(0, 1)


def repeat_halves(angles: torch.Tensor) -> torch.Tensor:
    """(N, head_dim/2) angles -> (N, head_dim) in the half layout: [a, a]."""
    return torch.cat((angles, angles), dim=-1)


def repeat_pairs(angles: torch.Tensor) -> torch.Tensor:
    """(N, head_dim/2) angles -> (N, head_dim) in the pair layout: [a0, a0, a1, a1, ...]."""
    return torch.stack((angles, angles), dim=-1).flatten(-2)


# config.rope_type -> (patch coordinates, angle per unit of coordinate and frequency, angle layout, channel rotation):
# the two conventions in use
ROPE_CONVENTIONS = {
    "dinov3": (dinov3_rope_coordinates, 2 * math.pi, repeat_halves, rotate_half),
    "eva02": (eva02_rope_coordinates, 1.0, repeat_pairs, rotate_pairs),
}


def augment_rope_coordinates(
    coordinates: torch.Tensor, shift: float | None, jitter: float | None, rescale: float | None
) -> torch.Tensor:
    """DINOv3's train-time augmentations of the (N, 2) coordinates, one draw per forward in this order: a uniform
    per-axis shift in [-shift, shift], a log-uniform per-axis scale in [1/jitter, jitter], a log-uniform common scale
    in [1/rescale, rescale]."""
    if shift is not None:
        coordinates = coordinates + coordinates.new_empty(1, 2).uniform_(-shift, shift)
    if jitter is not None:
        coordinates = coordinates * coordinates.new_empty(1, 2).uniform_(-math.log(jitter), math.log(jitter)).exp()
    if rescale is not None:
        coordinates = coordinates * coordinates.new_empty(1).uniform_(-math.log(rescale), math.log(rescale)).exp()
    return coordinates


class HfViTRotaryEmbedding(nn.Module):
    """cos and sin of the rotary angles of each patch of the input's grid, (rows·columns, head_dim) each, in the
    convention `config.rope_type` names (ROPE_CONVENTIONS). Computed per forward from the grid (no weights, no
    interpolation: any input size); in training the coordinates get `config.rope_shift/jitter/rescale`."""

    def __init__(self, config: HfViTConfig):
        super().__init__()
        self.coordinates, self.scale, self.layout, _ = ROPE_CONVENTIONS[config.rope_type]
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.base = config.rope_base
        self.reference_grid = tuple(config.rope_reference_grid) if config.rope_reference_grid else None
        self.augmentations = (config.rope_shift, config.rope_jitter, config.rope_rescale)

    def forward(self, grid_size: tuple[int, int], reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin) for a `grid_size` (rows, columns) patch grid, in `reference`'s dtype and on its device."""
        coordinates = self.coordinates(*grid_size, self.reference_grid, reference.device)
        if self.training and any(value is not None for value in self.augmentations):
            coordinates = augment_rope_coordinates(coordinates, *self.augmentations)
        num_frequencies = self.head_dim // 4
        exponents = torch.arange(num_frequencies, dtype=torch.float32, device=reference.device) / num_frequencies
        inverse_frequencies = 1.0 / (self.base**exponents)
        # (N, 2 axes, head_dim/4) -> (N, head_dim/2): the rows' frequencies, then the columns'
        angles = self.layout((self.scale * coordinates[:, :, None] * inverse_frequencies).flatten(1))
        return angles.cos().to(reference.dtype), angles.sin().to(reference.dtype)

    def extra_repr(self) -> str:
        return f"base={self.base}, head_dim={self.head_dim}, reference_grid={self.reference_grid}"


def apply_rotary_to_patches(
    tensor: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rotate: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """Rotate the last `cos.shape[0]` tokens (the patches) of `tensor` (B, heads, N, head_dim); the tokens before them
    ([CLS], registers, any other prefix) pass unchanged, however many there are."""
    num_prefix = tensor.shape[-2] - cos.shape[-2]
    prefix, patches = tensor[..., :num_prefix, :], tensor[..., num_prefix:, :]
    return torch.cat((prefix, patches * cos + rotate(patches) * sin), dim=-2)


# ---------------------------------------------------------------------------------------------------------------
# Multi-head self-attention
# ---------------------------------------------------------------------------------------------------------------
def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q kᵀ · scaling) v, returning the weights too.

    q, k, v: (B, heads, N, head_dim) -> (B, N, heads, head_dim)."""
    attn_weights = torch.matmul(query, key.transpose(-2, -1)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = F.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = F.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2)
    return attn_output, attn_weights


class HfViTAttention(nn.Module):
    """Multi-head self-attention with one fused qkv projection (one matmul instead of three, as in DINO/timm).

    The attention itself goes through transformers' attention interface (`config._attn_implementation`: "sdpa",
    "eager", "flash_attention_2", "flex_attention", ...). When the weights are asked for, this call alone runs the
    eager path, so `output_attentions=True` returns real attention maps whatever the implementation.
    """

    def __init__(self, config: HfViTConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_probs_dropout_prob
        self.is_causal = False  # read by transformers' sdpa/flash functions
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.qkv_bias)
        # query/key normalisation, per head, before RoPE (timm's qk_norm)
        self.q_norm = nn.LayerNorm(self.head_dim, eps=config.layer_norm_eps) if config.qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim, eps=config.layer_norm_eps) if config.qk_norm else nn.Identity()
        self.rotate = ROPE_CONVENTIONS[config.rope_type][-1] if config.rope_type is not None else None
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.proj_dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self,
        hidden_states: torch.Tensor,
        output_attentions: bool = False,
        attention_bias: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Returns the attention output, the weights (with `output_attentions`) and the keys (B, heads, N, head_dim),
        which token merging compares. `attention_bias` (B, 1, 1, N) is added to the logits of every query (token
        merging's proportional attention). `position_embeddings`: the (cos, sin) of `HfViTRotaryEmbedding` for the
        patch grid, with `config.rope_type` (the patch tokens' queries and keys are rotated by them)."""
        batch_size, seq_len, hidden_size = hidden_states.shape
        # (B, N, 3D) -> 3 x (B, heads, N, head_dim)
        query, key, value = (
            self.qkv(hidden_states)
            .view(batch_size, seq_len, 3, self.num_heads, self.head_dim)
            .permute(2, 0, 3, 1, 4)
            .unbind(0)
        )
        query, key = self.q_norm(query), self.k_norm(key)
        if position_embeddings is not None:
            cos, sin = position_embeddings
            query = apply_rotary_to_patches(query, cos, sin, self.rotate)
            key = apply_rotary_to_patches(key, cos, sin, self.rotate)
        dropout = self.attention_dropout if self.training else 0.0
        if self.config._attn_implementation == "sdpa" and not output_attentions:
            # PyTorch's fused attention called directly: transformers' wrapper adds nothing for a non-causal,
            # unmasked encoder but Python overhead. (B, heads, N, head_dim) -> (B, N, heads, head_dim).
            attn_output = F.scaled_dot_product_attention(
                query, key, value, attn_mask=attention_bias, dropout_p=dropout, scale=self.scaling
            )
            attn_output, attn_weights = attn_output.transpose(1, 2), None
        else:
            attention_interface: Callable = eager_attention_forward  # the only path that materialises the weights
            if not output_attentions:
                implementation = self.config._attn_implementation
                attention_interface = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
                if attention_bias is not None and attention_interface is not eager_attention_forward:
                    if implementation != "flex_attention":
                        raise ValueError(
                            "token merging (config.token_merging_r) adds the log size of each token to the attention "
                            f"logits, which attn_implementation {implementation!r} cannot do: use 'sdpa', 'eager' or "
                            "'flex_attention', or set config.token_merging_r = 0"
                        )
                    # flex attention adds `position_bias` (B, heads, N, N) to its scores: a view of the same values
                    kwargs = {**kwargs, "position_bias": attention_bias.expand(-1, self.num_heads, seq_len, -1)}
                    attention_bias = None
            attn_output, attn_weights = attention_interface(
                self, query, key, value, attention_bias, dropout=dropout, scaling=self.scaling, **kwargs
            )
        attn_output = self.proj_dropout(self.proj(attn_output.reshape(batch_size, seq_len, hidden_size)))
        return attn_output, (attn_weights if output_attentions else None), key


# ---------------------------------------------------------------------------------------------------------------
# MLP, LayerScale, stochastic depth
# ---------------------------------------------------------------------------------------------------------------
class HfViTMLP(nn.Module):
    """D -> intermediate_size -> GELU -> D."""

    def __init__(self, config: HfViTConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(self.activation(self.fc1(hidden_states))))


class HfViTSwiGLUMLP(nn.Module):
    """Gated MLP (SwiGLU, DINOv2-giant): one packed fc1 D -> 2·I (gate, value), act(gate) · value, fc2 I -> D, with
    `config.gate_act` as act (SiLU: SwiGLU; GELU: GeGLU).

    One matmul for both halves, as timm's `SwiGLUPacked`; transformers' gate_proj/up_proj are its two halves.
    """

    def __init__(self, config: HfViTConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, 2 * config.intermediate_size)
        self.gate_activation = gate_activation(config)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        gate, value = self.fc1(hidden_states).chunk(2, dim=-1)
        return self.dropout(self.fc2(self.gate_activation(gate) * value))


class HfViTSwiGLUNormMLP(HfViTSwiGLUMLP):
    """EVA-02's SwiGLU: as HfViTSwiGLUMLP, with a LayerNorm over the gated hidden features before fc2 (timm's
    `SwiGLU` with `scale_mlp=True`; its fc1_g/fc1_x are the two halves of fc1)."""

    def __init__(self, config: HfViTConfig):
        super().__init__(config)
        self.norm = nn.LayerNorm(config.intermediate_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        gate, value = self.fc1(hidden_states).chunk(2, dim=-1)
        return self.dropout(self.fc2(self.norm(self.gate_activation(gate) * value)))


def gate_activation(config: HfViTConfig) -> Callable[[torch.Tensor], torch.Tensor]:
    """The gated MLPs' gate: SiLU (SwiGLU) unless `config.gate_act` names another (GELU: GeGLU). A config saved
    before `gate_act` existed has SiLU."""
    name = getattr(config, "gate_act", "silu")
    return F.silu if name == "silu" else ACT2FN[name]


# config.mlp_type -> the MLP of each block
MLP_CLASSES = {"mlp": HfViTMLP, "swiglu": HfViTSwiGLUMLP, "swiglu_norm": HfViTSwiGLUNormMLP}


class HfViTLayerScale(nn.Module):
    """Per-channel scale of a residual branch, started small so deep models train stably (CaiT, DINOv2)."""

    def __init__(self, config: HfViTConfig):
        super().__init__()
        self.lambda1 = nn.Parameter(torch.full((config.hidden_size,), float(config.layerscale_init)))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states * self.lambda1


class HfViTDropPath(nn.Module):
    """Stochastic depth: during training, drop a residual branch for a whole sample with probability `drop_prob`."""

    def __init__(self, drop_prob: float):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_prob == 0.0:
            return hidden_states
        keep_prob = 1.0 - self.drop_prob
        mask_shape = (hidden_states.shape[0],) + (1,) * (hidden_states.ndim - 1)
        keep = hidden_states.new_empty(mask_shape).bernoulli_(keep_prob)
        return hidden_states * keep / keep_prob

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


# ---------------------------------------------------------------------------------------------------------------
# Token merging (ToMe: Bolya et al., "Token Merging: Your ViT but Faster", ICLR 2023)
# ---------------------------------------------------------------------------------------------------------------
def token_merging_schedule(config: HfViTConfig) -> list[int]:
    """`config.token_merging_r` as one number of merged pairs per block (an int is the same in every block)."""
    token_merging_r = config.token_merging_r
    problem = token_merging_problem(token_merging_r, config.num_hidden_layers, getattr(config, "rope_type", None))
    if problem:
        raise ValueError(problem)
    if isinstance(token_merging_r, int):
        return [token_merging_r] * config.num_hidden_layers
    return list(token_merging_r)


def check_every_patch_token(config: HfViTConfig, needed_by: str) -> None:
    """Refuse token merging where every patch token must come out (dense features, reconstructions, pictures)."""
    token_merging_r = getattr(config, "token_merging_r", 0)  # configs of other hf_vit versions may lack it
    if token_merging_r and any(token_merging_schedule(config)):
        raise ValueError(
            f"{needed_by} needs every patch token, but token merging is on (config.token_merging_r = "
            f"{token_merging_r!r}) and merges them: set config.token_merging_r = 0"
        )


def proportional_attention_bias(token_sizes: torch.Tensor | None) -> torch.Tensor | None:
    """ToMe's proportional attention: log(size of each key token), (B, 1, 1, N), added to the attention logits, so a
    token that stands for s merged ones is attended as if it were s copies. None while no token has been merged."""
    if token_sizes is None:
        return None
    return token_sizes.log()[:, None, None, :, 0]


def merge_tokens(
    hidden_states: torch.Tensor,
    token_sizes: torch.Tensor | None,
    key: torch.Tensor,
    r: int,
    num_prefix_tokens: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bipartite soft matching: merge the `r` most similar pairs of tokens into their size-weighted average.

    The tokens alternate between two sets A (even positions) and B (odd positions); each A token finds its most
    similar B token by cosine similarity of the keys averaged over heads (`key`: (B, heads, N, head_dim)); the `r`
    A tokens with the most similar match are added into it. At most half of the mergeable tokens go per block. The
    first `num_prefix_tokens` tokens ([CLS], distillation token, registers) are never merged and stay first, in
    order; the kept A tokens follow in their order, then the B tokens. `token_sizes` (B, N, 1) counts the original
    patches behind each token (None: all 1); returns the merged tokens and their sizes, as the paper's reference code
    (`tome/merge.py`, whose rules for [CLS] and the distillation token this extends to any number of prefix tokens).
    """
    batch_size, num_tokens, dim = hidden_states.shape
    r = min(r, (num_tokens - num_prefix_tokens) // 2)
    if r <= 0:
        return hidden_states, token_sizes
    prefix_a, prefix_b = (num_prefix_tokens + 1) // 2, num_prefix_tokens // 2  # prefix tokens in A, in B
    with torch.no_grad():
        metric = key.mean(dim=1)
        metric = metric / metric.norm(dim=-1, keepdim=True)
        scores = metric[:, ::2] @ metric[:, 1::2].transpose(-1, -2)  # (B, |A|, |B|) cosine similarities
        if prefix_a:
            scores[:, :prefix_a, :] = -math.inf  # a prefix token in A never merges away
        if prefix_b:
            scores[:, :, :prefix_b] = -math.inf  # nothing merges into a prefix token in B
        node_max, node_idx = scores.max(dim=-1)
        edge_idx = node_max.argsort(dim=-1, descending=True)[..., None]
        kept_idx = edge_idx[:, r:]  # A tokens that stay
        source_idx = edge_idx[:, :r]  # A tokens merged away...
        target_idx = node_idx[..., None].gather(dim=1, index=source_idx)  # ...into these B tokens
        if num_prefix_tokens:
            kept_idx = kept_idx.sort(dim=1)[0]  # positional order: the prefix tokens in A first

    def merge(x: torch.Tensor) -> torch.Tensor:
        set_a, set_b = x[:, ::2], x[:, 1::2]
        channels = x.shape[-1]
        kept = set_a.gather(dim=1, index=kept_idx.expand(-1, -1, channels))
        sources = set_a.gather(dim=1, index=source_idx.expand(-1, -1, channels))
        set_b = set_b.scatter_reduce(1, target_idx.expand(-1, -1, channels), sources, reduce="sum")
        if not prefix_b:
            return torch.cat([kept, set_b], dim=1)
        prefix = [
            kept[:, i // 2 : i // 2 + 1] if i % 2 == 0 else set_b[:, i // 2 : i // 2 + 1]
            for i in range(num_prefix_tokens)
        ]
        return torch.cat([*prefix, kept[:, prefix_a:], set_b[:, prefix_b:]], dim=1)

    if token_sizes is None:
        token_sizes = torch.ones_like(hidden_states[..., :1])
    merged = merge(hidden_states * token_sizes)
    token_sizes = merge(token_sizes)
    return merged / token_sizes, token_sizes


# ---------------------------------------------------------------------------------------------------------------
# Block and encoder
# ---------------------------------------------------------------------------------------------------------------
class HfViTLayer(GradientCheckpointingLayer):
    """One pre-norm block: x + attn(norm1(x)), then x + mlp(norm2(x)), each branch through LayerScale and drop path."""

    def __init__(self, config: HfViTConfig, drop_path_rate: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = HfViTAttention(config)
        self.layer_scale1 = HfViTLayerScale(config) if config.layerscale_init is not None else nn.Identity()
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = MLP_CLASSES[config.mlp_type](config)
        self.layer_scale2 = HfViTLayerScale(config) if config.layerscale_init is not None else nn.Identity()
        self.drop_path = HfViTDropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()

    def forward(
        self,
        hidden_states: torch.Tensor,
        output_attentions: bool = False,
        token_sizes: torch.Tensor | None = None,
        token_merging_r: int = 0,
        num_prefix_tokens: int = 1,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """With token merging, `token_sizes` (B, N, 1) are the sizes of the tokens (None: all 1) and
        `token_merging_r` pairs are merged between the attention and the MLP; returns the new sizes too."""
        attn_output, attn_weights, key = self.attention(
            self.norm1(hidden_states), output_attentions, proportional_attention_bias(token_sizes), **kwargs
        )
        hidden_states = hidden_states + self.drop_path(self.layer_scale1(attn_output))
        if token_merging_r > 0:
            hidden_states, token_sizes = merge_tokens(
                hidden_states, token_sizes, key, token_merging_r, num_prefix_tokens
            )
        hidden_states = hidden_states + self.drop_path(self.layer_scale2(self.mlp(self.norm2(hidden_states))))
        return hidden_states, attn_weights, token_sizes


class HfViTEncoder(nn.Module):
    def __init__(self, config: HfViTConfig):
        super().__init__()
        self.config = config
        # stochastic depth grows linearly with depth: the first block is never dropped, the last at drop_path_rate.
        # Plain Python, not torch.linspace(...).tolist(): the model must also build on the meta device.
        depth = config.num_hidden_layers
        rates = [config.drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.layers = nn.ModuleList([HfViTLayer(config, rate) for rate in rates])

    def forward(
        self,
        hidden_states: torch.Tensor,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        **kwargs,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None, tuple[torch.Tensor, ...] | None]:
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        merging_schedule = token_merging_schedule(self.config)  # read at every forward: the config may change
        num_prefix_tokens = self.config.num_prefix_tokens
        token_sizes = None
        for layer, token_merging_r in zip(self.layers, merging_schedule, strict=True):
            # hidden_states goes positionally: reentrant gradient checkpointing only sees gradients of positionals
            hidden_states, attn_weights, token_sizes = layer(
                hidden_states, output_attentions, token_sizes, token_merging_r, num_prefix_tokens, **kwargs
            )
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if output_attentions:
                all_attentions += (attn_weights,)
        return hidden_states, all_hidden_states, all_attentions


# ---------------------------------------------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------------------------------------------
class HfViTAttentionPoolingHead(nn.Module):
    """Multi-head attention pooling ("map", SigLIP's head; timm's `AttentionPoolLatent`): a learned probe queries the
    tokens in one multi-head attention, then a residual LayerNorm + MLP: x = attn(probe, tokens); x + mlp(norm(x)).

    The probe's query and the tokens' key/value projections are `q` and a fused `kv` (keys, then values), as timm;
    transformers' `in_proj_weight` is their concatenation."""

    def __init__(self, config: HfViTConfig):
        super().__init__()
        hidden_size = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = hidden_size // config.num_attention_heads
        self.probe = nn.Parameter(torch.zeros(1, 1, hidden_size))
        self.q = nn.Linear(hidden_size, hidden_size)
        self.kv = nn.Linear(hidden_size, 2 * hidden_size)
        self.proj = nn.Linear(hidden_size, hidden_size)
        self.norm = nn.LayerNorm(hidden_size, eps=config.layer_norm_eps)
        self.mlp = HfViTMLP(config)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        batch_size, num_tokens, hidden_size = tokens.shape
        # (B, heads, 1, head_dim) queries from the probe; (B, heads, N, head_dim) keys and values from the tokens
        query = self.q(self.probe).view(1, 1, self.num_heads, self.head_dim).transpose(1, 2)
        query = query.expand(batch_size, -1, -1, -1)
        key, value = (
            self.kv(tokens).view(batch_size, num_tokens, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        ).unbind(0)
        pooled = F.scaled_dot_product_attention(query, key, value).transpose(1, 2).reshape(batch_size, hidden_size)
        pooled = self.proj(pooled)
        return pooled + self.mlp(self.norm(pooled))


def pool_tokens(hidden_states: torch.Tensor, config: HfViTConfig, attention_pool: nn.Module | None) -> torch.Tensor:
    """The pooled feature of (batch, tokens, D) by `config.pooling`: [CLS] (token 0), the mean of the patch tokens,
    or attention pooling over the patch tokens (the prefix tokens are left out of both, as timm)."""
    if config.pooling == "cls":
        return hidden_states[:, 0]
    patches = hidden_states[:, config.num_prefix_tokens :]
    if config.pooling == "map":
        return attention_pool(patches)
    return patches.mean(dim=1)


# ---------------------------------------------------------------------------------------------------------------
# Pretrained base, model, heads (classification, masked image modeling), backbone
# ---------------------------------------------------------------------------------------------------------------
# What a checkpoint folder's config.json names for `trust_remote_code` loading (the code files are copied beside it).
AUTO_MAP = {
    "AutoConfig": "configuration_hf_vit.HfViTConfig",
    "AutoModel": "modeling_hf_vit.HfViTModel",
    "AutoModelForImageClassification": "modeling_hf_vit.HfViTForImageClassification",
    "AutoBackbone": "modeling_hf_vit.HfViTBackbone",
    "AutoModelForMaskedImageModeling": "modeling_hf_vit.HfViTForMaskedImageModeling",
}


def _refuse_quantized(model: nn.Module) -> None:
    """A model quantized to int8 for inference (`hf_vit.quantize_int8`: packed int8 Linear weights, no state dict a
    checkpoint can hold) is refused before anything is written."""
    if any(type(module).__module__.startswith("torch.ao.nn.quantized") for module in model.modules()):
        raise ValueError(
            "save_pretrained of an int8 model (hf_vit.quantize_int8) is not supported: int8 models are for CPU "
            "inference; save the float model it was made from, and quantize it again after loading"
        )


class HfViTPreTrainedModel(PreTrainedModel):
    config_class = HfViTConfig
    config: HfViTConfig
    base_model_prefix = "vit"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["HfViTEmbeddings", "HfViTLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True

    def __init__(self, config: HfViTConfig, *inputs, **kwargs):
        config.check_values()  # the config accepts any values; a model needs consistent ones
        super().__init__(config, *inputs, **kwargs)

    def save_pretrained(self, save_directory, *args, **kwargs):
        # Name all model classes in auto_map, so that with trust_remote_code a classifier checkpoint also loads as
        # AutoModel or AutoBackbone and a backbone checkpoint as AutoModelForImageClassification (new head); nothing
        # else: entries a loaded config carried (code of some other repo) are never written back.
        _refuse_quantized(self)
        self.config.auto_map = dict(AUTO_MAP)
        result = super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", args[0] if args else True):
            _save_default_image_processor(save_directory, self.config)
        return result

    def _init_weights(self, module: nn.Module):
        """DINO/timm init: truncated normal (std `initializer_range`) for weights and tokens, zero biases,
        LayerNorm 1/0."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            init.trunc_normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, HfViTEmbeddings):
            for token in (module.cls_token, module.distillation_token):
                if token is not None:
                    init.trunc_normal_(token, mean=0.0, std=std)
            if module.position_embeddings is not None:
                init.trunc_normal_(module.position_embeddings, mean=0.0, std=std)
            if module.register_tokens is not None:
                init.trunc_normal_(module.register_tokens, mean=0.0, std=std)
            if module.mask_token is not None:
                init.zeros_(module.mask_token)
        elif isinstance(module, HfViTLayerScale):
            init.constant_(module.lambda1, self.config.layerscale_init)
        elif isinstance(module, HfViTAttentionPoolingHead):
            init.trunc_normal_(module.probe, mean=0.0, std=std)


def _save_default_image_processor(save_directory, config: HfViTConfig) -> None:
    """Give a folder saved without an image processor transformers' `ViTImageProcessor` at `config.image_size` (its
    default normalisation, mean = std = 0.5), so `AutoImageProcessor.from_pretrained(folder)` and pipelines load it:
    transformers looks up a registered processor class only once it has read a preprocessor_config.json. A processor
    saved by the caller (before or after the model) is the one that counts: an existing file is never replaced."""
    names = ("preprocessor_config.json", "processor_config.json")
    if any(os.path.exists(os.path.join(save_directory, name)) for name in names):
        return
    from transformers import ViTImageProcessor

    height, width = image_size_pair(config.image_size)
    path = os.path.join(save_directory, names[0])
    temporary = f"{path}.{os.getpid()}.tmp"
    ViTImageProcessor(size={"height": height, "width": width}).to_json_file(temporary)
    os.replace(temporary, path)  # atomic: never a half-written file
    logger.info("saved a default ViTImageProcessor (%dx%d, mean = std = 0.5) to %s", height, width, path)


def _check_pixel_values(pixel_values, config: HfViTConfig) -> None:
    if pixel_values is None:
        raise ValueError("pixel_values is required: a float tensor of shape (batch, channels, height, width)")
    if not isinstance(pixel_values, torch.Tensor):
        raise TypeError(
            "pixel_values must be a torch.Tensor of shape (batch, channels, height, width), "
            f"got {type(pixel_values).__name__}"
        )
    if pixel_values.ndim != 4:
        raise ValueError(
            f"pixel_values must be 4-D (batch, channels, height, width), got {pixel_values.ndim}-D with shape "
            f"{tuple(pixel_values.shape)}"
        )
    if torch.jit.is_tracing():  # sizes are traced tensors here; a Python check would only warn and freeze them
        return
    _, channels, height, width = pixel_values.shape
    if channels != config.num_channels:
        raise ValueError(f"pixel_values must have {config.num_channels} channels (config.num_channels), got {channels}")
    patch = config.patch_size
    if height % patch or width % patch or height == 0 or width == 0:
        raise ValueError(
            f"pixel_values height and width must be positive multiples of the patch size {patch}, got {height}x{width}"
        )


def _patches_and_class_token(
    hidden_state: torch.Tensor,
    num_prefix_tokens: int,
    grid_size: tuple[int, int],
    layernorm: nn.Module | None,
    reshape: bool,
    has_class_token: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One stage's tokens (batch, prefix tokens + patches, D) -> (patch tokens, [CLS] token or None if the model has
    none), through `layernorm` if given, the other prefix tokens dropped; with `reshape`, the patch tokens as a map
    (batch, D, rows, columns)."""
    if layernorm is not None:
        hidden_state = layernorm(hidden_state)
    class_token = hidden_state[:, 0] if has_class_token else None
    patches = hidden_state[:, num_prefix_tokens:]
    if reshape:
        patches = patches.reshape(patches.shape[0], *grid_size, patches.shape[-1]).permute(0, 3, 1, 2).contiguous()
    return patches, class_token


class HfViTModel(HfViTPreTrainedModel):
    """The ViT backbone: embeddings -> (pre-norm, CLIP) -> blocks -> final LayerNorm and pooling. `pooler_output` is
    the pooled feature (`config.pooling`: [CLS], mean of the patch tokens, attention pooling), normed by the final
    LayerNorm either through the tokens it reads or after pooling (`config.final_norm`)."""

    def __init__(self, config: HfViTConfig, add_pooling_layer: bool = True):
        r"""
        add_pooling_layer (`bool`): build the attention-pooling head of `pooling="map"` (as transformers' ViTModel's
            argument); `HfViTForMaskedImageModeling`, which reads the patch tokens only, builds its model without it
            (`pooler_output` is then `None` for "map").
        """
        super().__init__(config)
        self.embeddings = HfViTEmbeddings(config)
        self.rotary_embeddings = HfViTRotaryEmbedding(config) if config.rope_type is not None else None
        self.pre_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if config.pre_norm else None
        self.encoder = HfViTEncoder(config)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        with_pool = config.pooling == "map" and add_pooling_layer
        self.attention_pool = HfViTAttentionPoolingHead(config) if with_pool else None
        self.post_init()

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patch tokens in every hidden state: [CLS]?, distillation token?, registers."""
        return self.config.num_prefix_tokens

    def final_normed_token(self, last_hidden_state: torch.Tensor, index: int) -> torch.Tensor:
        """Token `index` of `last_hidden_state` through the final LayerNorm (already applied there unless
        `final_norm="pooled"`): the distillation head's input."""
        token = last_hidden_state[:, index]
        return self.layernorm(token) if self.config.final_norm_place == "pooled" else token

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.patch_embeddings

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        interpolate_pos_encoding: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        bool_masked_pos: torch.Tensor | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling | tuple:
        r"""
        pixel_values (`torch.Tensor` of shape `(batch, channels, height, width)`): height and width must be multiples
            of `config.patch_size`; any such size works.
        interpolate_pos_encoding (`bool`, *optional*): `None` (default) resizes the position embeddings whenever the
            patch grid differs from the trained one; `True` likewise; `False` raises instead.
        output_attentions (`bool`, *optional*): return each layer's attention weights `(batch, heads, tokens, tokens)`,
            also when the model runs on SDPA/flash attention (that call then computes attention eagerly).
        bool_masked_pos (`torch.BoolTensor` of shape `(batch, patches)`, *optional*): patch tokens to replace by the
            mask token (needs `config.use_mask_token`).
        """
        config = self.config
        output_attentions = config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = config.output_hidden_states if output_hidden_states is None else output_hidden_states
        return_dict = config.return_dict if return_dict is None else return_dict
        _check_pixel_values(pixel_values, config)

        pixel_values = pixel_values.to(self.embeddings.patch_embeddings.projection.weight.dtype)
        embeddings = self.embeddings(
            pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, bool_masked_pos=bool_masked_pos
        )
        if self.pre_layernorm is not None:
            embeddings = self.pre_layernorm(embeddings)
        if self.rotary_embeddings is not None:
            patch_size = config.patch_size
            grid_size = (pixel_values.shape[-2] // patch_size, pixel_values.shape[-1] // patch_size)
            kwargs["position_embeddings"] = self.rotary_embeddings(grid_size, embeddings)
        with _fast_linears(embeddings):
            hidden_states, all_hidden_states, all_attentions = self.encoder(
                embeddings, output_attentions=output_attentions, output_hidden_states=output_hidden_states, **kwargs
            )
        pooled_output = None
        if config.final_norm_place == "tokens":  # norm every token, pool the normed tokens
            sequence_output = self.layernorm(hidden_states)
            if config.pooling != "map" or self.attention_pool is not None:
                pooled_output = pool_tokens(sequence_output, config, self.attention_pool)
        else:  # "pooled": the tokens stay un-normed, the pooled feature is normed (timm's fc_norm, CLIP)
            sequence_output = hidden_states
            if config.pooling != "map" or self.attention_pool is not None:
                pooled_output = self.layernorm(pool_tokens(hidden_states, config, self.attention_pool))

        if not return_dict:
            return tuple(
                v for v in (sequence_output, pooled_output, all_hidden_states, all_attentions) if v is not None
            )
        return BaseModelOutputWithPooling(
            last_hidden_state=sequence_output,
            pooler_output=pooled_output,
            hidden_states=all_hidden_states,
            attentions=all_attentions,
        )

    def get_intermediate_layers(
        self,
        pixel_values: torch.Tensor,
        n: int | Sequence[int] = 1,
        reshape: bool = False,
        return_class_token: bool = False,
        norm: bool = True,
        interpolate_pos_encoding: bool | None = None,
    ) -> tuple:
        r"""
        Patch features of intermediate blocks, as DINOv2's `DinoVisionTransformer.get_intermediate_layers`: for dense
        tasks (segmentation, depth, correspondence) and feature probing. `HfViTBackbone` computes its feature maps
        with the same code.

        Args:
            pixel_values (`torch.Tensor` of shape `(batch, channels, height, width)`): any size divisible by the
                patch size.
            n (`int` or sequence of `int`): an int takes the last `n` blocks; a sequence takes those blocks
                (0-based, negative counts from the end), in the order given.
            reshape (`bool`): patch tokens `(batch, H/P·W/P, D)` (default) or maps `(batch, D, H/P, W/P)`.
            return_class_token (`bool`): return `(patches, cls)` pairs, `cls` of shape `(batch, D)`.
            norm (`bool`): pass the blocks' outputs through the model's final LayerNorm (for `pooling="mean"`
                models that is the norm of the pooled features).

        Returns:
            A tuple with one entry per block: the patch tokens (the prefix tokens removed), or
            `(patches, cls)` with `return_class_token`.

        Example (the last 4 blocks as maps, as dense heads take them):

        ```python
        >>> features = model.get_intermediate_layers(pixel_values, n=4, reshape=True)
        >>> [tuple(f.shape) for f in features]  # ViT-S/16 at 224x320
        [(1, 384, 14, 20), (1, 384, 14, 20), (1, 384, 14, 20), (1, 384, 14, 20)]
        ```

        Without code, transformers' pipeline gives a saved hf_vit folder's features per image: the tokens
        `(1, 1 + registers + patches, D)` of `last_hidden_state` (the patch features are those after [CLS] and the
        registers, as `get_intermediate_layers(pixel_values)[0]`), or with `pool=True` the image feature
        (`pooler_output`):

        ```python
        >>> extract = pipeline("image-feature-extraction", model=folder)
        >>> tokens = extract(image, return_tensors=True)  # (1, 1 + 196, 384) for ViT-S/16 at 224
        >>> image_feature = extract(image, pool=True, return_tensors=True)  # (1, 384)
        ```
        """
        depth = self.config.num_hidden_layers
        if isinstance(n, int) and not isinstance(n, bool):
            if not 1 <= n <= depth:
                raise ValueError(
                    f"n must be a number of last blocks from 1 to {depth} (the model has {depth} blocks), got {n}"
                )
            blocks = list(range(depth - n, depth))
        else:
            blocks = list(n) if isinstance(n, Sequence) and not isinstance(n, str) else None
            if not blocks or any(
                not isinstance(i, int) or isinstance(i, bool) or not -depth <= i < depth for i in blocks
            ):
                raise ValueError(
                    f"n must be a number of last blocks or a non-empty sequence of block indices in [-{depth}, "
                    f"{depth}) (the model has {depth} blocks), got {n!r}"
                )
            blocks = [i % depth for i in blocks]
        if return_class_token and not self.config.class_token:
            raise ValueError("return_class_token=True needs a [CLS] token; this model has none (config.class_token)")
        # hidden state k + 1 is the output of block k
        features, _ = self._stage_features(
            pixel_values, [i + 1 for i in blocks], norm, reshape, interpolate_pos_encoding
        )
        if return_class_token:
            return tuple(features)
        return tuple(patches for patches, _ in features)

    def _stage_features(
        self,
        pixel_values: torch.Tensor,
        stages: list[int],
        norm: bool,
        reshape: bool,
        interpolate_pos_encoding: bool | None = None,
        output_attentions: bool | None = None,
        **kwargs,
    ) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], BaseModelOutputWithPooling]:
        """(patches, cls) of the hidden states `stages` (0: the embeddings, k: the output of block k), and the
        model's outputs (all hidden states): the one code path of `get_intermediate_layers` and `HfViTBackbone`."""
        check_every_patch_token(self.config, "the patch features of get_intermediate_layers and HfViTBackbone")
        outputs = self(
            pixel_values,
            interpolate_pos_encoding=interpolate_pos_encoding,
            output_attentions=output_attentions,
            output_hidden_states=True,
            return_dict=True,
            **kwargs,
        )
        patch_size = self.config.patch_size
        grid_size = (pixel_values.shape[-2] // patch_size, pixel_values.shape[-1] // patch_size)
        layernorm = self.layernorm if norm else None
        features = [
            _patches_and_class_token(
                outputs.hidden_states[stage],
                self.num_prefix_tokens,
                grid_size,
                layernorm,
                reshape,
                has_class_token=self.config.class_token,
            )
            for stage in stages
        ]
        return features, outputs


# Keyword arguments meant for the loss (Trainer passes `num_items_in_batch`), kept away from the attention functions.
_LOSS_KWARGS = ("num_items_in_batch", "ignore_index")


class HfViTForImageClassification(HfViTPreTrainedModel):
    """HfViTModel with a linear head on the pooled token. The loss follows `config.problem_type` (single-label
    cross-entropy, multi-label BCE, or regression MSE).

    With `config.distillation_token` (distilled DeiT) a second linear head, `distillation_classifier`, reads the
    normed distillation token, and the logits are the mean of the two heads', in training and evaluation alike (as
    timm's distilled ViTs by default, and transformers' `DeiTForImageClassificationWithTeacher`)."""

    def __init__(self, config: HfViTConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.vit = HfViTModel(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.distillation_classifier = None
        if config.distillation_token:
            self.distillation_classifier = (
                nn.Linear(config.hidden_size, config.num_labels) if config.num_labels > 0 else nn.Identity()
            )
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        interpolate_pos_encoding: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutput | tuple:
        r"""
        labels (`torch.Tensor`, *optional*): class indices `(batch,)` for single-label classification, multi-hot
            floats `(batch, num_labels)` for multi-label, or targets for regression (`num_labels == 1`).
        """
        return_dict = self.config.return_dict if return_dict is None else return_dict
        loss_kwargs = {name: kwargs.pop(name) for name in _LOSS_KWARGS if name in kwargs}
        outputs = self.vit(
            pixel_values,
            interpolate_pos_encoding=interpolate_pos_encoding,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            **kwargs,
        )
        logits = self.classifier(outputs.pooler_output)
        if self.distillation_classifier is not None:  # the distillation token is token 1, right after [CLS]
            distillation_token = self.vit.final_normed_token(outputs.last_hidden_state, 1)
            logits = (logits + self.distillation_classifier(distillation_token)) / 2
        loss = None
        if labels is not None:
            loss = self.loss_function(labels, logits, self.config, **loss_kwargs)

        if not return_dict:
            output = tuple(v for v in (logits, outputs.hidden_states, outputs.attentions) if v is not None)
            return ((loss,) + output) if loss is not None else output
        return ImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class HfViTForMaskedImageModeling(HfViTPreTrainedModel):
    """HfViTModel with SimMIM's one-layer decoder, as transformers' `ViTForMaskedImageModeling`: the patch tokens
    (the prefix tokens dropped) go back on the input's patch grid (non-square too), a 1×1 Conv2d projects each to
    `encoder_stride`² · `num_channels` values and PixelShuffle(`encoder_stride`) lays them out as pixels. The loss is
    transformers': L1 between `pixel_values` and the reconstruction on the masked patches' pixels, summed and divided
    by (masked pixels + 1e-5) · `num_channels`.

    The masked patches are replaced by the learned mask token, so this model always has one: like transformers (whose
    MIM model builds its ViTModel with `use_mask_token=True`), a config with `use_mask_token=False` is taken as a copy
    with it switched on (the caller's config object is left as it was), and the new token starts at zero."""

    def __init__(self, config: HfViTConfig):
        if not config.use_mask_token:
            config = copy.deepcopy(config)
            config.use_mask_token = True
        super().__init__(config)
        self.vit = HfViTModel(config, add_pooling_layer=False)  # the decoder reads the patch tokens
        stride = config.encoder_stride
        self.decoder = nn.Sequential(
            nn.Conv2d(config.hidden_size, stride**2 * config.num_channels, kernel_size=1),
            nn.PixelShuffle(stride),
        )
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        bool_masked_pos: torch.Tensor | None = None,
        interpolate_pos_encoding: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> MaskedImageModelingOutput | tuple:
        r"""
        bool_masked_pos (`torch.BoolTensor` of shape `(batch, patches)`, *optional*): patches to replace by the mask
            token (row-major over the input's patch grid); with it the loss is computed. Needs `config.encoder_stride
            == config.patch_size`, so that the reconstruction has the input's size.
        """
        config = self.config
        return_dict = config.return_dict if return_dict is None else return_dict
        check_every_patch_token(config, "masked image modeling's reconstruction")
        if bool_masked_pos is not None and config.encoder_stride != config.patch_size:
            raise ValueError(
                f"bool_masked_pos needs config.encoder_stride ({config.encoder_stride}) equal to config.patch_size "
                f"({config.patch_size}), so that the reconstruction has the input's size"
            )
        kwargs = {name: value for name, value in kwargs.items() if name not in _LOSS_KWARGS}
        outputs = self.vit(
            pixel_values,
            interpolate_pos_encoding=interpolate_pos_encoding,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            bool_masked_pos=bool_masked_pos,
            **kwargs,
        )
        patch = config.patch_size
        grid = (pixel_values.shape[-2] // patch, pixel_values.shape[-1] // patch)
        patch_tokens = outputs.last_hidden_state[:, config.num_prefix_tokens :]
        patch_tokens = patch_tokens.transpose(1, 2).reshape(patch_tokens.shape[0], -1, *grid)
        reconstruction = self.decoder(patch_tokens)

        loss = None
        if bool_masked_pos is not None:
            mask = bool_masked_pos.reshape(-1, *grid).repeat_interleave(patch, 1).repeat_interleave(patch, 2)
            mask = mask.unsqueeze(1).to(reconstruction.dtype)
            pixel_loss = F.l1_loss(pixel_values.to(reconstruction.dtype), reconstruction, reduction="none")
            loss = (pixel_loss * mask).sum() / (mask.sum() + 1e-5) / config.num_channels

        if not return_dict:
            output = tuple(v for v in (reconstruction, outputs.hidden_states, outputs.attentions) if v is not None)
            return ((loss,) + output) if loss is not None else output
        return MaskedImageModelingOutput(
            loss=loss, reconstruction=reconstruction, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class HfViTBackbone(BackboneMixin, HfViTPreTrainedModel):
    r"""
    HfViTModel as a transformers backbone (`AutoBackbone`), for dense heads such as `DPTForDepthEstimation`,
    `UperNetForSemanticSegmentation` or any code that takes `feature_maps`.

    Stages are `config.stage_names` = ["stem", "stage1", ..., "stageN"]: the embeddings, then the output of each block;
    `config.out_features` / `config.out_indices` choose which are returned (default: the last). All stages have
    `hidden_size` channels at stride `patch_size`. Each feature map goes through the final LayerNorm if
    `config.apply_layernorm` and loses its prefix tokens ([CLS], distillation, registers): `(batch, D, H/P, W/P)` at any
    input size divisible by the patch size; with `config.reshape_hidden_states=False`, `(batch, 1 + H/P·W/P, D)` tokens,
    [CLS] first, as DPT's neck reads them (DPT needs this setting, as with DINOv2 in Depth Anything). The maps are those
    of `HfViTModel.get_intermediate_layers` (same code). Its weights are HfViTModel's under `vit.`: any hf_vit
    checkpoint loads as a backbone, and a saved backbone as `HfViTModel` or a classifier.

    Example:

    ```python
    >>> backbone = HfViTBackbone.from_pretrained(folder, out_indices=[3, 6, 9, 12])  # any hf_vit folder
    >>> [tuple(m.shape) for m in backbone(pixel_values).feature_maps]  # ViT-S/16 at 224x320
    [(1, 384, 14, 20), (1, 384, 14, 20), (1, 384, 14, 20), (1, 384, 14, 20)]
    >>> depth_model = DPTForDepthEstimation(DPTConfig(backbone_config=HfViTConfig(..., out_indices=[3, 6, 9, 12],
    ...     reshape_hidden_states=False), neck_hidden_sizes=[48, 96, 192, 384]))  # AutoBackbone builds HfViTBackbone
    ```
    """

    def __init__(self, config: HfViTConfig):
        super().__init__(config)
        self.num_features = [config.hidden_size] * (config.num_hidden_layers + 1)
        self.vit = HfViTModel(config)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        interpolate_pos_encoding: bool | None = None,
        **kwargs,
    ) -> BackboneOutput | tuple:
        r"""
        pixel_values (`torch.Tensor` of shape `(batch, channels, height, width)`): any size divisible by the patch
            size; the feature maps are `(batch, hidden_size, height / patch_size, width / patch_size)`.
        output_hidden_states (`bool`, *optional*): also return all hidden states `(batch, tokens, D)` as they leave
            the embeddings and each block (with [CLS] and registers, not normed).
        """
        config = self.config
        output_hidden_states = config.output_hidden_states if output_hidden_states is None else output_hidden_states
        return_dict = config.return_dict if return_dict is None else return_dict
        stages = [self.stage_names.index(name) for name in self.out_features]
        features, outputs = self.vit._stage_features(
            pixel_values,
            stages,
            norm=config.apply_layernorm,
            reshape=config.reshape_hidden_states,
            interpolate_pos_encoding=interpolate_pos_encoding,
            output_attentions=output_attentions,
            **kwargs,
        )
        if config.reshape_hidden_states:
            feature_maps = tuple(patches for patches, _ in features)
        else:
            feature_maps = tuple(torch.cat((cls.unsqueeze(1), patches), dim=1) for patches, cls in features)
        hidden_states = outputs.hidden_states if output_hidden_states else None
        if not return_dict:
            return tuple(v for v in (feature_maps, hidden_states, outputs.attentions) if v is not None)
        return BackboneOutput(feature_maps=feature_maps, hidden_states=hidden_states, attentions=outputs.attentions)


__all__ = [
    "HfViTPreTrainedModel",
    "HfViTModel",
    "HfViTForImageClassification",
    "HfViTForMaskedImageModeling",
    "HfViTBackbone",
]
