"""transformers' own common model tests (`ModelTesterMixin`, `ConfigTester`) run against hf_vit.

The mixins come from the source distribution of the *installed* transformers release (its top-level `tests/*.py`),
fetched from PyPI with pip on first use and kept in pytest's cache, so they always match the library they test.
The sdist lacks three modules that the mixins import from sub-folders of transformers' repository; this file
supplies them (`ExportTesterMixin` and `GenerationTesterMixin` as empty mixins, so transformers' export and
generate tests are not run here: hf_vit's exports are tested in tests/test_export.py; `config_common_kwargs` as
the common `PreTrainedConfig` arguments below). Point HF_VIT_TRANSFORMERS_TESTS at an unpacked transformers
source tree to run offline.

The verdict is relative: each mixin test runs for hf_vit, and where it fails it runs for
transformers' ViT with the same tester; hf_vit must pass every test that ViT passes.
"""

import importlib
import os
import subprocess
import sys
import tarfile
import tempfile
import unittest
from pathlib import Path

import pytest
import torch
import transformers

PACKAGE = "transformers_release_tests"
# the mixins mark tests with transformers' own pytest marks (flash_attn_test, torch_compile_test, ...)
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnknownMarkWarning")

# What tests/exporters/test_export.py, tests/generation/test_utils.py and tests/utils/test_configuration_utils.py
# provide in transformers' repository (written here, not copied).
STAND_INS = {
    "exporters/test_export.py": "class ExportTesterMixin:\n    pass\n",
    "generation/test_utils.py": "class GenerationTesterMixin:\n    pass\n",
    "utils/test_configuration_utils.py": (
        "# non-default values of the arguments every PreTrainedConfig takes\n"
        "config_common_kwargs = {\n"
        "    'return_dict': False,\n"
        "    'output_hidden_states': True,\n"
        "    'dtype': 'float16',\n"
        "    'chunk_size_feed_forward': 5,\n"
        "    'id2label': {0: 'first', 1: 'second', 2: 'third'},\n"
        "    'label2id': {'first': 0, 'second': 1, 'third': 2},\n"
        "    'problem_type': 'regression',\n"
        "}\n"
    ),
}


def _transformers_tests_root(cache_dir: Path) -> Path:
    """A folder holding transformers' `tests/` for the installed version: HF_VIT_TRANSFORMERS_TESTS, or the sdist
    downloaded once with pip into the cache."""
    given = os.environ.get("HF_VIT_TRANSFORMERS_TESTS")
    if given:
        root = Path(given)
        if not (root / "tests" / "test_modeling_common.py").is_file():
            pytest.fail(f"HF_VIT_TRANSFORMERS_TESTS={given} has no tests/test_modeling_common.py")
        return root
    version = transformers.__version__
    root = cache_dir / f"transformers-{version}"
    if (root / "tests" / "test_modeling_common.py").is_file():
        return root
    with tempfile.TemporaryDirectory(dir=cache_dir) as download:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            f"transformers=={version}",
            "--no-deps",
            "--no-binary",
            ":all:",
            "-d",
            download,
            "--retries",  # bounded: a network that drops packets must not hold the suite for pip's default minutes
            "1",
            "--timeout",
            "30",
        ]
        # without build isolation pip reads the sdist's metadata with the installed setuptools (seconds, not a
        # minute); if that is missing or too old, the isolated build it falls back to works too
        for extra in (["--no-build-isolation"], []):
            result = subprocess.run(command + extra, capture_output=True, text=True, timeout=600)
            archives = list(Path(download).glob("transformers-*.tar.gz"))
            if result.returncode == 0 and archives:
                break
        if result.returncode != 0 or not archives:
            pytest.skip(
                f"cannot fetch transformers {version}'s source distribution from PyPI "
                f"({' '.join(command[1:6])}): {result.stderr.strip().splitlines()[-1:]}; set "
                "HF_VIT_TRANSFORMERS_TESTS to an unpacked transformers source tree to run these tests"
            )
        unpacked = Path(download) / "unpacked"
        with tarfile.open(archives[0]) as archive:
            members = [m for m in archive.getmembers() if m.name.split("/")[1:2] == ["tests"] and m.isfile()]
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            archive.extractall(unpacked, members=members, **safe)
        os.replace(next(unpacked.iterdir()), root)  # atomic: a half-unpacked tree is never found
    return root


