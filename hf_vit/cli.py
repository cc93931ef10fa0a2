"""The command-line layer: argparse groups shared by the CLIs, the one exit convention, logging, printing.

The convention (docs/architecture.md, "Conventions"): exit 2 for the user's mistake (`UserError`, and the library's
`ValueError`s about the inputs), 1 for a failure of the run (`RunFailure`: a full disk, the Hub refusing a push), 130
for an interrupt; one line on stderr (`error: ...`), a traceback only with `--verbose`. Only this module and
`hf_vit.commands` know about argparse, flags, exit codes and printing; the library raises and logs. The library
names its parameters in backticks (`train_dir`); each CLI flag has its parameter's name, so the lines printed here show
them as flags (`as_flags`).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterator
from typing import NoReturn

from .configuration_hf_vit import PRESETS
from .extras import MissingExtra
from .model_setup import DEFAULT_PRESET


class UserError(Exception):
    """A mistake in the command line or the inputs: printed as one line, exit status 2, no traceback."""


class RunFailure(Exception):
    """The run itself failed (e.g. the disk is full): printed as one line, exit status 1, no traceback."""


EXIT_USER_ERROR, EXIT_RUN_FAILURE, EXIT_INTERRUPTED = 2, 1, 130


def fail(message: str, code: int = EXIT_USER_ERROR) -> NoReturn:
    """End the command with one `error:` line (through `command`'s exit convention, so --verbose applies too)."""
    raise (UserError if code == EXIT_USER_ERROR else RunFailure)(message)


def as_flags(text: str) -> str:
    """A library message for the command line: `train_dir` -> --train_dir."""
    return re.sub(r"`([a-z][a-z0-9_]*)`", r"--\1", text)


def command_line(program: str, argv) -> str:
    """The command as a user would type it again, for a model card: `program` and its arguments, shell-quoted, with
    every secret left out (`hf_vit.secrets.redact_argv`: a secret flag's value in any spelling, the environment's
    tokens, anything that looks like a Hugging Face token)."""
    from .secrets import redact_argv

    return redact_argv(program, argv)


class ArgumentParser(argparse.ArgumentParser):
    """The parser of every command (`new_parser`): a flag is taken only by its full name, never abbreviated (an
    abbreviation such as `--hub_tok` would otherwise be taken as `--hub_token`, and a card that masks the token flag
    by its name would print the value); a mistake in the flags is one `UserError` line (exit 2 under `command`)
    instead of the usage, with "did you mean" for a mistyped flag."""

    def __init__(self, *args, **kwargs):
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def parse_args(self, args=None, namespace=None):
        refuse_unknown_flags(sys.argv[1:] if args is None else args, [self])
        return super().parse_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{message} (see {self.prog} --help)")


_program = None  # the running command's entry point (set by `command`)


def new_parser(**kwargs) -> ArgumentParser:
    """A command's parser (`ArgumentParser`): no abbreviated flags, one-line errors; `kwargs` are argparse's, `prog`
    by default the running command's entry point name."""
    if _program and "prog" not in kwargs:
        kwargs["prog"] = _program
    return ArgumentParser(**kwargs)


def hf_argument_parser(dataclass_types, also=()):
    """transformers' `HfArgumentParser` for `dataclass_types` with the same rules as `new_parser`: no abbreviated
    flags, one-line errors; a flag unknown to it and to the parsers `also` is refused with "did you mean"."""
    from transformers import HfArgumentParser

    class Parser(HfArgumentParser):
        def parse_known_args(self, args=None, namespace=None):
            refuse_unknown_flags(sys.argv[1:] if args is None else args, [self, *also])
            return super().parse_known_args(args, namespace)

        error = ArgumentParser.error

    return Parser(dataclass_types, allow_abbrev=False, prog=also[0].prog if also else _program)


_NOT_A_FLAG = re.compile(r"-\d+|-\d*\.\d+|-|.* .*")  # argparse's: a negative number, "-", or a value with a space


def refuse_unknown_flags(argv, parsers) -> None:
    """A `UserError` for the first word of `argv` that looks like a flag and is no flag of `parsers`, naming the
    closest real flags (a prefix of them: flags are never abbreviated; else the nearest by spelling)."""
    import difflib

    known = {option for parser in parsers for option in parser._option_string_actions}
    for word in map(str, argv):
        if word == "--":
            return
        flag = word.split("=", 1)[0]
        if not word.startswith("-") or _NOT_A_FLAG.fullmatch(word) or flag in known:
            continue
        longs = sorted(option for option in known if option.startswith("--"))
        prefixed = [option for option in longs if option.startswith(flag)][:3]
        close = prefixed or difflib.get_close_matches(flag, longs, n=1, cutoff=0.6)
        prog = parsers[0].prog
        if prefixed:
            raise UserError(f"{flag} is not a flag (flags are never abbreviated): did you mean {' or '.join(close)}?")
        if close:
            raise UserError(f"{flag} is not a flag of {prog}: did you mean {close[0]}?")
        raise UserError(f"{flag} is not a flag of {prog} (see {prog} --help)")


_SIZE = re.compile(r"\s*\d+(\.\d*)?\s*[KMGT]B\s*", re.IGNORECASE)  # huggingface_hub's sizes: 5GB, 500MB, 0.5GB


def shard_size(text: str) -> int | str:
    """The type of a --max_shard_size flag: a size such as 5GB or 500MB (units KB, MB, GB, TB, as huggingface_hub
    reads them), or a number of bytes; refused when the flag is parsed, before any work."""
    if text.strip().isdigit():
        return int(text)
    if not _SIZE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"expected a size like 5GB or 500MB, got {text!r}")
    return text.strip()


