"""See what the model sees: DINO-style [CLS] attention maps of an hf_vit model, at the image's own aspect ratio.

    python scripts/visualize_attention.py MODEL IMAGE... --output_dir DIR [--layer -1] [--threshold 0.6]
        [--size H W] [--rollout]

MODEL is an hf_vit checkpoint folder or Hub id, or any checkpoint hf_vit.from_pretrained converts (timm, transformers
ViT, DINOv2, ...; converted once into the Hugging Face cache). Each image runs at its own aspect ratio, at about the
pixel count of the checkpoint's image processor, each side rounded to a multiple of the patch size (or at --size H W);
position embeddings are interpolated. From the chosen layer, the [CLS] query's attention over the patches (the [CLS]
and register keys left out) gives, per image, in DIR:

    STEM_head{i}.png   one heat map per head                      (input size)
    STEM_mean.png      the head mean overlaid on the image        (input size)
    STEM_mask.png      DINO's mask: the patches holding --threshold of the head mean's attention mass
    STEM_rollout.png   attention rollout through layers 0..--layer, overlaid   (with --rollout)
    STEM_summary.png   all of the above in one figure
    STEM_maps.npz      the maps as arrays (heads, mean, mask, head_masks, rollout, pixel_values)

Files are written atomically; files of those names already in DIR are refused unless --overwrite (nothing else in DIR
is touched). Images that cannot be read are reported by name and skipped (exit status 1).
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

from hf_vit.cli import command, fail, new_parser
from hf_vit.commands.pictures import check_output_dir, output_stems, png_bytes, unmerged
from hf_vit.extras import require

# what it writes per image: STEM_head0.png ... (see above)
OUTPUT_SUFFIXES = r"head\d+\.png|mean\.png|mask\.png|rollout\.png|summary\.png|maps\.npz"


def parse_args(argv=None):
    parser = new_parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="hf_vit checkpoint folder or Hub id")
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--output_dir", required=True, help="folder for the PNGs (created if missing)")
    parser.add_argument("--layer", type=int, default=-1, help="layer whose attention is shown (default -1: the last)")
    parser.add_argument(
        "--threshold", type=float, default=0.6, help="share of the attention mass the mask keeps (DINO's default 0.6)"
    )
    parser.add_argument(
        "--size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="input size in pixels, multiples of the patch size (default: the image's aspect ratio)",
    )
    parser.add_argument("--rollout", action="store_true", help="also write attention rollout across layers")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace this command's files (STEM_mean.png ...) in --output_dir"
    )
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    from hf_vit.cli import add_logging_arguments

    add_logging_arguments(parser)
    return parser.parse_args(argv)


def summary_figure(image, maps, overlays: dict, heads: list) -> bytes:
    """One figure: the input and the overlays on the first row, the per-head heat maps on the second."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top = [("input", image), *overlays.items()]
    columns = max(len(top), len(heads))
    aspect = image.height / image.width
    figure = plt.figure(figsize=(2.6 * columns, 2.6 * aspect * 2 + 0.9), dpi=100)
    for row, panels in enumerate((top, heads)):
        for column, (title, picture) in enumerate(panels):
            axis = figure.add_subplot(2, columns, row * columns + column + 1)
            axis.imshow(picture, interpolation="nearest")
            axis.set_title(title, fontsize=9)
            axis.axis("off")
    figure.suptitle(
        f"[CLS] attention, layer {maps.layer}, input {maps.input_size[0]}x{maps.input_size[1]}", fontsize=10
    )
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    from PIL import Image

    return png_bytes(Image.open(buffer).convert("RGB"))  # no alpha channel: a smaller file


