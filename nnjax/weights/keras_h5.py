"""Keras weight files read with h5py, without Keras or TensorFlow: both HDF5 layouts, one result.

* **legacy** (Keras 2's ``save_weights("x.h5")``, ``keras.applications``' published files, and
  Keras 3's ``legacy_h5_format``): ``[model_weights/]<layer>/<layer>/<weight>:0`` datasets,
  listed by the ``layer_names`` and ``weight_names`` attributes;
* **Keras 3** ``.weights.h5`` (the only format ``keras.Model.save_weights`` writes in Keras 3):
  one group per saved object, ``layers/<class>_<n>/vars/0``, ``1``, … in the order of the
  layer's ``trainable + non_trainable`` variables, the layer's name in the ``vars`` group's
  ``name`` attribute (Keras >= 3.9; older files: the group name), nested models and sub-layers
  under ``layers/<class>/layers/...`` or ``layers/<class>/<attribute>/``.

:func:`read_keras_weights` detects the layout and returns, for either, ``{layer: {weight: array}}``:
``layer`` is the layer's name (``"inner/dense_2"`` inside a nested model), ``weight`` its Keras
variable name (``"kernel"``, ``"gamma"``, ``"moving_variance"``, …). :func:`keras_model_layers`
returns the same from a live ``keras.Model``. Links, external or virtual datasets and datasets
that declare far more bytes than the file stores are refused (one sentence), never followed.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from nnjax.errors import DataNotFoundError, NnjaxError

#: Keras 3 variable names, in saving order, by the layer class's snake-case name (the group
#: name without its ``_<n>`` counter). Trailing optional variables (a bias) may be absent.
KERAS3_VARIABLES: dict[str, tuple[str, ...]] = {
    **{name: ("kernel", "bias") for name in (
        "dense", "einsum_dense", "conv1d", "conv2d", "conv3d", "conv1d_transpose", "conv2d_transpose",
        "conv3d_transpose", "depthwise_conv1d", "depthwise_conv2d",
    )},
    "separable_conv1d": ("depthwise_kernel", "pointwise_kernel", "bias"),
    "separable_conv2d": ("depthwise_kernel", "pointwise_kernel", "bias"),
    "batch_normalization": ("gamma", "beta", "moving_mean", "moving_variance"),
    "layer_normalization": ("gamma", "beta"),
    "embedding": ("embeddings",),
}
_MAX_EXPANSION = 1000  # declared bytes per stored byte beyond which a dataset is a shape bomb
_BOMB_FLOOR = 1 << 28  # datasets below 256 MiB are read whatever their compression


def _text(value: Any) -> Any:
    """An HDF5 attribute as ``str`` (h5py gives ``bytes`` for fixed-length strings)."""
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _member(group: Any, name: str, where: str) -> Any:
    """``group[name]`` when it is a hard link to a group or a plain, self-contained dataset."""
    import h5py

    link = group.get(name, default=None, getlink=True)
    if link is None:
        raise KeyError(name)
    if not isinstance(link, h5py.HardLink):
        raise NnjaxError(f"{where} links {name!r} elsewhere ({type(link).__name__}); nnjax reads no links.")
    item = group[name]
    if isinstance(item, h5py.Dataset):
        if item.external or item.is_virtual:
            raise NnjaxError(f"{where} stores {name!r} outside the file; nnjax reads self-contained files only.")
        declared = math.prod(item.shape or ()) * item.dtype.itemsize
        stored = item.id.get_storage_size()
        if declared > _BOMB_FLOOR and declared > _MAX_EXPANSION * stored:
            raise NnjaxError(
                f"{where}: {name!r} declares {declared} bytes but stores {stored}; the file is corrupt or crafted."
            )
    return item


def _array(dataset: Any) -> np.ndarray:
    value = np.asarray(dataset[()])
    if _text(dataset.attrs.get("dtype", "")) == "bfloat16":  # Keras 3 stores bfloat16 as 2-byte opaque values
        import ml_dtypes

        value = value.view(ml_dtypes.bfloat16)
    return value


def _legacy(group: Any, where: str) -> dict[str, dict[str, np.ndarray]]:
    layers: dict[str, dict[str, np.ndarray]] = {}
    for raw_name in group.attrs["layer_names"]:
        name = _text(raw_name)
        layer = _member(group, name, where)
        weights = {}
        for raw_weight in layer.attrs.get("weight_names", []):
            weight = _text(raw_weight)
            node = layer
            for part in weight.split("/"):
                node = _member(node, part, where)
            weights[weight.split("/")[-1].split(":")[0]] = _array(node)
        layers[name] = weights
    return layers


def _names(kind: str, count: int) -> list[str]:
    """Keras 3 variable names for ``count`` saved variables of a layer class; indices when unknown."""
    names = KERAS3_VARIABLES.get(kind)
    if kind == "batch_normalization" and count == 2:  # center=False and scale=False: the statistics only
        return ["moving_mean", "moving_variance"]
    if names is None or count > len(names) or (kind == "batch_normalization" and count != len(names)):
        return [str(i) for i in range(count)]  # ambiguous or unknown: the saving order
    return list(names[:count])


def _keras3(group: Any, where: str, owner: str = "", out: dict | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Walk a Keras 3 weights group: each child holding ``vars`` is a saved object (layer, model)."""
    out = {} if out is None else out
    for child in group:
        if child == "vars":
            continue
        node = _member(group, child, where)
        if not hasattr(node, "keys"):
            continue
        key = owner
        if "vars" in node:
            variables = _member(node, "vars", where)
            name = str(_text(variables.attrs.get("name", child)))
            key = f"{owner}/{name}" if owner else name
            count = len(variables)
            if count:
                datasets = [_member(variables, str(i), where) for i in range(count)]
                kind = re.sub(r"_\d+$", "", child)
                out[key] = {n: _array(d) for n, d in zip(_names(kind, count), datasets, strict=True)}
        _keras3(node, where, key, out)
    return out


