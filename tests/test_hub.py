"""Hub sharing against the Hub-protocol server in tests/hub_server.py (127.0.0.1, ephemeral port).

Every Hub client call runs in a subprocess with HF_ENDPOINT pointing at the server (huggingface_hub reads it at import
time), HF_HOME in a temp dir and HF_TOKEN the server's token: the real huggingface_hub / transformers clients,
unchanged. The server itself is checked in-process with urllib.
"""

import base64
import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
from helpers import REPO, TINY, run_python
from hub_server import TOKEN, blob_id
from transformers import ViTImageProcessor

from hf_vit import HfViTBackbone, HfViTConfig, HfViTForImageClassification
from hf_vit.cli import add_hub_arguments, check_hub_arguments
from hf_vit.hub import check_card, check_folder, check_repo_id, prepare_folder
from hf_vit.model_card import render_model_card, write_model_card
from hf_vit.stats import count_parameters

REPO_ID = "tester/vit-digits"
LABELS = {0: "cat", 1: "dog", 2: "fish"}
CLIENT_SITE = Path(__file__).resolve().parent / "hub_client_site"
PROXY_VARS = {"http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"}


def run_client(args, hub, hf_home, offline=False, timeout=300):
    """`python args...` (a list) or `python -c code` (a str) as a Hub client of `hub`.

    tests/hub_client_site/sitecustomize.py runs first in it: any connection to a host other than 127.0.0.1 fails and
    fails the test, and hf_xet cannot be imported. Its code can import the tests' helpers and
    tests/hub_client_site/hub_publish.py (`commit`, `perturb`) to publish source repos.
    """
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS and not k.startswith("HF_")}
    env.update(
        HF_ENDPOINT=hub.url,
        HF_HOME=str(hf_home),
        HF_TOKEN=TOKEN,
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        PYTHONUNBUFFERED="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        PYTHONPATH=os.pathsep.join(
            [str(CLIENT_SITE), str(REPO / "tests"), str(REPO), env.get("PYTHONPATH", "")]
        ).rstrip(os.pathsep),
    )
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    result = run_python(args if isinstance(args, str) else list(map(str, args)), env=env, cwd=hf_home, timeout=timeout)
    assert "NON-LOOPBACK NETWORK ACCESS" not in result.stderr, result.stderr[-3000:]
    return result


def push_cli(hub, hf_home, folder, *options):
    return run_client([REPO / "scripts" / "push_to_hub.py", folder, *options], hub, hf_home)


def save_checkpoint(folder, seed, card=True, **save_kwargs):
    torch.manual_seed(seed)
    model = HfViTForImageClassification(HfViTConfig(**TINY, id2label=LABELS, num_register_tokens=1)).eval()
    model.save_pretrained(folder, **save_kwargs)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    if card:
        write_model_card(
            folder,
            render_model_card(
                model.config,
                num_parameters=count_parameters(model),
                model_name=f"vit-seed{seed}",
                repo_id=REPO_ID,
                datasets=["sklearn-digits"],
                dataset_name="sklearn-digits",
                results={"accuracy": 0.875, "loss": 0.41},
                hyperparameters={"learning_rate": 0.001, "epochs": 3, "batch_size": 16},
            ),
        )
    return model


@pytest.fixture(scope="module")
def published(hub, tmp_path_factory):
    """Model A pushed to main with the CLI; model B (sharded) pushed to a new branch "v2"; reference outputs."""
    work = tmp_path_factory.mktemp("published")
    model_a = save_checkpoint(work / "a", seed=1)
    model_b = save_checkpoint(work / "b", seed=2, max_shard_size="20KB")
    (work / "a" / "training_log.txt").write_text("not for the Hub")  # stays local: the upload is an allow-list
    push_a = push_cli(hub, work, work / "a", "--repo_id", REPO_ID, "--commit_message", "Add model A")
    assert push_a.returncode == 0, push_a.stderr[-3000:]
    push_b = push_cli(hub, work, work / "b", "--repo_id", REPO_ID, "--revision", "v2")
    assert push_b.returncode == 0, push_b.stderr[-3000:]
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.save(x, work / "x.pt")
    with torch.no_grad():
        reference = {"a": model_a(x).logits, "a_pooled": model_a.vit(x).pooler_output, "b": model_b(x).logits}
        # the classifier's encoder as a backbone (stages 1 and 2: both blocks), as AutoBackbone loads it from the repo
        backbone = HfViTBackbone.from_pretrained(work / "a", out_indices=[1, 2]).eval()
        reference["a_backbone"] = backbone(x).feature_maps
    return dict(
        work=work,
        push_a=push_a,
        push_b=push_b,
        x=x,
        reference=reference,
        sha_b=hub.head(REPO_ID, "v2"),
        sha_a=hub.head(REPO_ID, "main"),
    )