def add_logging_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--verbose", action="store_true", help="debug messages, and a traceback with any error")
    group.add_argument("--quiet", action="store_true", help="errors and warnings only")


def setup_logging(verbose: bool = False, quiet: bool = False, info_stream=None) -> None:
    """hf_vit's messages: information on stdout (the run's narrative; `info_stream` instead for a tool whose stdout is
    its data), warnings on stderr, as plain lines."""
    logger = logging.getLogger("hf_vit")
    logger.handlers.clear()
    logger.propagate = False
    logger.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    info = logging.StreamHandler(info_stream or sys.stdout)
    info.addFilter(lambda record: record.levelno < logging.WARNING)
    info.setFormatter(logging.Formatter("%(message)s"))
    warning = logging.StreamHandler(sys.stderr)
    warning.setLevel(logging.WARNING)
    warning.setFormatter(logging.Formatter("warning: %(message)s"))
    for handler in (info, warning):
        handler.addFilter(_redact_record)
        logger.addHandler(handler)


def _redact_record(record: logging.LogRecord) -> bool:
    """No secret in a log line (`hf_vit.secrets.redact`): the message is formatted, redacted, and kept."""
    from .secrets import redact

    record.msg, record.args = redact(record.getMessage()), None
    return True


def run_command(body: Callable[[], int | None], verbose: bool = False) -> int:
    """Run a command's body under the exit convention; returns the exit status."""
    try:
        return body() or 0
    except (UserError, MissingExtra) as error:  # a missing extra: the user installs it
        return _error(error, EXIT_USER_ERROR, verbose)
    except RunFailure as error:
        return _error(error, EXIT_RUN_FAILURE, verbose)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # a refused output folder (the user's to fix), else a bug
        from .output_dir import OutputDirRefused

        if isinstance(error, OutputDirRefused):  # the one mapping of every tool's output-folder check
            return _error(error, EXIT_USER_ERROR, verbose)
        if verbose:  # a bug: one line unless --verbose asks for the traceback
            traceback.print_exc()
            return EXIT_RUN_FAILURE
        first = (str(error).strip().splitlines() or [""])[0]
        print(
            f"error: unexpected {type(error).__name__}: {first} (rerun with --verbose for the traceback)",
            file=sys.stderr,
        )
        return EXIT_RUN_FAILURE


def command(body: Callable[[list[str]], int | None]) -> Callable[..., int]:
    """Make a tool's `main(argv=None) -> int` run under the exit convention, from its start (argument parsing
    included) to its end."""

    @functools.wraps(body)
    def main(argv=None) -> int:
        global _program
        _program = "hf-vit-" + body.__module__.rpartition(".")[2]  # the entry point's name, for `new_parser`
        arguments = sys.argv[1:] if argv is None else [str(a) for a in argv]
        return run_command(lambda: body(arguments), verbose="--verbose" in arguments)

    return main


def _error(error: Exception, code: int, verbose: bool) -> int:
    if verbose:
        traceback.print_exc()
    from .secrets import redact

    print(f"error: {redact(as_flags(' '.join(str(error).split())))}", file=sys.stderr)
    return code


