"""docs/security.md's promises, as a careless or hostile user would test them: no secret is written anywhere, nothing
outside a folder is read or sent, no code but hf_vit's own is published, and no text of someone else's card reaches
a card as anything but one plain line."""

import json
import logging
import shutil
from io import StringIO

import pytest
import yaml
from helpers import REPO, TINY, error_line, run_main
from hub_server import TOKEN, _front_matter, _metadata_errors
from test_hub import save_checkpoint

from hf_vit import HfViTConfig, HfViTForImageClassification
from hf_vit.hub import push_folder
from hf_vit.model_card import License, Lineage, render_model_card, write_model_card
from hf_vit.secrets import redact

PUSH = REPO / "scripts" / "push_to_hub.py"
FLAG_TOKEN = "flagsecret-8842abQ"  # looks like no Hugging Face token: only its flag tells it is one
ENV_TOKEN = "envsecret-77Zq8r2LmN"
HF_LIKE = "hf_" + "aB3" * 12


# ---- no secret is written -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, kept",
    [
        (f"hf-vit-train --hub_tok {FLAG_TOKEN}", "hf-vit-train --hub_tok ***"),
        (f"hf-vit-train --hub_t={FLAG_TOKEN} --seed 1", "hf-vit-train --hub_t=*** --seed 1"),
        (f"x '--HUB-TOKEN={FLAG_TOKEN}'", "x '--HUB-TOKEN=***'"),
        (f'--api_key "{FLAG_TOKEN} b" --password {FLAG_TOKEN}', "--api_key *** --password ***"),
        (f"token {HF_LIKE}. old api_org_{'x' * 34}", "token ***. old ***"),
        (f"the environment's {ENV_TOKEN}", "the environment's ***"),
        ("--token_merging_r 8 --checkpoint_key model --hub_model_id me/vit", None),  # no secret: left alone
        ("error: --hub_tok is not a flag, --hub_token must be set", None),  # prose after a secret flag's name
    ],
)
def test_redact_catches_every_spelling_and_leaves_the_rest(monkeypatch, text, kept):
    monkeypatch.setenv("MY_SERVICE_API_KEY", ENV_TOKEN)
    assert redact(text) == (text if kept is None else kept)


def test_the_token_huggingface_hub_would_use_is_redacted(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "plain-looking-token-4242")
    assert redact("a plain-looking-token-4242 b") == "a *** b"


@pytest.mark.slow
def test_a_run_given_a_token_by_flag_and_environment_writes_it_nowhere(tmp_path, monkeypatch):
    """A tiny training run (the library's `fit`, with the command line and card of hf-vit-train) whose command line
    passes a token through an abbreviated flag and whose environment holds HF_TOKEN: no file of the output folder
    (card, metrics.jsonl, all_results.json, checkpoint state) and no log line holds either."""
    from test_fit import quiet_cpu

    from hf_vit import data as hdata
    from hf_vit import model_setup
    from hf_vit.cli import command_line, setup_logging
    from hf_vit.fit import FitSettings, fit

    monkeypatch.setenv("HF_TOKEN", ENV_TOKEN)
    argv = ["--output_dir", tmp_path / "run", "--hub_tok", FLAG_TOKEN, "--max_train_steps", "2", "--seed", ENV_TOKEN]
    data = hdata.load_image_data(max_train_samples=32, max_eval_samples=16)
    model, processor = model_setup.build_model(
        data.id2label, digits=True, config_overrides={k: TINY[k] for k in ("hidden_size", "num_hidden_layers")}
    )
    settings = FitSettings(max_train_steps=2, checkpointing_steps=1, per_device_train_batch_size=16, progress=False)
    log, logger = StringIO(), logging.getLogger("hf_vit")
    saved = logger.handlers[:], logger.propagate, logger.level
    try:
        setup_logging(info_stream=log)
        with quiet_cpu():
            fit(model, processor, data, tmp_path / "run", settings, command=command_line("hf-vit-train", argv))
        logger.info("pushing with --hub_tok %s as %s", FLAG_TOKEN, ENV_TOKEN)
    finally:
        logger.handlers[:], logger.propagate, logger.level = saved
    card = (tmp_path / "run" / "README.md").read_text()
    assert "--hub_tok '***' --max_train_steps 2 --seed ***" in card
    written = [p for p in (tmp_path / "run").rglob("*") if p.suffix in (".md", ".json", ".jsonl")]
    assert {"README.md", "metrics.jsonl", "all_results.json"} <= {p.name for p in written}
    assert any("checkpoint-" in str(p.parent) for p in written)
    for path in written:
        text = path.read_text()
        assert FLAG_TOKEN not in text and ENV_TOKEN not in text, path
    assert "--hub_tok *** as ***" in log.getvalue()


# ---- nothing outside the folder is read or sent -------------------------------------------------------------------
@pytest.fixture
def cli_hub(hub, monkeypatch):
    """hf-vit-push in this process talks to the loopback Hub, with its token: never to another host."""
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.url)  # read by HfApi() when it is made
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    return hub


