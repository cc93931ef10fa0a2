"""How good are a model's features on your labelled images: DINO's weighted k-NN and a linear probe, with every
training label and with a few per class, for several models side by side.

    hf-vit-eval MODEL... --output_dir DIR [--raw_pixels] [--train_dir FOLDER [--validation_dir FOLDER] |
        --dataset_name NAME] [--feature pooled|cls|mean|last4|last4_avgpool] [--k 20] [--temperature 0.07]
        [--labels_per_class 1 10] [--seeds 5] [--overwrite]

MODEL is an hf_vit folder or Hub id, or any checkpoint hf_vit.from_pretrained converts (timm, transformers ViT,
DINOv2, DINO .pth, ...), run as a backbone on images prepared by its own image processor; --raw_pixels adds the raw
pixels as a baseline. The data: an image folder (one sub-folder per class; without --validation_dir a stratified
--validation_split of it is held out), a Hub data set, or by default the embedded digits with their fixed split
(1,437 training / 360 test images). The training images are the k-NN's memory (k=20, T=0.07, cosine similarity of
L2-normalised features, as DINO's eval_knn.py) and the linear probe's training set (logistic regression on
standardised features); with --labels_per_class N, N of them per class are drawn by each of --seeds seeds, the same
for every model (mean +- std). In DIR: evaluation.md (the table), evaluation.json (every figure, each seed's too) and
evaluation.png (accuracy against labels per class). Those three files are refused if present unless --overwrite;
nothing else in DIR is touched.
"""

from __future__ import annotations

import sys

from hf_vit.cli import RunFailure, UserError, command, new_parser

FEATURE_HELP = (
    "which feature of each model: pooled (the model's own image feature, pooler_output), cls ([CLS] of the last "
    "block), mean (mean of its patch tokens), last4 (DINO's linear evaluation: [CLS] of the last 4 blocks "
    "concatenated), last4_avgpool (last4 + the mean patch token)"
)


def parse_args(argv=None):
    from hf_vit.evaluation import DEFAULT_K, DEFAULT_LABELS_PER_CLASS, DEFAULT_SEEDS, DEFAULT_TEMPERATURE, FEATURES

    parser = new_parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", metavar="MODEL", help="hf_vit folders or Hub ids (or any ViT checkpoint)")
    parser.add_argument("--raw_pixels", action="store_true", help="add the raw pixels as a baseline row")
    parser.add_argument("--output_dir", required=True, help="folder for the table, JSON and plot (created if missing)")
    data = parser.add_argument_group("labelled images (default: the embedded scikit-learn digits)")
    data.add_argument("--dataset_name", help="a datasets.load_dataset name (Hub id or local path)")
    data.add_argument("--dataset_config_name", help="the dataset's configuration name")
    data.add_argument("--train_dir", help="image folder (one sub-folder per class): the labelled training images")
    data.add_argument("--validation_dir", help="image folder to evaluate on (default: held out of --train_dir)")
    data.add_argument("--image_column", help="image column (default: auto-detected)")
    data.add_argument("--label_column", help="label column (default: auto-detected)")
    data.add_argument(
        "--validation_split",
        type=float,
        default=0.15,
        help="held-out fraction when the data has no validation split (default 0.15, stratified)",
    )
    data.add_argument("--split_seed", type=int, default=42, help="seed of that split (default 42)")
    data.add_argument("--cache_dir", help="datasets/transformers cache folder")
    how = parser.add_argument_group("evaluation")
    how.add_argument("--feature", choices=FEATURES, default="pooled", help=FEATURE_HELP + " (default pooled)")
    how.add_argument("--k", type=int, default=DEFAULT_K, help=f"neighbours of the k-NN (default {DEFAULT_K})")
    how.add_argument(
        "--temperature",
        type=float,
        default=DEFAULT_TEMPERATURE,
        help=f"the k-NN's vote weight exp(similarity / T) (default {DEFAULT_TEMPERATURE})",
    )
    how.add_argument(
        "--labels_per_class",
        type=int,
        nargs="*",
        default=list(DEFAULT_LABELS_PER_CLASS),
        metavar="N",
        help="few-label runs: N training images per class (default 1 10; none: no few-label runs)",
    )
    how.add_argument(
        "--seeds", type=int, default=DEFAULT_SEEDS, help=f"draws of each few-label run (default {DEFAULT_SEEDS})"
    )
    how.add_argument("--batch_size", type=int, default=128, help="images per forward pass (default 128)")
    how.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace evaluation.md/.json/.png in --output_dir (nothing else)"
    )
    from hf_vit.cli import add_logging_arguments

    add_logging_arguments(parser)
    return parser.parse_args(argv)


