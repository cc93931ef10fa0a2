"""hf_vit.evaluation and hf-vit-eval (scripts/eval.py): DINO's weighted k-NN against a re-implementation of its vote,
the few-label draws, the features, and the command on a tiny image folder as users run it."""

import json

import numpy as np
import pytest
import torch
from helpers import TINY, error_line, run_main
from PIL import Image

from hf_vit import HfViTConfig, HfViTModel
from hf_vit import evaluation as ev


def dino_vote(train, train_labels, test, k, temperature):
    """DINO's eval_knn.py rule written out one test image at a time: cosine similarity of L2-normalised features, the
    k most similar training images, each adding exp(similarity / T) to its class; the largest sum wins."""
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    predictions = []
    for row in test:
        similarity = train @ (row / np.linalg.norm(row))
        order = sorted(range(len(similarity)), key=lambda i: -similarity[i])[:k]
        votes = {}
        for i in order:
            votes[int(train_labels[i])] = votes.get(int(train_labels[i]), 0.0) + np.exp(similarity[i] / temperature)
        predictions.append(max(sorted(votes), key=lambda label: votes[label]))
    return np.array(predictions)


def test_knn_is_dinos_weighted_vote():
    generator = np.random.default_rng(0)
    centres = generator.normal(size=(4, 16))
    train_labels = generator.integers(0, 4, size=120)
    train = centres[train_labels] + 1.5 * generator.normal(size=(120, 16))
    test = centres[generator.integers(0, 4, size=50)] + 1.5 * generator.normal(size=(50, 16))
    for k, temperature in [(20, 0.07), (5, 0.5), (1, 0.07), (200, 0.07)]:
        ours = ev.knn_predict(train, train_labels, test, k=k, temperature=temperature, chunk_size=7)
        np.testing.assert_array_equal(ours, dino_vote(train, train_labels, test, k, temperature))
    # L2-normalised: scaling a training feature changes nothing
    scaled = train * generator.uniform(0.1, 10, size=(120, 1))
    np.testing.assert_array_equal(ev.knn_predict(scaled, train_labels, test), ev.knn_predict(train, train_labels, test))
    # weighted, not a majority: one very similar neighbour of class 0 outvotes two less similar ones of class 1
    train = np.array([[1.0, 0.0], [0.5, 0.866], [0.5, -0.866]])
    assert ev.knn_predict(train, [0, 1, 1], np.array([[1.0, 0.05]]), k=3).tolist() == [0]
    assert ev.knn_predict(train, [0, 1, 1], np.array([[1.0, 0.05]]), k=3, temperature=100.0).tolist() == [1]


def test_few_label_draws_have_exactly_n_per_class_and_differ_by_seed():
    labels = np.repeat(np.arange(5), [7, 3, 9, 4, 12])
    draws = [ev.sample_per_class(labels, 3, seed) for seed in range(4)]
    for indices in draws:
        assert len(set(indices.tolist())) == len(indices) == 15
        assert np.bincount(labels[indices], minlength=5).tolist() == [3] * 5
    assert np.array_equal(ev.sample_per_class(labels, 3, 1), draws[1])  # a seed is one draw
    assert len({tuple(d) for d in draws}) == 4
    with pytest.raises(ValueError, match=r"class 'b' has 3 training images, fewer than `labels_per_class` 4"):
        ev.sample_per_class(labels, 4, 0, class_names={0: "a", 1: "b", 2: "c", 3: "d", 4: "e"})
    with pytest.raises(ValueError, match="class 'z' has 0 training images"):  # a class with no training image
        ev.sample_per_class(labels, 1, 0, class_names={**{i: str(i) for i in range(5)}, 5: "z"})


def test_probe_learns_a_linear_rule():
    generator = np.random.default_rng(1)
    features = generator.normal(size=(200, 6))
    labels = (features[:, 0] + features[:, 1] > 0).astype(int)
    assert ev.probe_accuracy(features[:150], labels[:150], features[150:], labels[150:]) >= 0.95
    with pytest.raises(ValueError, match="at least two classes"):
        ev.probe_accuracy(features[:5], np.zeros(5), features, labels)


