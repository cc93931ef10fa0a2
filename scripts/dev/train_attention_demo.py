#!/usr/bin/env python
"""Train the small model behind the attention and feature pictures of docs/dense_features.md (no pretrained weights
are available offline).

    python scripts/dev/train_attention_demo.py --output_dir demo-vit [--steps 600] [--seed 0]

The data are random square crops (64-220 px, resized to 64x64, flipped at random) of the two photographs that ship
with scikit-learn (`china.jpg`: a pagoda at the Summer Palace; `flower.jpg`: a dahlia), labelled by what they
contain: "pagoda" or "dahlia" when at least a third of the crop lies on that object (hand-drawn boxes/disc below),
"background" (sky, water, trees, leaves) when almost none does; crops in between are not used. A tiny hf_vit
(patch 8, 64x64, 4 layers) learns this in about a minute on a CPU. It has seen two photographs and nothing else:
it is a demonstration of the attention tools, not a useful classifier.

Writes an hf_vit checkpoint folder (config, safetensors weights, code files, ViTImageProcessor) atomically.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

LABELS = {0: "background", 1: "pagoda", 2: "dahlia"}
SIZE = 64


def object_masks(shape) -> dict[str, np.ndarray]:
    """Rough hand-drawn object masks for the two 427x640 photographs."""
    height, width = shape
    ys, xs = np.mgrid[:height, :width]
    pagoda = np.zeros(shape, bool)
    for x0, y0, x1, y1 in [(185, 28, 225, 90), (95, 85, 320, 200), (62, 200, 350, 395), (200, 330, 370, 395)]:
        pagoda[y0:y1, x0:x1] = True
    dahlia = ((xs - 307) ** 2 + (ys - 222) ** 2 <= 140**2) | ((xs - 380) ** 2 + (ys - 440) ** 2 <= 75**2)
    return {"china": pagoda, "flower": dahlia}


def make_crops(count: int, rng: np.random.Generator):
    from PIL import Image
    from sklearn.datasets import load_sample_image

    photos = {name: load_sample_image(f"{name}.jpg") for name in ("china", "flower")}
    masks = object_masks(photos["china"].shape[:2])
    object_label = {"china": 1, "flower": 2}
    images, labels = [], []
    while len(images) < count:
        name = ("china", "flower")[rng.integers(2)]
        photo, mask = photos[name], masks[name]
        side = int(rng.integers(64, 221))
        top, left = int(rng.integers(0, photo.shape[0] - side + 1)), int(rng.integers(0, photo.shape[1] - side + 1))
        share = mask[top : top + side, left : left + side].mean()
        if share >= 1 / 3:
            label = object_label[name]
        elif share <= 0.02:
            label = 0
        else:
            continue
        if label == 0 and rng.random() < 0.5:  # background crops are the most common; keep the classes balanced
            continue
        crop = Image.fromarray(photo[top : top + side, left : left + side]).resize((SIZE, SIZE), Image.BICUBIC)
        array = np.asarray(crop)
        images.append(array[:, ::-1] if rng.random() < 0.5 else array)
        labels.append(label)
    return np.stack(images), np.array(labels)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--crops", type=int, default=6000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: a tiny model gains little from more on a shared machine)",
    )
    args = parser.parse_args(argv)

    import torch
    from tqdm.auto import tqdm
    from transformers import ViTImageProcessor

    from hf_vit import HfViTConfig, HfViTForImageClassification
    from hf_vit.fileio import atomic_directory

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)
    images, labels = make_crops(args.crops, rng)
    print("crops per class:", {LABELS[k]: int((labels == k).sum()) for k in LABELS}, flush=True)
    processor = ViTImageProcessor(size={"height": SIZE, "width": SIZE})  # mean = std = 0.5
    pixels = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    targets = torch.from_numpy(labels)
    held_out = len(pixels) // 10
    train_x, train_y, test_x, test_y = pixels[held_out:], targets[held_out:], pixels[:held_out], targets[:held_out]

    config = HfViTConfig(
        image_size=SIZE,
        patch_size=8,
        hidden_size=96,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=384,
        id2label=LABELS,
    )
    model = HfViTForImageClassification(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-3, total_steps=args.steps, pct_start=0.1)
    start = time.time()
    model.train()
    bar = tqdm(range(args.steps), desc="training", file=sys.stderr)
    for step in bar:
        index = torch.randint(len(train_x), (args.batch_size,))
        batch = train_x[index]
        batch = batch * (1 + 0.2 * (torch.rand(len(batch), 1, 1, 1) - 0.5))  # brightness jitter
        loss = model(batch, labels=train_y[index]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    with torch.no_grad():
        accuracy = (model(test_x).logits.argmax(-1) == test_y).float().mean().item()
    print(f"trained {args.steps} steps in {time.time() - start:.0f}s; held-out crop accuracy {accuracy:.3f}")
    with atomic_directory(args.output_dir, overwrite=True) as folder:
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
    print(f"saved {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