@contextlib.contextmanager
def folder_writing_errors(output_dir) -> Iterator[None]:
    """The exit convention for a tool that writes one folder (convert, export): the library's refusals are the
    user's mistake (the output folder's refusals included), a failed verification or a full disk a failure of the
    run."""
    from .convert.core import VerificationError
    from .output_dir import is_disk_full

    try:
        yield
    except VerificationError as error:  # the conversion itself is wrong
        raise RunFailure(str(error)) from None
    except (ValueError, FileNotFoundError) as error:
        raise UserError(str(error)) from None
    except Exception as error:  # a writer's error on a full disk (OSError, SafetensorError, ...)
        if is_disk_full(error):
            raise RunFailure(
                f"disk full while writing {output_dir}: nothing was written (free space and run again)"
            ) from None
        raise


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data (default: the embedded scikit-learn digits)")
    group.add_argument("--dataset_name", help="a datasets.load_dataset name (Hub id or local path)")
    group.add_argument("--dataset_config_name", help="the dataset's configuration name")
    group.add_argument("--train_dir", help="image folder (one sub-folder per class) for training")
    group.add_argument("--validation_dir", help="image folder for evaluation")
    group.add_argument("--image_column", help="image column (default: auto-detected)")
    group.add_argument("--label_column", help="label column (default: auto-detected)")
    group.add_argument("--max_train_samples", type=int, help="truncate the training set (debugging)")
    group.add_argument("--max_eval_samples", type=int, help="truncate the evaluation set (debugging)")
    group.add_argument("--streaming", action="store_true", help="stream --dataset_name (needs --max_train_steps)")
    add_settings(group, setting_names("data"))
    group.add_argument("--cache_dir", help="datasets/transformers cache folder")


def add_num_threads_argument(group) -> None:
    group.add_argument(
        "--num_threads",
        type=int,
        default=None,
        help="torch CPU threads per process; default: 1 for the model chosen for small images such as the digits "
        "(tiny matmuls gain nothing from more and suffer badly on a busy machine), else torch's default",
    )