# ---- pushing -------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_push_uploads_the_checkpoint_in_one_commit_and_prints_its_url(hub, published):
    work, sha_a = published["work"], published["sha_a"]
    assert f"{hub.url}/{REPO_ID}/commit/{sha_a}" in published["push_a"].stdout
    assert hub.history(REPO_ID) == ["Add model A", "initial commit"]
    files = hub.files(REPO_ID)
    assert set(files) == {
        ".gitattributes",
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "configuration_hf_vit.py",
        "modeling_hf_vit.py",
        "README.md",
    }
    for name in set(files) - {".gitattributes"}:
        assert files[name] == (work / "a" / name).read_bytes(), name
    assert (
        json.loads(files["config.json"])["auto_map"]["AutoModelForImageClassification"]
        == "modeling_hf_vit.HfViTForImageClassification"
    )
    # the branch: B's shards + index replace A's single file in one commit on top of main
    history = hub.history(REPO_ID, "v2")
    assert history[1:] == ["Add model A", "initial commit"] and history[0].startswith("Upload hf_vit model (")
    v2 = hub.files(REPO_ID, "v2")
    assert "model.safetensors" not in v2 and "model.safetensors.index.json" in v2
    assert sorted(f for f in v2 if f.startswith("model-")) == sorted(
        p.name for p in (work / "b").glob("model-*.safetensors")
    )
    assert f"/commit/{published['sha_b']}" in published["push_b"].stdout


@pytest.mark.slow
def test_pushed_card_metadata(hub, published):
    from huggingface_hub import ModelCard

    card = ModelCard(hub.files(REPO_ID)["README.md"].decode())
    data = card.data.to_dict()
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "image-classification"
    assert {"vision", "vit", "hf_vit"} <= set(data["tags"]) and data["datasets"] == ["sklearn-digits"]
    result = data["model-index"][0]["results"][0]
    assert result["task"]["type"] == "image-classification" and result["dataset"]["name"] == "sklearn-digits"
    assert {m["type"]: m["value"] for m in result["metrics"]} == {"accuracy": 0.875}  # the loss: in the text only
    text = card.text
    assert "| learning_rate | 0.001 |" in text and "| loss | 0.4100 |" in text
    assert "KFLOPs per image" in text and "8×8" in text
    assert "trust_remote_code=True" in text and "import hf_vit" in text and REPO_ID in text
    # the Hub's own check accepted it before the upload: validate-yaml was called for this commit
    assert ("POST", "/api/validate-yaml") in hub.requests


# ---- pulling -------------------------------------------------------------------------------------------------------

