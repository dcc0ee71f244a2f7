"""Transfer learning as a library layer: pretrained backbones, a classification head, staged training.

* :mod:`nnjax.transfer.backbones` -- the backbone contract (layer groups, boundaries,
  preprocessing) and its presets: ``image_backbone("mobilenet_v2" | "efficientnet_lite0")``,
  ``text_backbone("minilm" | folder | hub id)``.
* :mod:`nnjax.transfer.heads` -- the head for N >= 2 classes, its loss, probabilities and metrics.
* :mod:`nnjax.transfer.classifier` -- backbone + head as one model (``Classifier``).
* :mod:`nnjax.train.stages` / :mod:`nnjax.transfer.recipe` -- stages and the driver that runs them,
  caching the inputs of frozen boundaries and checkpointing every stage.
* :mod:`nnjax.transfer.tasks` -- images or texts end to end; :mod:`nnjax.transfer.export` --
  a self-contained classifier folder and :func:`load_classifier`.

Example (three classes of your own photos)::

    from nnjax.data.image_folder import load_image_splits
    from nnjax.experiment import RunContext
    from nnjax.train.stages import Stage
    from nnjax.transfer import HeadConfig, export_classifier, image_backbone, train_on_images

    backbone = image_backbone("mobilenet_v2", image_size=160)
    splits = load_image_splits("photos/", (160, 160))           # photos/<class>/*.jpg
    head = HeadConfig(num_classes=len(splits["train"].class_names), hidden=128)
    stages = [Stage("head", epochs=10, learning_rate=1e-3),
              Stage("fine-tune", train="top-k", top_k=4, epochs=2, learning_rate=1e-5)]
    outcome = train_on_images(RunContext("runs/photos"), splits, backbone, head, stages)
    print(outcome.report("val")["accuracy"])
    export_classifier("runs/photos/classifier", outcome.classifier, outcome.result.variables)
"""

from nnjax.transfer.backbones import Backbone, image_backbone, text_backbone
from nnjax.transfer.classifier import Classifier
from nnjax.transfer.export import export_classifier, load_classifier
from nnjax.transfer.heads import HeadConfig
from nnjax.transfer.recipe import fit_stages
from nnjax.transfer.tasks import train_on_images, train_on_texts

__all__ = ["Backbone", "Classifier", "HeadConfig", "export_classifier", "fit_stages", "image_backbone",
           "load_classifier", "text_backbone", "train_on_images", "train_on_texts"]
