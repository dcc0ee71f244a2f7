"""A checkpoint's tokenizer straight from its ``tokenizer.json``, through the ``tokenizers`` library.

``transformers.AutoTokenizer`` runs the same Rust tokenizer (its "fast" tokenizers are this library),
but importing transformers also imports torch: about 2 s before the first text is encoded, in
every process that encodes text (``nnjax predict`` on a text classifier, every text run).
:class:`FastTokenizer` does what nnjax asks of a tokenizer (ids with the special tokens,
truncated, unpadded; ``model_max_length``; ``save_pretrained``), and the padded batches scripts
ask for, with ``tokenizers`` alone.
:func:`from_folder` takes BERT WordPiece tokenizers (the encoders nnjax loads) and returns None
where ``tokenizer.json`` is missing, is another family, or has a normaliser that disagrees with
``tokenizer_config.json`` (transformers rebuilds the normaliser then); the caller falls back to
transformers. A FastTokenizer sets truncation and padding per call: share one between threads
only with a lock (transformers' fast tokenizers behave the same).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: Files of a Hugging Face tokenizer folder that ``save_pretrained`` carries over, when present.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")

#: tokenizer_config.json keys and the BertNormalizer fields they set in transformers.
_BERT_NORMALIZER_KEYS = {"do_lower_case": "lowercase", "strip_accents": "strip_accents",
                         "tokenize_chinese_chars": "handle_chinese_chars"}

#: transformers' "no limit" model_max_length (a very large int) and anything above it means none.
_NO_LIMIT = 10**12


class FastTokenizer:
    """``tokenizers.Tokenizer`` of a folder, called like a transformers tokenizer.

    Calls take the transformers arguments nnjax and most scripts use: ``truncation``, ``max_length``,
    ``padding`` (False, True / ``"longest"``, ``"max_length"``), ``return_attention_mask``,
    ``return_token_type_ids`` and ``return_tensors`` (None or ``"np"``).

    Attributes:
      folder: where ``tokenizer.json`` came from (``save_pretrained`` copies its files).
      model_max_length: the longest input the model accepts, from ``tokenizer_config.json``
        (None when it declares none).
      pad_token: the padding token (``[PAD]`` for BERT vocabularies).
    """

    def __init__(self, folder: Path, tokenizer: Any, model_max_length: int | None, pad_token: str):
        self.folder = folder
        self._tokenizer = tokenizer
        self.model_max_length = model_max_length
        self.pad_token = pad_token
        self._pad_id = tokenizer.token_to_id(pad_token)

    def __call__(self, texts: str | Sequence[str], *, truncation: bool = False, max_length: int | None = None,
                 padding: bool | str = False, return_attention_mask: bool = True,
                 return_token_type_ids: bool = True, return_tensors: str | None = None) -> dict[str, Any]:
        """``{"input_ids", "token_type_ids", "attention_mask"}`` per text, special tokens added.

        ``truncation``: cut to ``max_length`` tokens, special tokens included (as transformers counts
        them). ``padding``: to the longest text (True / ``"longest"``) or to ``max_length``.
        ``return_tensors="np"``: int64 ``[N, L]`` arrays (needs padding); else lists of ids.
        """
        single = isinstance(texts, str)
        batch = [texts] if single else list(texts)
        if padding not in (False, True, "longest", "max_length", "do_not_pad"):
            raise ValueError(f"padding must be False, True, 'longest' or 'max_length', got {padding!r}")
        if return_tensors not in (None, "np"):
            raise ValueError(f"return_tensors must be None or 'np' (a JAX-side tokenizer), got {return_tensors!r}")
        if (truncation or padding == "max_length") and max_length is None:
            raise ValueError("truncation and padding='max_length' need max_length")
        if truncation:
            self._tokenizer.enable_truncation(int(max_length), stride=0, strategy="longest_first", direction="right")
        else:
            self._tokenizer.no_truncation()
        if padding in (True, "longest", "max_length"):
            self._tokenizer.enable_padding(pad_id=self._pad_id, pad_token=self.pad_token,
                                           length=int(max_length) if padding == "max_length" else None)
        else:
            self._tokenizer.no_padding()
        encodings = self._tokenizer.encode_batch(batch, add_special_tokens=True)
        fields = {"input_ids": [e.ids for e in encodings]}
        if return_token_type_ids:
            fields["token_type_ids"] = [e.type_ids for e in encodings]
        if return_attention_mask:
            fields["attention_mask"] = [e.attention_mask for e in encodings]
        if return_tensors == "np":
            if len({len(ids) for ids in fields["input_ids"]}) > 1:
                raise ValueError("texts of different lengths need padding=True for return_tensors='np'")
            return {k: np.asarray(v, np.int64) for k, v in fields.items()}
        return {k: v[0] for k, v in fields.items()} if single else fields

    def save_pretrained(self, folder: str | Path) -> None:
        """Copy the tokenizer files into ``folder`` (created), loadable by this class and by transformers."""
        target = Path(folder)
        target.mkdir(parents=True, exist_ok=True)
        for name in TOKENIZER_FILES:
            if (self.folder / name).is_file():
                shutil.copyfile(self.folder / name, target / name)


def _readable_without_transformers(spec: dict[str, Any], config: dict[str, Any]) -> bool:
    """Whether this is a BERT WordPiece tokenizer (the vocabularies of the BERT / DistilBERT encoders
    nnjax loads) whose normaliser transformers keeps as it is: it rebuilds a BertNormalizer whose
    settings differ from ``tokenizer_config.json``'s. Other families (whose transformers classes
    adjust more at load time) go to transformers."""
    normalizer = spec.get("normalizer") or {}
    if normalizer.get("type") != "BertNormalizer" or (spec.get("model") or {}).get("type") != "WordPiece":
        return False
    return all(normalizer.get(field) == config[key] for key, field in _BERT_NORMALIZER_KEYS.items() if key in config)


def from_folder(folder: str | Path) -> FastTokenizer | None:
    """The folder's tokenizer without transformers, or None when transformers must load it."""
    folder = Path(folder)
    spec_file, config_file = folder / "tokenizer.json", folder / "tokenizer_config.json"
    if not spec_file.is_file():
        return None
    try:
        text = spec_file.read_text(encoding="utf-8")
        spec = json.loads(text)
        config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    except (OSError, ValueError):
        return None  # transformers gives the error its own words
    if not isinstance(spec, dict) or not isinstance(config, dict) or not _readable_without_transformers(spec, config):
        return None
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_str(text)
    except Exception:  # noqa: BLE001 -- a tokenizer.json this library cannot read: transformers decides
        return None
    pad_token = config.get("pad_token") or (spec.get("padding") or {}).get("pad_token") or "[PAD]"
    if not isinstance(pad_token, str) or tokenizer.token_to_id(pad_token) is None:
        return None  # no padding token this library can name: transformers decides
    limit = config.get("model_max_length")
    limit = int(limit) if isinstance(limit, (int, float)) and not isinstance(limit, bool) and 0 < limit < _NO_LIMIT \
        else None
    return FastTokenizer(folder, tokenizer, limit, pad_token)
