"""Pretrained weights: safe readers of published weight files, their sources and pins.

* :mod:`nnjax.weights.torch_pickle` -- torch ``state_dict`` files without torch (restricted, bounded).
"""
