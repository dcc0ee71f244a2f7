"""A trained classifier as a self-contained folder, and loading it back without the training data.

The folder holds the variables (orbax), ``meta.json`` (backbone spec and provenance, head,
class names, preprocessing, nnjax version, the sha256 of every variables file) and, for text,
the tokenizer. :func:`load_classifier` rebuilds the model from ``meta.json`` alone, checks the
files against their digests and returns a :class:`LoadedClassifier` that predicts on image
paths / arrays or on texts.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nnjax.errors import NnjaxError
from nnjax.transfer.classifier import Classifier

MODEL_NAME = "nnjax-classifier"
DIGESTS = "variables_sha256"


def export_classifier(folder: str | Path, classifier: Classifier, variables: dict,
                      extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``classifier`` with trained ``variables`` to ``folder`` (atomically); returns its meta.

    ``extra``: more JSON fields for ``meta.json`` (the experiment, its metrics). ``meta["model"]`` is
    ``extra["model"]`` when given (an experiment's own name), else ``"nnjax-classifier"``.
    """
    import nnjax
    from nnjax.train.checkpoint import VARIABLES_DIR, _file_digests, save_model

    backbone = classifier.backbone
    meta = {
        "model": MODEL_NAME,
        "kind": backbone.kind,
        "backbone": backbone.spec,
        "backbone_source": {k: v for k, v in backbone.source.items() if k != "folder"},
        "head": classifier.head.to_dict(),
        "classes": list(classifier.classes),
        "dtype": classifier.dtype,
        "image_size": backbone.image_size if backbone.kind == "image" else None,
        "max_length": backbone.max_length if backbone.kind == "text" else None,
        "nnjax_version": nnjax.__version__,
        **(extra or {}),
    }

    def add_files(staging: Path) -> None:
        if backbone.kind == "text":
            backbone.tokenizer.save_pretrained(str(staging / "tokenizer"))
        meta[DIGESTS] = _file_digests(staging / VARIABLES_DIR)
        from nnjax import atomic

        atomic.write_json(staging / "meta.json", meta)

    save_model(folder, variables, meta, extra=add_files)
    return meta


