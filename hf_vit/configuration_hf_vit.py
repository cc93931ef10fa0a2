"""HfViTConfig: the shape and options of an hf_vit Vision Transformer, plus the ViT paper's named sizes.

This file is copied into every saved checkpoint (with `modeling_hf_vit.py`), so it imports only `transformers`.
"""

from transformers import PreTrainedConfig
from transformers.activations import ACT2FN

try:
    from transformers.backbone_utils import BackboneConfigMixin
except ImportError:  # transformers 5.x before the module moved out of transformers.utils
    from transformers.utils.backbone_utils import BackboneConfigMixin

# Shapes of the ViT paper's Table 1 (Base/Large/Huge) and DeiT/timm's Tiny/Small.
# name -> (patch_size, hidden_size, num_hidden_layers, num_attention_heads, intermediate_size)
_PRESET_SHAPES = {
    "vit-tiny-patch16-224": (16, 192, 12, 3, 768),
    "vit-small-patch16-224": (16, 384, 12, 6, 1536),
    "vit-base-patch16-224": (16, 768, 12, 12, 3072),
    "vit-large-patch16-224": (16, 1024, 24, 16, 4096),
    "vit-huge-patch14-224": (14, 1280, 32, 16, 5120),
}
PRESETS = {
    name: dict(
        image_size=224,
        patch_size=patch,
        hidden_size=width,
        num_hidden_layers=depth,
        num_attention_heads=heads,
        intermediate_size=mlp,
    )
    for name, (patch, width, depth, heads, mlp) in _PRESET_SHAPES.items()
}

POOLING_MODES = ("cls", "mean", "map")
FINAL_NORM_PLACES = ("tokens", "pooled")
MLP_TYPES = ("mlp", "swiglu", "swiglu_norm")
# rotary position encodings of the patch tokens, by convention -> the frequency base their models use by default
ROPE_TYPES = {"dinov3": 100.0, "eva02": 10000.0}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def stage_names_for(num_hidden_layers) -> list[str]:
    """The backbone stages of a model with `num_hidden_layers` blocks: "stem" (the embeddings), then "stage1" ..
    "stageN" (the output of each block)."""
    depth = num_hidden_layers if _is_int(num_hidden_layers) and num_hidden_layers > 0 else 0
    return ["stem"] + [f"stage{index}" for index in range(1, depth + 1)]


def image_size_pair(image_size) -> tuple[int, int]:
    """`image_size` as (height, width), whether it was given as an int or a pair."""
    if _is_int(image_size):
        return (image_size, image_size)
    return (image_size[0], image_size[1])


def token_merging_problem(token_merging_r, num_hidden_layers, rope_type=None) -> str | None:
    """What is wrong with a `token_merging_r` value for a model of `num_hidden_layers` blocks (with rotary position
    encoding `rope_type`), or None if nothing."""
    if (
        rope_type is not None
        and token_merging_r
        and (not isinstance(token_merging_r, (list, tuple)) or any(token_merging_r))
    ):
        return (
            f"token_merging_r must be 0 with rotary position encoding (rope_type {rope_type!r}): a merged token has "
            f"no grid position to rotate by; got {token_merging_r!r}"
        )
    if _is_int(token_merging_r):
        return None if token_merging_r >= 0 else f"token_merging_r must be >= 0, got {token_merging_r!r}"
    expected = (
        f"an integer >= 0 or a list of {num_hidden_layers} of them (one per block)"
        if _is_int(num_hidden_layers)
        else "an integer >= 0 or a list of them (one per block)"
    )
    if not isinstance(token_merging_r, (list, tuple)) or not all(_is_int(r) and r >= 0 for r in token_merging_r):
        return f"token_merging_r must be {expected}, got {token_merging_r!r}"
    if _is_int(num_hidden_layers) and len(token_merging_r) != num_hidden_layers:
        return f"token_merging_r must be {expected}, got a list of {len(token_merging_r)}"
    return None


