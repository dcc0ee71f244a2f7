"""The backbone contract: a pretrained network cut at named layer boundaries, and its presets.

A :class:`Backbone` holds a Flax module whose layer **groups** run in order (``groups``;
boundary ``i`` is the input of group ``i``), its pretrained variables, its preprocessing (image
size and normalisation, or a tokenizer) and where its weights came from. Every group's
parameters live under ``backbone/<group>/`` inside a transfer model, so "fine-tune the top k"
is an index into ``groups``, not a regex per model. The module contract is
``module.apply(variables, x, train=False, start=i, stop=j)``: groups ``[i, j)``, ``stop=None``
meaning "to the end, pooled to ``[B, feature_size]``".

Batches at a boundary are dicts of arrays:

======================  ===============================  ==================================
boundary                images                           texts
======================  ===============================  ==================================
0 (raw input)           ``image`` uint8 ``[B, S, S, 3]``  ``input_ids``, ``attention_mask``
``0 < k < n``           ``activations`` ``[B, h, w, c]``  ``hidden`` ``[B, T, H]``, mask
``n`` (all groups)      ``features`` ``[B, F]``           ``features`` ``[B, H]``
======================  ===============================  ==================================

Presets: :func:`image_backbone` (``mobilenet_v2`` with torchvision or Keras ImageNet weights,
any alpha the converter supports; ``efficientnet_lite0``) and :func:`text_backbone` (the
offline MiniLM, any Hugging Face folder, a hub id when online).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Sequence
from typing import Any

from nnjax.errors import NnjaxError

IMAGE_BACKBONES = ("mobilenet_v2", "efficientnet_lite0")


@dataclasses.dataclass(frozen=True)
class Backbone:
    """A pretrained network under the backbone contract (see the module docstring).

    Attributes:
      name: preset name (``"mobilenet_v2"``, ``"efficientnet_lite0"``, a text checkpoint's name).
      kind: ``"image"`` or ``"text"``.
      module: the Flax module (``apply(variables, x, train, start, stop)``).
      variables: pretrained ``{"params": ..., "batch_stats": ...}`` of ``module``.
      groups: layer groups in order.
      feature_size: F, the pooled feature width.
      spec: JSON description that rebuilds ``module`` without weights (``build_module(spec)``).
      source: provenance: ``name``, ``sha256`` of the weight file, ``origin``.
      preprocess: images: RGB in [0, 255] -> model input (a ``Preprocessing``); None for text.
      image_size: images are resized to ``image_size`` x ``image_size``.
      tokenizer: texts: the checkpoint's tokenizer; ``max_length`` its truncation length.
      head: texts: the checkpoint's head layout (``HeadConfig`` fields such as ``hidden_name``) and
        ``head_params`` its pretrained head parameters, when it has some.
      train_dropout: whether trainable groups run in training mode (dropout; texts). Image
        backbones keep BatchNorm in inference mode even when their top groups train.
    """

    name: str
    kind: str
    module: Any
    variables: dict
    groups: tuple[str, ...]
    feature_size: int
    spec: dict
    source: dict
    preprocess: Any = None
    image_size: int = 224
    tokenizer: Any = None
    max_length: int = 0
    head: dict = dataclasses.field(default_factory=dict)
    head_params: dict | None = None
    train_dropout: bool = False
    report: dict = dataclasses.field(default_factory=dict)

    @property
    def depth(self) -> int:
        """n, the number of groups (the boundary of pooled features)."""
        return len(self.groups)

    def group_pattern(self, group: str | int) -> str:
        """Regex of one group's parameter paths inside a transfer model."""
        name = self.groups[group] if isinstance(group, int) else group
        if name not in self.groups:
            raise NnjaxError(f"{self.name} has no layer group {name!r}; its groups are {', '.join(self.groups)}.")
        return rf"backbone/{re.escape(name)}/.*"

    def trainable_patterns(self, train: str, top_k: int = 1) -> list[str]:
        """Regexes of what trains: ``"head"``, ``"top-k"`` (the head and the last ``top_k`` groups),
        ``"all"``, or any other string taken as a regex over parameter paths (the head included
        only if it matches)."""
        if train == "head":
            return [r"head/.*"]
        if train == "top-k":
            if not 1 <= top_k <= self.depth:
                raise NnjaxError(f"--top-k {top_k} is outside 1..{self.depth}, the layer groups of {self.name} "
                                 f"({self.groups[0]} ... {self.groups[-1]}).")
            return [r"head/.*", *(self.group_pattern(g) for g in self.groups[self.depth - top_k:])]
        if train == "all":
            return [r".*"]
        try:
            re.compile(train)
        except re.error as err:
            raise NnjaxError(f"The training pattern {train!r} is not a regular expression ({err}).") from None
        return [train]

    def first_trainable_group(self, params: dict, mask: Any) -> int:
        """The smallest group index with a trainable parameter (``depth`` when only the head trains)."""
        import jax

        from nnjax.train.freeze import leaf_paths

        paths = leaf_paths(params)
        flags = jax.tree_util.tree_leaves(mask)
        trained = {p for p, f in zip(paths, flags, strict=True) if f}
        for index, group in enumerate(self.groups):
            prefix = f"backbone/{group}/"
            if any(p.startswith(prefix) for p in trained):
                return index
        return self.depth

    def model_input(self, batch: dict, start: int) -> Any:
        """What the module takes at boundary ``start`` from a batch dict (see the module docstring)."""
        if start >= self.depth:
            return batch["features"]
        if self.kind == "image":
            return self.preprocess(batch["image"]) if start == 0 else batch["activations"]
        if start == 0:
            return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        return {"hidden": batch["hidden"], "attention_mask": batch["attention_mask"]}

    def boundary_batch(self, output: Any, stop: int | None) -> dict:
        """The module's output at ``stop`` (None: pooled) as a batch dict (see the module docstring)."""
        if stop is None:
            return {"features": output}
        if self.kind == "image":
            return {"activations": output}
        return {"hidden": output["hidden"], "attention_mask": output["attention_mask"]}

    def describe(self) -> dict[str, Any]:
        """JSON provenance for summaries and exports."""
        return {"name": self.name, "kind": self.kind, "groups": len(self.groups), "feature_size": self.feature_size,
                **{k: v for k, v in self.source.items() if k != "folder"}}


# --------------------------------------------------------------------------- modules from specs


def build_module(spec: dict) -> tuple[Any, tuple[str, ...], int]:
    """``(module, groups, feature_size)`` from a backbone's JSON ``spec`` (no weights)."""
    family = spec.get("family")
    if family == "mobilenet_v2":
        from nnjax.models.mobilenet_v2 import MobileNetV2, architecture, group_names

        alpha, origin = float(spec["alpha"]), str(spec["origin"])
        module = MobileNetV2(alpha=alpha, include_top=False, pooling="avg", origin=origin)
        return module, group_names(alpha, origin), architecture(alpha, origin)[2]
    if family == "efficientnet_lite":
        from nnjax.models import efficientnet_lite

        variant = str(spec.get("variant", "lite0"))
        module = efficientnet_lite.EfficientNetLite(variant=variant, include_top=False)
        return module, efficientnet_lite.group_names(variant), efficientnet_lite.FEATURES
    if family == "bert_encoder":
        from nnjax.models.bert import EncoderConfig, TextEncoder, group_names

        config = EncoderConfig.from_dict(spec["encoder"])
        return TextEncoder(config, pooling=spec["pooling"]), group_names(config.num_layers), config.hidden_size
    raise NnjaxError(f"Unknown backbone family {family!r} in the classifier's meta; export it again.")


def image_preprocessing(spec: dict):
    """An image backbone's input preprocessing from its ``spec["preprocessing"]`` (name, mean, std)."""
    from nnjax.models.mobilenet_weights import Preprocessing

    return Preprocessing(spec["preprocessing"]["name"], tuple(spec["preprocessing"]["mean"]),
                         tuple(spec["preprocessing"]["std"]))


# --------------------------------------------------------------------------- presets


def image_backbone(name: str = "mobilenet_v2", *, weights: str = "torchvision", alpha: float = 1.0,
                   image_size: int = 224) -> Backbone:
    """An ImageNet image backbone with its pretrained weights (verified by sha256).

    ``mobilenet_v2``: ``weights`` ``"torchvision"`` (offline package, alpha 1.0) or ``"keras"``
    (downloaded and pinned, any Keras alpha); ``efficientnet_lite0``: the offline PyTorch weights.
    """
    if name == "mobilenet_v2":
        from nnjax.models.mobilenet_weights import pretrained

        loaded = pretrained(weights, include_top=False, **({"alpha": alpha} if weights == "keras" else {}))
        p = loaded.preprocessing
        spec = {"family": "mobilenet_v2", "alpha": loaded.alpha, "origin": loaded.origin,
                "preprocessing": {"name": p.name, "mean": list(p.mean), "std": list(p.std)}}
        source = {"name": f"mobilenet_v2 ({loaded.origin}, alpha {loaded.alpha:g})", "origin": loaded.origin,
                  "file": str(loaded.source), "sha256": loaded.sha256}
        variables = loaded.backbone_variables()
        report = loaded.report.summary() if getattr(loaded, "report", None) is not None else {}
    elif name == "efficientnet_lite0":
        from nnjax.models import efficientnet_lite, efficientnet_lite_weights

        path = efficientnet_lite_weights.efficientnet_lite0_file()
        from nnjax.weights.torch_pickle import load_torch_state_dict

        variables = efficientnet_lite_weights.torch_to_variables(load_torch_state_dict(path), include_top=False)
        p = efficientnet_lite.PREPROCESSING
        spec = {"family": "efficientnet_lite", "variant": "lite0",
                "preprocessing": {"name": p.name, "mean": list(p.mean), "std": list(p.std)}}
        source = {"name": "efficientnet_lite0 (ImageNet, PyTorch port)", "origin": "efficientnet-lite-pytorch",
                  "file": str(path), "sha256": efficientnet_lite_weights.SHA256}
        report = {"source": source["name"], "loaded": "every tensor, shapes checked (torch_to_variables)"}
    else:
        raise NnjaxError(f"Unknown image backbone {name!r}; choose one of {', '.join(IMAGE_BACKBONES)}.")
    module, groups, features = build_module(spec)
    return Backbone(name=name, kind="image", module=module, variables=variables, groups=groups,
                    feature_size=features, spec=spec, source=source, preprocess=image_preprocessing(spec),
                    image_size=int(image_size), report=report)


@functools.cache
def resolve_text_source(spec: str) -> Any:
    """The checkpoint ``spec`` names (see :func:`nnjax.models.hf_checkpoint.resolve_source`), resolved once per
    process: a run's fingerprint and its training must see the same one, and a hub look-up is slow."""
    from nnjax.models.hf_checkpoint import resolve_source

    return resolve_source(spec)


def resolve_text_head(head: str, pooling: str, model_type: str) -> str:
    """``auto``: the architecture's own head, except that BERT's pooler (trained on [CLS]) is replaced
    by DistilBERT's fresh pre_classifier when the pooled vector is a token mean."""
    if head != "auto":
        return head
    return "distilbert" if model_type == "distilbert" or pooling == "mean" else "bert"


def text_backbone(model: str = "minilm", *, num_labels: int = 2, head: str = "auto", pooling: str = "auto",
                  seed: int = 0, source: Any = None) -> Backbone:
    """A pretrained BERT-family encoder (``model``: ``minilm``, ``auto``, a folder or a hub id; see
    :func:`nnjax.models.hf_checkpoint.resolve_source`) with its tokenizer and its own head layout.

    ``head``: ``"distilbert"`` (pre_classifier -> ReLU), ``"bert"`` (the checkpoint's pooler -> tanh) or
    ``"auto"`` (:func:`resolve_text_head`). ``source``: an already resolved ``CheckpointSource``.
    """
    from nnjax.models.hf_checkpoint import default_pooling, load_pretrained, read_config

    source = source or resolve_text_source(model)
    pooling = default_pooling(source.folder) if pooling == "auto" else pooling
    head = resolve_text_head(head, pooling, read_config(source.folder).get("model_type", ""))
    pre = load_pretrained(source, num_labels=num_labels, head_type=head, pooling=pooling, seed=seed)
    config = pre.model.config
    spec = {"family": "bert_encoder", "encoder": config.to_dict(), "pooling": pooling}
    module, groups, features = build_module(spec)
    hidden_name = "pre_classifier" if head == "distilbert" else "pooler"
    layout = {"hidden": config.hidden_size, "activation": "relu" if head == "distilbert" else "tanh",
              "dropout": float(config.classifier_dropout), "hidden_name": hidden_name,
              "init_std": float(config.initializer_range)}
    report = pre.report.summary() if hasattr(pre.report, "summary") else {}
    return Backbone(name=source.name, kind="text", module=module, variables={"params": pre.params["encoder"]},
                    groups=groups, feature_size=features, spec=spec, source=source.describe(),
                    tokenizer=pre.tokenizer, max_length=pre.max_length, head=layout,
                    head_params=pre.params["head"], train_dropout=True, report=report)


def check_classes(names: Sequence[str]) -> None:
    """One sentence unless there are at least two distinct class names."""
    if len(set(names)) < 2:
        raise NnjaxError(f"A classifier needs at least 2 classes; the data has {len(set(names))} "
                         f"({', '.join(map(str, sorted(set(names)))) or 'none'}). Add examples of another class.")
