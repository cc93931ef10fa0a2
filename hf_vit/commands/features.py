"""DINOv2's patch-feature picture of an hf_vit model: the first three PCA components of the patch features as RGB,
background removed, at each image's own aspect ratio.

    python scripts/visualize_features.py MODEL IMAGE... --output_dir DIR [--threshold 0] [--invert_foreground]
        [--keep_background] [--size H W] [--overwrite]

MODEL is an hf_vit checkpoint folder or Hub id, or any checkpoint hf_vit.from_pretrained converts (timm, transformers
ViT, DINOv2, ...). Each image runs at its own aspect ratio at about the processor's pixel count, each side a multiple of
the patch size (or at --size H W); position embeddings are interpolated. The last layer's patch tokens ([CLS] and
registers dropped) of all images go into one PCA: its first component, standardised, separates foreground
(> --threshold) from background, oriented so that the image borders are background (--invert_foreground takes the
other side); a second PCA over the foreground patches gives the three colours, each min-max normalised over all
images, so that colours mean the same in every picture. Per image, in DIR:

    STEM_features.png       the picture at the input's size, one block per patch, background black
    STEM_side_by_side.png   the image as the model saw it | the picture
    STEM_features.npz       rgb, foreground, first_component (patch grid) and pixel_values

Files are written atomically; a file of those names already in DIR is refused unless --overwrite (nothing else in DIR
is touched). Every image must be readable (the PCA is over all of them): an unreadable one is refused before the model
is loaded.
"""

from __future__ import annotations

import io
import math
import sys
from pathlib import Path

from hf_vit.cli import UserError, command, new_parser
from hf_vit.commands.pictures import check_output_dir, output_stems, png_bytes, unmerged

OUTPUT_SUFFIXES = r"features\.png|side_by_side\.png|features\.npz"  # STEM_features.png ...


def parse_args(argv=None):
    parser = new_parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="hf_vit checkpoint folder or Hub id (or any checkpoint hf_vit converts)")
    parser.add_argument("images", nargs="+", help="image files (one PCA over all of them)")
    parser.add_argument("--output_dir", required=True, help="folder for the pictures (created if missing)")
    parser.add_argument(
        "--threshold",
        type=float,
        default=0.0,
        help="foreground: first component above this many standard deviations (default 0: above the mean)",
    )
    parser.add_argument(
        "--invert_foreground",
        action="store_true",
        help="take the other side of the first component as foreground (when the background shows in colour)",
    )
    parser.add_argument(
        "--keep_background", action="store_true", help="no background removal: colour all patches (one PCA)"
    )
    parser.add_argument(
        "--size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="input size in pixels, multiples of the patch size (default: each image's aspect ratio)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace this command's files (STEM_features.png ...) in --output_dir"
    )
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    from hf_vit.cli import add_logging_arguments

    add_logging_arguments(parser)
    return parser.parse_args(argv)


@command
def main(argv=None) -> int:
    args = parse_args(argv)
    from hf_vit.cli import setup_logging

    setup_logging(args.verbose, args.quiet)
    if not math.isfinite(args.threshold):
        raise UserError(f"--threshold must be a finite number, got {args.threshold}")
    output_dir = Path(args.output_dir)
    stems = output_stems(args.images)
    check_output_dir(output_dir, stems, OUTPUT_SUFFIXES, args.overwrite)

    from hf_vit.data import BadImageError, open_image

    images = []
    for path in args.images:  # all of them first: the PCA is over every image, so one bad file stops the run
        try:
            images.append(open_image(path))
        except BadImageError as error:
            raise UserError(str(error)) from None

    import numpy as np
    import torch
    from safetensors import SafetensorError
    from transformers import AutoConfig, AutoModel, ViTImageProcessor
    from transformers.utils import logging as hf_logging

    import hf_vit  # noqa: F401  (registers model_type "hf_vit")
    from hf_vit import feature_maps as fm
    from hf_vit.attention_maps import display_image, size_pair
    from hf_vit.checkpoint_io import check_model_location, load_image_processor
    from hf_vit.convert.pretrained import pretrained_location
    from hf_vit.fileio import atomic_write_bytes

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        check_model_location(args.model)  # a missing folder or damaged weights: said plainly, before any loading
    except ValueError as error:
        raise UserError(str(error)) from None
    try:
        model_name = pretrained_location(args.model)  # timm, transformers ViT, DINOv2...: the cached conversion
    except (OSError, ValueError) as error:  # bad Hub id, a layout hf_vit does not convert, weights it refuses
        raise UserError(
            f"cannot load a model from {args.model!r}: {(str(error).splitlines() or [type(error).__name__])[0]}"
        ) from None
    try:
        config = AutoConfig.from_pretrained(model_name)
    except (OSError, ValueError) as error:  # a broken config.json
        raise UserError(
            f"cannot load the model config of {args.model!r}: {(str(error).splitlines() or [type(error).__name__])[0]}"
        ) from None
    if config.model_type != "hf_vit":
        raise UserError(f"{args.model!r} is a {config.model_type!r} model; this command needs an hf_vit checkpoint")
    patch = int(config.patch_size)
    if args.size is not None and (min(args.size) <= 0 or args.size[0] % patch or args.size[1] % patch):
        raise UserError(
            f"--size must be positive multiples of the patch size {patch}, got {args.size[0]} {args.size[1]}"
        )

    try:
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        torch.empty(0, device=device)  # a device this machine does not have fails here, in one line
    except (RuntimeError, AssertionError) as error:
        raise UserError(f"--device {args.device}: {(str(error).splitlines() or [type(error).__name__])[0]}") from None
    try:
        model = AutoModel.from_pretrained(model_name, **unmerged(config)).to(device).eval()
    except (OSError, ValueError, SafetensorError) as error:  # e.g. a Hub repo with missing or damaged weights
        raise UserError(
            f"cannot load the model from {args.model!r}: {(str(error).splitlines() or [type(error).__name__])[0]}"
        ) from None
    try:
        processor = load_image_processor(model_name)  # transformers' own class; an auto_map is never run
    except (OSError, ValueError):
        size = size_pair(config.image_size)
        processor = ViTImageProcessor(size={"height": size[0], "width": size[1]})
        print(
            f"note: {args.model} has no preprocessor_config.json; using ViTImageProcessor defaults "
            f"(mean {processor.image_mean}, std {processor.image_std})",
            file=sys.stderr,
        )

    pictures = fm.compute_feature_pictures(
        model,
        images,
        processor,
        size=args.size,
        threshold=args.threshold,
        invert=args.invert_foreground,
        remove_background=not args.keep_background,
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    for path, stem, picture in zip(args.images, stems, pictures, strict=True):
        height, width = picture.input_size
        shown = display_image(picture.pixel_values, processor)
        coloured = fm.picture_image(picture.rgb, (height, width))
        buffer = io.BytesIO()
        np.savez(
            buffer,
            rgb=picture.rgb.numpy(),
            foreground=picture.foreground.numpy(),
            first_component=picture.first_component.numpy(),
            pixel_values=picture.pixel_values[0].numpy(),
        )
        files = {
            f"{stem}_features.png": png_bytes(coloured),
            f"{stem}_side_by_side.png": png_bytes(fm.side_by_side(shown, coloured)),
            f"{stem}_features.npz": buffer.getvalue(),
        }
        for name, data in files.items():
            atomic_write_bytes(output_dir / name, data)
        rows, columns = picture.foreground.shape
        print(
            f"{path}: input {height}x{width} ({rows}x{columns} patches), foreground {int(picture.foreground.sum())}/"
            f"{rows * columns} patches; {len(files)} files in {output_dir}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