PULL = r"""
import json, sys
mode, repo, sha, work = sys.argv[1:5]
if mode == "remote_code":
    sys.modules["hf_vit"] = None  # `import hf_vit` fails in this process
    try:
        import hf_vit
    except ImportError:
        pass
    else:
        raise SystemExit("hf_vit is importable")
else:
    import hf_vit
import numpy as np, torch
from PIL import Image
from transformers import AutoBackbone, AutoImageProcessor, AutoModel, AutoModelForImageClassification, pipeline
kw = {"trust_remote_code": True} if mode == "remote_code" else {}
x = torch.load(work + "/x.pt")
out = {}
with torch.no_grad():
    model = AutoModelForImageClassification.from_pretrained(repo, **kw).eval()
    out["a"] = model(x).logits
    out["a_pooled"] = AutoModel.from_pretrained(repo, **kw).eval()(x).pooler_output
    if sys.argv[5] == "online":  # transformers 5.24's AutoBackbone asks the Hub (repo_exists) before any cache
        out["a_backbone"] = AutoBackbone.from_pretrained(repo, out_indices=[1, 2], **kw).eval()(x).feature_maps
    out["b"] = AutoModelForImageClassification.from_pretrained(repo, revision="v2", **kw).eval()(x).logits
    out["sha"] = AutoModelForImageClassification.from_pretrained(repo, revision=sha, **kw).eval()(x).logits
processor = AutoImageProcessor.from_pretrained(repo)
image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8))
out["processed"] = processor(images=image, return_tensors="pt")["pixel_values"]
classify = pipeline("image-classification", model=repo, **kw)
predictions = classify(image, top_k=3)
with torch.no_grad():
    out["image"] = model(out["processed"]).logits
torch.save(out, f"{work}/pulled-{mode}-{sys.argv[5]}.pt")
print(json.dumps({"guarded": "hf_xet" in sys.modules and sys.modules["hf_xet"] is None,
                  "module": type(model).__module__, "class": type(model).__name__,
                  "processor": type(processor).__name__, "labels": [p["label"] for p in predictions]}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["hf_vit", "remote_code"])
def test_pull_both_ways_pinned_revisions_then_offline(hub, published, mode, tmp_path):
    """(a) hf_vit installed, no trust_remote_code; (b) hf_vit not importable, trust_remote_code=True.

    main gives A; the branch "v2" and B's commit id give B; then HF_HUB_OFFLINE=1 loads it all from the cache.
    """
    work, reference = published["work"], published["reference"]
    for run in ("online", "offline"):
        before = len(hub.requests)
        result = run_client(
            ["-c", PULL, mode, REPO_ID, published["sha_b"], work, run], hub, tmp_path, offline=run == "offline"
        )
        assert result.returncode == 0, result.stderr[-4000:]
        info = json.loads(result.stdout.strip().splitlines()[-1])
        assert info["guarded"]  # the loopback-only / no-hf_xet start-up code ran in the client
        if run == "offline":
            assert len(hub.requests) == before, hub.requests[before:]  # not a single request
        else:
            assert any(path.startswith(f"/{REPO_ID}/resolve/") for _, path in hub.requests[before:])
        if mode == "hf_vit":
            assert info["module"] == "hf_vit.modeling_hf_vit"
        else:
            assert info["module"].startswith("transformers_modules.")
        assert info["class"] == "HfViTForImageClassification" and info["processor"].startswith("ViTImageProcessor")
        assert set(info["labels"]) == set(LABELS.values())
        pulled = torch.load(work / f"pulled-{mode}-{run}.pt")
        for key in ("a", "a_pooled", "b", "a_backbone") if run == "online" else ("a", "a_pooled", "b"):
            torch.testing.assert_close(pulled[key], reference[key], rtol=0, atol=0)
        torch.testing.assert_close(pulled["sha"], reference["b"], rtol=0, atol=0)
        assert not torch.equal(pulled["a"], pulled["b"])
        assert pulled["processed"].shape == (1, 3, 32, 32)


# ---- faults --------------------------------------------------------------------------------------------------------

TRAIN_STUB = r"""
import argparse, sys
from hf_vit.cli import add_hub_arguments, check_hub_arguments, push_from_arguments, run_command, setup_logging
setup_logging()
parser = argparse.ArgumentParser()
parser.add_argument("--output_dir", required=True)
add_hub_arguments(parser)
args = parser.parse_args()
def body():
    check_hub_arguments(args)
    # ... a training run or a conversion writes model, image processor and card to args.output_dir ...
    push_from_arguments(args, args.output_dir, commit_message="Training run", extra_files=["training_curves.png"])
