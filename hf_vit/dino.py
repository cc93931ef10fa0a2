"""The parts of DINO self-supervised training (Caron et al. 2021, "Emerging Properties in Self-Supervised Vision
Transformers"), with DINOv2's options (Oquab et al. 2023): each a small piece that `hf_vit.pretrain` puts together.

- `cosine_schedule`: DINO's schedules (learning rate, weight decay, teacher momentum), as a value per step.
- `DINOHead`: the projection head, an MLP with a bottleneck and an L2-normalised, weight-normalised last layer.
- `DINONetwork`: a backbone (an `HfViTModel`) and its head, run over views of several resolutions.
- `DINOLoss`: cross-entropy between the sharpened, centred teacher and the student over every pair of different views;
  `teacher_temperature` its warm-up; `update_teacher` the EMA of the student.
- `IBOTPatchLoss` (iBOT's masked-token loss) and `koleo_loss` (DINOv2's KoLeo regulariser): options.
- `MultiCropViews` and `random_patch_masks`: the views (2 global + N local random crops), made batch-wise on tensors
  from a seeded generator, so that they depend on (seed, epoch, batch) alone and a resumed run sees the same ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


# ---- schedules ------------------------------------------------------------------------------------------------------
def cosine_schedule(
    start: float, end: float, total_steps: int, warmup_steps: int = 0, warmup_start: float = 0.0
) -> callable:
    """step -> value: a linear warm-up from `warmup_start` to `start` over `warmup_steps`, then a half cosine from
    `start` to `end` over the remaining steps (DINO's `cosine_scheduler`, as a function rather than an array)."""

    def value(step: int) -> float:
        if step < warmup_steps:
            return warmup_start + (start - warmup_start) * step / warmup_steps
        span = max(total_steps - warmup_steps, 1)
        progress = min(step - warmup_steps, span) / span
        return end + 0.5 * (start - end) * (1 + math.cos(math.pi * progress))

    return value


def teacher_temperature(epoch: int, warmup_temp: float, temp: float, warmup_epochs: int) -> float:
    """The teacher's temperature in `epoch` (0-based): linear from `warmup_temp` to `temp` over the first
    `warmup_epochs` epochs, then constant (a too-sharp start, or a too-soft one, collapses)."""
    if epoch < warmup_epochs:
        return warmup_temp + (temp - warmup_temp) * epoch / max(warmup_epochs - 1, 1)
    return temp


# ---- networks -------------------------------------------------------------------------------------------------------
class DINOHead(nn.Module):
    """`num_layers` linear layers with GELU (hidden width `hidden_dim`, the last to `bottleneck_dim`), L2
    normalisation, then a weight-normalised linear layer without bias to `out_dim` prototypes. With
    `norm_last_layer` the last layer's norm is fixed at 1 (what DINO's ViT-S uses: it stabilises training);
    `batch_norm` adds batch norm to the hidden layers (DINO's `use_bn`)."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        num_layers: int = 3,
        norm_last_layer: bool = True,
        batch_norm: bool = False,
    ):
        super().__init__()
        num_layers = max(num_layers, 1)

        def hidden(width):  # DINO's `use_bn`: batch norm after each hidden layer
            return [nn.BatchNorm1d(width), nn.GELU()] if batch_norm else [nn.GELU()]

        if num_layers == 1:
            layers = [nn.Linear(in_dim, bottleneck_dim)]
        else:
            layers = [nn.Linear(in_dim, hidden_dim), *hidden(hidden_dim)]
            for _ in range(num_layers - 2):
                layers += [nn.Linear(hidden_dim, hidden_dim), *hidden(hidden_dim)]
            layers.append(nn.Linear(hidden_dim, bottleneck_dim))
        self.mlp = nn.Sequential(*layers)
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                nn.init.trunc_normal_(layer.weight, std=0.02)
                nn.init.zeros_(layer.bias)
        self.last_layer = nn.utils.parametrizations.weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        magnitude = self.last_layer.parametrizations.weight.original0
        with torch.no_grad():
            magnitude.fill_(1.0)
        magnitude.requires_grad = not norm_last_layer

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        hidden = F.normalize(self.mlp(features), dim=-1, p=2)
        return self.last_layer(hidden)


class DINONetwork(nn.Module):
    """A backbone and its head (`head`; `patch_head` for iBOT, the same module by default as in DINOv2), run over a
    list of views: views of one resolution go through the backbone together (DINO's `MultiCropWrapper`). Returns
    the head's outputs for the views' [CLS] (or pooled) embeddings, in the order of the views, and, for `masks`
    given for the first views, the head's outputs of those views' masked patch tokens and the embeddings
    (KoLeo's input)."""

    def __init__(self, backbone: nn.Module, head: DINOHead, patch_head: DINOHead | None = None):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.patch_head = patch_head

    def forward(self, views: list[torch.Tensor], masks: torch.Tensor | None = None, with_patches: bool = False):
        """`views`: tensors (batch, C, H, W), the global ones (one size) first; `masks`: (global views * batch,
        patches) booleans, the patch tokens the student sees masked (iBOT); `with_patches`: also return the head's
        outputs of the global views' patch tokens. Returns (cls_out (views * batch, out_dim), patch_out (global views
        * batch, patches, out_dim) or None, embeddings (views * batch, hidden))."""
        embeddings, patch_out, start = [], None, 0
        for run, (_, count) in enumerate(_runs([tuple(v.shape[-2:]) for v in views])):
            first = run == 0
            output = self.backbone(
                pixel_values=torch.cat(views[start : start + count]),
                bool_masked_pos=masks if first and masks is not None else None,
            )
            embeddings.append(output.pooler_output)
            if first and with_patches:
                prefix = self.backbone.config.num_prefix_tokens
                patch_out = (self.patch_head or self.head)(output.last_hidden_state[:, prefix:])
            start += count
        embeddings = torch.cat(embeddings)
        return self.head(embeddings), patch_out, embeddings


def _runs(sizes: list[tuple]) -> list[tuple[tuple, int]]:
    """Consecutive equal sizes as (size, count) runs, in order."""
    runs: list[list] = []
    for size in sizes:
        if runs and runs[-1][0] == size:
            runs[-1][1] += 1
        else:
            runs.append([size, 1])
    return [(size, count) for size, count in runs]


@torch.no_grad()
def update_teacher(student: nn.Module, teacher: nn.Module, momentum: float) -> None:
    """teacher <- momentum * teacher + (1 - momentum) * student, parameter by parameter (names must match)."""
    student_params = dict(student.named_parameters())
    for name, param in teacher.named_parameters():
        param.mul_(momentum).add_(student_params[name].detach().to(param.dtype), alpha=1 - momentum)


def cancel_last_layer_gradients(head: DINOHead) -> None:
    """Drop the gradients of the head's last layer: DINO keeps it fixed in the first epoch (training it then tends to
    collapse the prototypes). A parameter without a gradient is left as it is by the optimizer, weight decay
    included."""
    for param in head.last_layer.parameters():
        param.grad = None


# ---- losses ---------------------------------------------------------------------------------------------------------
def _all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of `tensor` over the processes of a distributed run (itself with one)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        tensor = tensor.clone()
        torch.distributed.all_reduce(tensor)
        tensor /= torch.distributed.get_world_size()
    return tensor


class DINOLoss(nn.Module):
    """DINO's loss: for every pair (teacher view i of the `num_global` global ones, student view j of all views),
    j != i, the cross-entropy between softmax((teacher - center) / teacher_temp) and softmax(student / student_temp),
    averaged over the pairs. The center is an EMA (`center_momentum`) of the teacher's mean output over the batch (all
    processes), updated after the loss: centring keeps one prototype from taking over, sharpening (a low teacher
    temperature) keeps the output from going uniform. The center is a buffer: checkpoints hold it."""

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9, num_global: int = 2):
        super().__init__()
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.num_global = num_global
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(self, student_out: torch.Tensor, teacher_out: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        """`student_out`: (views * batch, out_dim), the views in order; `teacher_out`: (num_global * batch,
        out_dim) for the global views (the first ones)."""
        batch = teacher_out.shape[0] // self.num_global
        student = (student_out.float() / self.student_temp).split(batch)
        teacher_out = teacher_out.float().detach()
        targets = F.softmax((teacher_out - self.center) / teacher_temp, dim=-1).chunk(self.num_global)
        total, pairs = 0.0, 0
        for i, target in enumerate(targets):
            for j, logits in enumerate(student):
                if j == i:  # the same view: nothing to predict
                    continue
                total = total + torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()
                pairs += 1
        self.update_center(teacher_out)
        return total / pairs

    @torch.no_grad()
    def update_center(self, teacher_out: torch.Tensor) -> None:
        batch_center = _all_reduce_mean(teacher_out.mean(dim=0, keepdim=True))
        self.center.mul_(self.center_momentum).add_(batch_center, alpha=1 - self.center_momentum)


class IBOTPatchLoss(nn.Module):
    """iBOT's masked-token loss (DINOv2's `ibot_loss`): for each masked patch of a global view, the cross-entropy
    between the centred, sharpened teacher output of the unmasked patch and the student output of the masked one,
    averaged per image over its masked patches, then over images. A center of its own (EMA over masked tokens)."""

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9):
        super().__init__()
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(
        self, student_patches: torch.Tensor, teacher_patches: torch.Tensor, masks: torch.Tensor, teacher_temp: float
    ) -> torch.Tensor:
        """`student_patches`, `teacher_patches`: (images, patches, out_dim); `masks`: (images, patches) booleans."""
        masks = masks.bool()
        teacher = teacher_patches.float().detach()[masks]
        target = F.softmax((teacher - self.center) / teacher_temp, dim=-1)
        log_probs = F.log_softmax(student_patches.float()[masks] / self.student_temp, dim=-1)
        per_token = torch.sum(-target * log_probs, dim=-1)
        weights = (1.0 / masks.sum(-1).clamp(min=1.0)).unsqueeze(-1).expand_as(masks)[masks]
        images = max(int(masks.any(-1).sum()), 1)
        self.update_center(teacher)
        return (per_token * weights).sum() / images

    @torch.no_grad()
    def update_center(self, teacher_tokens: torch.Tensor) -> None:
        if teacher_tokens.shape[0] == 0:
            return
        batch_center = _all_reduce_mean(teacher_tokens.mean(dim=0, keepdim=True))
        self.center.mul_(self.center_momentum).add_(batch_center, alpha=1 - self.center_momentum)


def koleo_loss(features: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """DINOv2's KoLeo regulariser (Kozachenko-Leonenko entropy estimate): minus the mean log distance of each
    L2-normalised feature to its nearest neighbour in the batch; it spreads the features over the sphere."""
    features = F.normalize(features.float(), dim=-1, p=2, eps=eps)
    similarity = features @ features.T
    similarity.fill_diagonal_(-1.0)
    nearest = similarity.argmax(dim=1)
    distances = F.pairwise_distance(features, features[nearest], p=2, eps=eps)
    return -torch.log(distances + eps).mean()


# ---- views ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ViewSettings:
    """The multi-crop recipe: `num_global` views of `global_size` px covering `global_scale` of the image's area,
    `num_local` of `local_size` px covering `local_scale`; rotations up to `max_rotation` degrees, horizontal flips
    (photos only: a flip can change what a small image such as a digit shows), brightness and contrast jitter up to
    `jitter`, and gaussian noise of std `noise` (in normalised units)."""

    global_size: int
    local_size: int
    num_global: int = 2
    num_local: int = 6
    global_scale: tuple[float, float] = (0.4, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.4)
    max_rotation: float = 0.0
    flip: bool = True
    jitter: float = 0.4
    noise: float = 0.0


class MultiCropViews:
    """The views of a batch of images (batch, C, H, W; already normalised): each view is a random crop of each
    image (its own area, aspect ratio, position and rotation per image), resampled to the view's size with
    `grid_sample` (bilinear; the image's edge extends beyond it), then flipped and jittered per image. Everything is
    drawn from `generator`, so the views depend on its seed alone."""

    def __init__(self, settings: ViewSettings):
        self.s = settings

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> list[torch.Tensor]:
        s = self.s
        views = [self.crop(images, s.global_size, s.global_scale, generator) for _ in range(s.num_global)]
        views += [self.crop(images, s.local_size, s.local_scale, generator) for _ in range(s.num_local)]
        return views

    def crop(self, images: torch.Tensor, size: int, scale: tuple[float, float], generator) -> torch.Tensor:
        s, batch = self.s, images.shape[0]

        def uniform(low, high):
            return low + (high - low) * torch.rand(batch, generator=generator)

        area = uniform(*scale)
        log_ratio = uniform(math.log(3 / 4), math.log(4 / 3))
        ratio = torch.exp(log_ratio)
        width = torch.sqrt(area * ratio).clamp(max=1.0)  # as fractions of the image's side
        height = torch.sqrt(area / ratio).clamp(max=1.0)
        # the crop's centre, in grid_sample's [-1, 1] coordinates, keeping the crop inside the image
        center_x = (1 - width) * uniform(-1.0, 1.0)
        center_y = (1 - height) * uniform(-1.0, 1.0)
        angle = uniform(-s.max_rotation, s.max_rotation) * (math.pi / 180)
        flip = torch.where(torch.rand(batch, generator=generator) < 0.5, -1.0, 1.0) if s.flip else torch.ones(batch)
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.stack(
            [
                torch.stack([width * cos * flip, -height * sin, center_x], dim=-1),
                torch.stack([width * sin * flip, height * cos, center_y], dim=-1),
            ],
            dim=1,
        ).to(images.dtype)
        grid = F.affine_grid(theta, [batch, images.shape[1], size, size], align_corners=False)
        views = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if s.jitter:
            contrast = uniform(1 - s.jitter, 1 + s.jitter).view(-1, 1, 1, 1)
            brightness = uniform(-s.jitter, s.jitter).view(-1, 1, 1, 1)
            mean = views.mean(dim=(1, 2, 3), keepdim=True)
            views = (views - mean) * contrast + mean + brightness
        if s.noise:
            views = views + s.noise * torch.randn(views.shape, generator=generator)
        return views


def random_patch_masks(
    batch: int, patches: int, ratio: tuple[float, float], probability: float, generator: torch.Generator
) -> torch.Tensor:
    """(batch, patches) booleans for iBOT: a share `probability` of the images get a random `ratio`-range fraction of
    their patches masked (at least one), the others none."""
    masks = torch.zeros(batch, patches, dtype=torch.bool)
    chosen = torch.rand(batch, generator=generator) < probability
    fractions = ratio[0] + (ratio[1] - ratio[0]) * torch.rand(batch, generator=generator)
    scores = torch.rand(batch, patches, generator=generator)
    for i in torch.nonzero(chosen).flatten().tolist():
        count = max(1, int(round(float(fractions[i]) * patches)))
        masks[i, scores[i].argsort()[:count]] = True
    return masks


__all__ = [
    "DINOHead",
    "DINOLoss",
    "DINONetwork",
    "IBOTPatchLoss",
    "MultiCropViews",
    "ViewSettings",
    "cancel_last_layer_gradients",
    "cosine_schedule",
    "koleo_loss",
    "random_patch_masks",
    "teacher_temperature",
    "update_teacher",
]
