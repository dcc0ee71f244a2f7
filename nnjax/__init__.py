"""nnjax: neural networks and transfer learning in JAX/Flax."""

__version__ = "0.1.0"