sys.exit(run_command(body))
"""


@pytest.mark.slow
def test_failed_commit_leaves_no_partial_commit_and_a_retry_succeeds(hub, tmp_path):
    """A script's --push_to_hub meets two 500s (the commit and the automatic retry): nothing lands. Run again, it
    meets one 500, checks that the branch did not move, and retries by itself. The CLI then finds nothing to commit."""
    repo_id = "tester/faulty"
    save_checkpoint(tmp_path / "ckpt", seed=3)
    (tmp_path / "ckpt" / "training_curves.png").write_bytes(b"\x89PNG not really")
    commits = lambda: sorted((hub.store.path(repo_id) / "commits").iterdir())  # noqa: E731
    hub.fail_commits(2)
    failed = run_client(
        [
            "-c",
            TRAIN_STUB,
            "--output_dir",
            tmp_path / "ckpt",
            "--push_to_hub",
            "--hub_model_id",
            repo_id,
            "--hub_private_repo",
        ],
        hub,
        tmp_path,
    )
    assert failed.returncode == 1 and "500" in failed.stderr
    assert failed.stderr.strip().count("\n") == 0 and failed.stderr.startswith("error: push to tester/faulty failed")
    assert hub.store.meta(repo_id)["private"]
    assert hub.history(repo_id) == ["initial commit"] and set(hub.files(repo_id)) == {".gitattributes"}
    assert len(commits()) == 1  # nothing half-applied behind the ref either
    hub.fail_commits(1)
    retried = run_client(
        ["-c", TRAIN_STUB, "--output_dir", tmp_path / "ckpt", "--push_to_hub", "--hub_model_id", repo_id], hub, tmp_path
    )
    assert retried.returncode == 0, retried.stderr[-3000:]
    assert (
        "nothing was committed, retrying" in retried.stdout
        and f"/{repo_id}/commit/{hub.head(repo_id)}" in retried.stdout
    )
    assert hub.history(repo_id) == ["Training run", "initial commit"] and len(commits()) == 2
    files = hub.files(repo_id)
    assert files["model.safetensors"] == (tmp_path / "ckpt" / "model.safetensors").read_bytes()
    assert files["training_curves.png"] == b"\x89PNG not really"
    # the same folder again: nothing changed, so no new commit (the server reports the files' blob ids at preupload)
    again = push_cli(hub, tmp_path, tmp_path / "ckpt", "--repo_id", repo_id)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(hub.history(repo_id)) == 2 and f"/commit/{hub.head(repo_id)}" in again.stdout


CUT = r"""
import json, sys
from pathlib import Path
import torch
import hf_vit
from transformers import AutoModelForImageClassification
repo, work, home = sys.argv[1:4]
cache = Path(home) / "hub" / ("models--" + repo.replace("/", "--"))
x = torch.load(work + "/x.pt")
report = {}
try:  # GET 1 is cut mid-file; the client resumes with a Range request, GET 2, which gets a 500
    AutoModelForImageClassification.from_pretrained(repo)
except Exception as err:
    report["error"] = type(err).__name__
report["after_failure"] = sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file())
with torch.no_grad():  # the retry: GET 3 is served whole
    retry = AutoModelForImageClassification.from_pretrained(repo).eval()(x).logits
    # another cache: GET 4 is cut mid-file, the client resumes with a Range request (GET 5) and completes the file
    resumed = AutoModelForImageClassification.from_pretrained(repo, cache_dir=home + "/other").eval()(x).logits