def check_arguments(args) -> None:
    """The flags' own checks, before any data or model is loaded."""
    if not args.models and not args.raw_pixels:
        raise UserError("nothing to evaluate: give one or more MODELs, or --raw_pixels")
    if args.k < 1:
        raise UserError(f"--k must be at least 1, got {args.k}")
    if not args.temperature > 0 or args.temperature == float("inf"):
        raise UserError(f"--temperature must be a positive number, got {args.temperature}")
    if any(n < 1 for n in args.labels_per_class):
        raise UserError(f"--labels_per_class must be at least 1, got {min(args.labels_per_class)}")
    if args.labels_per_class and args.seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {args.seeds}")
    if args.batch_size < 1:
        raise UserError(f"--batch_size must be at least 1, got {args.batch_size}")
    if not 0 < args.validation_split < 1:
        raise UserError(f"--validation_split must be between 0 and 1, got {args.validation_split}")


@command
def main(argv=None) -> int:
    args = parse_args(argv)
    from hf_vit.cli import setup_logging

    setup_logging(args.verbose, args.quiet)
    check_arguments(args)

    from hf_vit.extras import require

    require("train", "hf-vit-eval")  # the data sets and scikit-learn
    require("viz", "hf-vit-eval's plot")
    import datasets
    import torch
    from transformers.utils import logging as hf_logging

    from hf_vit.data import DataError
    from hf_vit.evaluation import OUTPUT_FILES, evaluate
    from hf_vit.output_dir import OutputDirRefused

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    try:
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        torch.empty(0, device=device)  # a device this machine does not have fails here, in one line
    except (RuntimeError, AssertionError) as error:
        raise UserError(f"--device {args.device}: {(str(error).splitlines() or [type(error).__name__])[0]}") from None
    try:
        evaluation = evaluate(
            args.models,
            raw_pixels=args.raw_pixels,
            dataset_name=args.dataset_name,
            dataset_config_name=args.dataset_config_name,
            train_dir=args.train_dir,
            validation_dir=args.validation_dir,
            image_column=args.image_column,
            label_column=args.label_column,
            validation_split=args.validation_split,
            split_seed=args.split_seed,
            feature=args.feature,
            k=args.k,
            temperature=args.temperature,
            labels_per_class=args.labels_per_class,
            seeds=args.seeds,
            batch_size=args.batch_size,
            device=str(device),
            cache_dir=args.cache_dir,
            output_dir=args.output_dir,
            overwrite=args.overwrite,
        )
    except OutputDirRefused:
        raise
    except OSError as error:
        from hf_vit.output_dir import is_disk_full

        if is_disk_full(error):
            raise RunFailure(f"disk full while writing {args.output_dir}: free space and run again") from None
        raise UserError((str(error).splitlines() or [type(error).__name__])[0]) from None  # e.g. a Hub id not found
    except (DataError, ValueError, TypeError) as error:
        # the data, a model that cannot be loaded (a layout hf_vit does not convert, a bad Hub id, refused weights)
        raise UserError((str(error).splitlines() or [type(error).__name__])[0]) from None
    print(evaluation.markdown())
    print(f"wrote {', '.join(OUTPUT_FILES)} in {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
