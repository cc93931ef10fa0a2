"""scripts/convert_checkpoint.py and scripts/export_safetensors.py as users run them: subprocesses, exit codes,
one-line errors, files written, and nothing left in --output_dir when a conversion fails. Refusals, which end before
any work, run through the same `main` in this process (helpers.run_main)."""

import json
import os

import pytest
import timm
import torch
from helpers import error_line, run_main, run_python
from safetensors.torch import save_file

from hf_vit import HfViTForImageClassification

CONVERT = "scripts/convert_checkpoint.py"
EXPORT = "scripts/export_safetensors.py"


def timm_weights(path, **kwargs):
    torch.manual_seed(0)
    model = timm.create_model("vit_small_patch16_224", pretrained=False, depth=2, num_classes=3, img_size=64, **kwargs)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return model


def assert_nothing_left(output_dir):
    """The output folder is absent (or still empty if it existed) and no temporary sibling is left behind."""
    assert not output_dir.exists() or not any(output_dir.iterdir())
    assert not [p for p in output_dir.parent.iterdir() if p.name.startswith(f".{output_dir.name}.")]


@pytest.mark.slow
def test_convert_timm_with_verify(tmp_path):
    timm_weights(tmp_path / "w.safetensors")
    out = tmp_path / "out"
    result = run_python(
        [
            CONVERT,
            "--source",
            "timm",
            "--checkpoint",
            str(tmp_path / "w.safetensors"),
            "--timm_model",
            "vit_small_patch16_224",
            "--output_dir",
            str(out),
            "--verify",
        ]
    )
    assert result.returncode == 0, result.stderr
    assert "max-abs-diff vs timm:" in result.stdout and f"wrote {out}" in result.stdout
    assert {
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "README.md",
        "modeling_hf_vit.py",
        "configuration_hf_vit.py",
    } <= {p.name for p in out.iterdir()}


@pytest.mark.slow
def test_export_to_transformers_and_refusal(tmp_path, tiny_config):
    HfViTForImageClassification(tiny_config(num_labels=2)).save_pretrained(tmp_path / "hf")
    result = run_python(
        [
            CONVERT,
            "--to",
            "transformers",
            "--checkpoint",
            str(tmp_path / "hf"),
            "--output_dir",
            str(tmp_path / "vit"),
            "--verify",
        ]
    )
    assert result.returncode == 0, result.stderr
    assert "max-abs-diff vs transformers:" in result.stdout
    assert json.loads((tmp_path / "vit" / "config.json").read_text())["model_type"] == "vit"

    HfViTForImageClassification(tiny_config(num_register_tokens=4, cls_position_embedding=False)).save_pretrained(
        tmp_path / "reg"
    )
    result = run_main(
        [
            CONVERT,
            "--to",
            "transformers",
            "--checkpoint",
            str(tmp_path / "reg"),
            "--output_dir",
            str(tmp_path / "vit_reg"),
        ]
    )
    error_line(result, "cannot export to transformers", "4 register tokens")
    assert_nothing_left(tmp_path / "vit_reg")


