"""nnjax: neural networks and transfer learning in JAX/Flax.

Importing nnjax is light: it loads no JAX, TensorFlow, torch, transformers or keras. It
only sets one CPU convolution flag for XLA when that is safe (see ``nnjax._xla``) and tells
glibc's allocator to keep XLA's freed buffers for reuse (see ``nnjax._malloc``).
"""

from nnjax._malloc import configure_allocator as _configure_allocator
from nnjax._xla import configure_cpu_flags as _configure_cpu_flags

_configure_allocator()
_configure_cpu_flags()

__version__ = "0.1.0"