@pytest.fixture(scope="module")
def mixins(request, tmp_path_factory):
    """The `test_modeling_common` and `test_configuration_common` modules, importable as a package."""
    cache = getattr(request.config, "cache", None)  # None under `-p no:cacheprovider`: then a fresh folder
    cache_dir = Path(
        cache.mkdir("hf_vit-transformers-tests") if cache else tmp_path_factory.mktemp("transformers-tests")
    )
    source = _transformers_tests_root(cache_dir) / "tests"
    package = cache_dir / f"package-{transformers.__version__}"
    target = package / PACKAGE
    if not (target / "test_modeling_common.py").is_file():
        with tempfile.TemporaryDirectory(dir=cache_dir) as building:
            built = Path(building) / PACKAGE
            built.mkdir()
            for name in ("test_modeling_common.py", "test_configuration_common.py"):
                (built / name).write_text((source / name).read_text())
            (built / "__init__.py").write_text("")
            for relative, text in STAND_INS.items():
                path = built / relative
                path.parent.mkdir(exist_ok=True)
                (path.parent / "__init__.py").write_text("")
                path.write_text(text)
            package.mkdir(exist_ok=True)
            os.replace(built, target)
    sys.path.insert(0, str(package))
    try:
        yield (
            importlib.import_module(f"{PACKAGE}.test_modeling_common"),
            importlib.import_module(f"{PACKAGE}.test_configuration_common"),
        )
    finally:
        sys.path.remove(str(package))


@pytest.fixture(scope="module")
def hf_vit_in_name_tables():
    """The mixins pick labels and skips by class name from transformers' name tables: add hf_vit's for this run."""
    from transformers.models.auto import modeling_auto

    tables = [
        (modeling_auto.MODEL_MAPPING_NAMES, "HfViTModel"),
        (modeling_auto.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES, "HfViTForImageClassification"),
        (modeling_auto.MODEL_FOR_MASKED_IMAGE_MODELING_MAPPING_NAMES, "HfViTForMaskedImageModeling"),
    ]
    for table, name in tables:
        table["hf_vit"] = name
    try:
        yield
    finally:
        for table, _ in tables:
            table.pop("hf_vit", None)