class HfViTConfig(BackboneConfigMixin, PreTrainedConfig):
    r"""
    Configuration of an hf_vit model. Defaults give ViT-B/16 at 224×224.

    Like transformers' configs, it accepts any values; `check_values()` reports invalid or inconsistent ones (heads
    that do not divide `hidden_size`, an image size not divisible by the patch size, ...) and runs when a model is
    built from the config.

    Args:
        image_size (`int` or `(height, width)`): the training resolution; position embeddings are learned for its
            patch grid and interpolated for any other size divisible by `patch_size`.
        patch_size (`int`): side P of the square P×P patches (kernel and stride of the patch convolution).
        num_channels (`int`): channels of `pixel_values`.
        hidden_size (`int`): token width D.
        num_hidden_layers (`int`): number of Transformer blocks.
        num_attention_heads (`int`): attention heads; must divide `hidden_size`.
        intermediate_size (`int`): hidden width of each block's MLP.
        hidden_act (`str`): MLP activation, a key of `transformers.activations.ACT2FN` ("gelu" is exact GELU).
        mlp_type (`str`): "mlp" is fc1 -> `hidden_act` -> fc2; "swiglu" is the gated SwiGLU MLP of DINOv2-giant
            (fc1 projects to 2 × `intermediate_size`, its first half through SiLU gates the second, fc2 projects back;
            `hidden_act` is then unused); "swiglu_norm" is that SwiGLU with a LayerNorm over its `intermediate_size`
            hidden features before fc2 (EVA-02's MLP, timm's `scale_mlp=True`).
        gate_act (`str`): the activation of the gated MLPs' gate (`mlp_type` "swiglu" / "swiglu_norm"), a key of
            `transformers.activations.ACT2FN`: "silu" (SwiGLU) or "gelu" (GeGLU, a DINOv3 gated MLP with
            hidden_act="gelu").
        hidden_dropout_prob (`float`): dropout on the embeddings and on each attention/MLP branch output.
        attention_probs_dropout_prob (`float`): dropout on the attention weights.
        drop_path_rate (`float`): stochastic depth; block i drops its branches with rate `i / (L-1) * drop_path_rate`.
        layer_norm_eps (`float`): LayerNorm epsilon (1e-6 as DINO/timm; transformers' ViT uses 1e-12).
        qkv_bias (`bool`): bias on the fused query/key/value projection.
        layerscale_init (`float` or `None`): initial LayerScale value (CaiT/DINOv2); `None` turns LayerScale off.
        num_register_tokens (`int`): extra learned tokens after [CLS] and the distillation token (DINOv2
            registers); they get no position embedding.
        pooling (`str`): how `pooler_output` is read from the tokens (see `final_norm` for where the final LayerNorm
            goes): "cls" takes the [CLS] token; "mean" averages the patch tokens (timm's `global_pool="avg"`);
            "map" is multi-head attention pooling (SigLIP's head, timm's `global_pool="map"`): a learned probe
            attends over the patch tokens, followed by a residual LayerNorm + MLP (`HfViTAttentionPoolingHead`).
        cls_position_embedding (`bool`): whether [CLS] (and the distillation token) get position embeddings of their
            own (ViT, DeiT, DINO) or only the patches do (timm's `no_embed_class`, e.g. DeiT-III, big_vision, `*_reg4`
            models).
        interpolate_antialias (`bool`): bicubic resizing of the position embeddings with antialiasing (timm) or
            without (transformers, DINO). The two differ numerically; converters set it to match their source.
        patch_embedding_bias (`bool`): bias on the patch projection (CLIP image towers have none).
        pre_norm (`bool`): a LayerNorm over all tokens before the first block, as CLIP image towers (timm's
            `pre_norm=True`, weights `norm_pre`); with `hidden_act="quick_gelu"` this loads timm's CLIP ViTs.
        absolute_position_embeddings (`bool`): the learned position table added to the tokens; `False` leaves
            position to `rope_type` alone (DINOv3) and the model has no `position_embeddings` weights.
        rope_type (`str` or `None`): rotary position encoding of the queries and keys of the patch tokens (the last
            H/P·W/P tokens; [CLS], registers and other prefix tokens stay unrotated), computed for the input's own
            patch grid, so any size works without interpolation. `None`: off. "dinov3": DINOv3's convention
            (transformers `DINOv3ViTRopePositionEmbedding`): patch-centre coordinates in [-1, 1] per axis, angles
            2π·coordinate·`rope_theta`^(-k/(head_dim/4)), the first half of each head's channels rotated against the
            second. "eva02": EVA-02's (timm `RotaryEmbeddingCat`): patch indices 0..n-1 per axis (scaled onto
            `rope_reference_grid` when set), angles index·`rope_theta`^(-k/(head_dim/4)), channels rotated in
            adjacent pairs. Each head uses head_dim/4 frequencies per axis (rows first, then columns).
        rope_theta (`float` or `None`): the RoPE frequency base; `None` is the convention's own (100 for "dinov3",
            10000 for "eva02").
        rope_reference_grid (`(rows, columns)` or `None`): "eva02" only: the patch indices of any input are rescaled
            to span this grid (timm's `ref_feat_shape`, the pre-training grid); `None` keeps raw indices.
        rope_shift (`float` or `None`): training only (ignored in eval): add one uniform random offset in
            [-`rope_shift`, `rope_shift`] per axis to all RoPE coordinates (DINOv3's `pos_embed_shift`).
        rope_jitter (`float` or `None`): training only: multiply each axis' coordinates by a log-uniform factor in
            [1/`rope_jitter`, `rope_jitter`] (DINOv3's `pos_embed_jitter`).
        rope_rescale (`float` or `None`): training only: multiply all coordinates by one log-uniform factor in
            [1/`rope_rescale`, `rope_rescale`] (DINOv3's `pos_embed_rescale`).
        qk_norm (`bool`): a LayerNorm over each head's queries and keys (per head, weights shared across heads) before
            RoPE and the attention product (timm's `qk_norm=True`, EVA/DINOv3 variants).
        use_mask_token (`bool`): a learned mask token (DINOv2/iBOT masked-image modelling) that replaces the patch
            tokens marked by `bool_masked_pos`; kept so converted DINOv2 weights stay complete.
            `HfViTForMaskedImageModeling` always has one (it switches this on).
        encoder_stride (`int` or `None`): `HfViTForMaskedImageModeling`'s decoder turns each patch token into an
            `encoder_stride`×`encoder_stride` pixel block (transformers' ViTConfig name); `None` (default) means
            `patch_size`, the value the masked loss needs.
        initializer_range (`float`): std of the truncated-normal weight init.
        out_features (`list[str]`, *optional*) / out_indices (`list[int]`, *optional*): the stages that
            `HfViTBackbone` returns, by name or index into `stage_names` = ["stem", "stage1", ..., "stageN"] ("stem" is
            the embeddings, "stageK" the output of block K); either one, or both if they agree, checked with
            transformers' backbone helper. Default: the last stage. They do not change the weights.
        apply_layernorm (`bool`): `HfViTBackbone` passes its feature maps through the final LayerNorm (as DINOv2's
            backbone).
        reshape_hidden_states (`bool`): `HfViTBackbone` returns feature maps (batch, D, H/P, W/P); with `False`, token
            sequences (batch, 1 + H/P·W/P, D): [CLS] then the patch tokens (registers dropped), the layout of
            transformers' DPT neck, which reads [CLS] as its readout token (so it needs `class_token`).
        class_token (`bool`): a learned [CLS] token first in the sequence; `False` for models without one (SigLIP,
            I-JEPA; timm's `class_token=False`), which then pool with "mean" or "map".
        distillation_token (`bool`): a learned distillation token right after [CLS] (distilled DeiT). A classifier
            then has a second linear head on it (`distillation_classifier`) and predicts the mean of the two heads'
            logits, in training too (timm's default; transformers' `DeiTForImageClassificationWithTeacher`).
        final_norm (`str` or `None`): where the final LayerNorm applies. "tokens": on every output token, pooling
            reads the normed tokens (ViT, DINOv2, SigLIP, I-JEPA); "pooled": only on the pooled feature, the tokens
            of `last_hidden_state` stay un-normed (timm's `fc_norm` for mean pooling; CLIP's `post_layernorm` on
            [CLS]). `None` (default): "pooled" for `pooling="mean"`, "tokens" otherwise.
        token_merging_r (`int` or `list[int]`): token merging (ToMe, Bolya et al., ICLR 2023) for faster inference
            without retraining: after each block's attention, the `r` most similar pairs of tokens (cosine similarity
            of their keys, averaged over heads, between alternate tokens) are merged into their size-weighted
            average, and later attention counts each token by its size (log size added to the logits). An int
            merges that many pairs in every block, a list gives one value per block; 0 (default) is the plain model.
            The prefix tokens ([CLS], distillation, registers) are never merged. Takes effect at the next forward,
            so it can be set on a loaded model (`model.config.token_merging_r = 13`). Outputs that need every patch
            token (the backbone, masked image modeling, `get_intermediate_layers`) and rotary position encoding
            refuse it.
    The sequence is always [CLS]? + distillation token? + registers + patch tokens: the prefix tokens
    (`num_prefix_tokens` of them) first, the patch tokens last.
    """

    model_type = "hf_vit"

    image_size: int | list[int] | tuple[int, int] = 224
    patch_size: int = 16
    num_channels: int = 3
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    mlp_type: str = "mlp"
    gate_act: str = "silu"
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    drop_path_rate: float = 0.0
    layer_norm_eps: float = 1e-6
    qkv_bias: bool = True
    layerscale_init: float | None = None
    num_register_tokens: int = 0
    pooling: str = "cls"
    cls_position_embedding: bool = True
    interpolate_antialias: bool = False
    use_mask_token: bool = False
    encoder_stride: int | None = None
    pre_norm: bool = False
    absolute_position_embeddings: bool = True
    rope_type: str | None = None
    rope_theta: float | None = None
    rope_reference_grid: list[int] | None = None
    rope_shift: float | None = None
    rope_jitter: float | None = None
    rope_rescale: float | None = None
    qk_norm: bool = False
    patch_embedding_bias: bool = True
    initializer_range: float = 0.02
    _out_features: list[str] | None = None
    _out_indices: list[int] | None = None
    apply_layernorm: bool = True
    reshape_hidden_states: bool = True
    class_token: bool = True
    distillation_token: bool = False
    final_norm: str | None = None
    token_merging_r: int | list[int] = 0

    def __post_init__(self, **kwargs):
        if isinstance(self.image_size, tuple):
            self.image_size = list(self.image_size)  # what JSON gives back, so configs compare equal after a reload
        if isinstance(self.rope_reference_grid, tuple):
            self.rope_reference_grid = list(self.rope_reference_grid)
        kwargs.pop("stage_names", None)  # a property here, derived from num_hidden_layers (configs saved elsewhere)
        self.set_output_features_output_indices(
            out_features=kwargs.pop("out_features", None), out_indices=kwargs.pop("out_indices", None)
        )
        if self.encoder_stride is None:
            self.encoder_stride = self.patch_size
        super().__post_init__(**kwargs)
        if isinstance(self.token_merging_r, tuple):
            self.token_merging_r = list(self.token_merging_r)
        if self.id2label is not None and not self.label2id:
            self.label2id = {label: index for index, label in self.id2label.items()}

    def check_values(self) -> None:
        """Raise one `ValueError` naming every invalid or inconsistent value (all of them at once).

        Following transformers' convention, the constructor accepts any values (transformers' own `ConfigTester`
        builds `HfViTConfig(hidden_size=37)` with the default 12 heads); building a model runs this check, and
        command-line tools call it early to fail before loading data.
        """
        problems = []

        def positive_int(name):
            value = getattr(self, name)
            if not _is_int(value) or value <= 0:
                problems.append(f"{name} must be a positive integer, got {value!r}")
                return False
            return True

        def rate(name):
            value = getattr(self, name)
            if not _is_number(value) or not 0.0 <= value < 1.0:
                problems.append(f"{name} must be a number in [0, 1), got {value!r}")

        image_size = self.image_size
        image_size_ok = _is_int(image_size) and image_size > 0
        if isinstance(image_size, list):
            image_size_ok = len(image_size) == 2 and all(_is_int(s) and s > 0 for s in image_size)
        if not image_size_ok:
            problems.append(
                f"image_size must be a positive integer or a (height, width) pair of them, got {image_size!r}"
            )

        for name in ("num_channels", "hidden_size", "num_hidden_layers", "intermediate_size"):
            positive_int(name)
        if positive_int("num_attention_heads") and _is_int(self.hidden_size):
            if self.hidden_size % self.num_attention_heads:
                problems.append(
                    f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                    f"({self.num_attention_heads})"
                )
        if positive_int("patch_size") and image_size_ok:
            height, width = image_size_pair(image_size)
            if height % self.patch_size or width % self.patch_size:
                problems.append(
                    f"image_size {height}x{width} must be divisible by patch_size {self.patch_size} in both "
                    "height and width"
                )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "drop_path_rate"):
            rate(name)
        if not _is_number(self.layer_norm_eps) or self.layer_norm_eps <= 0:
            problems.append(f"layer_norm_eps must be a positive number, got {self.layer_norm_eps!r}")
        if not _is_number(self.initializer_range) or self.initializer_range <= 0:
            problems.append(f"initializer_range must be a positive number, got {self.initializer_range!r}")
        if self.layerscale_init is not None and (not _is_number(self.layerscale_init) or self.layerscale_init <= 0):
            problems.append(f"layerscale_init must be None (off) or a positive number, got {self.layerscale_init!r}")
        if not _is_int(self.num_register_tokens) or self.num_register_tokens < 0:
            problems.append(f"num_register_tokens must be an integer >= 0, got {self.num_register_tokens!r}")
        if not _is_int(self.encoder_stride) or self.encoder_stride <= 0:
            problems.append(f"encoder_stride must be a positive integer, got {self.encoder_stride!r}")
        if self.pooling not in POOLING_MODES:
            problems.append(f"pooling must be one of {POOLING_MODES}, got {self.pooling!r}")
        if self.final_norm is not None and self.final_norm not in FINAL_NORM_PLACES:
            problems.append(f"final_norm must be None or one of {FINAL_NORM_PLACES}, got {self.final_norm!r}")
        if self.class_token is False:
            if self.pooling == "cls":
                problems.append('pooling="cls" needs class_token=True; without [CLS] pool with "mean" or "map"')
            if self.distillation_token is True:
                problems.append("distillation_token=True needs class_token=True (the distillation token follows [CLS])")
            if self.reshape_hidden_states is False:
                problems.append("reshape_hidden_states=False returns [CLS] + patch tokens and needs class_token=True")
        if self.mlp_type not in MLP_TYPES:
            problems.append(f"mlp_type must be one of {MLP_TYPES}, got {self.mlp_type!r}")
        if self.hidden_act not in ACT2FN:
            problems.append(
                f"hidden_act must be an activation known to transformers (e.g. 'gelu'), got {self.hidden_act!r}"
            )
        if self.gate_act not in ACT2FN:
            problems.append(
                f"gate_act must be an activation known to transformers (e.g. 'silu'), got {self.gate_act!r}"
            )
        problems.extend(self._rope_problems())
        for name in (
            "qkv_bias",
            "absolute_position_embeddings",
            "qk_norm",
            "cls_position_embedding",
            "interpolate_antialias",
            "use_mask_token",
            "pre_norm",
            "patch_embedding_bias",
            "apply_layernorm",
            "reshape_hidden_states",
            "class_token",
            "distillation_token",
        ):
            if not isinstance(getattr(self, name), bool):
                problems.append(f"{name} must be True or False, got {getattr(self, name)!r}")
        problem = token_merging_problem(self.token_merging_r, self.num_hidden_layers, self.rope_type)
        if problem:
            problems.append(problem)
        if _is_int(self.num_hidden_layers) and self.num_hidden_layers > 0:
            try:  # out_features/out_indices set before num_hidden_layers changed may name stages that no longer exist
                self.verify_out_features_out_indices()
            except ValueError as error:
                problems.append(f"{error} (set config.out_features or config.out_indices again)")
        if problems:
            raise ValueError("Invalid HfViTConfig: " + "; ".join(problems))

    def _rope_problems(self) -> list[str]:
        problems = []
        if self.rope_type is not None and self.rope_type not in ROPE_TYPES:
            problems.append(f"rope_type must be None or one of {tuple(ROPE_TYPES)}, got {self.rope_type!r}")
        if self.rope_type is not None and _is_int(self.hidden_size) and _is_int(self.num_attention_heads):
            if self.num_attention_heads > 0 and (self.hidden_size // self.num_attention_heads) % 4:
                problems.append(
                    f"rope_type {self.rope_type!r} needs a head width (hidden_size / num_attention_heads = "
                    f"{self.hidden_size // self.num_attention_heads}) divisible by 4"
                )
        if self.rope_theta is not None and (not _is_number(self.rope_theta) or self.rope_theta <= 0):
            problems.append(
                f"rope_theta must be None (the convention's own) or a positive number, got {self.rope_theta!r}"
            )
        grid = self.rope_reference_grid
        if grid is not None:
            if not (isinstance(grid, list) and len(grid) == 2 and all(_is_number(s) and s > 0 for s in grid)):
                problems.append(f"rope_reference_grid must be None or a (rows, columns) pair > 0, got {grid!r}")
            elif self.rope_type != "eva02":
                problems.append(f"rope_reference_grid is an 'eva02' RoPE option; rope_type is {self.rope_type!r}")
        if self.rope_shift is not None and (not _is_number(self.rope_shift) or self.rope_shift < 0):
            problems.append(f"rope_shift must be None (off) or a number >= 0, got {self.rope_shift!r}")
        for name in ("rope_jitter", "rope_rescale"):
            value = getattr(self, name)
            if value is not None and (not _is_number(value) or value < 1):
                problems.append(f"{name} must be None (off) or a factor >= 1, got {value!r}")
        if self.absolute_position_embeddings is False and self.rope_type is None:
            problems.append(
                "absolute_position_embeddings=False needs a rope_type: without either the model has no position "
                "information"
            )
        return problems

    @property
    def rope_base(self) -> float | None:
        """The RoPE frequency base in use: `rope_theta`, or the convention's own (None without RoPE)."""
        if self.rope_type is None:
            return None
        return float(self.rope_theta) if self.rope_theta is not None else ROPE_TYPES[self.rope_type]

    @property
    def stage_names(self) -> list[str]:
        """The backbone stages: "stem" (the embeddings), then "stage1" .. "stageN" (the output of each block)."""
        return stage_names_for(self.num_hidden_layers)

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patch tokens: [CLS] (if any), the distillation token (if any), the registers."""
        return int(self.class_token is True) + int(self.distillation_token is True) + self.num_register_tokens

    @property
    def final_norm_place(self) -> str:
        """`final_norm`, with `None` resolved: "pooled" for mean pooling, "tokens" otherwise."""
        if self.final_norm is not None:
            return self.final_norm
        return "pooled" if self.pooling == "mean" else "tokens"

    @property
    def grid_size(self) -> tuple[int, int]:
        """The patch grid (rows, columns) that the position embeddings were learned for."""
        height, width = image_size_pair(self.image_size)
        return (height // self.patch_size, width // self.patch_size)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "HfViTConfig":
        """A named size from the ViT paper / timm, e.g.
        `HfViTConfig.from_preset("vit-small-patch16-224", num_labels=10)`."""
        if name not in PRESETS:
            raise ValueError(f"Unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})


__all__ = ["HfViTConfig", "PRESETS"]
