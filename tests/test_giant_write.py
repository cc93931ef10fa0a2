"""Writing and sharing large checkpoints: every writer streams memory-mapped weights into shards with an index, at
about 1x the weights in memory, keeping their dtype; the sharded outputs load back in timm and transformers; a push
refuses an index that does not name exactly the shards there are; a frozen backbone trains its head with gradient
checkpointing in bf16 without gradients or optimizer state for the backbone."""

import json
import textwrap

import pytest
import torch
from helpers import REPO, TINY, perturb, run_main, run_python

from hf_vit import HfViTConfig, HfViTForImageClassification

CONVERT = REPO / "scripts" / "convert_checkpoint.py"

# One fresh process: a ~200 MB bf16 hf_vit folder written tensor by tensor, then each writer with its peak resident
# memory (VmHWM, reset before each step through /proc/self/clear_refs) measured above the memory before the step.
WRITERS_AT_1X = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path

    import timm  # noqa: F401 (imported before the steps: their peaks are the writers', not an import's)
    import torch
    from safetensors.torch import save_file
    from transformers import ViTImageProcessor

    from hf_vit import HfViTConfig, HfViTForImageClassification
    from hf_vit.convert import export_safetensors, export_to_timm, export_to_transformers

    work = Path(sys.argv[1])
    config = HfViTConfig(
        image_size=64, patch_size=16, hidden_size=1024, num_hidden_layers=8, num_attention_heads=16,
        intermediate_size=4096, layer_norm_eps=1e-6, num_labels=10,
    )
    source = work / "hf_vit"
    source.mkdir()
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in HfViTForImageClassification(config).state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    weights_bytes = 0
    for part in range(4):  # four shards, each made and written alone
        names = [name for i, name in enumerate(shapes) if i % 4 == part]
        tensors = {n: torch.randn(shapes[n], generator=generator, dtype=torch.bfloat16) for n in names}
        save_file(tensors, str(source / f"model-0000{part + 1}-of-00004.safetensors"), metadata={"format": "pt"})
        weights_bytes += sum(t.numel() * 2 for t in tensors.values())
        del tensors
    index = {"metadata": {"total_size": weights_bytes}, "weight_map": {
        n: f"model-0000{i % 4 + 1}-of-00004.safetensors" for i, n in enumerate(shapes)}}
    (source / "model.safetensors.index.json").write_text(json.dumps(index))
    config.architectures = ["HfViTForImageClassification"]
    config.save_pretrained(source)
    ViTImageProcessor(size={"height": 64, "width": 64}).save_pretrained(source)

    def status(field):
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024

    peaks = {}
    def measured(name, step):
        with open("/proc/self/clear_refs", "w") as handle:  # the peak (VmHWM) starts again from here
            handle.write("5")
        before = status("VmRSS")
        step()
        peaks[name] = (status("VmHWM") - before) / weights_bytes

    shard = "80MB"
    measured("timm", lambda: export_to_timm(source, work / "timm", max_shard_size=shard))
    measured("transformers", lambda: export_to_transformers(source, work / "transformers", max_shard_size=shard))
    measured("export", lambda: export_safetensors(source, work / "export", max_shard_size=shard))
    model = HfViTForImageClassification.from_pretrained(source, dtype=torch.bfloat16)
    measured("save_pretrained", lambda: model.save_pretrained(work / "saved", max_shard_size=shard))
    print(json.dumps({"weights_bytes": weights_bytes, "peaks": peaks}))
    """
)


def _shards_of(folder):
    """The shard files of `folder` and their dtypes, checking that the index names exactly them."""
    from safetensors import safe_open

    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert shards == sorted(p.name for p in folder.glob("*.safetensors")) and len(shards) > 1, (folder, shards)
    dtypes = set()
    for shard in shards:
        with safe_open(str(folder / shard), framework="pt") as handle:
            dtypes |= {handle.get_slice(key).get_dtype() for key in handle.keys()}
    return shards, dtypes


@pytest.mark.slow
def test_every_writer_streams_a_bf16_folder_into_shards_at_about_1x_the_weights(tmp_path):
    result = run_python(["-c", WRITERS_AT_1X, str(tmp_path)])
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert 150e6 < measured["weights_bytes"] < 400e6
    for writer, ratio in measured["peaks"].items():
        assert ratio <= 1.2, (writer, measured["peaks"])
    for name in ("timm", "transformers", "export", "saved"):
        _, dtypes = _shards_of(tmp_path / name)
        assert dtypes == {"BF16"}, (name, dtypes)  # the source's dtype is kept


def test_sharded_exports_load_back_in_timm_and_transformers_with_equal_outputs(tmp_path):
    import timm
    from huggingface_hub import load_torch_model
    from transformers import ViTForImageClassification

    from hf_vit.convert import export_to_timm

    torch.manual_seed(0)
    model = perturb(HfViTForImageClassification(HfViTConfig(**TINY, layer_norm_eps=1e-6, num_labels=3)))
    model.save_pretrained(tmp_path / "hf_vit")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ours = model(x).logits

    result = export_to_timm(tmp_path / "hf_vit", tmp_path / "timm", max_shard_size="30KB", verify=True)
    assert result["max_abs_diff"] <= 1e-5 and any("sharded" in note for note in result["notes"])
    _shards_of(tmp_path / "timm")
    timm_config = json.loads((tmp_path / "timm" / "config.json").read_text())
    reference = timm.create_model(
        timm_config["architecture"], pretrained=False, num_classes=3, **timm_config["model_args"]
    )
    load_torch_model(reference, tmp_path / "timm", strict=True)
    with torch.no_grad():
        assert torch.allclose(reference.eval()(x), ours, atol=1e-5)

    cli = run_main(
        [CONVERT, "--to", "transformers", "--checkpoint", tmp_path / "hf_vit", "--output_dir", tmp_path / "vit"]
        + ["--max_shard_size", "30KB"]
    )
    assert cli.returncode == 0, cli.stderr
    _shards_of(tmp_path / "vit")
    reloaded = ViTForImageClassification.from_pretrained(tmp_path / "vit").eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(x).logits, ours, atol=1e-5)


def test_push_refuses_an_index_that_does_not_name_exactly_the_shards_there_are(tmp_path):
    from transformers import ViTImageProcessor

    from hf_vit.hub import check_folder

    def saved(name):
        folder = tmp_path / name
        HfViTForImageClassification(HfViTConfig(**TINY)).save_pretrained(folder, max_shard_size="30KB")
        ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
        return folder

    files, _ = check_folder(saved("complete"), load=False)
    shards = [f for f in files if f.startswith("model-")]
    assert len(shards) > 1 and "model.safetensors.index.json" in files

    stray = saved("stray")  # a shard of an earlier, larger save left beside the new ones
    (stray / shards[0]).rename(stray / "model-00001-of-00009.safetensors")
    index = json.loads((stray / "model.safetensors.index.json").read_text())
    (stray / shards[0]).write_bytes((stray / "model-00001-of-00009.safetensors").read_bytes())
    with pytest.raises(ValueError, match="model-00001-of-00009.safetensors beside them not in it"):
        check_folder(stray, load=False)

    forgot = saved("forgot")  # an index that lost a shard's entries: the set it names is incomplete
    index = json.loads((forgot / "model.safetensors.index.json").read_text())
    index["weight_map"] = {k: v for k, v in index["weight_map"].items() if v != shards[-1]}
    (forgot / "model.safetensors.index.json").write_text(json.dumps(index))
    (forgot / shards[-1]).unlink()
    with pytest.raises(ValueError, match="an incomplete or mixed set of shards"):
        check_folder(forgot, load=False)


def test_a_frozen_backbone_trains_its_head_with_gradient_checkpointing_in_bf16():
    from hf_vit.training import param_groups

    torch.manual_seed(0)
    model = HfViTForImageClassification(HfViTConfig(**TINY, num_labels=3)).to(torch.bfloat16).train()
    model.vit.requires_grad_(False)
    model.activation_checkpointing_enable({"use_reentrant": False})
    layers = model.vit.encoder.layers
    assert all(layer.gradient_checkpointing for layer in layers)
    calls = []
    for layer in layers:  # transformers' checkpointing function of each block, counted
        checkpointed = layer._gradient_checkpointing_func
        layer._gradient_checkpointing_func = lambda *a, _f=checkpointed, **k: calls.append(1) or _f(*a, **k)
    optimizer = torch.optim.AdamW(param_groups(model, 0.05, 1e-3, None), lr=1e-3)
    loss = model(torch.randn(2, 3, 32, 32, dtype=torch.bfloat16), labels=torch.tensor([0, 2])).loss
    loss.backward()
    optimizer.step()
    assert len(calls) == len(layers)  # every block ran under checkpointing
    assert all(p.grad is None for p in model.vit.parameters())
    assert all(p.grad is not None and p.grad.dtype == torch.bfloat16 for p in model.classifier.parameters())
    trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert trained == {id(p) for p in model.classifier.parameters()}
    assert set(map(id, optimizer.state)) == trained  # no optimizer state for the frozen backbone
