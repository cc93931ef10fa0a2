"""Model cards that tell the truth: the licence and lineage of the weights, Hub-valid metadata, a card a reader can use.

The Hub part publishes three source repos with transformers' own writer (`save_pretrained`) and cards stating
cc-by-nc-4.0, `other` with `license_name`/`license_link`, and no card at all; then, in one Hub client process, converts
each (hf-vit-convert), fine-tunes each (hf-vit-train, hf-vit-finetune), fine-tunes a local converted folder, relabels a
known licence (refused, then allowed with --override_base_license) and trains from scratch, pushing every result to
the test Hub server, which refuses a card whose metadata the Hub would refuse.
"""

import base64
import json
import re

import pytest
import yaml
from helpers import TINY
from hub_server import HubServer
from test_hub import run_client

from hf_vit import HfViTConfig
from hf_vit.model_card import (
    DEFAULT_LICENSE,
    UNKNOWN_LICENSE_NOTE,
    License,
    Lineage,
    license_from_metadata,
    render_model_card,
    resolve_license,
)

NC = License("cc-by-nc-4.0")
DINOV3 = License("other", "dinov3-license", "https://ai.meta.com/resources/models-and-libraries/dinov3-license/")


@pytest.mark.parametrize(
    "metadata, expected",
    [
        ({"license": "cc-by-nc-4.0"}, NC),
        ({"license": "CC-BY-NC-4.0 "}, NC),
        ({"license": ["cc-by-nc-4.0"]}, NC),
        ({"license": "other", "license_name": DINOV3.name, "license_link": DINOV3.link}, DINOV3),
        ({"license": "other"}, License()),  # "other" naming no licence: which terms apply is unknown
        ({"license": "unknown"}, License()),
        ({}, License()),
        (None, License()),
    ],
)
def test_license_from_card_metadata(metadata, expected):
    assert license_from_metadata(metadata) == expected


@pytest.mark.parametrize(
    "base, license, override, expected, note",
    [
        (None, None, False, License(DEFAULT_LICENSE), None),  # from scratch: apache-2.0, as before
        (None, "mit", False, License("mit"), None),
        (NC, None, False, NC, None),  # a fine-tune keeps its base's licence
        (NC, "cc-by-nc-4.0", False, NC, None),
        (DINOV3, None, False, DINOV3, None),
        (NC, "mit", True, License("mit"), "overriding the base model's licence `cc-by-nc-4.0`"),
        (License(), None, False, License(), UNKNOWN_LICENSE_NOTE),  # never a guessed apache-2.0
        (License(), "mit", False, License("mit"), "base model's licence could not be read"),
    ],
)
def test_resolve_license(base, license, override, expected, note):
    resolved, resolved_note = resolve_license(base, license, override)
    assert resolved == expected
    assert (resolved_note is None) if note is None else (note in resolved_note)


@pytest.mark.parametrize(
    "base, license, override, message",
    [
        (NC, "mit", False, "`license` mit would relabel weights derived from a base model licensed cc-by-nc-4.0:"),
        (DINOV3, "apache-2.0", False, "licensed other (dinov3-license, https://"),
        (None, "mit", True, "`override_base_license` applies to weights fine-tuned from a base model"),
        (NC, None, True, "`override_base_license` needs `license`"),
        (None, "Apache 2.0", False, "`license` must be a Hub licence id"),
    ],
)
def test_resolve_license_refusals(base, license, override, message):
    with pytest.raises(ValueError) as error:
        resolve_license(base, license, override)
    assert message in str(error.value)


@pytest.mark.parametrize(
    "config, unit",
    [
        (HfViTConfig(**TINY), "K multiply-adds"),  # a tiny model: never "0.00 G"
        (HfViTConfig(**{**TINY, "image_size": 224, "patch_size": 16}), "M multiply-adds"),
        (HfViTConfig.from_preset("vit-small-patch16-224"), "G multiply-adds"),
    ],
)
def test_compute_is_given_in_the_unit_that_fits(config, unit):
    text = str(render_model_card(config, num_parameters=1000))
    line = next(line for line in text.splitlines() if line.startswith("| compute"))
    assert unit in line and "0.00" not in line, line


