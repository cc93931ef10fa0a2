"""Classify images with a saved model: batched `pipeline("image-classification")`.

    python scripts/predict.py MODEL IMAGE_OR_FOLDER... [--top_k 5] [--batch_size N] [--json]
    python scripts/predict.py MODEL IMAGES... --token_merging_r 8 --int8    # faster: token merging, int8 on CPU
    python scripts/predict.py MODEL FOLDER --int8_static                    # static int8: calibrated, compiled

MODEL is an hf_vit checkpoint folder or Hub id, or a checkpoint hf_vit.from_pretrained converts (timm, transformers ViT,
DINOv2, ...; converted once into the Hugging Face cache); anything else is refused in one line (exit 2).
Folders are searched recursively (hidden files skipped), with a progress bar. One line per image on stdout:
`PATH<TAB>label (score) | label (score) ...`, or with --json one JSON object per line
`{"file": PATH, "predictions": [{"label": ..., "score": ...}, ...]}`; progress and messages go to stderr. Files that
cannot be read as images are reported by name on stderr and skipped; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from hf_vit.cli import command, fail, new_parser

CALIBRATION_IMAGES = 256  # "a few hundred representative images": the inputs themselves are the most representative


def parse_args(argv=None):
    parser = new_parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="checkpoint folder or Hub id")
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files and/or folders of images")
    parser.add_argument("--top_k", type=int, default=5, help="labels per image (default 5; at most num_labels)")
    parser.add_argument("--batch_size", type=int, default=8, help="images per forward pass (default 8)")
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of text")
    parser.add_argument(
        "--device", default=None, help="torch device (default: cuda if available, else cpu; cpu with --int8*)"
    )
    parser.add_argument(
        "--token_merging_r",
        type=_merging_r,
        default=None,
        metavar="R",
        help="token merging (hf_vit models): merge R pairs of tokens in every block, or a comma list with one R per "
        "block; faster, slightly less accurate (docs/performance.md). Default: the model's config (0 = off)",
    )
    int8 = parser.add_mutually_exclusive_group()
    int8.add_argument(
        "--int8", action="store_true", help="int8 dynamic quantization of every linear layer (CPU only; faster)"
    )
    int8.add_argument(
        "--int8_static",
        action="store_true",
        help="static int8 of the whole model (PT2E, compiled by inductor; CPU only; faster than --int8 where "
        f'measured; pip install "hf_vit[int8]"): calibrated on up to {CALIBRATION_IMAGES} of the input images, '
        "spread evenly over them; the compilation takes seconds to minutes before the first batch",
    )
    from hf_vit.cli import add_logging_arguments

    add_logging_arguments(parser)
    return parser.parse_args(argv)


def _merging_r(text: str) -> int | list[int]:
    """`--token_merging_r`: an int, or a comma list of ints (one per block)."""
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        values = [-1]
    if any(value < 0 for value in values):
        raise argparse.ArgumentTypeError(
            f"expected an integer >= 0 or a comma list of them (one per block), got {text!r}"
        )
    return values[0] if len(values) == 1 and "," not in text else values


def calibration_sample(files: list[Path], count: int = CALIBRATION_IMAGES) -> list[Path]:
    """Up to `count` of `files`, spread evenly over them (a sorted folder's classes, not only its first one)."""
    step = max(1, len(files) / count)
    return [files[int(i * step)] for i in range(min(count, len(files)))]


def expand(inputs: list[str]) -> tuple[list[Path], list[tuple[str, str]], bool]:
    """Files to classify (folders searched recursively, sorted), missing inputs with a reason, any folder given."""
    files, missing, any_folder = [], [], False
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            any_folder = True
            files.extend(
                sorted(
                    p
                    for p in path.rglob("*")
                    if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
                )
            )
        elif path.is_file():
            files.append(path)
        else:
            missing.append((name, "no such file or folder"))
    return files, missing, any_folder


@command
def main(argv=None) -> int:
    args = parse_args(argv)
    from hf_vit.cli import setup_logging

    setup_logging(args.verbose, args.quiet, info_stream=sys.stderr)  # stdout is the predictions
    if args.top_k < 1:
        fail(f"--top_k must be at least 1, got {args.top_k}")
    if args.batch_size < 1:
        fail(f"--batch_size must be at least 1, got {args.batch_size}")
    files, missing, any_folder = expand(args.inputs)
    for name, reason in missing:
        print(f"warning: {name}: {reason}", file=sys.stderr)
    if not files:
        fail("no files to classify" + (" (inputs not found)" if missing else " (the folders are empty)"))

    import torch
    from safetensors import SafetensorError
    from tqdm.auto import tqdm
    from transformers import AutoConfig, AutoModelForImageClassification, pipeline
    from transformers.utils import logging as hf_logging

    import hf_vit  # noqa: F401  (registers model_type "hf_vit")
    from hf_vit.checkpoint_io import check_model_location, load_image_processor
    from hf_vit.configuration_hf_vit import token_merging_problem
    from hf_vit.convert.pretrained import pretrained_location
    from hf_vit.data import BadImageError, image_processor_for, open_image
    from hf_vit.extras import require
    from hf_vit.quantization import int8_static_pipeline, quantize_int8

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    device = args.device or ("cpu" if args.int8 or args.int8_static else "cuda" if torch.cuda.is_available() else "cpu")
    if (args.int8 or args.int8_static) and torch.device(device).type != "cpu":
        fail(f"--{'int8' if args.int8 else 'int8_static'} runs on the CPU only, got --device {device}")
    if args.int8_static:
        require("int8", "--int8_static")  # before the model is loaded: a missing torchao costs nothing
    # hf_vit loads the model itself (its own classes, its own processor loader): never transformers' pipeline by
    # name, which would fall back to other loaders, offer unsafe advice for a refused pickle, or run code that an
    # auto_map names
    try:
        check_model_location(args.model)  # a missing folder or damaged weights: said plainly, before any loading
    except ValueError as error:
        fail(str(error))
    try:
        model_name = pretrained_location(args.model)  # timm, transformers ViT, DINOv2...: the cached conversion
        config = AutoConfig.from_pretrained(model_name)
    except (OSError, ValueError) as error:  # a layout hf_vit does not convert, a refused pickle, no weights
        fail(f"cannot load a model from {args.model!r}: {(str(error).splitlines() or [type(error).__name__])[0]}")
    if config.model_type != "hf_vit":
        fail(f"{args.model!r} is a {config.model_type!r} model; this command needs an hf_vit checkpoint")
    try:
        model = AutoModelForImageClassification.from_pretrained(model_name).eval()
    except (OSError, ValueError, SafetensorError) as error:  # e.g. a Hub repo with missing or damaged weights
        fail(f"cannot load the model from {args.model!r}: {(str(error).splitlines() or [type(error).__name__])[0]}")
    try:
        processor = load_image_processor(model_name)
    except OSError:  # no preprocessor_config.json: the default preprocessing at the model's size
        processor = image_processor_for(config.image_size)
    if args.token_merging_r is not None:
        problem = token_merging_problem(
            args.token_merging_r, model.config.num_hidden_layers, getattr(model.config, "rope_type", None)
        )
        if problem:
            fail("--" + problem)
        model.config.token_merging_r = args.token_merging_r
    if args.int8:
        model = quantize_int8(model, inplace=True)
    calibration = []
    if args.int8_static:  # images that cannot be read are skipped here and reported when their turn comes
        for path in calibration_sample(files):
            with contextlib.suppress(BadImageError):
                calibration.append(open_image(path))
    if calibration:
        classify = int8_static_pipeline(model, processor, calibration, batch_size=args.batch_size)
    else:
        classify = pipeline("image-classification", model=model, image_processor=processor, device=device)
    top_k = min(args.top_k, model.config.num_labels)

    failed = len(missing)
    progress = tqdm(total=len(files), unit="img", disable=not any_folder, file=sys.stderr)
    for start in range(0, len(files), args.batch_size):
        batch, names = [], []
        for path in files[start : start + args.batch_size]:
            try:
                batch.append(open_image(path))  # training's decoding: 16-bit and palette images read the same
                names.append(str(path))
            except BadImageError as error:
                tqdm.write(f"warning: {error}", file=sys.stderr)
                failed += 1
        if batch:
            results = classify(batch, top_k=top_k, batch_size=args.batch_size)
            for name, predictions in zip(names, results, strict=False):
                if isinstance(predictions, dict):
                    predictions = [predictions]
                predictions = [{"label": p["label"], "score": float(p["score"])} for p in predictions]
                if args.json:
                    line = json.dumps({"file": name, "predictions": predictions})
                else:
                    line = name + "\t" + " | ".join(f"{p['label']} ({p['score']:.4f})" for p in predictions)
                tqdm.write(line)
        progress.update(len(files[start : start + args.batch_size]))
    progress.close()
    sys.stdout.flush()
    if failed:
        print(f"error: {failed} of {len(files) + len(missing)} inputs could not be classified", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
