"""The fundamentals as pure functions: activations, losses, optimizers, pooling, backprop.

Import from the submodules, e.g. ``from nnjax.nn.optim import adam``.
"""
