"""Convert timm / DINO / transformers ViT / DINOv2 / Google .npz checkpoints into an hf_vit folder, or export one back out.

Without --source the layout is detected from the files, and --checkpoint may be a Hub repo id (downloaded through
huggingface_hub; --revision pins a commit, --filename names the file of a repo without config.json):

  python scripts/convert_checkpoint.py --checkpoint google/vit-base-patch16-224 --output_dir out --verify
  python scripts/convert_checkpoint.py --checkpoint timm/vit_small_patch16_224.augreg_in21k_ft_in1k --output_dir out
  python scripts/convert_checkpoint.py --checkpoint facebook/dinov2-small --output_dir out --verify

  python scripts/convert_checkpoint.py --source timm --checkpoint vit_s16.safetensors --timm_model vit_small_patch16_224 --output_dir out --verify
  python scripts/convert_checkpoint.py --source dino --checkpoint dino_checkpoint.pth --output_dir out --verify
  python scripts/convert_checkpoint.py --source transformers --checkpoint google-vit-folder --output_dir out --verify
  python scripts/convert_checkpoint.py --source npz --checkpoint ViT-B_16.npz --output_dir out --verify
  python scripts/convert_checkpoint.py --to timm --checkpoint hf_vit-folder --output_dir timm-out --verify
  python scripts/convert_checkpoint.py --to transformers --checkpoint hf_vit-folder --output_dir vit-out --verify
  python scripts/convert_checkpoint.py --to transformers --checkpoint hf_vit-7b --output_dir vit-7b-out --max_shard_size 5GB

User errors print one line to stderr and exit 2; --verify exits 1 when max-abs-diff exceeds 1e-4 (nothing is written).
"""  # noqa: E501 (--help prints this docstring verbatim: one example command per line)

import argparse
import sys
from pathlib import Path

from hf_vit.cli import command, new_parser, shard_size


def parse_args(argv=None):
    parser = new_parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    direction = parser.add_mutually_exclusive_group()
    direction.add_argument(
        "--source",
        choices=("timm", "dino", "transformers", "dinov2", "dinov3", "npz"),
        help="convert this format into hf_vit (default: detected from the files)",
    )
    direction.add_argument("--to", choices=("timm", "transformers"), help="export an hf_vit folder to this format")
    parser.add_argument(
        "--checkpoint", required=True, help="source file or folder, or a Hub repo id (an hf_vit folder with --to)"
    )
    parser.add_argument("--revision", help="Hub branch, tag or commit of --checkpoint (default: main)")
    parser.add_argument(
        "--filename", help="the checkpoint file inside a Hub repo without config.json (DINO .pth, .npz)"
    )
    parser.add_argument("--output_dir", required=True, help="folder to create (must not exist or be empty)")
    parser.add_argument("--timm_model", help="timm: base architecture, e.g. vit_small_patch16_224 (gives the heads)")
    parser.add_argument("--preset", help="timm/dino: an hf_vit preset giving the heads, e.g. vit-small-patch16-224")
    parser.add_argument("--num_heads", type=int, help="timm/dino: number of attention heads")
    parser.add_argument(
        "--checkpoint_key", default="teacher", help="dino: which training-checkpoint entry (teacher|student)"
    )
    parser.add_argument(
        "--verify", action="store_true", help="compare with the source library's forward; fail above 1e-4"
    )
    parser.add_argument(
        "--max_shard_size",
        type=shard_size,
        help="write the weights in shards of at most this size, with an index, e.g. 5GB or 500MB "
        "(default: transformers' save_pretrained default, 50GB)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a non-empty --output_dir, replacing only the files this writes (once all are complete)",
    )
    from hf_vit.cli import add_hub_arguments

    add_hub_arguments(parser)
    from hf_vit.cli import add_logging_arguments

    add_logging_arguments(parser)
    return parser.parse_args(argv)


@command
def main(argv=None) -> int:
    args = parse_args(argv)
    from hf_vit.cli import setup_logging

    setup_logging(args.verbose, args.quiet)
    from hf_vit.cli import (
        check_hub_access,
        check_hub_arguments,
        command_line,
        folder_writing_errors,
        push_from_arguments,
    )
    from hf_vit.convert import convert_checkpoint, export_checkpoint

    with folder_writing_errors(args.output_dir):
        check_hub_arguments(args)  # a bad repo id fails before any conversion work
        if args.push_to_hub and args.to:
            raise ValueError("--push_to_hub uploads hf_vit folders; it does not apply to --to exports")
        check_hub_access(args)  # a token that cannot push fails now, before converting and writing --output_dir
        local_file_options = [f"--{name}" for name in ("timm_model", "preset", "num_heads") if getattr(args, name)]
        if args.checkpoint_key != "teacher":
            local_file_options.append("--checkpoint_key")
        shard_size_argument = {"max_shard_size": args.max_shard_size} if args.max_shard_size else {}
        if args.to:
            result = export_checkpoint(
                args.to,
                args.checkpoint,
                args.output_dir,
                verify=args.verify,
                overwrite=args.overwrite,
                max_shard_size=args.max_shard_size,
            )
        elif local_file_options and not Path(args.checkpoint).expanduser().exists():  # not a Hub id: a typo
            raise FileNotFoundError(f"--checkpoint {args.checkpoint}: no such file or folder")
        elif (
            args.source is None
            or args.source in ("dinov2", "dinov3")
            or not Path(args.checkpoint).expanduser().exists()
        ):
            if local_file_options:
                raise ValueError(
                    f"{', '.join(local_file_options)} apply to local files converted with --source timm/dino"
                )
            from hf_vit.convert.pretrained import convert_pretrained

            result = convert_pretrained(
                args.checkpoint,
                args.output_dir,
                revision=args.revision,
                filename=args.filename,
                source=args.source,
                verify=args.verify,
                overwrite=args.overwrite,
                command=command_line("hf-vit-convert", argv),
                **shard_size_argument,
            )
            print(f"layout: {result['layout']}" + ("" if args.source else " (detected from the files)"))
        else:
            result = convert_checkpoint(
                args.source,
                args.checkpoint,
                args.output_dir,
                verify=args.verify,
                overwrite=args.overwrite,
                timm_model=args.timm_model,
                preset=args.preset,
                num_heads=args.num_heads,
                checkpoint_key=args.checkpoint_key,
                command=command_line("hf-vit-convert", argv),
                **shard_size_argument,
            )
    conversion = result.get("conversion")  # an import; an export has its own notes
    against = conversion.reference_name if conversion else args.to
    for note in conversion.notes if conversion else result.get("notes", []):
        print(f"note: {note}")
    if result["max_abs_diff"] is not None:
        print(f"max-abs-diff vs {against}: {result['max_abs_diff']:.3e} (fp32, tolerance 1e-4)")
    print(f"wrote {result['output_dir']}")
    push_from_arguments(
        args,
        result["output_dir"],
        commit_message=f"Convert a {args.source or result.get('layout')} checkpoint to hf_vit",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
