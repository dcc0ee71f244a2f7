"""Experiment ``image-classifier``: transfer learning on your own photos, one folder per class.

``--data DIR`` holds ``train/`` and ``validation/`` (or ``val/``) folders of class folders, or is
itself one folder per class, split by ``--val-fraction`` (seeded, stratified). Any N >= 2 classes;
unreadable files are skipped, counted (``skipped_inputs``) and named in ``skipped.txt``.

Recipe: an ImageNet backbone (``--backbone mobilenet_v2 | efficientnet_lite0``) is frozen and a
head (``--hidden`` units, softmax over the classes) trains on its cached features; with
``--train top-k`` (the top ``--top-k`` layer groups) or ``--train all`` a second stage fine-tunes
at ``--fine-tune-learning-rate`` (BatchNorm stays in inference mode). The classifier is exported
to ``checkpoint/``: ``nnjax predict runs/X/checkpoint photo.jpg ...`` or, in Python,
``nnjax.transfer.load_classifier(DIR)``.

Summary: ``val_accuracy``, ``val_macro_f1``, per-class precision and recall, ``train_examples``,
``skipped_inputs``, ``trainable_params``, ``frozen_params``, ``seconds`` and per-stage seconds.
Figures: the confusion matrix and the accuracy per epoch.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from nnjax.errors import NnjaxError
from nnjax.experiment import Experiment, RunContext, option, register

NAME = "image-classifier"


@dataclasses.dataclass
class Config:
    data: str = option("", "folder of class folders (or of train/ and validation/ folders of them)")
    backbone: Literal["mobilenet_v2", "efficientnet_lite0"] = option("mobilenet_v2", "ImageNet backbone")
    train: Literal["head", "top-k", "all"] = option("head", "head only, or a second stage on the top groups or "
        "everything")
    top_k: int = option(4, "layer groups fine-tuned by --train top-k")
    epochs: int = option(10, "epochs of the head on the frozen backbone")
    learning_rate: float = option(1e-3, "Adam's learning rate for the head")
    fine_tune_epochs: int = option(2, "epochs of the second stage")
    fine_tune_learning_rate: float = option(1e-5, "its learning rate")
    batch_size: int = option(32, "images per step")
    hidden: int = option(128, "units of the head's hidden layer (0: none)")
    image_size: int = option(224, "photos are resized to SIZE x SIZE")
    val_fraction: float = option(0.2, "validation share when DIR has no train/ and validation/ folders")
    flip_views: bool = option(True, "also train on mirrored photos")
    limit_per_class: int = option(0, "first N photos per class (0: all)")

    def __post_init__(self) -> None:
        if min(self.epochs, self.batch_size, self.top_k) < 1 or self.image_size < 32 or self.hidden < 0:
            raise NnjaxError("--epochs, --batch-size and --top-k must be >= 1, --image-size >= 32, --hidden >= 0.")
        if self.fine_tune_epochs < 0 or self.limit_per_class < 0:
            raise NnjaxError("--fine-tune-epochs and --limit-per-class must be >= 0.")


def stages(config: Config) -> list:
    """The head stage, then (``--train top-k|all``) the fine-tuning stage."""
    from nnjax.train.stages import Stage

    plan = [Stage("head", epochs=config.epochs, learning_rate=config.learning_rate, batch_size=config.batch_size)]
    if config.train != "head":
        plan.append(Stage("fine-tune", train=config.train, top_k=config.top_k, epochs=config.fine_tune_epochs,
                          learning_rate=config.fine_tune_learning_rate, batch_size=config.batch_size))
    return plan


def run(config: Config, ctx: RunContext) -> dict:
    from nnjax.data.image_folder import load_image_splits
    from nnjax.plots.transfer import accuracy_figure, confusion_figure
    from nnjax.transfer import HeadConfig, export_classifier, image_backbone, train_on_images
    from nnjax.transfer.tasks import summary_of

    if not config.data:
        raise NnjaxError("Give the photos with --data DIR (one folder per class, or train/ and validation/ of them).")
    size = (config.image_size, config.image_size)
    splits = load_image_splits(config.data, size, val_fraction=config.val_fraction, seed=ctx.seed,
                               limit_per_class=config.limit_per_class or None)
    skipped = sorted({path: reason for s in splits.values() for path, reason in s.skipped}.items())
    ctx.path("skipped.txt").write_text("".join(f"{path}\t{reason}\n" for path, reason in skipped))
    backbone = image_backbone(config.backbone, image_size=config.image_size)
    classes = splits["train"].class_names
    head = HeadConfig(num_classes=len(classes), hidden=config.hidden)
    outcome = train_on_images(ctx, splits, backbone, head, stages(config), flip_views=config.flip_views)
    summary = summary_of(outcome)
    export_classifier(ctx.out / "checkpoint", outcome.classifier, outcome.result.variables,
                      extra={"data": str(Path(config.data).absolute()), "val_accuracy": summary["val_accuracy"]})
    if ctx.make_figures:
        ctx.save_figure(confusion_figure(summary["val_confusion_matrix"], classes,
                                         f"{Path(config.data).name}: validation ({summary['val_accuracy']:.1%})"),
                        "confusion_matrix.png")
        ctx.save_figure(accuracy_figure(outcome.result.history, f"{Path(config.data).name}, {backbone.name}"),
                        "accuracy.png")
    return {**summary, "classes": list(classes), "skipped_inputs": len(skipped), "backbone": backbone.describe(),
            "weights_report": backbone.report, "history": outcome.result.history}


def fingerprint(config: Config) -> dict[str, str]:
    """A digest of every file under ``--data``."""
    from nnjax.data.fingerprint import folder_digest

    return {"images": folder_digest(config.data) if config.data else "none"}


register(
    Experiment(
        name=NAME,
        description="Your own photos (one folder per class): frozen ImageNet backbone + head, optional fine-tuning",
        config=Config,
        run=run,
        quick={"epochs": 3, "fine_tune_epochs": 1, "limit_per_class": 40, "image_size": 128},
        fingerprint=fingerprint,
    )
)
