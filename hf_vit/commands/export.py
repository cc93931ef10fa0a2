"""Write hf_vit weights as model.safetensors (optionally sharded, with index) next to their config.

  python scripts/export_safetensors.py --input accelerate_state_dir --config my-vit --output_dir my-vit-safetensors
  python scripts/export_safetensors.py --input pytorch_model.bin --config config.json --output_dir out --max_shard_size 50MB
  python scripts/export_safetensors.py --input legacy-hf_vit-folder --output_dir out

Inputs: an Accelerate `save_state` folder, a PyTorch .bin/.pt state dict (loaded with weights_only=True), or an
hf_vit folder with legacy weights. Every tensor is re-read and compared bitwise before success is reported.
"""  # noqa: E501 (--help prints this docstring verbatim: one example command per line)

import argparse
import sys

from hf_vit.cli import add_logging_arguments, command, folder_writing_errors, new_parser, setup_logging, shard_size


@command
def main(argv=None) -> int:
    parser = new_parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="Accelerate save_state folder, .bin/.pt file, or hf_vit folder")
    parser.add_argument("--config", help="hf_vit config.json or folder (default: next to --input)")
    parser.add_argument("--output_dir", required=True, help="folder to create (must not exist or be empty)")
    parser.add_argument(
        "--max_shard_size",
        type=shard_size,
        help="shard above this size, e.g. 5GB or 50MB (default: transformers' save_pretrained default, 50GB)",
    )
    parser.add_argument("--model_index", type=int, default=0, help="Accelerate folders with several models: which one")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a non-empty --output_dir, replacing only the files this writes",
    )
    add_logging_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    from hf_vit.convert import export_safetensors

    with folder_writing_errors(args.output_dir):
        result = export_safetensors(
            args.input,
            args.output_dir,
            config=args.config,
            max_shard_size=args.max_shard_size,
            model_index=args.model_index,
            overwrite=args.overwrite,
        )
    print(
        f"checked {result['num_tensors']} tensors bitwise; wrote {result['output_dir']}: {', '.join(result['files'])}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