def test_card_metadata_is_what_huggingface_hub_accepts(tmp_path):
    from huggingface_hub import ModelCard

    card = render_model_card(
        HfViTConfig(**TINY),
        num_parameters=1000,
        license=DINOV3,
        lineage=Lineage("facebook/dinov3-vits16-pretrain-lvd1689m", "0" * 40, DINOV3, "finetune", "facebook/dinov3"),
        datasets=["beans"],
        dataset_name="the Hub dataset `beans`",
        eval_split="validation",
        results={"accuracy": 0.75, "loss": 0.5},
        command="hf-vit-train --model_name_or_path facebook/dinov3-vits16-pretrain-lvd1689m --dataset_name beans",
    )
    data = ModelCard(str(card), ignore_metadata_errors=False).data.to_dict()
    assert (data["license"], data["license_name"], data["license_link"]) == ("other", DINOV3.name, DINOV3.link)
    assert (
        data["base_model"] == "facebook/dinov3-vits16-pretrain-lvd1689m" and data["base_model_relation"] == "finetune"
    )
    result = data["model-index"][0]["results"][0]
    assert result["dataset"] == {"name": "beans", "type": "beans", "split": "validation"}
    assert result["metrics"] == [{"type": "accuracy", "value": 0.75, "name": "Accuracy"}]  # the loss stays in the text
    assert "| loss | 0.5000 |" in card.text and "`validation` split" in card.text
    assert "hf-vit-train --model_name_or_path facebook/dinov3" in card.text


@pytest.mark.parametrize(
    "data, datasets, split, words",
    [
        (dict(name="digits", eval_split="test", is_digits=True), None, "test", "scikit-learn digits"),
        (dict(name="beans", eval_split="validation", from_dataset=True), ["beans"], "validation", "`beans`"),
        (dict(name="beans", from_dataset=True, eval_held_out=True), ["beans"], "train", "held out of its `train`"),
        (dict(name="{tmp}", from_dataset=True), None, "validation", "the local data"),  # load_dataset of a folder
    ],
)
def test_model_index_only_for_hub_datasets(tmp_path, data, datasets, split, words):
    """The Hub needs a dataset id in the model-index: the digits and local data report their result in the text."""
    from hf_vit import data as hdata

    data = hdata.ImageData(train=None, eval=None, image_column="image", label_column="label", id2label={0: "a"}, **data)
    data.name = data.name.format(tmp=tmp_path)
    evaluation = hdata.card_evaluation(data)
    assert evaluation["datasets"] == datasets and evaluation["eval_split"] == split
    card = render_model_card(HfViTConfig(**TINY), num_parameters=1000, results={"accuracy": 0.9}, **evaluation)
    assert ("model-index" in card.data.to_dict()) == bool(datasets)
    assert words in card.text and f"`{split}` split" in card.text
    if datasets:
        assert card.data.to_dict()["model-index"][0]["results"][0]["dataset"]["split"] == split


def test_timm_pretrained_cfg_license_is_read_without_a_card(tmp_path):
    """A timm folder (config.json from timm's own writer) without README: its `pretrained_cfg` licence is carried."""
    import timm
    from huggingface_hub import ModelCard
    from timm.models._hub import save_for_hf

    from hf_vit.convert.pretrained import convert_pretrained

    tiny = dict(depth=1, img_size=32, patch_size=8, embed_dim=32, num_heads=4)
    model = timm.create_model("vit_small_patch16_224", pretrained=False, **tiny)
    model.pretrained_cfg = {**model.pretrained_cfg, "license": "cc-by-nc-4.0"}
    save_for_hf(model, tmp_path / "timm")
    assert json.loads((tmp_path / "timm" / "config.json").read_text())["pretrained_cfg"]["license"] == "cc-by-nc-4.0"
    convert_pretrained(tmp_path / "timm", tmp_path / "out")
    card = ModelCard.load(tmp_path / "out" / "README.md")
    assert card.data.license == "cc-by-nc-4.0" and card.data.base_model is None  # a local source: no Hub base model
    assert "converted from local files" in card.text and "hf_vit.convert_pretrained(" in card.text