torch.save({"retry": retry, "resumed": resumed}, home + "/cut.pt")
report["other_blobs"] = sorted(p.name for p in (Path(home) / "other").rglob("blobs/*"))
print(json.dumps(report))
"""


@pytest.mark.slow
def test_cut_download_leaves_no_corrupt_file_and_a_retry_succeeds(hub, published, tmp_path):
    weights = hub.files(REPO_ID)["model.safetensors"]
    hub.download_faults("model.safetensors", "drop", "fail", None, "drop")
    try:
        before = len(hub.requests)
        result = run_client(["-c", CUT, REPO_ID, published["work"], tmp_path], hub, tmp_path)
    finally:
        hub.clear_faults()
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report.get("error"), report
    # the cut file is nowhere in the cache: no blob, no snapshot link, no leftover .incomplete
    leftovers = report["after_failure"]
    assert not any(
        "model.safetensors" in f or f.endswith(".incomplete") or f.endswith(blob_id(weights)) for f in leftovers
    ), leftovers
    assert any(f.endswith("config.json") for f in leftovers)  # what did download is cached
    out = torch.load(tmp_path / "cut.pt")
    torch.testing.assert_close(out["retry"], published["reference"]["a"], rtol=0, atol=0)
    torch.testing.assert_close(out["resumed"], published["reference"]["a"], rtol=0, atol=0)
    assert blob_id(weights) in report["other_blobs"]
    gets = [p for m, p in hub.requests[before:] if m == "GET" and p.endswith("/model.safetensors")]
    assert len(gets) == 5, gets


# ---- user errors fail before any upload ----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("case", ["bad_repo_id", "missing_folder", "no_weights"])
def test_cli_user_errors_fail_before_any_request(hub, tmp_path, case):
    folder, repo_id = tmp_path / "ckpt", "tester/ok-name"
    if case == "bad_repo_id":
        save_checkpoint(folder, seed=4, card=False)
        repo_id, expected = "tester/bad name!", "invalid repo id 'tester/bad name!'"
    elif case == "missing_folder":
        expected = f"folder {folder} does not exist"
    else:
        save_checkpoint(folder, seed=4, card=False)
        (folder / "model.safetensors").unlink()
        expected = "has no weights: expected model.safetensors or model.safetensors.index.json"
    before = len(hub.requests)
    result = push_cli(hub, tmp_path, folder, "--repo_id", repo_id)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and result.stderr.strip().count("\n") == 0, result.stderr
    assert expected in result.stderr
    assert hub.requests[before:] == []


def test_check_folder_finds_what_is_missing_or_broken(tmp_path, tiny_config):
    def fresh(name, **save_kwargs):
        folder = tmp_path / name
        save_checkpoint(folder, seed=5, card=False, **save_kwargs)
        return folder

    files, parameters = check_folder(fresh("ok"))
    assert (
        files
        == [
            "config.json",
            "model.safetensors",
            "preprocessor_config.json",
            "configuration_hf_vit.py",
            "modeling_hf_vit.py",
        ]
        and parameters > 0
    )

    cases = {}
    folder = fresh("half_written")  # a weights file cut short, as a killed save would leave it
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    cases[folder] = "the model does not load"
    folder = fresh("no_processor")
    (folder / "preprocessor_config.json").unlink()
    cases[folder] = "has no preprocessor_config.json"
    folder = fresh("no_code")
    (folder / "modeling_hf_vit.py").unlink()
    cases[folder] = "is missing modeling_hf_vit.py"
    folder = fresh("no_auto_map")
    config = json.loads((folder / "config.json").read_text())
    del config["auto_map"]
    (folder / "config.json").write_text(json.dumps(config))
    cases[folder] = "has no auto_map"
    folder = fresh("wrong_shape")
    config = json.loads((folder / "config.json").read_text())
    config["hidden_size"], config["num_attention_heads"] = 48, 4
    (folder / "config.json").write_text(json.dumps(config))
    cases[folder] = "the model does not load|do not match the config"
    folder = fresh("missing_shard", max_shard_size="20KB")
    next(folder.glob("model-*.safetensors")).unlink()
    cases[folder] = "missing weight shard"
    folder = fresh("pickle_only")
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    cases[folder] = "safetensors only"
    folder = fresh("bad_card")
    (folder / "README.md").write_text(
        "---\nlibrary_name: transformers\nmodel-index:\n- name: x\n  results:\n  - metrics: 3\n---\n"
    )
    cases[folder] = "invalid metadata"
    folder = fresh("not_hf_vit")
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "vit"
    (folder / "config.json").write_text(json.dumps(config))
    cases[folder] = "expected 'hf_vit'"
    for folder, message in cases.items():
        with pytest.raises(ValueError, match=message):
            check_folder(folder)

    with pytest.raises(ValueError, match="NAMESPACE/NAME"):
        check_repo_id("just-a-name")
    with pytest.raises(ValueError, match="invalid repo id"):
        check_repo_id("me/two--dashes")


FOREIGN_CODE = {
    "config naming another repo's code": ("config.json", {"AutoModel": "other/repo--modeling_hf_vit.HfViTModel"}),
    "config naming a file of its own": ("config.json", {"AutoModel": "evil.EvilModel"}),
    "processor with an auto_map": ("preprocessor_config.json", {"AutoImageProcessor": "other/repo--evil.Evil"}),
}


@pytest.mark.parametrize("case", FOREIGN_CODE)
def test_push_refuses_a_folder_whose_configs_name_code_that_is_not_hf_vits(case, tmp_path):
    """Whoever loads a pushed repo with trust_remote_code runs what its auto_map names: only hf_vit's two files."""
    name, auto_map = FOREIGN_CODE[case]
    folder = tmp_path / "ckpt"
    save_checkpoint(folder, seed=5, card=False)
    (folder / "evil.py").write_text("raise SystemExit('ran')\n")
    settings = json.loads((folder / name).read_text())
    settings["auto_map"] = {**settings.get("auto_map", {}), **auto_map}
    (folder / name).write_text(json.dumps(settings))
    with pytest.raises(ValueError, match="auto_map"):
        check_folder(folder, load=False)


