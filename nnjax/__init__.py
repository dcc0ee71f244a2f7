"""nnjax: neural networks and transfer learning in JAX/Flax.

Importing nnjax is light: it loads no JAX, TensorFlow, torch, transformers or keras. It
only sets one CPU convolution flag for XLA when that is safe (see ``nnjax._xla``).
"""

from nnjax._xla import configure_cpu_flags as _configure_cpu_flags

_configure_cpu_flags()

__version__ = "0.1.0"