# ---- the training settings' flags, made from hf_vit.fit.FitSettings ------------------------------------------------
class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each flag's default after its help, but a switch's (off) or None (its help says what happens then)."""

    def _get_help_string(self, action):
        if action.nargs == 0 or action.default is None:
            return action.help
        return super()._get_help_string(action)


def setting_names(group: str = "training", settings=None) -> list[str]:
    """The fields of `settings` (a settings dataclass; default `FitSettings`) that are flags of `group` ("training"
    or "data"), in their order."""
    from dataclasses import fields

    from .fit import FitSettings

    return [
        f.name
        for f in fields(settings or FitSettings)
        if f.metadata.get("flag", f.name) is not None and f.metadata.get("group", "training") == group
    ]


def add_settings(group, names, settings=None) -> None:
    """One flag per field of `names` of `settings` (a settings dataclass; default `FitSettings`), made from the
    field: its name, type, default, choices and help (field metadata), so that each training setting is declared
    once. A setting the trainers fit to the data (`fitted`) defaults to None here, "not given" (`fit_settings`
    applies the data's); `augment` is then auto|on|off. A pair (`tuple[float, float]`) takes two values."""
    import typing
    from dataclasses import fields

    from .fit import FitSettings

    settings = settings or FitSettings
    hints, by_name = typing.get_type_hints(settings), {f.name: f for f in fields(settings)}
    for name in names:
        field, kind = by_name[name], hints[name]
        meta, options = field.metadata, {"dest": name, "help": as_flags(field.metadata["help"])}
        if kind is bool and meta.get("fitted"):
            options.update(choices=tuple(_SWITCH), default="auto")
        elif kind is bool:
            options.update(action="store_false" if field.default else "store_true")
        elif typing.get_origin(kind) is tuple:
            item = typing.get_args(kind)[0]
            options.update(
                type=item, nargs=len(typing.get_args(kind)), default=None if meta.get("fitted") else field.default
            )
        else:
            types = [t for t in typing.get_args(kind) if t is not type(None)] or [kind]
            options.update(
                type=types[0] if len(types) == 1 else str,  # int | "epoch": the settings read "5" as 5
                default=None if meta.get("fitted") else field.default,
                choices=meta.get("choices"),
            )
        group.add_argument(f"--{meta.get('flag', name)}", **options)


_SWITCH = {"auto": None, "on": True, "off": False}


def given_settings(args, settings=None) -> dict:
    """The values of the setting flags in `args` of `settings` (a settings dataclass; default `FitSettings`), leaving
    out the data-fitted ones not given."""
    from dataclasses import fields

    from .fit import FitSettings

    values = {}
    for field in fields(settings or FitSettings):
        value = getattr(args, field.name, None)
        if isinstance(value, list):  # a pair's two values
            value = tuple(value)
        if field.metadata.get("fitted") and field.type in (bool, "bool") and isinstance(value, str):
            value = _SWITCH[value]
        if hasattr(args, field.name) and not (field.metadata.get("fitted") and value is None):
            values[field.name] = value
    return values


def fit_settings(args, recipe, *, model_from_data: bool, digits: bool):
    """The training settings of a command line: `FitSettings`' defaults, then those the data fits (the recipe's
    epochs, learning rate and augmentation when it chose the model, or for the digits; a given model augments other
    images, of the kind that fits them; a fine-tuned one learns at `model_setup.FINE_TUNING_LEARNING_RATE`), then
    the flags given."""
    from dataclasses import replace

    from .fit import FitSettings
    from .model_setup import FINE_TUNING_LEARNING_RATE

    settings = FitSettings()
    if model_from_data or digits:
        settings = recipe.apply(settings)
    else:
        settings = replace(settings, augment=True, augmentation=recipe.augmentation)
    if getattr(args, "model_name_or_path", None):
        settings = replace(settings, learning_rate=FINE_TUNING_LEARNING_RATE)
    given = given_settings(args)
    if given.get("augmentation") and "augment" not in given:  # a kind of augmentation asked for: augment
        given["augment"] = True
    return replace(settings, **given)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "model (default: chosen from the images' size, from a small ViT for tiny images "
        "such as the digits to " + DEFAULT_PRESET + " for photos)"
    )
    group.add_argument(
        "--model_name_or_path", help="fine-tune an hf_vit folder or Hub repo (a new head if the labels differ)"
    )
    group.add_argument("--preset", help=f"train from scratch with a named size: {', '.join(PRESETS)}")
    group.add_argument("--config_name", help="train from scratch with an HfViTConfig JSON file")
    group.add_argument(
        "--config_overrides",
        help='override config values when training from scratch, e.g. "hidden_size=128,num_hidden_layers=6"',
    )


def add_license_arguments(parser: argparse.ArgumentParser) -> None:
    """--license and --override_base_license, made from their `FitSettings` fields."""
    group = parser.add_argument_group("licence of the trained weights (written into the model card)")
    add_settings(group, setting_names("license"))


def check_license_arguments(args) -> None:
    """The licence flags' own checks, before any data is loaded: a malformed licence id, --override_base_license
    without --license or without a base model."""
    from .model_card import license_id_problem

    if args.license is not None and license_id_problem(args.license):
        raise UserError(f"--license {license_id_problem(args.license)}")
    if args.override_base_license and args.license is None:
        raise UserError("--override_base_license needs --license: the licence to apply instead of the base model's")
    if args.override_base_license and not args.model_name_or_path:
        raise UserError(
            "--override_base_license applies to a fine-tune (--model_name_or_path); weights trained from scratch take "
            "--license alone"
        )


def lineage_from_arguments(args):
    """(lineage, (licence, note)) of the trained weights for their card: the base model --model_name_or_path names
    (`convert.pretrained.base_lineage`; None from scratch) and the licence the licence flags give them
    (`model_card.resolve_license`). Called before any data is loaded: a licence that would relabel a known base
    licence fails in seconds, as a UserError."""
    from .model_card import resolve_license

    lineage = None
    if args.model_name_or_path:
        from .convert.pretrained import base_lineage

        try:
            lineage = base_lineage(args.model_name_or_path, cache_dir=args.cache_dir)
        except (OSError, ValueError) as error:
            raise UserError(
                f"cannot load a model from {args.model_name_or_path}: {str(error).splitlines()[0]}"
            ) from None
    try:
        return lineage, resolve_license(lineage.license if lineage else None, args.license, args.override_base_license)
    except ValueError as error:
        raise UserError(str(error)) from None


