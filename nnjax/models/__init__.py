"""Models as pure ``flax.linen`` definitions, one file per model (import from the submodule)."""
