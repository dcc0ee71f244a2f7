"""Figures, one module per domain (matplotlib is imported inside the plotting functions)."""
