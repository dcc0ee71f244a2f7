"""One merge step for every converter: pretrained values into a model's variables, with a report.

The model's side is a *template*: its variable tree, where a leaf holding a value (a NumPy or
JAX array, e.g. a freshly initialised head) may keep that value, and a leaf that only
describes a shape (``jax.ShapeDtypeStruct``, e.g. from ``jax.eval_shape``) must be loaded. The
file's side is the converted pretrained values by path. :func:`merge` returns the merged tree
and a :class:`MergeReport` of what was **loaded**, what was **initialised fresh** (in the
model, not usable from the file: a new or resized head) and what was **skipped** (in the file,
but with another shape or not used by the model). Nothing is replaced silently: every fresh or
skipped path is in the report, and ``report.summary()`` goes into an experiment's summary.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import numpy as np

from nnjax.errors import NnjaxError


class Skipped(NamedTuple):
    """A value of the file that the merged tree does not use, and why (``"shape (3, 48) ..."``)."""

    path: str
    reason: str


@dataclasses.dataclass(frozen=True)
class MergeReport:
    """What :func:`merge` did with each path (``/``-joined, e.g. ``"params/head/classifier/kernel"``).

    Attributes:
      source: the file (or name) the pretrained values came from.
      loaded: template paths filled from the file.
      fresh: template paths that kept their initial value (missing from the file or shaped differently).
      skipped: file values left unused, each with its reason.
    """

    source: str
    loaded: tuple[str, ...]
    fresh: tuple[str, ...]
    skipped: tuple[Skipped, ...]

    def summary(self, first: int = 5) -> dict[str, Any]:
        """JSON-friendly: the three counts and the first ``first`` paths of each kind (skipped ones with
        their reason), e.g. ``{"source": ..., "loaded": 100, "fresh": 2, "skipped": 2, "fresh_paths": [...]}``."""
        return {
            "source": self.source,
            "loaded": len(self.loaded),
            "fresh": len(self.fresh),
            "skipped": len(self.skipped),
            "loaded_paths": list(self.loaded[:first]),
            "fresh_paths": list(self.fresh[:first]),
            "skipped_paths": [f"{s.path} ({s.reason})" for s in self.skipped[:first]],
        }

    def describe(self, first: int = 3) -> str:
        """One line: counts, and the first fresh and skipped paths by name."""

        def some(items: list[str]) -> str:
            more = ", …" if len(items) > first else ""
            return f" ({', '.join(items[:first])}{more})" if items else ""

        skipped = [f"{s.path}: {s.reason}" for s in self.skipped]
        return (
            f"{self.source}: {len(self.loaded)} loaded, {len(self.fresh)} initialised fresh{some(list(self.fresh))}, "
            f"{len(self.skipped)} skipped{some(skipped)}"
        )


def flatten(tree: Mapping[Any, Any], prefix: tuple[str, ...] = ()) -> dict[str, Any]:
    """A nested mapping as ``{"a/b/c": leaf}``; tuple keys are joined with ``/`` as well."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = (*prefix, *(str(k) for k in (key if isinstance(key, tuple) else (key,))))
        if isinstance(value, Mapping):
            flat.update(flatten(value, path))
        else:
            flat["/".join(path)] = value
    return flat


def _has_value(leaf: Any) -> bool:
    return hasattr(leaf, "__array__")


def merge(
    template: Mapping[str, Any],
    loaded: Mapping[Any, Any],
    *,
    what: str,
    unused: Iterable[str] = (),
    hint: str = "check that the file belongs to this model",
) -> tuple[dict[str, Any], MergeReport]:
    """Fill ``template`` from ``loaded`` and report what happened to every path.

    Args:
      template: the model's variables, nested; leaves are arrays (may stay as they are) or
        shape-only ``jax.ShapeDtypeStruct`` (must come from the file).
      loaded: converted pretrained values, nested or flat by path (``"a/b"`` or ``("a", "b")``).
      what: the source, for the report and the error messages.
      unused: further names from the file that the converter did not map (reported as skipped).
      hint: the end of an error sentence, what to check (``"check alpha and the file"``).

    Returns:
      The merged tree (plain nested dicts shaped like ``template``; loaded leaves as NumPy arrays
      in the template leaf's dtype) and the :class:`MergeReport`.

    Raises NnjaxError (one sentence) when a shape-only leaf is missing from ``loaded`` or has
    another shape there.
    """
    values = flatten(loaded)
    want = flatten(template)
    missing = [p for p, leaf in want.items() if p not in values and not _has_value(leaf)]
    if missing:
        raise NnjaxError(f"{what} has no value for {missing[0]} ({len(missing)} missing); {hint}.")
    done: dict[str, Any] = {}
    loaded_paths, fresh, skipped = [], [], []
    for path, leaf in want.items():
        if path not in values:
            fresh.append(path)
            done[path] = leaf
            continue
        value = np.asarray(values[path])
        need = tuple(leaf.shape)
        if tuple(value.shape) != need:
            if not _has_value(leaf):
                raise NnjaxError(
                    f"{what}: {path} has shape {tuple(value.shape)} but the model needs {need}; {hint}."
                )
            fresh.append(path)
            skipped.append(Skipped(path, f"shape {tuple(value.shape)} in the file, {need} in the model"))
            done[path] = leaf
            continue
        loaded_paths.append(path)
        done[path] = np.ascontiguousarray(value, dtype=getattr(leaf, "dtype", value.dtype))
    skipped += [Skipped(p, "not used by the model") for p in values if p not in want]
    skipped += [Skipped(str(name), "not used by the model") for name in unused]
    report = MergeReport(what, tuple(loaded_paths), tuple(fresh), tuple(skipped))
    return _unflatten(template, done), report


def _unflatten(template: Mapping[str, Any], flat: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in template.items():
        path = f"{prefix}{key}"
        out[key] = _unflatten(value, flat, path + "/") if isinstance(value, Mapping) else flat[path]
    return out
