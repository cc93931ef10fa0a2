"""One convention over every command-line tool (docs/architecture.md, "Conventions"): exit 2 for the user's mistake,
1 for a failure of the run, 130 for an interrupt; one `error:` line on stderr and no traceback unless --verbose.

Each tool is run as users run it: its console entry point's `main`, in a fresh process (one for all the tools, which
run one after the other, each with its own stderr); the failure of the run and the interrupt are injected at a known
point so that the test does not depend on timing.
"""

from types import SimpleNamespace

import pytest
from helpers import REPO, error_line, run_python

ENV = {"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
COMMANDS = [
    "train",
    "finetune",
    "convert",
    "export",
    "push",
    "predict",
    "attention",
    "features",
    "benchmark",
    "pretrain",
    "eval",
]
# a user mistake for each tool: a missing input, a value that makes no sense
MISTAKES = {
    "train": ["--num_train_epochs", "0", "--output_dir", "{tmp}/out"],
    "finetune": ["--config_overrides", "hidden_sise=8", "--output_dir", "{tmp}/out"],
    "convert": ["--source", "timm", "--checkpoint", "{tmp}/missing.pth", "--output_dir", "{tmp}/out"],
    "export": ["--input", "{tmp}/missing", "--output_dir", "{tmp}/out"],
    "push": ["{tmp}/missing", "--repo_id", "me/model"],
    "predict": ["{tmp}/missing", "{tmp}/image.png"],
    "attention": ["{tmp}/missing", "{tmp}/image.png", "--output_dir", "{tmp}/out"],
    "features": ["{tmp}/missing", "{tmp}/file.txt", "--output_dir", "{tmp}/out"],
    "benchmark": ["--quick", "--out-dir", "{tmp}/file.txt"],
    "pretrain": ["--teacher_temp", "0", "--output_dir", "{tmp}/out"],
    "eval": ["{tmp}/missing", "--output_dir", "{tmp}/out"],
}


def run_command(name, args, patch="", tmp=None):
    args = [a.replace("{tmp}", str(tmp)) for a in args]
    code = f"import sys\n{patch}\nfrom hf_vit.commands.{name} import main\nsys.exit(main({args!r}))"
    return run_python(code, env_extra=ENV, timeout=300)


# Every tool in one fresh process (one interpreter start-up, not nine): each main(argv) in turn, with its own stderr.
EVERY_TOOL = """
import contextlib, importlib, io, json, sys
{patch}
results = {{}}
for name, args in json.loads(sys.argv[1]).items():
    main = importlib.import_module(f"hf_vit.commands.{{name}}").main
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(args)
        except SystemExit as exit:  # only argparse may exit by itself
            code = exit.code
    results[name] = [code, stderr.getvalue()]
print(json.dumps(results))
"""
INTERRUPT = (
    "import hf_vit.cli as cli\ndef interrupted(*a, **k):\n    raise KeyboardInterrupt\ncli.setup_logging = interrupted"
)


def run_every_tool(folder, patch=""):
    import json

    arguments = {}
    for name in COMMANDS:
        tmp = folder / name
        tmp.mkdir()
        (tmp / "file.txt").write_text("a file, not a folder")
        arguments[name] = [a.replace("{tmp}", str(tmp)) for a in MISTAKES[name]]
    result = run_python(["-c", EVERY_TOOL.format(patch=patch), json.dumps(arguments)], env_extra=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    outcomes = json.loads(result.stdout.splitlines()[-1]).items()
    return {name: SimpleNamespace(returncode=code, stdout="", stderr=stderr) for name, (code, stderr) in outcomes}


@pytest.fixture(scope="module")
def mistakes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mistakes")
    return folder, run_every_tool(folder)


@pytest.fixture(scope="module")
def interrupts(tmp_path_factory):
    # Ctrl-C as each tool starts its work (after parsing its arguments)
    return run_every_tool(tmp_path_factory.mktemp("interrupts"), patch=INTERRUPT)


@pytest.mark.slow
@pytest.mark.parametrize("name", COMMANDS)
def test_a_user_mistake_exits_2_with_one_line(mistakes, name):
    folder, results = mistakes
    assert len(error_line(results[name], alone=False)) > len("error: ")
    # nothing written, and the file given where a folder was expected (benchmark) untouched
    assert sorted(p.name for p in (folder / name).iterdir()) == ["file.txt"]
    assert (folder / name / "file.txt").read_text() == "a file, not a folder"


@pytest.mark.slow
@pytest.mark.parametrize("name", COMMANDS)
def test_an_interrupt_exits_130(interrupts, name):
    assert error_line(interrupts[name], code=130, alone=False) == "error: interrupted"


@pytest.mark.slow
def test_a_failure_of_the_run_exits_1_and_verbose_shows_the_traceback(tmp_path):
    from hf_vit.cli import RunFailure, UserError
    from hf_vit.cli import run_command as run

    def full_disk():
        raise RunFailure("disk full while writing X")

    def bug():
        raise TypeError("an internal mistake")

    assert run(full_disk) == 1 and run(lambda: (_ for _ in ()).throw(UserError("bad"))) == 2
    assert run(bug) == 1 and run(lambda: 0) == 0
    # a bug is one line too, and --verbose gives its traceback
    patch = (
        "import hf_vit.cli as cli\ndef bug(*a, **k):\n    raise TypeError('an internal mistake')\n"
        "cli.setup_logging = bug"
    )
    quiet = run_command("push", MISTAKES["push"], patch=patch, tmp=tmp_path)
    assert (
        error_line(quiet, code=1, alone=False)
        == "error: unexpected TypeError: an internal mistake (rerun with --verbose for the traceback)"
    )
    verbose = run_python(
        f"import sys\n{patch}\nfrom hf_vit.commands.push import main\n"
        f"sys.exit(main({[str(tmp_path / 'missing'), '--repo_id', 'me/model', '--verbose']!r}))",
        env_extra=ENV,
    )
    assert verbose.returncode == 1 and "Traceback" in verbose.stderr


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_is_an_entry_point_and_a_script(name):
    import tomllib

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts[f"hf-vit-{name}"] == f"hf_vit.commands.{name}:main"
    shims = {p.name: p.read_text() for p in (REPO / "scripts").glob("*.py")}
    assert sum(f"from hf_vit.commands.{name} import main" in text for text in shims.values()) == 1
    assert not any("sys.path" in text for text in shims.values())


@pytest.mark.slow
def test_a_full_disk_during_a_conversion_exits_1_and_writes_nothing(tmp_path):
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    source = timm.create_model("vit_small_patch16_224", pretrained=False, depth=1, num_classes=3, img_size=32)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "w.safetensors"))
    # what safetensors' writer raised on a real full tmpfs, and the errno a plain write gets (the streamed writer of
    # converted weights: its file cut short after its first bytes)
    patch = (
        "import errno, safetensors.torch as st, transformers.modeling_utils as mu, hf_vit.convert.core as core\n"
        "from safetensors import SafetensorError\n"
        "def full(*a, **k):\n"
        "    raise SafetensorError('Error while serializing: I/O error: No space left on device (os error 28)')\n"
        "def full_file(path, *a, **k):\n"
        "    path.write_bytes(b'cut')\n"
        "    raise OSError(errno.ENOSPC, 'No space left on device', str(path))\n"
        "st.save_file = full\nmu.safe_save_file = full\ncore._write_safetensors_file = full_file"
    )
    result = run_command(
        "convert",
        [
            "--source",
            "timm",
            "--checkpoint",
            str(tmp_path / "w.safetensors"),
            "--timm_model",
            "vit_small_patch16_224",
            "--output_dir",
            str(tmp_path / "out"),
        ],
        patch=patch,
        tmp=tmp_path,
    )
    assert (
        error_line(result, code=1, alone=False)
        == f"error: disk full while writing {tmp_path / 'out'}: nothing was written (free space and run again)"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]  # no output, no staging folder