# ---- the Hub flags (transformers' example scripts' names) ---------------------------------------------------------
def add_hub_arguments(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """Add transformers' example flags: --push_to_hub, --hub_model_id, --hub_private_repo, --hub_revision."""
    group = parser.add_argument_group("Hugging Face Hub")
    group.add_argument(
        "--push_to_hub", action="store_true", help="upload the output folder to the Hub at the end (one commit)"
    )
    group.add_argument("--hub_model_id", default=None, help="repo to push to, NAMESPACE/NAME (created if needed)")
    group.add_argument("--hub_private_repo", action="store_true", help="create the repo as private")
    group.add_argument(
        "--hub_revision", default=None, help="branch to push to (created from main if needed); default main"
    )
    return group


def check_hub_arguments(args) -> None:
    """Validate the Hub flags right after parsing, so that a bad repo id fails before training, not after."""
    if not getattr(args, "push_to_hub", False):
        return
    if not getattr(args, "hub_model_id", None):
        raise ValueError("--push_to_hub needs --hub_model_id NAMESPACE/NAME")
    from .hub import check_branch, check_repo_id

    check_repo_id(args.hub_model_id)
    if getattr(args, "hub_revision", None):
        check_branch(args.hub_revision)


def check_hub_access(args) -> None:
    """With --push_to_hub: the token may write to --hub_model_id (one read-only request), checked before a training
    run rather than after it. UserError for the token or namespace, RunFailure when the Hub cannot be reached."""
    if not getattr(args, "push_to_hub", False):
        return
    from .hub import PushError, check_write_access

    try:
        check_write_access(args.hub_model_id, token=getattr(args, "hub_token", None) or None)
    except ValueError as error:
        raise UserError(str(error)) from None
    except PushError as error:
        raise RunFailure(str(error)) from None


def push_from_arguments(args, output_dir: str | os.PathLike, commit_message: str | None = None, extra_files=()):
    """If `args.push_to_hub`, push `output_dir` to `args.hub_model_id` and print the commit URL; returns the
    CommitInfo or None.

    `args` is the scripts' argparse namespace (or any object with those attributes, e.g. transformers'
    TrainingArguments; `hub_token`, if it has one, is used as the token). Call it on the main process only, after
    the model, image processor and card are saved. A bad folder, repo id or token is a `UserError`, the Hub's refusal
    a `RunFailure`.
    """
    if not getattr(args, "push_to_hub", False):
        return None
    from .hub import PushError, push_folder

    try:
        check_hub_arguments(args)
        info = push_folder(
            output_dir,
            args.hub_model_id,
            private=bool(getattr(args, "hub_private_repo", False)),
            revision=getattr(args, "hub_revision", None) or None,
            commit_message=commit_message,
            token=getattr(args, "hub_token", None) or None,
            extra_files=extra_files,
        )
    except ValueError as error:  # the folder, the repo id or the token
        raise UserError(str(error)) from None
    except PushError as error:  # the Hub
        raise RunFailure(str(error)) from None
    print(f"pushed {output_dir} to {args.hub_model_id}: {info}")
    return info


# ---- the training CLIs' shared steps --------------------------------------------------------------------------
DATA_INPUTS = ("train_dir", "validation_dir", "dataset_name", "model_name_or_path")


def training_inputs(args) -> dict:
    """The local inputs a training command's output folder must stay out of, by parameter (shown as their flags)."""
    return {f"`{name}`": getattr(args, name) for name in DATA_INPUTS}


def check_training_output_dir(args, output_dir, *, overwrite: bool, resuming: bool, hint: str = "") -> None:
    """`output_dir.check_output_dir` for a training command, early (before any data is loaded); its refusals are
    mapped to one line by `run_command`."""
    from .output_dir import check_output_dir

    check_output_dir(
        output_dir,
        inputs=training_inputs(args),
        overwrite=overwrite,
        resuming=resuming,
        overwrite_name="overwrite_output_dir",
        hint=hint,
    )


def note_cpu_launch() -> None:
    """`accelerate launch --cpu --num_processes N` looks like CPU DDP but starts one process: say so."""
    if (
        os.environ.get("ACCELERATE_USE_CPU", "").lower() == "true"
        and "MASTER_ADDR" in os.environ
        and int(os.environ.get("WORLD_SIZE", "1")) == 1
    ):
        print(
            "note: `accelerate launch --cpu --num_processes N` starts one process (N only applies under mpirun); "
            "for CPU DDP use `accelerate launch --multi_gpu --num_processes N` or "
            "--config_file scripts/accelerate_configs/cpu_ddp.yaml",
            file=sys.stderr,
        )


def load_data(args, *, seed: int, streaming: bool = False):
    """The data the data flags name (`data.load_image_data`); a missing dataset or a bad folder is a `UserError`."""
    from . import data as hdata

    try:
        return hdata.load_image_data(
            dataset_name=args.dataset_name,
            dataset_config_name=args.dataset_config_name,
            train_dir=args.train_dir,
            validation_dir=args.validation_dir,
            image_column=args.image_column,
            label_column=args.label_column,
            validation_split=args.validation_split,
            split_seed=seed,
            streaming=streaming,
            cache_dir=args.cache_dir,
            max_train_samples=args.max_train_samples,
            max_eval_samples=args.max_eval_samples,
        )
    except FileNotFoundError as error:
        raise UserError(f"dataset not found: {error}") from None
    except hdata.DataError as error:
        raise UserError(str(error)) from None


def print_recipe(recipe) -> None:
    """The model chosen from the data, and why (`model_setup.recipe_for_data`)."""
    print(as_flags(recipe.describe()))
    if recipe.pretrained_hint:
        print(f"note: {as_flags(recipe.pretrained_hint)}")


def parse_overrides(text: str | None) -> dict:
    """`--config_overrides "hidden_size=128,pooling=mean"` -> {"hidden_size": 128, "pooling": "mean"}, keys checked."""
    from .model_setup import check_overrides

    overrides = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        if "=" not in item:
            raise UserError(f"--config_overrides item {item!r} is not key=value")
        key, value = (s.strip() for s in item.split("=", 1))
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    try:
        check_overrides(overrides)
    except ValueError as error:
        raise UserError(f"--config_overrides: {error}") from None
    return overrides


def build_model(args, data, recipe=None):
    """(model, image_processor) for the model flags and the data's labels (`hf_vit.model_setup.build_model`); without
    model flags, `recipe`'s model (`hf_vit.model_setup.recipe_for_data`)."""
    from .model_setup import build_model as build

    check_model_flags(args)
    try:
        return build(
            data.id2label,
            model_name_or_path=args.model_name_or_path,
            preset=args.preset,
            config_file=args.config_name,
            config_overrides=parse_overrides(args.config_overrides),
            digits=data.is_digits,
            recipe=recipe,
            cache_dir=args.cache_dir,
        )
    except (ValueError, TypeError) as error:
        raise UserError(str(error)) from None


def check_model_flags(args) -> None:
    """The cheap checks of the model flags, run before any data is loaded."""
    chosen = [f"--{flag}" for flag in ("model_name_or_path", "preset", "config_name") if getattr(args, flag)]
    if len(chosen) > 1:
        raise UserError(f"give one of --model_name_or_path, --preset, --config_name (got {', '.join(chosen)})")
    if args.preset and args.preset not in PRESETS:
        raise UserError(f"Unknown preset {args.preset!r}; known presets: {', '.join(PRESETS)}")
    if args.model_name_or_path and args.config_overrides:
        raise UserError("--config_overrides applies to models trained from scratch, not --model_name_or_path")
    parse_overrides(args.config_overrides)


def show_prediction(output_dir, data, max_tries: int = 20):
    """Load the saved folder with pipeline("image-classification") and classify one held-out image: the first readable
    one among the first `max_tries`. A demo only: it prints a note instead of failing the run."""
    from transformers import pipeline

    from hf_vit.data import decode_image

    for index, row in enumerate(data.eval):
        if index >= max_tries:
            break
        try:
            image = decode_image(row[data.image_column])
        except Exception:  # noqa: BLE001  an unreadable held-out image: try the next one
            continue
        truth = data.id2label.get(int(row[data.label_column]), row[data.label_column])
        try:
            classify = pipeline("image-classification", model=str(output_dir), device="cpu")
            top = classify(image, top_k=1)[0]
        except Exception as error:  # noqa: BLE001
            print(
                f"note: skipped the pipeline demo ({type(error).__name__}: "
                f"{str(error).splitlines()[0] if str(error) else ''})"
            )
            return
        print(
            f"pipeline prediction for a held-out {data.eval_split} image (true label {truth}): "
            f"{top['label']} (score {top['score']:.3f})"
        )
        return
    print(f"note: skipped the pipeline demo (none of the first {max_tries} held-out images could be read)")