@command
def main(argv=None) -> int:
    args = parse_args(argv)
    from hf_vit.cli import setup_logging

    setup_logging(args.verbose, args.quiet)
    require("viz", "hf-vit-attention")
    if not 0.0 <= args.threshold <= 1.0:
        fail(f"--threshold must be in [0, 1], got {args.threshold}")
    for image_path in args.images:  # the user's mistakes, before any work: a missing image, a folder as an image
        if not Path(image_path).exists():
            fail(f"image {image_path} does not exist")
        if Path(image_path).is_dir():
            fail(f"{image_path} is a folder; expected an image file (give the images inside it)")
    stems = output_stems(args.images)
    check_output_dir(Path(args.output_dir), stems, OUTPUT_SUFFIXES, args.overwrite)

    import numpy as np
    import torch
    from safetensors import SafetensorError
    from transformers import AutoConfig, AutoModel, ViTImageProcessor
    from transformers.utils import logging as hf_logging

    import hf_vit  # noqa: F401  (registers model_type "hf_vit")
    from hf_vit import attention_maps as am
    from hf_vit.checkpoint_io import check_model_location, load_image_processor
    from hf_vit.data import BadImageError, open_image
    from hf_vit.fileio import atomic_write_bytes

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        check_model_location(args.model)  # a missing folder or damaged weights: said plainly, before any loading
    except ValueError as error:
        fail(str(error))
    from hf_vit.convert.pretrained import pretrained_location

    try:  # timm, transformers ViT, DINOv2...: the cached hf_vit conversion (hf_vit.convert.pretrained)
        model_name = pretrained_location(args.model)
    except (OSError, ValueError) as error:  # bad Hub id, a layout hf_vit does not convert, weights it refuses
        fail(f"cannot load a model from {args.model!r}: {(str(error).splitlines() or [type(error).__name__])[0]}")
    try:
        config = AutoConfig.from_pretrained(model_name)
    except (OSError, ValueError) as error:  # a broken config.json
        fail(
            f"cannot load the model config of {args.model!r}: {(str(error).splitlines() or [type(error).__name__])[0]}"
        )
    if config.model_type != "hf_vit":
        fail(f"{args.model!r} is a {config.model_type!r} model; this script needs an hf_vit checkpoint")
    patch = int(config.patch_size)
    if args.size is not None and (min(args.size) <= 0 or args.size[0] % patch or args.size[1] % patch):
        fail(f"--size must be positive multiples of the patch size {patch}, got {args.size[0]} {args.size[1]}")
    if not -config.num_hidden_layers <= args.layer < config.num_hidden_layers:
        fail(
            f"--layer must be in [{-config.num_hidden_layers}, {config.num_hidden_layers - 1}] for this "
            f"{config.num_hidden_layers}-layer model, got {args.layer}"
        )

    try:
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        torch.empty(0, device=device)  # a device this machine does not have fails here, in one line
    except (RuntimeError, AssertionError) as error:
        fail(f"--device {args.device}: {(str(error).splitlines() or [type(error).__name__])[0]}")
    try:
        model = AutoModel.from_pretrained(model_name, **unmerged(config)).to(device).eval()
    except (OSError, ValueError, SafetensorError) as error:  # e.g. a Hub repo with missing or damaged weights
        fail(f"cannot load the model from {args.model!r}: {(str(error).splitlines() or [type(error).__name__])[0]}")
    try:
        processor = load_image_processor(model_name)  # transformers' own class; an auto_map is never run
    except (OSError, ValueError):
        size = am.size_pair(config.image_size)
        processor = ViTImageProcessor(size={"height": size[0], "width": size[1]})
        print(
            f"note: {args.model} has no preprocessor_config.json; using ViTImageProcessor defaults "
            f"(mean {processor.image_mean}, std {processor.image_std})",
            file=sys.stderr,
        )

    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    failed = []
    for image_path, stem in zip(args.images, stems, strict=True):
        try:
            image = open_image(image_path)  # training's decoding: 16-bit and palette images read the same
        except BadImageError as error:
            print(f"error: {error}", file=sys.stderr)
            failed.append(image_path)
            continue

        maps = am.compute_attention_maps(
            model, image, processor, size=args.size, layer=args.layer, threshold=args.threshold, rollout=args.rollout
        )
        shown = am.display_image(maps.pixel_values, processor)
        size = maps.input_size
        head_pictures = [(f"head {i}", am.heatmap_image(head, size)) for i, head in enumerate(maps.heads)]
        overlays = {
            "head mean": am.overlay_image(shown, maps.mean),
            f"mask ({args.threshold:g} of the mass)": am.mask_image(shown, maps.mask),
        }
        if maps.rollout is not None:
            overlays["rollout"] = am.overlay_image(shown, maps.rollout)

        files = {f"{stem}_head{i}.png": png_bytes(picture) for i, (_, picture) in enumerate(head_pictures)}
        files[f"{stem}_mean.png"] = png_bytes(overlays["head mean"])
        files[f"{stem}_mask.png"] = png_bytes(overlays[f"mask ({args.threshold:g} of the mass)"])
        if maps.rollout is not None:
            files[f"{stem}_rollout.png"] = png_bytes(overlays["rollout"])
        files[f"{stem}_summary.png"] = summary_figure(shown, maps, overlays, head_pictures)
        arrays = {
            "heads": maps.heads.numpy(),
            "mean": maps.mean.numpy(),
            "mask": maps.mask.numpy(),
            "head_masks": maps.head_masks.numpy(),
            "pixel_values": maps.pixel_values[0].numpy(),
            "layer": np.array(maps.layer),
        }
        if maps.rollout is not None:
            arrays["rollout"] = maps.rollout.numpy()
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        files[f"{stem}_maps.npz"] = buffer.getvalue()
        for name, data in files.items():
            atomic_write_bytes(output_dir / name, data)
        grid = (size[0] // patch, size[1] // patch)
        print(
            f"{image_path}: input {size[0]}x{size[1]} ({grid[0]}x{grid[1]} patches), layer {maps.layer}, "
            f"attention {model.config._attn_implementation}, "
            f"mask keeps {int(maps.mask.sum())}/{grid[0] * grid[1]} patches; {len(files)} files in {output_dir}"
        )

    if failed:
        print(f"error: {len(failed)} of {len(args.images)} images could not be read", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
