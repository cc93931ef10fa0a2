import json

import pytest

from hf_vit import PRESETS, HfViTConfig, HfViTForImageClassification, HfViTModel


def test_defaults_are_vit_base():
    config = HfViTConfig()
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (768, 12, 12)
    assert config.layer_norm_eps == 1e-6 and config.pooling == "cls" and config.grid_size == (14, 14)


@pytest.mark.parametrize(
    "name, shape",
    [
        ("vit-tiny-patch16-224", (16, 192, 12, 3, 768)),
        ("vit-small-patch16-224", (16, 384, 12, 6, 1536)),
        ("vit-base-patch16-224", (16, 768, 12, 12, 3072)),
        ("vit-large-patch16-224", (16, 1024, 24, 16, 4096)),
        ("vit-huge-patch14-224", (14, 1280, 32, 16, 5120)),
    ],
)
def test_presets_have_the_papers_shapes(name, shape):
    config = HfViTConfig.from_preset(name)
    got = (
        config.patch_size,
        config.hidden_size,
        config.num_hidden_layers,
        config.num_attention_heads,
        config.intermediate_size,
    )
    assert got == shape and config.image_size == 224


def test_preset_overrides_and_unknown_preset():
    config = HfViTConfig.from_preset("vit-small-patch16-224", num_labels=10, image_size=(224, 160))
    assert config.num_labels == 10 and config.grid_size == (14, 10)
    with pytest.raises(ValueError, match="Unknown preset 'vit-gigantic'.*vit-tiny-patch16-224.*vit-huge-patch14-224"):
        HfViTConfig.from_preset("vit-gigantic")
    assert len(PRESETS) == 5


def test_json_round_trip(tmp_path):
    config = HfViTConfig(
        image_size=(32, 48),
        patch_size=8,
        hidden_size=32,
        num_attention_heads=4,
        num_register_tokens=2,
        layerscale_init=1e-5,
        pooling="mean",
        id2label={0: "a", 1: "b"},
    )
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "hf_vit" and saved["image_size"] == [32, 48]
    reloaded = HfViTConfig.from_pretrained(tmp_path)
    for key in ("image_size", "num_register_tokens", "layerscale_init", "pooling", "id2label", "label2id"):
        assert getattr(reloaded, key) == getattr(config, key), key
    assert reloaded.label2id == {"a": 0, "b": 1}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            dict(hidden_size=100, num_attention_heads=12),
            r"hidden_size \(100\) must be divisible by num_attention_heads \(12\)",
        ),
        (dict(image_size=225), r"image_size 225x225 must be divisible by patch_size 16"),
        (dict(image_size=(224, 200), patch_size=16), r"image_size 224x200 must be divisible by patch_size 16"),
        (dict(image_size=0), r"image_size must be a positive integer"),
        (dict(image_size=(224,)), r"image_size must be a positive integer or a \(height, width\) pair"),
        (dict(patch_size=0), r"patch_size must be a positive integer, got 0"),
        (dict(hidden_size=-8), r"hidden_size must be a positive integer, got -8"),
        (dict(num_hidden_layers=2.5), r"num_hidden_layers must be a positive integer, got 2.5"),
        (dict(num_channels=True), r"num_channels must be a positive integer, got True"),
        (dict(pooling="max"), r"pooling must be one of \('cls', 'mean', 'map'\), got 'max'"),
        (dict(class_token=False), r'pooling="cls" needs class_token=True'),
        (dict(final_norm="all"), r"final_norm must be None or one of"),
        (dict(drop_path_rate=1.0), r"drop_path_rate must be a number in \[0, 1\), got 1.0"),
        (dict(hidden_dropout_prob=-0.1), r"hidden_dropout_prob must be a number in \[0, 1\)"),
        (dict(attention_probs_dropout_prob="0.1"), r"attention_probs_dropout_prob must be a number in \[0, 1\)"),
        (dict(layer_norm_eps=0), r"layer_norm_eps must be a positive number"),
        (dict(layerscale_init=0.0), r"layerscale_init must be None \(off\) or a positive number"),
        (dict(num_register_tokens=-1), r"num_register_tokens must be an integer >= 0"),
        (dict(hidden_act="swishy"), r"hidden_act must be an activation known to transformers"),
        (dict(qkv_bias="yes"), r"qkv_bias must be True or False"),
        (dict(initializer_range=0), r"initializer_range must be a positive number"),
    ],
)
def test_invalid_values_are_refused_with_a_clear_message_when_checked_or_built(kwargs, message):
    config = HfViTConfig(**kwargs)  # transformers' convention: any values at construction
    with pytest.raises(ValueError, match=message):
        config.check_values()
    with pytest.raises(ValueError, match=message):
        HfViTModel(config)


def test_all_problems_reported_at_once():
    with pytest.raises(ValueError) as info:
        HfViTConfig(hidden_size=100, pooling="max").check_values()
    assert "hidden_size (100)" in str(info.value) and "pooling" in str(info.value)


def test_inconsistent_config_constructs_saves_and_reloads(tmp_path):
    # what transformers' ConfigTester does: hidden_size=37 with the default 12 heads
    config = HfViTConfig(hidden_size=37)
    config.save_pretrained(tmp_path)
    reloaded = HfViTConfig.from_pretrained(tmp_path)
    assert reloaded.hidden_size == 37 and reloaded.num_attention_heads == 12
    with pytest.raises(
        ValueError, match=r"Invalid HfViTConfig: hidden_size \(37\) must be divisible by num_attention_heads \(12\)"
    ):
        HfViTForImageClassification(reloaded)
    HfViTConfig().check_values()  # the defaults are consistent