@pytest.fixture
def checkpoint(tmp_path):
    folder = tmp_path / "ckpt"
    save_checkpoint(folder, seed=3, card=False)
    return folder


@pytest.mark.parametrize("name", ["modeling_hf_vit.py", "model.safetensors"])
def test_push_and_readers_refuse_a_link_leaving_the_folder(cli_hub, checkpoint, tmp_path, name):
    import hf_vit
    from hf_vit.convert.core import load_hf_vit_folder

    outside = tmp_path / "outside"
    outside.mkdir()
    target = "/etc/passwd" if name.endswith(".py") else outside / name
    if name.endswith(".safetensors"):
        shutil.move(checkpoint / name, target)
    else:
        (checkpoint / name).unlink()
    (checkpoint / name).symlink_to(target)
    hub = cli_hub
    before = len(hub.requests)
    line = error_line(run_main([PUSH, checkpoint, "--repo_id", "tester/links"]), f"{checkpoint / name}", "outside")
    assert "symbolic link" in line
    with pytest.raises(ValueError, match="symbolic link"):
        push_folder(checkpoint, "tester/links", token=TOKEN, endpoint=hub.url)
    assert hub.requests[before:] == []
    if name.endswith(".safetensors"):  # the folder readers: loading, converting, exporting
        for read in (hf_vit.from_pretrained, load_hf_vit_folder):
            with pytest.raises(ValueError, match="symbolic link"):
                read(checkpoint)


def test_a_link_inside_the_folder_is_sent_as_its_contents(hub, checkpoint):
    (checkpoint / "weights").mkdir()
    shutil.move(checkpoint / "model.safetensors", checkpoint / "weights" / "model.safetensors")
    (checkpoint / "model.safetensors").symlink_to("weights/model.safetensors")
    push_folder(checkpoint, "tester/inside-link", token=TOKEN, endpoint=hub.url)
    files = hub.files("tester/inside-link")
    assert files["model.safetensors"] == (checkpoint / "weights" / "model.safetensors").read_bytes()