def test_features_are_the_blocks_outputs_through_the_final_norm():
    model = HfViTModel(HfViTConfig(**{**TINY, "num_hidden_layers": 4})).eval()
    pixels = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        output = model(pixel_values=pixels, output_hidden_states=True)
    norm = model.layernorm
    expected = {
        "pooled": output.pooler_output,
        "cls": output.last_hidden_state[:, 0],
        "mean": output.last_hidden_state[:, 1:].mean(dim=1),
        # DINO's linear evaluation: [CLS] of each of the last 4 blocks through the final norm, then the mean patch
        "last4": torch.cat([norm(h)[:, 0] for h in output.hidden_states[-4:]], dim=-1),
    }
    expected["last4_avgpool"] = torch.cat([expected["last4"], expected["mean"]], dim=-1)
    for kind, value in expected.items():
        torch.testing.assert_close(ev.model_features(model, pixels, kind), value, msg=kind)
    shallow = HfViTModel(HfViTConfig(**TINY)).eval()
    with pytest.raises(ValueError, match="needs at least 4 blocks; this model has 2"):
        ev.model_features(shallow, pixels, "last4")


# --- the command, as users run it ---------------------------------------------------------------------------------
def write_images(folder, per_class, seed):
    """Two classes told apart by brightness (dark and light 12x12 images, with noise)."""
    generator = np.random.default_rng(seed)
    for name, level in (("dark", 60), ("light", 190)):
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(level + generator.normal(0, 40, size=(12, 12, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / name / f"{i}.png")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    write_images(root / "train", 4, seed=0)
    write_images(root / "val", 3, seed=1)
    torch.manual_seed(0)
    model = HfViTModel(HfViTConfig(**{**TINY, "num_hidden_layers": 1}))
    model.save_pretrained(root / "model")  # writes a default ViTImageProcessor at its size
    return root


def evaluate_tool(inputs, out, *extra):
    return run_main(
        ["scripts/eval.py", inputs / "model", "--raw_pixels", "--train_dir", inputs / "train"]
        + ["--validation_dir", inputs / "val", "--k", "3", "--output_dir", out, *extra]
    )


def test_the_command_writes_the_table_json_and_plot(inputs, tmp_path):
    out = tmp_path / "out"
    result = evaluate_tool(inputs, out, "--labels_per_class", "1", "2", "--seeds", "3")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(ev.OUTPUT_FILES)
    report = json.loads((out / "evaluation.json").read_text())
    assert report["data"] == {"name": str(inputs / "train"), "train_images": 8, "eval_images": 6,
                              "eval_split": "validation", "classes": 2}  # fmt: skip
    assert [m["model"] for m in report["models"]] == [ev.RAW_PIXELS, str(inputs / "model")]
    for entry in report["models"]:
        assert sorted(entry["labels_per_class"]) == ["1", "2"]
        for runs in entry["labels_per_class"].values():
            assert len(runs["knn"]["runs"]) == len(runs["probe"]["runs"]) == 3
            assert runs["probe"]["mean"] == pytest.approx(np.mean(runs["probe"]["runs"]))

    # the raw-pixel k-NN figure is DINO's vote on the images' pixels, scored on the validation folder
    def pixels(split):
        files = sorted((inputs / split).glob("*/*.png"))
        labels = [f.parent.name == "light" for f in files]
        return np.stack([np.asarray(Image.open(f), float).ravel() for f in files]), labels

    (train, train_labels), (val, val_labels) = pixels("train"), pixels("val")
    expected = np.mean(dino_vote(train, np.array(train_labels, int), val, 3, 0.07) == np.array(val_labels))
    assert report["models"][0]["knn"] == pytest.approx(expected)
    table = (out / "evaluation.md").read_text()
    assert "| raw pixels | pixels | 432 |" in table and f"| {inputs / 'model'} | pooled | 32 |" in table
    assert "probe, 2/class" in table and table in result.stdout
    assert (out / "evaluation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the files are refused next time, and --overwrite replaces only them
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    refused = evaluate_tool(inputs, out, "--labels_per_class")
    assert "--overwrite" in error_line(refused, "already holds files")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    (out / "notes.txt").write_text("mine")
    assert evaluate_tool(inputs, out, "--labels_per_class", "--overwrite").returncode == 0
    assert (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "evaluation.json").read_text())["models"][0]["labels_per_class"] == {}


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--train_dir", "{root}/missing"], "--train_dir {root}/missing does not exist"),
        (["--labels_per_class", "5"], "class 'dark' has 3 training images, fewer than --labels_per_class 5"),
        (["--model", "{root}/no_model"], "model folder {root}/no_model does not exist"),
        (["--nothing"], "nothing to evaluate: give one or more MODELs, or --raw_pixels"),
        (["--output_dir", "{root}/train"], "--output_dir {root}/train is the input --train_dir"),
    ],
    # too-few-images: 4 per class, one of them held out for validation (no --validation_dir)
    ids=["missing-folder", "too-few-images", "missing-model", "nothing", "output-is-input"],
)
def test_refusals_exit_2_with_one_line_and_write_nothing(inputs, tmp_path, arguments, message):
    args = ["scripts/eval.py", "--raw_pixels", "--train_dir", inputs / "train", "--output_dir", tmp_path / "out"]
    if arguments[0] == "--model":
        args = ["scripts/eval.py", str(arguments[1]).format(root=inputs)] + args[2:]
    elif arguments[0] == "--nothing":
        args = ["scripts/eval.py"] + args[2:]
    else:
        args += [str(a).format(root=inputs) for a in arguments]
    result = run_main(args)
    assert message.format(root=inputs) in error_line(result)
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in (inputs / "train").iterdir()) == ["dark", "light"]