class RunsCode:
    """A pickle that would run a shell command when unpickled without weights_only."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _bad_pickle(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"pos_embed": torch.zeros(1), "payload": RunsCode(tmp_path / "pwned")}, path)
    return path, ["refusing to load", "needs arbitrary code", "weights_only=True"]


def _unknown_layout(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"encoder.conv_stem.weight": torch.zeros(8, 3, 3, 3), "encoder.fc.weight": torch.zeros(2, 8)}, str(path))
    return path, [
        "have no hf_vit equivalent",
        "encoder.conv_stem.weight",
        "expected timm names like",
        "patch_embed.proj.weight",
    ]


def _shape_mismatch(tmp_path):
    path = tmp_path / "small.safetensors"
    timm_weights(path)
    return path, ["shape mismatch for", "has (384", "expects (768", "vit_base_patch16_224"]


def _truncated_safetensors(tmp_path):
    path = tmp_path / "cut.safetensors"
    timm_weights(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path, ["not a valid safetensors file", "cut.safetensors"]


def _corrupt_npz(tmp_path):
    path = tmp_path / "broken.npz"
    path.write_bytes(b"PK\x03\x04" + os.urandom(300))
    return path, ["not a valid .npz archive", "broken.npz"]


BAD_INPUTS = {
    "pickle_needing_code": ("timm", _bad_pickle),
    "unknown_layout": ("timm", _unknown_layout),
    "shape_mismatch": ("timm", _shape_mismatch),
    "truncated_safetensors": ("timm", _truncated_safetensors),
    "corrupt_npz": ("npz", _corrupt_npz),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gives_one_line_and_leaves_nothing(case, tmp_path):
    source, make = BAD_INPUTS[case]
    path, fragments = make(tmp_path)
    out = tmp_path / "out"
    out.mkdir()  # an empty folder the user created stays empty
    args = [CONVERT, "--source", source, "--checkpoint", str(path), "--output_dir", str(out)]
    if source == "timm":
        args += ["--timm_model", "vit_base_patch16_224" if case == "shape_mismatch" else "vit_small_patch16_224"]
    error_line(run_main(args), *fragments)
    assert_nothing_left(out)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.slow
def test_export_safetensors_cli(tmp_path, tiny_config):
    model = HfViTForImageClassification(tiny_config(num_labels=2))
    model.config.save_pretrained(tmp_path / "legacy")
    torch.save(model.state_dict(), tmp_path / "legacy" / "pytorch_model.bin")
    result = run_python(
        [EXPORT, "--input", str(tmp_path / "legacy"), "--output_dir", str(tmp_path / "out"), "--max_shard_size", "30KB"]
    )
    assert result.returncode == 0, result.stderr
    assert "bitwise" in result.stdout and "model.safetensors.index.json" in result.stdout
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"config.json", "model.safetensors.index.json", "modeling_hf_vit.py"} <= names
    assert not any(name.endswith(".bin") for name in names)

    torch.save(model.state_dict(), tmp_path / "loose.bin")  # no config.json next to it
    (tmp_path / "out2").mkdir()
    result = run_main([EXPORT, "--input", str(tmp_path / "loose.bin"), "--output_dir", str(tmp_path / "out2")])
    error_line(result, "no config.json", "--config")
    assert_nothing_left(tmp_path / "out2")


def test_overwrite_replaces_only_the_files_the_command_writes(tmp_path, tiny_config, capsys):
    from hf_vit.commands.convert import main as convert_main
    from hf_vit.commands.export import main as export_main

    model = HfViTForImageClassification(tiny_config(num_labels=2))
    model.config.save_pretrained(tmp_path / "legacy")
    torch.save(model.state_dict(), tmp_path / "legacy" / "pytorch_model.bin")
    out = tmp_path / "out"
    assert export_main(["--input", tmp_path / "legacy", "--output_dir", out, "--max_shard_size", "30KB"]) == 0
    (out / "notes.txt").write_text("the user's own notes")
    capsys.readouterr()

    assert export_main(["--input", tmp_path / "legacy", "--output_dir", out]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: --output_dir") and "--overwrite" in error and "\n" not in error

    assert export_main(["--input", tmp_path / "legacy", "--output_dir", out, "--overwrite"]) == 0
    names = {p.name for p in out.iterdir()}
    assert (out / "notes.txt").read_text() == "the user's own notes"
    assert "model.safetensors" in names and not [n for n in names if n.startswith("model-") or "index" in n], names
    reloaded = HfViTForImageClassification.from_pretrained(out)
    assert all(torch.equal(reloaded.state_dict()[k], v) for k, v in model.state_dict().items())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left

    # an output folder that is, holds or lies inside the input is refused, with or without --overwrite
    before = {folder: sorted(p.name for p in folder.iterdir()) for folder in (out, tmp_path / "legacy")}
    for output in (out, tmp_path, out / "sub"):
        assert convert_main(["--to", "transformers", "--checkpoint", out, "--output_dir", output, "--overwrite"]) == 2
        assert "the input checkpoint" in capsys.readouterr().err
    for output in (tmp_path / "legacy", tmp_path, tmp_path / "legacy" / "sub"):
        assert export_main(["--input", tmp_path / "legacy", "--output_dir", output, "--overwrite"]) == 2
        assert "the input weights" in capsys.readouterr().err
    assert {folder: sorted(p.name for p in folder.iterdir()) for folder in before} == before


def test_a_missing_local_file_is_said_to_be_missing(tmp_path, capsys):
    from hf_vit.commands.convert import main as convert_main

    missing = tmp_path / "vit_s16.safetensors"
    args = ["--source", "timm", "--checkpoint", missing, "--timm_model", "vit_small_patch16_224", "--output_dir"]
    assert convert_main([*args, tmp_path / "out"]) == 2
    assert capsys.readouterr().err == f"error: --checkpoint {missing}: no such file or folder\n"
    assert list(tmp_path.iterdir()) == []


def test_export_safetensors_takes_a_masked_image_modeling_state_dict(tmp_path, tiny_config):
    from hf_vit import HfViTForMaskedImageModeling
    from hf_vit.convert import export_safetensors

    model = HfViTForMaskedImageModeling(tiny_config())
    model.config.save_pretrained(tmp_path / "legacy")
    torch.save(model.state_dict(), tmp_path / "legacy" / "pytorch_model.bin")
    export_safetensors(tmp_path / "legacy", tmp_path / "out")
    reloaded = HfViTForMaskedImageModeling.from_pretrained(tmp_path / "out")
    assert all(torch.equal(reloaded.state_dict()[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("text", ["[1, 2]", "{not json"])
def test_a_config_json_that_is_not_a_json_object_is_named(tmp_path, capsys, text):
    from hf_vit.commands.convert import main as convert_main

    (tmp_path / "vit").mkdir()
    (tmp_path / "vit" / "config.json").write_text(text)
    code = convert_main(["--source", "transformers", "--checkpoint", tmp_path / "vit", "--output_dir", tmp_path / "o"])
    error = capsys.readouterr().err
    assert code == 2 and error.startswith("error: ") and f"{tmp_path / 'vit' / 'config.json'}" in error, error
    assert len(error.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


def test_an_import_writes_shards_with_an_index_and_builds_no_model_unasked(tmp_path):
    """hf-vit-convert into hf_vit takes --max_shard_size too: shards and an index that transformers loads; and the
    library call builds the model only when its result's "model" is read (a giant converts into a folder without
    being held as a model as well)."""
    from transformers import AutoModel, ViTConfig, ViTModel

    from hf_vit.convert import convert_checkpoint

    torch.manual_seed(0)
    ViTModel(
        ViTConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            image_size=32,
            patch_size=8,
        )
    ).save_pretrained(tmp_path / "vit")
    result = run_main(
        [CONVERT, "--checkpoint", tmp_path / "vit", "--output_dir", tmp_path / "out", "--max_shard_size", "20KB"]
    )
    assert result.returncode == 0, result.stderr
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    shards = sorted(p.name for p in (tmp_path / "out").glob("model-*-of-*.safetensors"))
    assert len(shards) > 1 and sorted(set(index["weight_map"].values())) == shards
    assert not (tmp_path / "out" / "model.safetensors").exists()
    assert AutoModel.from_pretrained(tmp_path / "out").config.model_type == "hf_vit"

    converted = convert_checkpoint("transformers", tmp_path / "vit", tmp_path / "lazy")
    assert converted["conversion"].built is None  # written from the lazily read source, no model built
    assert converted["model"].config.hidden_size == 32 and converted["conversion"].built is converted["model"]