def entry_points() -> dict:
    """Every console entry point of pyproject.toml, by name: commands added later are covered too."""
    import tomllib

    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


def run_entry_point(target, argv):
    """A console entry point's `main(argv)` in this process, as the user's shell would see it."""
    import contextlib
    import importlib
    import io
    import logging

    module, _, function = target.partition(":")
    main = getattr(importlib.import_module(module), function)
    logger = logging.getLogger("hf_vit")
    saved = logger.handlers[:], logger.propagate, logger.level
    stdout, stderr = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                code = main(argv)
            except SystemExit as exit:  # --help
                code = exit.code
    finally:
        logger.handlers[:], logger.propagate, logger.level = saved
    return SimpleNamespace(returncode=code, stdout=stdout.getvalue(), stderr=stderr.getvalue())


@pytest.mark.parametrize("name", sorted(entry_points()))
def test_flags_are_never_abbreviated_and_a_mistyped_flag_is_one_line(name):
    import re

    target = entry_points()[name]
    shown = run_entry_point(target, ["--help"])
    assert shown.returncode == 0 and "usage:" in shown.stdout
    flags = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9_-]+", shown.stdout))
    # the longest flag of --help whose abbreviation is the prefix of that flag alone (argparse took it for the flag)
    flag = max((f for f in flags if not any(g != f and g.startswith(f[:-2]) for g in flags)), key=len)
    # each would print the help and exit 0 if taken for --help
    for argv, suggestion in [([flag[:-2], "--hel"], flag), (["--hel"], "--help"), (["--helpp"], "--help")]:
        result = run_entry_point(target, argv)
        line = error_line(result, f"{argv[0]} is not a flag", f"did you mean {suggestion}?")
        assert result.stdout == "", line  # no usage, no help


@pytest.mark.parametrize("name", ["train", "finetune"])
def test_a_bad_flag_value_is_one_line_not_the_usage(name):
    result = run_entry_point(entry_points()[f"hf-vit-{name}"], ["--num_train_epochs", "abc"])
    line = error_line(result, "--num_train_epochs", "'abc'", f"see hf-vit-{name} --help")
    assert result.stdout == "" and "usage" not in line


# A real Ctrl-C (SIGINT to the process) while the command imports hf_vit: sent when transformers is first imported,
# so that the test does not depend on how long the import takes.
INTERRUPT_WHILE_IMPORTING = """
import importlib.abc, os, runpy, signal, sys

class InterruptTheImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "transformers":
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, InterruptTheImport())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_an_interrupt_while_the_command_starts_exits_130_with_one_line(tmp_path):
    result = run_python(
        ["-c", INTERRUPT_WHILE_IMPORTING, REPO / "scripts" / "push_to_hub.py", tmp_path, "--repo_id", "me/model"],
        env_extra=ENV,
        fresh=True,
    )
    assert result.returncode == 130, result.stderr[-3000:]
    assert result.stderr.strip() == "error: interrupted" and result.stdout == ""


def test_transformers_training_arguments_are_never_abbreviated_either():
    """hf-vit-finetune's TrainingArguments flags (transformers' HfArgumentParser): `--hub_tok` is not `--hub_token`."""
    result = run_entry_point(entry_points()["hf-vit-finetune"], ["--hub_tok", "hf_secret", "--hel"])
    line = error_line(result, "--hub_tok is not a flag (flags are never abbreviated): did you mean --hub_token?")
    assert "hf_secret" not in result.stderr + result.stdout, line