@pytest.mark.parametrize(
    "license, base, relation",
    [(NC, "tester/src", "finetune"), (DINOV3, "tester/src", None), (None, None, None)],
    ids=["nc-finetune", "other-converted", "no-card"],
)
def test_exports_carry_the_licence_and_base_model(tmp_path, license, base, relation):
    """hf-vit-convert --to timm / transformers: the exported folder's card states the hf_vit card's licence and base
    model (the same weights), in Hub-valid metadata; timm's pretrained_cfg names a Hub licence id too; converting the
    export back into hf_vit reads the same licence again (a folder without a card: `other`, and the card says so).
    hf-vit-export (weights + an hf_vit config folder): the config folder's card's licence and base model."""
    import timm
    import torch
    from hub_server import _front_matter, _metadata_errors
    from huggingface_hub import ModelCard

    from hf_vit import HfViTForImageClassification
    from hf_vit.convert import export_safetensors, export_to_timm, export_to_transformers
    from hf_vit.convert.pretrained import convert_pretrained
    from hf_vit.model_card import write_model_card

    config = HfViTConfig(**{**TINY, "layer_norm_eps": 1e-6})
    model = HfViTForImageClassification(config)
    model.save_pretrained(tmp_path / "hf")
    if license is not None:
        lineage = Lineage(base, None, license, relation, base)
        card = render_model_card(config, num_parameters=1000, license=license, lineage=lineage)
        write_model_card(tmp_path / "hf", card)
    for library, export in (("timm", export_to_timm), ("transformers", export_to_transformers)):
        folder = tmp_path / library
        export(tmp_path / "hf", folder)
        text = (folder / "README.md").read_text()
        metadata, errors = _front_matter(text)
        assert errors == [] and _metadata_errors(metadata) == [], text
        assert metadata["library_name"] == library and metadata["pipeline_tag"] == "image-classification"
        assert metadata["license"] == (license.id if license else "other")
        assert (metadata.get("license_name"), metadata.get("license_link")) == (
            (license.name, license.link) if license else (None, None)
        )
        assert (metadata.get("base_model"), metadata.get("base_model_relation")) == (base, relation)
        assert (UNKNOWN_LICENSE_NOTE in text) == (license is None) and str(folder) in text
        back = tmp_path / f"{library}-back"
        convert_pretrained(folder, back)
        assert ModelCard.load(back / "README.md").data.license == (license.id if license else "other")
    # a state dict (an Accelerate checkpoint's weights) written as an hf_vit folder with the config of the folder
    torch.save(model.state_dict(), tmp_path / "weights.bin")
    export_safetensors(tmp_path / "weights.bin", tmp_path / "safetensors", config=tmp_path / "hf")
    metadata, errors = _front_matter((tmp_path / "safetensors" / "README.md").read_text())
    assert errors == [] and _metadata_errors(metadata) == [] and metadata["library_name"] == "transformers"
    assert (metadata["license"], metadata.get("base_model"), metadata.get("base_model_relation")) == (
        license.id if license else "other",
        base,
        relation,
    )
    pretrained_cfg = json.loads((tmp_path / "timm" / "config.json").read_text())["pretrained_cfg"]
    assert pretrained_cfg.get("license") == (license.id if license and license.id != "other" else None)
    assert timm.create_model(f"local-dir:{tmp_path / 'timm'}", pretrained=True).pretrained_cfg.get("license") == (
        pretrained_cfg.get("license")
    )


# ---- through the Hub -------------------------------------------------------------------------------------------
SOURCES = {
    "tester/src-nc": "---\nlicense: cc-by-nc-4.0\n---\n# A source under CC-BY-NC-4.0\n",
    "tester/src-other": (
        f"---\nlicense: other\nlicense_name: {DINOV3.name}\nlicense_link: {DINOV3.link}\n---\n# A source under its own"
        " licence\n"
    ),
    "tester/src-none": None,  # no card at all
}