# --- scripts/dev/pretraining_table.py: its pieces (the whole script trains models: run by hand with --quick) ---------
def test_pretraining_table_pieces(tmp_path):
    import importlib.util

    from helpers import REPO

    from hf_vit.data import digits_arrays

    path = REPO / "scripts" / "dev" / "pretraining_table.py"
    spec = importlib.util.spec_from_file_location("pretraining_table", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)

    # the 10-per-class fine-tuning folders: 10 training digits per class from the training split (the draw of
    # `sample_per_class`); the held-out digits, all of them, as the validation folder
    images, labels, train_idx, test_idx = digits_arrays()
    train, validation = script.write_digits_folders(tmp_path, 10, seed=3)
    assert sorted(p.name for p in train.iterdir()) == [str(d) for d in range(10)]
    drawn = sorted(int(p.stem) for p in train.glob("*/*.png"))
    assert drawn == sorted(train_idx[ev.sample_per_class(labels[train_idx], 10, 3)].tolist())
    assert {int(p.stem) for p in validation.glob("*/*.png")} == set(test_idx.tolist())
    for index in (drawn[0], int(test_idx[0])):
        folder = train if index in drawn else validation
        assert np.array_equal(np.asarray(Image.open(folder / str(labels[index]) / f"{index}.png")), images[index])

    run = tmp_path / "run"
    run.mkdir()
    (run / "all_results.json").write_text('{"validation_accuracy": 0.5, "validation_loss": 1.0, "train_steps": 3}')
    assert script.held_out_accuracy(run) == 0.5
    result = ev.ModelResult("m", "pooled", 4, 0.9, 0.8, {1: {"probe": [0.5, 0.7]}, 10: {"probe": [0.9, 0.9]}})
    table = script.features_table(ev.Evaluation({}, {}, [result]), [1, 10])
    assert table.splitlines()[-1] == "| m | 90.0 % | 60.0 ± 10.0 % | 90.0 ± 0.0 % | 80.0 % |"


def test_hf_vit_evaluate_is_the_library_call():
    import hf_vit

    with pytest.raises(ValueError, match="nothing to evaluate: give `models` or `raw_pixels`"):
        hf_vit.evaluate()
    with pytest.raises(ValueError, match="`names` must name each of the 2 models, got 1 names"):
        hf_vit.evaluate(["a", "b"], names=["a"])
    with pytest.raises(ValueError, match="`feature` must be one of pooled, cls, mean, last4, last4_avgpool"):
        hf_vit.evaluate(raw_pixels=True, feature="avg")
