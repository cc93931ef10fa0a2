#!/usr/bin/env python
"""Measure every conversion against the source library: build random ViT-S/16 sources in each format (no network),
convert them exactly as scripts/convert_checkpoint.py does with --verify, and print a markdown table of max-abs-diff.

  python scripts/dev/interop_table.py            # needs timm and transformers
"""

import argparse
import re
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch


def perturb(model):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model.eval()


def write_npz(model, path, big_vision):
    """A timm ViT in Google's vit_jax (`Transformer/encoderblock_N/...`) or big_vision (`params/...`) .npz layout."""
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    heads, dim = model.blocks[0].attn.num_heads, model.embed_dim
    out = {
        "embedding/kernel": sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0),
        "embedding/bias": sd["patch_embed.proj.bias"],
        "cls": sd["cls_token"],
        ("pos_embedding" if big_vision else "Transformer/posembed_input/pos_embedding"): sd["pos_embed"],
        "Transformer/encoder_norm/scale": sd["norm.weight"],
        "Transformer/encoder_norm/bias": sd["norm.bias"],
        "head/kernel": sd["head.weight"].T,
        "head/bias": sd["head.bias"],
    }
    mha, mlp, ln2 = (0, 0, 1) if big_vision else (1, 3, 2)
    for i in range(len(model.blocks)):
        b, o = f"blocks.{i}.", f"Transformer/encoderblock_{i}/"
        a = f"{o}MultiHeadDotProductAttention_{mha}/"
        for name, w, bias in zip(
            ("query", "key", "value"),
            np.split(sd[b + "attn.qkv.weight"], 3),
            np.split(sd[b + "attn.qkv.bias"], 3),
            strict=True,
        ):
            out[f"{a}{name}/kernel"], out[f"{a}{name}/bias"] = w.T.reshape(dim, heads, -1), bias.reshape(heads, -1)
        out[f"{a}out/kernel"], out[f"{a}out/bias"] = (
            sd[b + "attn.proj.weight"].T.reshape(heads, -1, dim),
            sd[b + "attn.proj.bias"],
        )
        for ln, norm in ((0, "norm1"), (ln2, "norm2")):
            out[f"{o}LayerNorm_{ln}/scale"], out[f"{o}LayerNorm_{ln}/bias"] = (
                sd[b + f"{norm}.weight"],
                sd[b + f"{norm}.bias"],
            )
        for r in range(2):
            out[f"{o}MlpBlock_{mlp}/Dense_{r}/kernel"] = sd[b + f"mlp.fc{r + 1}.weight"].T
            out[f"{o}MlpBlock_{mlp}/Dense_{r}/bias"] = sd[b + f"mlp.fc{r + 1}.bias"]
    np.savez(path, **{("params/" if big_vision else "") + k: v for k, v in out.items()})


def to_v4(key):
    key = re.sub(
        r"layers\.(\d+)\.attention\.([qkv])_proj",
        lambda m: (
            f"encoder.layer.{m.group(1)}.attention.attention." + {"q": "query", "k": "key", "v": "value"}[m.group(2)]
        ),
        key,
    )
    for new, old in (
        ("attention.o_proj", "attention.output.dense"),
        ("mlp.fc1", "intermediate.dense"),
        ("mlp.fc2", "output.dense"),
    ):
        key = re.sub(rf"layers\.(\d+)\.{new}", rf"encoder.layer.\1.{old}", key)
    return re.sub(r"(^|\.)layers\.(\d+)\.", r"\1encoder.layer.\2.", key)


def main(argv=None) -> int:
    argparse.ArgumentParser(description=__doc__).parse_args(argv)
    import timm
    from safetensors.torch import save_file
    from transformers import ViTConfig, ViTForImageClassification

    from hf_vit.convert import convert_checkpoint, export_checkpoint

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)

        def timm_source(name, arch="vit_small_patch16_224", **kwargs):
            torch.manual_seed(0)
            model = perturb(timm.create_model(arch, pretrained=False, num_classes=1000, **kwargs))
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / f"{name}.safetensors"))
            return model

        def convert(label, source, checkpoint, **options):
            result = convert_checkpoint(source, checkpoint, tmp / f"out-{len(rows)}", verify=True, **options)
            rows.append((label, result["conversion"].reference_name, result["max_abs_diff"]))
            return result

        timm_source("timm_token")
        convert(
            "timm `.safetensors`, token pooling (ViT-S/16)",
            "timm",
            tmp / "timm_token.safetensors",
            timm_model="vit_small_patch16_224",
        )
        timm_source("timm_avg", global_pool="avg")
        convert("timm, avg pooling + fc_norm", "timm", tmp / "timm_avg.safetensors", timm_model="vit_small_patch16_224")
        timm_source("timm_reg", reg_tokens=4, no_embed_class=True, init_values=1e-1)
        convert(
            "timm, 4 registers + LayerScale + no_embed_class",
            "timm",
            tmp / "timm_reg.safetensors",
            timm_model="vit_small_patch16_224",
        )

        torch.manual_seed(0)
        dino = perturb(timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0))
        torch.save(
            {
                "teacher": {f"backbone.{k}": v for k, v in dino.state_dict().items()},
                "student": {f"module.backbone.{k}": v for k, v in dino.state_dict().items()},
                "epoch": 1,
            },
            tmp / "dino.pth",
        )
        convert("DINO training checkpoint (teacher, ViT-S/16)", "dino", tmp / "dino.pth")

        torch.manual_seed(0)
        vit = perturb(
            ViTForImageClassification(
                ViTConfig(
                    hidden_size=384,
                    num_hidden_layers=12,
                    num_attention_heads=6,
                    intermediate_size=1536,
                    num_labels=1000,
                )
            )
        )
        for names in ("v5", "v4"):
            folder = tmp / f"vit_{names}"
            vit.config.save_pretrained(folder)
            state_dict = vit.state_dict()
            if names == "v4":
                state_dict = {to_v4(k): v for k, v in state_dict.items()}
            save_file(
                {k: v.contiguous() for k, v in state_dict.items()},
                str(folder / "model.safetensors"),
                metadata={"format": "pt"},
            )
            convert(f"transformers ViT folder, {names} names", "transformers", folder)

        for big_vision in (False, True):
            torch.manual_seed(0)
            jax_model = perturb(timm.create_model("vit_small_patch16_224", pretrained=False, no_embed_class=big_vision))
            write_npz(jax_model, tmp / "vit.npz", big_vision)
            convert(f"Google `.npz`, {'big_vision' if big_vision else 'vit_jax'} layout", "npz", tmp / "vit.npz")

        hf_folder = tmp / "out-0"  # the converted timm ViT-S
        for target in ("timm", "transformers"):
            result = export_checkpoint(target, hf_folder, tmp / f"export-{target}", verify=True)
            rows.append((f"export hf_vit -> {target}", f"{target} (loading the export)", result["max_abs_diff"]))

    print("| format | reference forward | max-abs-diff (fp32, batch 2 at 224x224) |")
    print("|---|---|---|")
    for label, reference, diff in rows:
        print(f"| {label} | {reference} | {diff:.2e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