def test_prepare_folder_writes_a_card_when_there_is_none(tmp_path):
    folder = tmp_path / "ckpt"
    save_checkpoint(folder, seed=6, card=False)
    files = prepare_folder(folder, "me/ckpt")
    assert files[-1] == "README.md"
    text = (folder / "README.md").read_text()
    check_card(text)
    assert "# ckpt" in text and 'model="me/ckpt"' in text and "model-index" not in text
    assert sorted(p.name for p in folder.iterdir()) == sorted(files)  # nothing else written


def test_conversion_card_names_its_source(tmp_path):
    config = HfViTConfig(**TINY)
    card = render_model_card(
        config,
        num_parameters=12345,
        model_name="vit-small-from-timm",
        repo_id="me/vit-small",
        source="timm vit_small_patch16_224.augreg_in21k",
        base_model="timm/vit_small_patch16_224.augreg_in21k",
    )
    check_card(str(card))
    assert card.data.to_dict()["base_model"] == "timm/vit_small_patch16_224.augreg_in21k"
    assert "converted from timm vit_small_patch16_224.augreg_in21k" in card.text and "## Source" in card.text


def test_script_flags(tmp_path):
    import argparse

    parser = argparse.ArgumentParser()
    add_hub_arguments(parser)
    args = parser.parse_args([])
    assert (args.push_to_hub, args.hub_model_id, args.hub_private_repo, args.hub_revision) == (False, None, False, None)
    check_hub_arguments(args)  # nothing to check without --push_to_hub
    with pytest.raises(ValueError, match="--push_to_hub needs --hub_model_id"):
        check_hub_arguments(parser.parse_args(["--push_to_hub"]))
    with pytest.raises(ValueError, match="invalid repo id"):
        check_hub_arguments(parser.parse_args(["--push_to_hub", "--hub_model_id", "a/b/c"]))
    with pytest.raises(ValueError, match="invalid branch name"):
        check_hub_arguments(
            parser.parse_args(["--push_to_hub", "--hub_model_id", "me/x", "--hub_revision", "refs/pr/1"])
        )
    args = parser.parse_args(
        ["--push_to_hub", "--hub_model_id", "me/x", "--hub_private_repo", "--hub_revision", "exp-1"]
    )
    check_hub_arguments(args)
    assert args.hub_private_repo and args.hub_revision == "exp-1"


# ---- the server rejects what the Hub rejects -----------------------------------------------------------------------

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only, whatever the proxy settings


