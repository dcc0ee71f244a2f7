"""One training core for every experiment: state, step factory, fit loop, checkpoints, metrics."""
