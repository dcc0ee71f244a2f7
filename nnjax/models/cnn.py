"""The thesis's MNIST CNN (section 4.2, appendix G) and a stronger CNN, as ``flax.linen`` modules.

Both take float32 images ``[B, 28, 28, 1]`` (NHWC, pixels in ``[0, 1]``) and return logits
``[B, 10]``; ``train=True`` uses batch statistics in BatchNorm (and dropout in the strong
model, with an ``"dropout"`` PRNG key) and returns updated ``batch_stats``.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from nnjax.nn.conv import Conv2D

NUM_CLASSES = 10

#: PyTorch's default initialisation of ``nn.Conv2d`` / ``nn.Linear`` (kaiming_uniform with
#: a = sqrt(5)): weights uniform in ``+-1/sqrt(fan_in)``.
torch_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_bias_init(fan_in: int):
    """PyTorch's default bias initialisation: uniform in ``+-1/sqrt(fan_in)``."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class ThesisCNN(nn.Module):
    """Exactly the thesis's network (appendix G.4, PyTorch ``Model``)::

        Conv(1->32, 3x3, pad 1) . BatchNorm . ReLU . Conv(32->32) . BatchNorm . ReLU .
        Conv(32->1) . BatchNorm . ReLU . Flatten . Dense(784->10)

    17,837 trainable parameters (the same as ``sum(p.numel() for p in model.parameters())``
    in PyTorch) plus 130 BatchNorm running statistics. BatchNorm follows PyTorch
    (momentum 0.1 -> flax ``momentum=0.9``, ``eps=1e-5``) and so does the initialisation.
    The thesis applies a softmax on top (``forward``); here the module returns logits and the
    loss decides (softmax + MSE for ``--recipe thesis``, cross-entropy otherwise).

    Attributes:
      channels: width of the two hidden convolutions (32 in the thesis).
      conv_impl: convolution implementation (see :class:`nnjax.nn.conv.Conv2D`).
    """

    channels: int = 32
    num_classes: int = NUM_CLASSES
    conv_impl: str = "auto"

    def setup(self):
        def conv(features: int, cin: int, name: str) -> Conv2D:
            return Conv2D(features, impl=self.conv_impl, kernel_init=torch_kernel_init,
                          bias_init=torch_bias_init(9 * cin), name=name)

        def bn(name: str) -> nn.BatchNorm:
            return nn.BatchNorm(momentum=0.9, epsilon=1e-5, name=name)

        self.conv1, self.bn1 = conv(self.channels, 1, "conv1"), bn("bn1")
        self.conv2, self.bn2 = conv(self.channels, self.channels, "conv2"), bn("bn2")
        self.conv3, self.bn3 = conv(1, self.channels, "conv3"), bn("bn3")
        self.dense = nn.Dense(self.num_classes, kernel_init=torch_kernel_init,
                              bias_init=torch_bias_init(28 * 28), name="dense")

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Images ``[B, 28, 28, 1]`` -> logits ``[B, num_classes]``."""
        ura = not train
        x = nn.relu(self.bn1(self.conv1(x), use_running_average=ura))
        x = nn.relu(self.bn2(self.conv2(x), use_running_average=ura))
        x = nn.relu(self.bn3(self.conv3(x), use_running_average=ura))
        return self.dense(x.reshape(x.shape[0], -1))

    def first_layer(self, x: jax.Array) -> jax.Array:
        """The first convolution alone (the thesis's ``model.layer1(x)``): ``[B, 28, 28, channels]``."""
        return self.conv1(x)


class StrongCNN(nn.Module):
    """The "beyond" model: three conv stages with BatchNorm and max pooling, then dropout::

        Conv 3x3 (32) . BN . ReLU . MaxPool 2 -> 14x14
        Conv 3x3 (64) . BN . ReLU . MaxPool 2 -> 7x7
        Conv 3x3 (128) . BN . ReLU . MaxPool 2 -> 3x3
        Flatten (1152) . Dense 256 . BN . ReLU . Dropout . Dense 10

    About 0.39 M parameters and about the same arithmetic per image as :class:`ThesisCNN`
    (8 M multiply-adds): pooling early keeps the wide layers on small maps.
    ``train=True`` needs a ``"dropout"`` PRNG key.
    """

    widths: tuple[int, ...] = (32, 64, 128)
    hidden: int = 256
    dropout: float = 0.4
    num_classes: int = NUM_CLASSES
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Images ``[B, 28, 28, 1]`` -> logits ``[B, num_classes]``."""
        ura = not train
        for stage, width in enumerate(self.widths):
            x = Conv2D(width, impl=self.conv_impl, use_bias=False, name=f"conv{stage}")(x)
            x = nn.relu(nn.BatchNorm(momentum=0.9, use_running_average=ura, name=f"bn{stage}")(x))
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape(x.shape[0], -1)
        x = nn.Dense(self.hidden, use_bias=False, name="hidden")(x)
        x = nn.relu(nn.BatchNorm(momentum=0.9, use_running_average=ura, name="bn_hidden")(x))
        x = nn.Dropout(self.dropout, deterministic=ura)(x)
        return nn.Dense(self.num_classes, name="out")(x)


MODELS = {"thesis": ThesisCNN, "strong": StrongCNN}


def build_model(name: str, **kwargs) -> nn.Module:
    """``"thesis"`` -> :class:`ThesisCNN`, ``"strong"`` -> :class:`StrongCNN`."""
    from nnjax.errors import NnjaxError

    if name not in MODELS:
        raise NnjaxError(f"Unknown MNIST model {name!r}; choose 'thesis' or 'strong'.")
    return MODELS[name](**kwargs)


def init_variables(model: nn.Module, rng: jax.Array, batch: int = 1) -> dict:
    """``{"params": ..., "batch_stats": ...}`` for 28x28x1 inputs."""
    from nnjax.train.init import run_once

    return dict(run_once(lambda key: model.init(key, jnp.zeros((batch, 28, 28, 1), jnp.float32), train=False), rng))