def _call(hub, method, path, body=None, token=TOKEN, content_type="application/json", headers=None):
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(hub.url + path, data=data, method=method, headers=headers or {})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", content_type)
    try:
        with _DIRECT.open(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def _ndjson(*items):
    return b"".join(json.dumps(item).encode() + b"\n" for item in items)


def test_server_rejects_what_the_hub_rejects(hub):
    repo_id = "tester/strict"
    assert _call(hub, "POST", "/api/repos/create", {"name": "strict"}, token=None)[0] == 401
    assert _call(hub, "POST", "/api/repos/create", {"name": "strict"})[0] == 200
    assert _call(hub, "POST", "/api/repos/create", {"name": "strict"})[0] == 409
    assert _call(hub, "POST", "/api/repos/create", {"name": "bad name"})[0] == 400
    head = hub.head(repo_id)

    status, headers, _ = _call(hub, "HEAD", "/tester/nope/resolve/main/config.json")
    assert status == 404 and headers["X-Error-Code"] == "RepoNotFound"
    status, headers, _ = _call(hub, "HEAD", f"/{repo_id}/resolve/nope/config.json")
    assert status == 404 and headers["X-Error-Code"] == "RevisionNotFound"
    status, headers, _ = _call(hub, "HEAD", f"/{repo_id}/resolve/main/config.json")
    assert status == 404 and headers["X-Error-Code"] == "EntryNotFound" and headers["X-Repo-Commit"] == head
    status, headers, body = _call(
        hub, "GET", f"/{repo_id}/resolve/{head}/.gitattributes", headers={"Range": "bytes=5-"}
    )
    assert (
        status == 206
        and headers["X-Repo-Commit"] == head
        and headers["ETag"].strip('"') == blob_id(hub.files(repo_id)[".gitattributes"])
    )
    assert body == hub.files(repo_id)[".gitattributes"][5:]
    assert _call(hub, "GET", f"/api/models/{repo_id}/revision/{'0' * 40}")[0] == 404

    header = {"key": "header", "value": {"summary": "add a file"}}
    good = {
        "key": "file",
        "value": {"path": "a.txt", "encoding": "base64", "content": base64.b64encode(b"hi").decode()},
    }
    commit = f"/api/models/{repo_id}/commit/main"
    malformed = {
        "no token": (_ndjson(header, good), None, 401),
        "not NDJSON": (b"{not json\n", TOKEN, 400),
        "no header": (_ndjson(good), TOKEN, 400),
        "empty summary": (_ndjson({"key": "header", "value": {"summary": ""}}, good), TOKEN, 400),
        "bad base64": (
            _ndjson(header, {"key": "file", "value": {"path": "a.txt", "encoding": "base64", "content": "@@"}}),
            TOKEN,
            400,
        ),
        "path escapes": (_ndjson(header, {**good, "value": {**good["value"], "path": "../a.txt"}}), TOKEN, 400),
        "LFS never uploaded": (
            _ndjson(
                header, {"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256", "oid": "0" * 64, "size": 3}}
            ),
            TOKEN,
            422,
        ),
        "delete a missing file": (_ndjson(header, {"key": "deletedFile", "value": {"path": "nope.txt"}}), TOKEN, 404),
        "stale parent": (
            _ndjson({"key": "header", "value": {"summary": "x", "parentCommit": "1" * 40}}, good),
            TOKEN,
            412,
        ),
        "empty commit": (_ndjson(header), TOKEN, 400),
    }
    for name, (body, token, expected) in malformed.items():
        status = _call(hub, "POST", commit, body, token=token, content_type="application/x-ndjson")[0]
        assert status == expected, name
    assert (
        _call(
            hub,
            "POST",
            f"/api/models/{repo_id}/commit/nope",
            _ndjson(header, good),
            content_type="application/x-ndjson",
        )[0]
        == 404
    )
    assert (
        _call(
            hub,
            "POST",
            f"/api/models/{repo_id}/commit/{head}",
            _ndjson(header, good),
            content_type="application/x-ndjson",
        )[0]
        == 400
    )
    assert hub.head(repo_id) == head and hub.history(repo_id) == ["initial commit"]  # none of it landed

    status, _, body = _call(hub, "POST", commit, _ndjson(header, good), content_type="application/x-ndjson")
    assert status == 200 and json.loads(body)["commitOid"] == hub.head(repo_id) != head
    assert _call(hub, "POST", f"/api/models/{repo_id}/branch/dev", {})[0] == 200
    assert _call(hub, "POST", f"/api/models/{repo_id}/branch/dev", {})[0] == 409
    assert _call(hub, "POST", f"/api/models/{repo_id}/branch/refs%2Fpr%2F1", {})[0] == 400
    status, _, body = _call(hub, "GET", f"/api/models/{repo_id}/tree/dev")
    assert status == 200 and {e["path"] for e in json.loads(body)} == {".gitattributes", "a.txt"}

    ok = render_model_card(
        HfViTConfig(**TINY), num_parameters=1000, model_name="m", results={"accuracy": 0.5}, datasets=["d"]
    )
    assert _call(hub, "POST", "/api/validate-yaml", {"content": str(ok), "repoType": "model"})[0] == 200
    bad_license = str(ok).replace("license: apache-2.0", "license: my-own")
    status, _, body = _call(hub, "POST", "/api/validate-yaml", {"content": bad_license, "repoType": "model"})
    assert status == 400 and "license" in json.loads(body)["errors"][0]["message"]

    assert _call(hub, "POST", "/api/repos/create", {"name": "secret", "visibility": "private"})[0] == 200
    assert _call(hub, "GET", "/api/models/tester/secret")[0] == 200
    status, headers, _ = _call(hub, "HEAD", "/tester/secret/resolve/main/.gitattributes", token=None)
    assert status == 401 and headers["X-Error-Code"] == "RepoNotFound"


