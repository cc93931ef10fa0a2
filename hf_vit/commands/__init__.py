"""The command-line tools, each a `main(argv=None) -> int` behind a console entry point (`pyproject.toml`) and a
one-line shim in `scripts/` (so `accelerate launch scripts/train.py` keeps working):

| entry point | module | script |
|---|---|---|
| `hf-vit-train` | `hf_vit.commands.train` | `scripts/train.py` |
| `hf-vit-finetune` | `hf_vit.commands.finetune` | `scripts/finetune_trainer.py` |
| `hf-vit-predict` | `hf_vit.commands.predict` | `scripts/predict.py` |
| `hf-vit-attention` | `hf_vit.commands.attention` | `scripts/visualize_attention.py` |
| `hf-vit-features` | `hf_vit.commands.features` | `scripts/visualize_features.py` |
| `hf-vit-convert` | `hf_vit.commands.convert` | `scripts/convert_checkpoint.py` |
| `hf-vit-export` | `hf_vit.commands.export` | `scripts/export_safetensors.py` |
| `hf-vit-push` | `hf_vit.commands.push` | `scripts/push_to_hub.py` |
| `hf-vit-benchmark` | `hf_vit.commands.benchmark` | `scripts/benchmark.py` |
| `hf-vit-pretrain` | `hf_vit.commands.pretrain` | `scripts/pretrain.py` |
| `hf-vit-eval` | `hf_vit.commands.eval` | `scripts/eval.py` |

The exit convention and the shared flags are in `hf_vit.cli` (the training flags made from `hf_vit.fit.FitSettings`
by `add_settings`); `train_flags` holds hf-vit-train's parser and its checks, `pictures` the output folder of the two
picture tools.
"""