def read_keras_weights(path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """A Keras weight file, either layout (see the module docstring), as ``{layer: {weight: array}}``.

    The model's own variables (Keras 3: top-level ``vars``) and layers without weights are left out
    of Keras 3 results; legacy results list every layer the file names.
    """
    import h5py

    path = Path(path)
    where = repr(str(path))
    if not path.is_file():
        raise DataNotFoundError(f"Keras weight file {where} does not exist; check the path.")
    try:
        with h5py.File(path, "r") as handle:
            group = _member(handle, "model_weights", where) if "model_weights" in handle else handle
            if "layer_names" in group.attrs:
                return _legacy(group, where)
            if "layers" in handle or "vars" in handle:
                return _keras3(handle, where)
            raise NnjaxError(
                f"{where} is an HDF5 file but not Keras weights (no layer_names, no layers/ group); "
                "save it with keras.Model.save_weights."
            )
    except OSError as err:
        raise NnjaxError(f"{where} is not a readable HDF5 file ({err}); download it again.") from None
    except KeyError as err:
        raise NnjaxError(f"{where} lists a layer or weight it does not hold ({err}); download it again.") from None


def keras_model_layers(model: Any) -> dict[str, dict[str, np.ndarray]]:
    """``{layer: {weight: array}}`` from a live ``keras.Model``, keyed like :func:`read_keras_weights`
    (Keras 3: by each variable's path, so nested models give ``"inner/dense_2"``)."""
    layers: dict[str, dict[str, np.ndarray]] = {}
    for layer in model.layers:
        for w in layer.weights:
            path = getattr(w, "path", "")  # Keras 3: "block_1_expand/kernel"; Keras 2 has no path
            owner = path.rsplit("/", 1)[0] if "/" in path else layer.name
            layers.setdefault(owner, {})[w.name.split("/")[-1].split(":")[0]] = np.asarray(w)
    return layers
