"""Upload a saved hf_vit model folder to the Hugging Face Hub as one commit, and print the commit URL.

    python scripts/push_to_hub.py my-vit --repo_id my-user/my-vit [--private] [--revision BRANCH] [--commit_message ...]

The folder is checked first (config.json with auto_map, safetensors weights, preprocessor_config.json, the two code
files, the same as the installed hf_vit's unless --allow_modified_code; no symbolic link leading outside the folder;
the model must load), then the token (huggingface_hub's: `hf auth login` or HF_TOKEN; it must be accepted, may
write, and the repo's namespace must be its user or one of their organizations), all before anything is created or
uploaded. A folder without README.md gets a model card generated from its config, written into the folder only once
the push has landed: a failed push leaves the folder as it was. HF_ENDPOINT selects another Hub-compatible server.
Exit status 2 for what the user must fix (folder, repo id, token), 1 when the Hub refuses or cannot be reached.
"""

import sys

from hf_vit.cli import RunFailure, UserError, add_logging_arguments, command, new_parser, setup_logging


@command
def main(argv=None) -> int:
    parser = new_parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="folder written by save_pretrained (model + image processor)")
    parser.add_argument("--repo_id", required=True, help="NAMESPACE/NAME of the model repo (created if needed)")
    parser.add_argument(
        "--private", action="store_true", help="create the repo as private (an existing public repo stays public)"
    )
    parser.add_argument(
        "--revision", default=None, help="branch to push to (created from main if needed); default main"
    )
    parser.add_argument("--commit_message", default=None)
    parser.add_argument(
        "--allow_modified_code",
        action="store_true",
        help="push code files that differ from the installed hf_vit's (for authors of changes to the model files)",
    )
    add_logging_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging(args.verbose, args.quiet)

    from hf_vit.hub import PushError, push_folder

    try:
        info = push_folder(
            args.folder,
            args.repo_id,
            private=args.private,
            revision=args.revision,
            commit_message=args.commit_message,
            allow_modified_code=args.allow_modified_code,
        )
    except ValueError as err:  # the folder, the repo id, the branch name or the card: nothing was uploaded
        raise UserError(str(err)) from None
    except PushError as err:  # the Hub refused or could not be reached; nothing partial was committed
        raise RunFailure(str(err)) from None
    print(f"pushed {args.folder} to {args.repo_id} ({info.oid[:10]}): {info}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
