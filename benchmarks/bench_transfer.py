"""The transfer commands end to end: ``image-classifier`` and ``text-classifier`` on the shared data.

Each row is one ``nnjax run`` (through :func:`nnjax.experiment.run_experiment`, in a temporary
folder, default options): the whole command's seconds against the issue's budget on 2 cores
(image-classifier on the 1,200 + 400 cats-vs-dogs photos with cached features: 90 s;
text-classifier on the SMS collection written as CSV: 60 s), with the parts from its summary.
No peer library has these commands, so the rows carry no ratio; the training steps themselves
are compared with PyTorch and Keras in ``bench_mobilenet`` and ``bench_bert``.
Run: ``.venv/bin/python -m benchmarks.bench_transfer [--quick]`` (``--quick``: 100 photos per
class and 1,000 messages).

NOTES (2026-12-02, 2-core Intel Xeon): ``text-classifier`` on the whole collection, this module's
``_run`` in four processes alternating ``NNJAX_MALLOC_DEFAULTS=0`` / ``1``: 78.8 / 66.7 s and
71.5 / 65.8 s (encoding 59.3 / 49.4 and 58.6 / 48.6 s), so ``nnjax/_malloc.py``'s settings speed it
up; the same command took 45.5 s on 2026-12-01 on a faster day of this machine.
"""

from __future__ import annotations

import csv
import tempfile
import time
from pathlib import Path

from benchmarks.harness import BenchTable, bench_args


def _run(name: str, out: Path, **options) -> tuple[dict, float]:
    from nnjax.experiment import get, run_experiment

    exp = get(name)
    start = time.perf_counter()
    summary = run_experiment(exp, exp.make_config("full", **options), out, progress=False)
    return summary, time.perf_counter() - start


def _sms_csv(folder: Path, limit: int) -> Path:
    from nnjax.data.sms_spam import load_sms_spam

    data = load_sms_spam()
    path = folder / "sms.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for text, label in list(zip(data.texts, data.labels, strict=True))[: limit or None]:
            writer.writerow([text, ("ham", "spam")[label]])
    return path


def main(argv: list[str] | None = None) -> None:
    from nnjax.data.paths import dataset_dir

    args = bench_args(argv, __doc__)
    table = BenchTable(
        "Transfer commands end to end",
        "python -m benchmarks.bench_transfer" + (" --quick" if args.quick else ""),
        notes="seconds = the whole run (loading, features or encoding, every stage, evaluation, export, figures), "
              "measured around run_experiment in this process; budget = the seconds the transfer-library issue "
              "allows on 2 cores. feature_s: the frozen backbone's pass over every example. pct_of_peak: none here; "
              "a whole command mixes decoding, compiling and steps, and its steps are measured against the "
              "peak in the mobilenet, bert and finetune tables.",
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        photos = dataset_dir("cats_vs_dogs")
        limit = 100 if args.quick else 0
        for backbone in ("mobilenet_v2", "efficientnet_lite0"):
            summary, seconds = _run("image-classifier", tmp / f"images-{backbone}", data=str(photos),
                                    backbone=backbone, limit_per_class=limit)
            table.add(work=f"image-classifier, {backbone}, {summary['train_examples'] // 2:,} + "
                           f"{summary['val_examples']:,} photos", seconds=seconds, budget_s=90,
                      within_budget=seconds <= 90, feature_s=summary.get("feature_seconds"),
                      train_s=summary.get("head_seconds"), compile_s=summary.get("compile_s"),
                      val_accuracy=summary["val_accuracy"])
        texts = _sms_csv(tmp, 1000 if args.quick else 0)
        summary, seconds = _run("text-classifier", tmp / "texts", data=str(texts))
        table.add(work=f"text-classifier, MiniLM, {summary['train_examples'] + summary['val_examples']:,} messages",
                  seconds=seconds, budget_s=60, within_budget=seconds <= 60,
                  feature_s=summary.get("feature_seconds"), train_s=summary.get("head_seconds"),
                  compile_s=summary.get("compile_s"), val_accuracy=summary["val_accuracy"])
    md, _ = table.write(args.out, name="transfer")
    print(md.read_text())


if __name__ == "__main__":
    main()