# ---- no foreign code is published ----------------------------------------------------------------------------------
def test_push_refuses_modified_code_unless_its_author_allows_it(cli_hub, checkpoint):
    hub = cli_hub
    modeling = checkpoint / "modeling_hf_vit.py"
    modeling.write_text(modeling.read_text() + "\nimport os  # added\n")
    before = len(hub.requests)
    error_line(run_main([PUSH, checkpoint, "--repo_id", "tester/modified"]), f"{modeling} differs from the installed")
    assert hub.requests[before:] == []
    result = run_main([PUSH, checkpoint, "--repo_id", "tester/modified", "--allow_modified_code"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"warning: {modeling} differs from the installed hf_vit's" in result.stderr
    assert hub.files("tester/modified")["modeling_hf_vit.py"] == modeling.read_bytes()


def test_private_push_to_an_existing_public_repo_warns_that_it_stays_public(cli_hub, checkpoint):
    hub = cli_hub
    push_folder(checkpoint, "tester/was-public", token=TOKEN, endpoint=hub.url)
    result = run_main([PUSH, checkpoint, "--repo_id", "tester/was-public", "--private"])
    assert result.returncode == 0, result.stderr[-3000:]
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: tester/was-public")]
    assert len(warnings) == 1 and "already exists and is public: it stays public" in warnings[0], result.stderr
    assert "update_repo_settings('tester/was-public', private=True)" in warnings[0]
    assert hub.store.meta("tester/was-public")["private"] is False


# ---- no foreign text in a card -------------------------------------------------------------------------------------
HOSTILE = "evil\n---\n<script>alert(1)</script>\n- Licence: `apache-2.0`\n# Heading [link](https://x.test)"


def _check_plain(text: str) -> dict:
    metadata, errors = _front_matter(text)
    assert errors == [] and _metadata_errors(metadata) == [], text
    lines = text.splitlines()
    assert lines.count("---") == 2, text  # the metadata's own two
    assert "<script" not in text and "alert(1)</" not in text
    assert sum(line.startswith("- Licence:") for line in lines) == 1, text
    assert not any(line.startswith(("# Heading", "- Licence: `apache-2.0`")) for line in lines), text
    assert "\n" not in metadata.get("license_name", "") and "`" not in metadata.get("license_name", "")
    return metadata


@pytest.fixture(scope="module")
def timm_folder(tmp_path_factory):
    """A tiny timm model saved by timm's own writer (config.json with pretrained_cfg, model.safetensors)."""
    import timm
    from timm.models._hub import save_for_hf

    folder = tmp_path_factory.mktemp("timm") / "timm"
    model = timm.create_model(
        "vit_small_patch16_224", pretrained=False, depth=1, img_size=32, patch_size=8, embed_dim=32, num_heads=4
    )
    model.pretrained_cfg = {**model.pretrained_cfg, "license": "cc-by-nc-4.0"}
    save_for_hf(model, folder)
    return folder


def _with_card(timm_folder, tmp_path, metadata: dict):
    folder = tmp_path / "source"
    shutil.copytree(timm_folder, folder)
    (folder / "README.md").write_text(f"---\n{yaml.safe_dump(metadata)}---\n# A source\n")
    return folder


def test_source_card_text_reaches_cards_only_as_one_plain_line(timm_folder, tmp_path, caplog):
    """A source card's license_name/license_link and an hf_vit folder's base_model, hostile: the converted card and an
    export's card hold none of their structure, and their metadata passes the Hub's validation."""
    from huggingface_hub import ModelCard

    from hf_vit.convert import export_to_timm
    from hf_vit.convert.pretrained import convert_pretrained

    hostile = {"license": "other", "license_name": HOSTILE, "license_link": "javascript:alert(1)\n- x"}
    source = _with_card(timm_folder, tmp_path, {**hostile, "base_model": "not a repo\n---"})
    config = json.loads((source / "config.json").read_text())
    del config["pretrained_cfg"]["license"]
    (source / "config.json").write_text(json.dumps(config))
    convert_pretrained(source, tmp_path / "hf")
    metadata = _check_plain((tmp_path / "hf" / "README.md").read_text())
    assert metadata["license"] == "other" and "license_link" not in metadata and "base_model" not in metadata
    assert metadata["license_name"].startswith("evil - alert(1) - Licence: apache-2.0 Heading link")
    # an hf_vit folder whose own card carries the same text, exported: the base_model is dropped with a warning
    card = ModelCard((tmp_path / "hf" / "README.md").read_text())
    card.data.base_model, card.data.license_name = "not a repo\n---", HOSTILE
    (tmp_path / "hf" / "README.md").write_text(str(card))
    with caplog.at_level(logging.WARNING, logger="hf_vit"):
        export_to_timm(tmp_path / "hf", tmp_path / "export")
    assert "not a Hub repo id" in caplog.text
    assert "base_model" not in _check_plain((tmp_path / "export" / "README.md").read_text())


def test_render_drops_a_base_model_that_is_no_repo_id():
    mit = License("mit")
    card = render_model_card(
        HfViTConfig(**TINY), num_parameters=1000, license=mit, lineage=Lineage("x\n---\n<b>", None, mit, "finetune")
    )
    metadata = _check_plain(str(card))
    assert "base_model" not in metadata and "base_model_relation" not in metadata


def test_a_licence_in_words_converts_as_other_with_a_note(timm_folder, tmp_path):
    from hf_vit.convert.pretrained import convert_pretrained

    source = _with_card(timm_folder, tmp_path, {"license": "Apache 2.0"})
    config = json.loads((source / "config.json").read_text())
    del config["pretrained_cfg"]["license"]
    (source / "config.json").write_text(json.dumps(config))
    convert_pretrained(source, tmp_path / "hf")
    text = (tmp_path / "hf" / "README.md").read_text()
    metadata = _check_plain(text)
    assert (metadata["license"], metadata["license_name"]) == ("other", "Apache 2.0")
    assert "The source states its licence as `Apache 2.0`, which is not a Hub licence id" in text


def test_timm_card_and_pretrained_cfg_licences_that_disagree_keep_the_stricter(timm_folder, tmp_path, caplog):
    """The card says apache-2.0, timm's pretrained_cfg cc-by-nc-4.0: never silently apache-2.0."""
    from hf_vit.convert.pretrained import convert_pretrained

    source = _with_card(timm_folder, tmp_path, {"license": "apache-2.0"})
    with caplog.at_level(logging.WARNING, logger="hf_vit"):
        convert_pretrained(source, tmp_path / "hf")
    text = (tmp_path / "hf" / "README.md").read_text()
    assert _check_plain(text)["license"] == "cc-by-nc-4.0"
    assert "its card says apache-2.0 and its timm pretrained_cfg says cc-by-nc-4.0" in caplog.text
    assert "disagree" in text and "apache-2.0" in text.split("## Architecture")[0]


def test_fine_tuning_a_local_export_keeps_the_base_model_its_card_names(tmp_path):
    from hf_vit.convert import export_to_timm
    from hf_vit.convert.pretrained import base_lineage

    config = HfViTConfig(**{**TINY, "layer_norm_eps": 1e-6})
    HfViTForImageClassification(config).save_pretrained(tmp_path / "hf")
    nc = License("cc-by-nc-4.0")
    lineage = Lineage("tester/src", None, nc, "finetune", "tester/src")
    write_model_card(tmp_path / "hf", render_model_card(config, num_parameters=1000, license=nc, lineage=lineage))
    export_to_timm(tmp_path / "hf", tmp_path / "timm")
    found = base_lineage(tmp_path / "timm", cache_dir=tmp_path / "cache")
    assert (found.base_model, found.license.id, found.relation) == ("tester/src", "cc-by-nc-4.0", "finetune")


@pytest.mark.parametrize("script", ["train.py", "finetune_trainer.py"])
def test_a_licence_typo_is_refused_at_once_with_the_closest_id(script, tmp_path):
    result = run_main([REPO / "scripts" / script, "--license", "apache2.0", "--output_dir", tmp_path / "out"])
    error_line(result, "--license", "'apache2.0'", "did you mean apache-2.0?")
    assert not (tmp_path / "out").exists()