CLIENT = r"""
import contextlib, io, json, logging, sys, tempfile
from pathlib import Path

import torch
from huggingface_hub import CommitOperationAdd, HfApi
from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

work, sources = Path(sys.argv[1]), json.loads(sys.argv[2])
api, report = HfApi(), {"shas": {}, "runs": {}}
for seed, (repo, card) in enumerate(sources.items()):  # the sources, as transformers writes them
    torch.manual_seed(seed)
    config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                       image_size=32, patch_size=8, num_labels=3)
    with tempfile.TemporaryDirectory() as folder:
        ViTForImageClassification(config).save_pretrained(folder)
        ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
        if card:
            Path(folder, "README.md").write_text(card)
        api.create_repo(repo, exist_ok=True)
        operations = [CommitOperationAdd(p.name, str(p)) for p in sorted(Path(folder).iterdir())]
        report["shas"][repo] = api.create_commit(repo, operations=operations, commit_message="Add model").oid

from hf_vit.commands import convert, finetune, train

QUICK = ["--max_train_samples", "16", "--max_eval_samples", "16", "--per_device_eval_batch_size", "16"]


def run(name, tool, *argv):
    logger = logging.getLogger("hf_vit")
    handlers = logger.handlers[:]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = tool.main([str(a) for a in argv])
    logger.handlers[:] = handlers
    report["runs"][name] = {"code": code, "stderr": err.getvalue()[-3000:]}


def trained(name, *argv):
    run(name, train, "--output_dir", work / name, "--max_train_steps", "1", "--no_progress", *QUICK,
        "--push_to_hub", "--hub_model_id", f"tester/{name}", *argv)


for kind in ("nc", "other", "none"):
    run(f"conv-{kind}", convert, "--checkpoint", f"tester/src-{kind}", "--output_dir", work / f"conv-{kind}",
        "--push_to_hub", "--hub_model_id", f"tester/conv-{kind}")
run("ft-nc", finetune, "--model_name_or_path", "tester/src-nc", "--output_dir", work / "ft-nc", "--max_steps", "1",
    "--per_device_train_batch_size", "8", "--disable_tqdm", "true", *QUICK, "--push_to_hub",
    "--hub_model_id", "tester/ft-nc")
trained("ft-other", "--model_name_or_path", "tester/src-other")
trained("ft-none", "--model_name_or_path", "tester/src-none")
trained("ft-local", "--model_name_or_path", work / "conv-nc")  # the converted folder's card names its base
trained("ft-hub", "--model_name_or_path", "tester/conv-nc")  # an hf_vit repo is itself the base
trained("relabel", "--model_name_or_path", "tester/src-nc", "--license", "mit")
trained("override", "--model_name_or_path", "tester/src-nc", "--license", "mit", "--override_base_license")
trained("scratch")  # the main job
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def lineage(tmp_path_factory):
    hub = HubServer(tmp_path_factory.mktemp("hub")).start()
    work = tmp_path_factory.mktemp("lineage")
    try:
        result = run_client(["-c", CLIENT, work, json.dumps(SOURCES)], hub, work, timeout=600)
        assert result.returncode == 0, result.stderr[-4000:]
        report = json.loads(result.stdout.strip().splitlines()[-1])
        pushed = [name for name, run in report["runs"].items() if run["code"] == 0]
        cards = {name: hub.files(f"tester/{name}")["README.md"].decode() for name in pushed}
        commits = {**report["shas"], **{f"tester/{name}": hub.head(f"tester/{name}") for name in pushed}}
        return dict(report=report, cards=cards, commits=commits, requests=list(hub.requests))
    finally:
        hub.stop()


def _metadata(text: str) -> dict:
    """The card's metadata as the Hub reads it, after huggingface_hub's own parsing accepted it."""
    from huggingface_hub import ModelCard

    ModelCard(text, ignore_metadata_errors=False)
    return yaml.safe_load(text.split("---")[1])


EXPECTED = {  # card: (license, license_name, base_model, base_model_relation)
    "conv-nc": ("cc-by-nc-4.0", None, "tester/src-nc", None),
    "conv-other": ("other", DINOV3.name, "tester/src-other", None),
    "conv-none": ("other", None, "tester/src-none", None),
    "ft-nc": ("cc-by-nc-4.0", None, "tester/src-nc", "finetune"),
    "ft-other": ("other", DINOV3.name, "tester/src-other", "finetune"),
    "ft-none": ("other", None, "tester/src-none", "finetune"),
    "ft-local": ("cc-by-nc-4.0", None, "tester/src-nc", "finetune"),
    "ft-hub": ("cc-by-nc-4.0", None, "tester/conv-nc", "finetune"),
    "override": ("mit", None, "tester/src-nc", "finetune"),
    "scratch": ("apache-2.0", None, None, None),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EXPECTED))
def test_pushed_card_carries_the_licence_and_lineage(lineage, name):
    run = lineage["report"]["runs"][name]
    assert run["code"] == 0, run["stderr"]
    text = lineage["cards"][name]  # on the Hub: the server refuses a commit whose card metadata the Hub would refuse
    meta = _metadata(text)
    license, license_name, base_model, relation = EXPECTED[name]
    assert (meta["license"], meta.get("license_name"), meta.get("base_model"), meta.get("base_model_relation")) == (
        license,
        license_name,
        base_model,
        relation,
    )
    if license_name:
        assert meta["license_link"] == DINOV3.link
    if base_model and name != "ft-local":  # the commit the weights came from (a local folder's card names none)
        assert lineage["commits"][base_model] in text
    if name.endswith("none"):  # an unreadable licence is never guessed: the reader is told to check the base's terms
        assert "check the base model's terms" in text and "apache-2.0" not in text
    if name == "override":
        assert "overriding the base model's licence `cc-by-nc-4.0`" in text
    # a card a reader can use: how to load it with and without hf_vit, how it was made, no dead link
    assert "AutoModelForImageClassification.from_pretrained" in text and "trust_remote_code=True" in text
    assert ("hf-vit-convert --checkpoint" if name.startswith("conv") else "--output_dir") in text
    assert "github.com/hf-vit" not in text and "0.00 G" not in text and "](" not in text  # no link at all
    assert ("POST", "/api/validate-yaml") in lineage["requests"]


@pytest.mark.slow
def test_main_job_card_reports_its_result_and_split(lineage):
    text = lineage["cards"]["scratch"]
    assert "hf-vit-train --output_dir" in text and "No base model: trained from scratch" in text
    assert "scikit-learn digits" in text and "`test` split" in text and "| accuracy |" in text
    assert re.search(r"\([\d.]+ [KM] multiply-adds", text), text  # the digits model is small: K or M, not "0.00 G"
    assert "model-index" not in _metadata(text)  # no Hub dataset id for the digits


@pytest.mark.slow
def test_relabelling_a_known_licence_is_refused(lineage):
    run = lineage["report"]["runs"]["relabel"]
    assert run["code"] == 2 and "Traceback" not in run["stderr"]
    (line,) = [line for line in run["stderr"].splitlines() if line.startswith("error:")]
    assert (
        "--license mit would relabel" in line and "licensed cc-by-nc-4.0:" in line and "--override_base_license" in line
    )
    assert "relabel" not in lineage["cards"]  # nothing was pushed


def test_hub_server_refuses_a_card_the_hub_would_refuse(tmp_path):
    from test_hub import _call, _ndjson

    hub = HubServer(tmp_path).start()
    try:
        assert _call(hub, "POST", "/api/repos/create", {"name": "cards"})[0] == 200
        ok = str(render_model_card(HfViTConfig(**TINY), num_parameters=1000, license=NC, base_model="tester/src"))
        bad = {
            "license": ok.replace("license: cc-by-nc-4.0", "license: cc-by-nc"),
            "base_model_relation": ok.replace(
                "base_model: tester/src", "base_model: tester/src\nbase_model_relation: x"
            ),
            "base_model": ok.replace("base_model: tester/src", "base_model: not a repo id"),
        }
        for field, content in bad.items():
            status, _, body = _call(hub, "POST", "/api/validate-yaml", {"content": content, "repoType": "model"})
            assert status == 400 and field in json.loads(body)["errors"][0]["message"], (field, body)
        commit = "/api/models/tester/cards/commit/main"
        for content, expected in ((bad["license"], 400), (ok, 200)):
            card = {"path": "README.md", "encoding": "base64", "content": base64.b64encode(content.encode()).decode()}
            payload = _ndjson({"key": "header", "value": {"summary": "Add card"}}, {"key": "file", "value": card})
            status, _, body = _call(hub, "POST", commit, payload, content_type="application/x-ndjson")
            assert status == expected, body
            assert expected == 200 or b"Invalid metadata in README.md" in body
        assert "README.md" in hub.files("tester/cards")
    finally:
        hub.stop()


def test_project_is_linked_only_where_the_package_metadata_names_it(monkeypatch):
    from email.message import Message

    import hf_vit.model_card as model_card

    config = HfViTConfig(**TINY)
    assert model_card.project_url() is None  # the installed package names no home page today: no link at all
    assert "](" not in str(render_model_card(config, num_parameters=1000))
    meta = Message()
    meta["Project-URL"] = "Homepage, https://example.org/hf_vit"
    monkeypatch.setattr(model_card.package_metadata, "metadata", lambda name: meta)
    assert "An [hf_vit](https://example.org/hf_vit) Vision Transformer" in str(
        render_model_card(config, num_parameters=1)
    )


def test_recorded_command_leaves_token_values_out():
    from hf_vit.cli import command_line

    line = command_line("hf-vit-train", ["--output_dir", "my out", "--hub_token", "hf_secret", "--hub_token=hf_x"])
    assert line == "hf-vit-train --output_dir 'my out' --hub_token '***' '--hub_token=***'"