# ---- --push_to_hub in the scripts ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_convert_checkpoint_push_to_hub(hub, tmp_path):
    """scripts/convert_checkpoint.py --push_to_hub: the converted folder (card naming the source) lands as one
    commit."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    source = timm.create_model("vit_small_patch16_224", pretrained=False, depth=1, num_classes=3, img_size=32)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "w.safetensors"))
    convert = [
        REPO / "scripts" / "convert_checkpoint.py",
        "--source",
        "timm",
        "--checkpoint",
        tmp_path / "w.safetensors",
        "--timm_model",
        "vit_small_patch16_224",
        "--output_dir",
        tmp_path / "out",
    ]
    bad = run_client([*convert, "--push_to_hub", "--hub_model_id", "no-namespace"], hub, tmp_path)
    assert bad.returncode == 2 and "NAMESPACE/NAME" in bad.stderr and not (tmp_path / "out").exists()
    pushed = run_client([*convert, "--push_to_hub", "--hub_model_id", "tester/converted"], hub, tmp_path)
    assert pushed.returncode == 0, pushed.stderr[-3000:]
    assert f"/tester/converted/commit/{hub.head('tester/converted')}" in pushed.stdout
    files = hub.files("tester/converted")
    assert files["model.safetensors"] == (tmp_path / "out" / "model.safetensors").read_bytes()
    assert b"converted from timm" in files["README.md"] and "preprocessor_config.json" in files


def test_convert_push_to_hub_checks_the_token_before_converting(hub, tmp_path, monkeypatch):
    """hf-vit-convert --push_to_hub without a token, or with one the Hub rejects: exit 2 before anything is converted
    or written (as hf-vit-train does). In this process, huggingface_hub pointed at the loopback Hub."""
    import huggingface_hub.constants as constants
    from helpers import error_line, run_main
    from transformers import ViTConfig, ViTModel

    ViTModel(ViTConfig(**TINY)).save_pretrained(tmp_path / "vit")
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "token"))  # no stored token either
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "stored_tokens"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    convert = ["scripts/convert_checkpoint.py", "--checkpoint", tmp_path / "vit", "--output_dir", tmp_path / "out"]
    convert += ["--push_to_hub", "--hub_model_id", "tester/converted-no-token"]
    error_line(
        run_main(convert), "no Hugging Face token: pushing to tester/converted-no-token needs one with write access"
    )
    monkeypatch.setenv("HF_TOKEN", "hf_not_the_servers_token")
    error_line(run_main(convert), "the Hub rejected the Hugging Face token")
    assert not (tmp_path / "out").exists() and not hub.store.exists("tester/converted-no-token")


@pytest.mark.slow
def test_train_and_trainer_scripts_push_to_hub(hub, tmp_path):
    """scripts/train.py and scripts/finetune_trainer.py --push_to_hub: the final folder, curves included, in one commit;
    a bad repo id fails before any training."""
    quick = ["--max_train_steps", "2", "--max_train_samples", "64", "--max_eval_samples", "32"]
    bad = run_client(
        [
            REPO / "scripts" / "train.py",
            *quick,
            "--no_progress",
            "--output_dir",
            tmp_path / "bad",
            "--push_to_hub",
            "--hub_model_id",
            "a/b/c",
        ],
        hub,
        tmp_path,
    )
    assert bad.returncode == 2 and "a/b/c" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "bad").exists()

    trained = run_client(
        [
            REPO / "scripts" / "train.py",
            *quick,
            "--no_progress",
            "--output_dir",
            tmp_path / "run",
            "--push_to_hub",
            "--hub_model_id",
            "tester/digits-train",
        ],
        hub,
        tmp_path,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert f"/tester/digits-train/commit/{hub.head('tester/digits-train')}" in trained.stdout
    files = hub.files("tester/digits-train")
    assert {
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "README.md",
        "modeling_hf_vit.py",
        "configuration_hf_vit.py",
        "training_curves.png",
        "all_results.json",
    } <= set(files)
    assert files["model.safetensors"] == (tmp_path / "run" / "model.safetensors").read_bytes()
    assert b'model="tester/digits-train"' in files["README.md"]  # the card's usage names the Hub repo

    tuned = run_client(
        [
            REPO / "scripts" / "finetune_trainer.py",
            "--model_name_or_path",
            tmp_path / "run",
            *quick[2:],
            "--max_steps",
            "2",
            "--disable_tqdm",
            "true",
            "--output_dir",
            tmp_path / "tuned",
            "--push_to_hub",
            "--hub_model_id",
            "tester/digits-trainer",
        ],
        hub,
        tmp_path,
    )
    assert tuned.returncode == 0, tuned.stderr[-3000:]
    assert "pushed" in tuned.stdout and "tester/digits-trainer" in tuned.stdout
    assert (
        hub.files("tester/digits-trainer")["model.safetensors"]
        == (tmp_path / "tuned" / "model.safetensors").read_bytes()
    )