@dataclasses.dataclass
class LoadedClassifier:
    """An exported classifier, ready to predict.

    Attributes:
      classifier: the rebuilt :class:`~nnjax.transfer.classifier.Classifier` (no pretrained weights read).
      variables: its trained variables.
      meta: the folder's ``meta.json``.
    """

    classifier: Classifier
    variables: dict
    meta: dict

    @property
    def classes(self) -> tuple[str, ...]:
        return self.classifier.classes

    @property
    def kind(self) -> str:
        return self.classifier.backbone.kind

    def probabilities(self, inputs: Any, batch_size: int = 16) -> np.ndarray:
        """Class probabilities ``[N, classes]`` for uint8 images ``[N, S, S, 3]`` or a list of texts."""
        from nnjax.transfer import heads
        from nnjax.transfer.examples import ArrayExamples

        if self.kind == "image":
            examples = ArrayExamples({"image": np.asarray(inputs)}, np.zeros(len(inputs), np.int32))
        else:
            from nnjax.transfer.tasks import text_examples

            examples = text_examples(self.classifier.backbone, list(inputs), np.zeros(len(inputs), np.int32))
        if len(examples) == 0:
            return np.zeros((0, len(self.classes)), np.float32)
        logits = self.classifier.logits(self.variables, examples, 0, batch_size)
        if self.kind == "image" and self.meta.get("test_time_flip"):  # as the run predicted its validation photos
            mirrored = ArrayExamples({"image": np.asarray(inputs)[:, :, ::-1]}, examples.labels)
            logits = heads.averaged(self.classifier.head, [logits, self.classifier.logits(self.variables, mirrored, 0,
                                                                                          batch_size)])
        return heads.probabilities(self.classifier.head, logits)

    def predict_files(self, paths: Sequence[str]) -> list[dict[str, Any]]:
        """One row per input: class, probability and all class probabilities, or its ``error``
        (see :mod:`nnjax.data.inputs`). Images are decoded and resized as in training."""
        from nnjax.data.inputs import read_each

        if self.kind != "image":
            raise NnjaxError("This classifier reads texts, not image files; pass the texts themselves.")
        from nnjax.data.image_folder import decode_image

        size = self.classifier.backbone.image_size
        images, positions, rows = read_each(paths, lambda p: decode_image(p, (size, size)))
        for i, probs in zip(positions, self.probabilities(images), strict=True):
            rows[i] = {"input": str(paths[i]), **self._row(probs)}
        return rows

    def predict(self, inputs: Sequence[str]) -> list[dict[str, Any]]:
        """Image paths or texts, by the classifier's kind (see :meth:`predict_files`, :meth:`predict_texts`)."""
        return self.predict_files(inputs) if self.kind == "image" else self.predict_texts(inputs)

    def predict_texts(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        """One row per text: class, probability and all class probabilities. An input that is the path of an
        existing image file is refused: this classifier reads texts."""
        from nnjax.data.image_folder import IMAGE_SUFFIXES
        from nnjax.data.text import check_utf8_texts

        if self.kind != "text":
            raise NnjaxError("This classifier reads images; pass image file paths, not texts.")
        texts = check_utf8_texts([str(t) for t in texts])
        for number, text in enumerate(texts, start=1):
            if Path(text).suffix.lower() in IMAGE_SUFFIXES and Path(text).is_file():
                raise NnjaxError(f"Input {number} ({text!r}) is an image file, but this classifier reads texts; "
                                 "pass the texts themselves (or use an image classifier).")
        return [{"text": t if len(t) <= 60 else t[:57] + "...", **self._row(p)}
                for t, p in zip(texts, self.probabilities(texts), strict=True)]

    def evaluate(self, data: str | Path, text_column: str = "text", label_column: str = "label") -> dict[str, Any]:
        """Accuracy, macro F1 and per-class precision / recall on labelled data the classifier has not
        seen: a folder of class folders (its ``validation/`` folder when it has one) for images, a
        CSV / TSV / JSONL file for texts. Class names must be the classifier's."""
        from nnjax.transfer import heads

        data = Path(data)
        if self.kind == "image":
            from nnjax.data.image_folder import VALIDATION_FOLDERS, load_image_folder

            root = next((data / n for n in VALIDATION_FOLDERS if (data / n).is_dir()), data)
            size = self.classifier.backbone.image_size
            images = load_image_folder(root, (size, size), class_names=self.classes)
            inputs, labels, skipped = images.images, images.labels, len(images.skipped)
        else:
            from nnjax.data.text_table import read_labelled_texts

            table = read_labelled_texts(data, text_column, label_column)
            unknown = sorted(set(table.labels) - set(self.classes))
            if unknown:
                raise NnjaxError(f"{str(data)!r} has the label {unknown[0]!r}, which this classifier does not know "
                                 f"(its classes: {', '.join(self.classes)}).")
            inputs = table.texts
            labels = np.asarray([self.classes.index(x) for x in table.labels], np.int32)
            skipped = len(table.bad_rows)
        predicted = self.probabilities(inputs).argmax(-1)
        report = heads.classification_report(labels, predicted, self.classes)
        per_class = {f"precision_{k}": round(v["precision"], 4) for k, v in report["per_class"].items()}
        per_class.update({f"recall_{k}": round(v["recall"], 4) for k, v in report["per_class"].items()})
        return {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"], **per_class,
                "examples": int(len(labels)), "skipped_inputs": skipped}

    def _row(self, probs: np.ndarray) -> dict[str, Any]:
        best = int(np.argmax(probs))
        return {"label": self.classes[best], "probability": float(probs[best]),
                "probabilities": {c: round(float(p), 6) for c, p in zip(self.classes, probs, strict=True)}}


def load_classifier(folder: str | Path, expected_model: str | None = None) -> LoadedClassifier:
    """The classifier exported in ``folder`` (by :func:`export_classifier`), checked and rebuilt.

    One sentence when the folder is not an export, its files changed since export (sha256), or its
    ``meta.json`` describes a model nnjax cannot build.
    """
    import jax

    from nnjax.train.checkpoint import VARIABLES_DIR, _file_digests, load_model
    from nnjax.train.init import variable_shapes
    from nnjax.transfer.backbones import Backbone, build_module, image_preprocessing
    from nnjax.transfer.heads import HeadConfig

    folder = Path(folder)
    built: dict[str, Any] = {}

    def template(meta: dict) -> Any:
        module, groups, features = build_module(meta["backbone"])
        head = HeadConfig.from_dict(meta["head"])
        built.update(module=module, groups=groups, features=features, head=head)
        backbone = Backbone(name=str(meta["backbone"].get("family")), kind=meta["kind"], module=module, variables={},
                            groups=groups, feature_size=features, spec=meta["backbone"], source={})
        model = Classifier(backbone, head, tuple(meta["classes"])).model
        if meta["kind"] == "image":
            size = int(meta["image_size"])
            dummy = jax.numpy.zeros((1, size, size, 3))
        else:
            ids = jax.numpy.zeros((1, 2), jax.numpy.int32)
            dummy = {"input_ids": ids, "attention_mask": ids + 1}
        return variable_shapes(model, dummy)

    variables, meta = load_model(folder, expected_model=expected_model, template=template)
    recorded = meta.get(DIGESTS)
    if recorded is not None and _file_digests(folder / VARIABLES_DIR) != recorded:
        raise NnjaxError(f"The weights in {str(folder)!r} changed since they were exported (their sha256 no longer "
                         "matches meta.json); export the classifier again.")
    kind = meta["kind"]
    extra: dict[str, Any] = {}
    if kind == "image":
        extra = {"preprocess": image_preprocessing(meta["backbone"]), "image_size": int(meta["image_size"])}
    else:
        from nnjax.models.hf_checkpoint import load_tokenizer

        extra = {"tokenizer": load_tokenizer(folder / "tokenizer"), "max_length": int(meta["max_length"])}
    backbone = Backbone(name=meta.get("backbone_source", {}).get("name", meta["backbone"]["family"]), kind=kind,
                        module=built["module"], variables={}, groups=built["groups"], feature_size=built["features"],
                        spec=meta["backbone"], source=meta.get("backbone_source", {}), **extra)
    classifier = Classifier(backbone, built["head"], tuple(meta["classes"]), dtype=meta.get("dtype", "float32"))
    variables = jax.device_put(dict(variables))
    variables.setdefault("batch_stats", {})
    return LoadedClassifier(classifier, variables, meta)


def is_classifier_folder(path: str | Path) -> bool:
    """Whether ``path`` holds an exported classifier (its meta.json names one)."""
    meta = Path(path) / "meta.json"
    if not meta.is_file():
        return False
    try:
        return "head" in json.loads(meta.read_text()) and "backbone" in json.loads(meta.read_text())
    except (OSError, ValueError):
        return False