class ViTShapedModelTester:
    """A model tester like that of transformers' `tests/models/vit/test_modeling_vit.py` (which the sdist lacks), for
    either library; smaller inputs (4 images of 16x16 in 4x4 patches) keep the ~160 tests fast on a CPU."""

    def __init__(
        self,
        parent,
        config_class,
        batch_size=4,
        image_size=16,
        patch_size=4,
        num_channels=3,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        type_sequence_label_size=10,
        config_overrides=None,
    ):
        self.parent, self.config_class = parent, config_class
        self.config_overrides = dict(config_overrides or {})
        self.batch_size, self.image_size, self.patch_size, self.num_channels = (
            batch_size,
            image_size,
            patch_size,
            num_channels,
        )
        self.hidden_size, self.num_hidden_layers, self.num_attention_heads = (
            hidden_size,
            num_hidden_layers,
            num_attention_heads,
        )
        self.intermediate_size, self.type_sequence_label_size = intermediate_size, type_sequence_label_size
        self.is_training = True
        # the prefix tokens ([CLS], distillation token, registers) that hf_vit's options put before the patches
        num_prefix_tokens = config_class(**self.config_overrides).num_prefix_tokens if self.config_overrides else 1
        self.seq_length = (image_size // patch_size) ** 2 + num_prefix_tokens
        # as transformers' ViT tester: the eager-vs-SDPA tests mask num_masks of the mask_length patches
        self.mask_length = (image_size // patch_size) ** 2
        self.num_masks = int(0.5 * self.seq_length)

    def get_config(self):
        return self.config_class(
            image_size=self.image_size,
            patch_size=self.patch_size,
            num_channels=self.num_channels,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            intermediate_size=self.intermediate_size,
            hidden_act="gelu",
            hidden_dropout_prob=0.1,
            attention_probs_dropout_prob=0.1,
            initializer_range=0.02,
            num_labels=self.type_sequence_label_size,
            encoder_stride=self.patch_size,  # the masked-image-modeling head reconstructs the input's size
            **self.config_overrides,
        )

    def prepare_config_and_inputs_for_common(self):
        pixel_values = torch.rand(self.batch_size, self.num_channels, self.image_size, self.image_size)
        return self.get_config(), {"pixel_values": pixel_values}


# hf_vit's rotary-position options all on (DINOv3 / EVA-02 style): RoPE without a learned position table, query/key
# norms, SwiGLU with its inner LayerNorm, LayerScale and DINOv3's train-time RoPE augmentations
ROPE_OPTIONS = dict(
    rope_type="dinov3",
    absolute_position_embeddings=False,
    qk_norm=True,
    mlp_type="swiglu_norm",
    layerscale_init=0.5,
    rope_rescale=2.0,
)


def _test_classes(mixins, hf_vit_overrides=None):
    test_modeling_common, test_configuration_common = mixins
    from transformers import ViTConfig, ViTForImageClassification, ViTForMaskedImageModeling, ViTModel

    from hf_vit import HfViTConfig, HfViTForImageClassification, HfViTForMaskedImageModeling, HfViTModel

    def make(config_class, model_classes, overrides=None):
        class CommonTest(test_modeling_common.ModelTesterMixin, unittest.TestCase):
            all_model_classes = model_classes
            test_resize_embeddings = False  # as transformers' ViT test: images have no token embeddings

            def setUp(self):
                self.model_tester = ViTShapedModelTester(self, config_class, config_overrides=overrides)
                self.config_tester = test_configuration_common.ConfigTester(
                    self, config_class=config_class, has_text_modality=False, hidden_size=37
                )

            def test_config(self):
                self.config_tester.run_common_tests()

            def test_model_get_set_embeddings(self):  # as transformers' ViT test: the input "embeddings" are patches
                config, _ = self.model_tester.prepare_config_and_inputs_for_common()
                for model_class in self.all_model_classes:
                    model = model_class(config)
                    self.assertIsInstance(model.get_input_embeddings(), torch.nn.Module)
                    output_embeddings = model.get_output_embeddings()
                    self.assertTrue(output_embeddings is None or isinstance(output_embeddings, torch.nn.Linear))

            @unittest.skip("images have no inputs_embeds (as in transformers' ViT test)")
            def test_inputs_embeds(self):
                pass

            @unittest.skip("images have no inputs_embeds (as in transformers' ViT test)")
            def test_inputs_embeds_matches_input_ids(self):
                pass

        CommonTest.__name__ = f"{config_class.__name__}CommonTest"
        return CommonTest

    hf_vit_classes = (HfViTModel, HfViTForImageClassification, HfViTForMaskedImageModeling)
    return make(HfViTConfig, hf_vit_classes, hf_vit_overrides), make(
        ViTConfig, (ViTModel, ViTForImageClassification, ViTForMaskedImageModeling)
    )


def _outcome(test_class, name):
    result = unittest.TestResult()
    torch.manual_seed(0)
    test_class(name).run(result)
    for _, reason in result.skipped:
        return "skipped", reason
    for _, text in result.errors + result.failures:
        return "failed", text
    for _ in result.expectedFailures:
        return "failed", "expected failure"
    return "passed", ""


# the options of the pretrained families: a distillation token and a register after [CLS], attention pooling (MAP),
# a pre-norm (the final norm on the pooled feature only is left out: masked image modeling would not use that norm)
FAMILY_OPTIONS = dict(distillation_token=True, num_register_tokens=1, pooling="map", pre_norm=True)


@pytest.mark.slow
@pytest.mark.parametrize(
    "options", [None, ROPE_OPTIONS, FAMILY_OPTIONS], ids=["plain", "rope-options", "family-options"]
)
def test_transformers_common_tests_pass_for_hf_vit_wherever_they_pass_for_vit(mixins, hf_vit_in_name_tables, options):
    hf_vit_test, vit_test = _test_classes(mixins, options)
    names = unittest.TestLoader().getTestCaseNames(hf_vit_test)
    assert "test_config" in names and "test_can_init_all_missing_weights" in names and len(names) > 50
    counts, regressions = {"passed": 0, "skipped": 0, "failed where ViT fails": 0}, []
    for name in names:
        outcome, detail = _outcome(hf_vit_test, name)
        if outcome == "failed":
            vit_outcome, _ = _outcome(vit_test, name)
            if vit_outcome == "passed":
                regressions.append(f"{name}:\n{detail}")
                continue
            outcome = "failed where ViT fails"
        counts[outcome] += 1
    print(f"transformers {transformers.__version__} common tests on hf_vit ({options or 'plain'}): {counts}")
    assert not regressions, f"{len(regressions)} tests pass for transformers' ViT but fail for hf_vit:\n" + "\n".join(
        regressions
    )
    assert counts["passed"] > 40, counts
