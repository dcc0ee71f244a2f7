"""Worker for the data-parallel tests: trains a small model with `fit` and saves its trajectory.

usage: python data_parallel_fit.py MODEL MODE OUT.npz
  MODEL: mlp | cnn      MODE: single (one device) | mesh (all devices) | multiprocess
For multiprocess, NNJAX_COORDINATOR / NNJAX_NUM_PROCESSES / NNJAX_PROCESS_ID are read.
"""

import sys

import numpy as np


def main(model_name: str, mode: str, out: str) -> None:
    from nnjax.train import distributed

    if mode == "multiprocess":
        distributed.initialize()
    import jax
    import optax

    from nnjax.data.batching import ArrayLoader
    from nnjax.train.fit import fit
    from nnjax.train.init import run_once
    from nnjax.train.state import create_train_state
    from nnjax.train.step import make_train_step

    rng = np.random.default_rng(0)
    if model_name == "mlp":
        from nnjax.models.mlp import MLP

        model = MLP((32, 32, 3), activation="tanh")
        x = rng.normal(size=(96, 8)).astype(np.float32)
    else:
        from nnjax.models.cnn import ThesisCNN

        model = ThesisCNN()
        x = rng.normal(size=(64, 28, 28, 1)).astype(np.float32)
    # Learnable labels (a function of the input), so training descends instead of wandering.
    classes = 3 if model_name == "mlp" else 10
    y = (np.abs(x.reshape(len(x), -1)[:, :classes]).argmax(axis=1)).astype(np.int32)
    options = {} if model_name == "mlp" else {"train": False}
    variables = run_once(lambda key: model.init(key, x[:2], **options), jax.random.PRNGKey(0))
    has_stats = "batch_stats" in variables

    def loss_fn(params, batch_stats, batch, rng_key, train):
        if has_stats:
            logits, updates = model.apply({"params": params, "batch_stats": batch_stats}, batch["x"], train=train,
                                          mutable=["batch_stats"])
            aux = {"batch_stats": updates["batch_stats"]}
        else:
            logits, aux = model.apply({"params": params}, batch["x"]), {}
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]), aux

    # The CNN's convolution biases sit before BatchNorm, so their true gradient is 0 and what
    # arrives is float rounding; Adam would divide that by its own tiny sqrt(v) and turn it into
    # full-size steps of random sign. SGD keeps rounding at rounding size.
    # A small step keeps the CPU backend's run-to-run rounding (threaded convolution sums) from
    # being amplified, so the comparison measures sharding, not chaos.
    tx = optax.adam(1e-2) if model_name == "mlp" else optax.sgd(0.01)
    state = create_train_state(variables["params"], tx, rng=jax.random.PRNGKey(1),
                               batch_stats=variables.get("batch_stats"))
    shard = distributed.process_shard() if mode == "multiprocess" else None
    loader = ArrayLoader({"x": x, "y": y}, 16, shuffle=True, seed=0, shard=shard)
    losses = []
    state, _ = fit(state, make_train_step(loss_fn, tx), loader, epochs=2, progress=False, log_every=1,
                   mesh=False if mode == "single" else None, on_step=lambda s, m: losses.append(m["loss"]))
    leaves = [np.asarray(jax.device_get(leaf)) for leaf in jax.tree_util.tree_leaves(state.params)]
    if jax.process_index() == 0:
        arrays = {f"arr_{i}": leaf for i, leaf in enumerate(leaves)}
        np.savez(out, losses=np.array(losses), devices=jax.device_count(), **arrays)
    if mode == "multiprocess":
        jax.distributed.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:4])
