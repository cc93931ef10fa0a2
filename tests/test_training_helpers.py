"""hf_vit.training: AdamW parameter groups and layer-wise LR decay."""

import pytest

from hf_vit import HfViTForImageClassification
from hf_vit.training import param_groups


def test_no_weight_decay_on_norms_biases_positions_cls_registers(tiny_config):
    model = HfViTForImageClassification(tiny_config(num_register_tokens=2, num_labels=3))
    names = {id(p): n for n, p in model.named_parameters()}
    groups = param_groups(model, weight_decay=0.05, learning_rate=1e-3)
    decayed = {names[id(p)] for g in groups if g["weight_decay"] for p in g["params"]}
    undecayed = {names[id(p)] for g in groups if not g["weight_decay"] for p in g["params"]}
    assert decayed | undecayed == set(names.values()) and not decayed & undecayed
    for name in ("vit.embeddings.cls_token", "vit.embeddings.register_tokens", "vit.embeddings.position_embeddings",
                 "vit.layernorm.weight", "vit.encoder.layers.0.norm1.weight", "classifier.bias",
                 "vit.encoder.layers.1.attention.qkv.bias"):
        assert name in undecayed, name
    for name in ("vit.encoder.layers.0.attention.qkv.weight", "vit.embeddings.patch_embeddings.projection.weight",
                 "classifier.weight", "vit.encoder.layers.1.mlp.fc1.weight"):
        assert name in decayed, name


def test_layer_decay_scales_learning_rate_with_depth(tiny_config):
    model = HfViTForImageClassification(tiny_config(num_labels=3))  # 2 layers
    names = {id(p): n for n, p in model.named_parameters()}
    lr = {names[id(p)]: g["lr"] for g in param_groups(model, 0.05, 1.0, layer_decay=0.5) for p in g["params"]}
    assert lr["classifier.weight"] == 1.0 and lr["vit.layernorm.weight"] == 1.0
    assert lr["vit.encoder.layers.1.mlp.fc1.weight"] == 0.5
    assert lr["vit.encoder.layers.0.mlp.fc1.weight"] == 0.25
    assert lr["vit.embeddings.cls_token"] == pytest.approx(0.125)
