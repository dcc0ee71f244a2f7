"""What nnjax survives: kills at random moments, damaged checkpoints, a second run on a busy or
foreign folder, interrupts during writes, bad numbers on the command line.

The kill tests run the real command line: an uninterrupted run (in the test's process, through
``nnjax.cli.main``), then the same command in a new process killed with SIGKILL at a random moment
(the seed of that choice is in the failure message) and rerun in another, and compare everything
but timings bit for bit, exported weights included.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import optax
import pytest
from test_train_core import loss_fn, make_data, new_state  # tests/ is on sys.path under pytest

from nnjax import interrupts
from nnjax.data.batching import ArrayLoader
from nnjax.errors import NnjaxError
from nnjax.run_folder import claim
from nnjax.train.checkpoint import Checkpointer, load_model, save_model
from nnjax.train.fit import fit
from nnjax.train.metrics import MetricsWriter, read_metrics
from nnjax.train.step import make_train_step

TIMING_WORDS = ("seconds", "compile_s", "step_ms", "per_second", "attempts")


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "nnjax.cli", *args]


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(_command(*args), capture_output=True, text=True, timeout=timeout)


def _run_here(capsys, *args: str) -> subprocess.CompletedProcess:
    """``nnjax ARGS`` in this process (``nnjax.cli.main``, argparse's exits included): the exit code and
    what it printed, as :func:`_run` gives them, without a new interpreter's start-up (about 1.5 s each)."""
    from nnjax.cli import main

    capsys.readouterr()
    try:
        code = main(list(args))
    except SystemExit as exit_info:
        code = exit_info.code
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, out, err)


def _deterministic(value):
    """``value`` without its timings (wall seconds, compile and step times differ between runs)."""
    if isinstance(value, dict):
        return {k: _deterministic(v) for k, v in value.items() if not any(w in k for w in TIMING_WORDS)}
    if isinstance(value, list):
        return [_deterministic(v) for v in value]
    return value


def _exported(folder: Path) -> list[np.ndarray]:
    variables, _ = load_model(folder / "checkpoint")
    return [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(variables)]


def _kill_at_random_moment(args: list[str], out: Path, lines: range, seed: int) -> int:
    """Start ``nnjax run ARGS --out OUT``, SIGKILL it once metrics.jsonl has a random number of lines."""
    target = random.Random(seed).choice(list(lines))
    proc = subprocess.Popen(_command(*args, "--out", str(out)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        if metrics.is_file() and metrics.read_text().count("\n") >= target:
            break
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    return target


def _assert_kill_then_rerun_equals_uninterrupted(tmp_path: Path, capsys, args: list[str], lines: range) -> dict:
    """Run ``args`` uninterrupted (in this process) and killed-then-rerun (in new ones, ``--no-figures``); assert
    equal results, bit for bit, and figures only in the reference; return the rerun's summary."""
    reference = _run_here(capsys, *args, "--out", str(tmp_path / "reference"))
    assert reference.returncode == 0, reference.stderr
    seed = random.SystemRandom().randrange(1 << 30)
    killed_at = _kill_at_random_moment([*args, "--no-figures"], tmp_path / "killed", lines, seed)
    rerun = _run(*args, "--no-figures", "--out", str(tmp_path / "killed"))
    assert rerun.returncode == 0, f"(kill seed {seed}, after {killed_at} lines) {rerun.stderr}"
    want = json.loads((tmp_path / "reference" / "summary.json").read_text())
    got = json.loads((tmp_path / "killed" / "summary.json").read_text())
    drawn = want.pop("figures")
    assert drawn and all((tmp_path / "reference" / name).stat().st_size > 1000 for name in drawn)
    assert got.pop("figures") == [] and not list((tmp_path / "killed").glob("*.png"))
    assert _deterministic(got) == _deterministic(want), f"kill seed {seed}, after {killed_at} metrics lines"
    for a, b in zip(_exported(tmp_path / "reference"), _exported(tmp_path / "killed"), strict=True):
        assert np.array_equal(a, b), f"kill seed {seed}"
    return got


def test_mnist_killed_at_a_random_step_then_rerun_equals_an_uninterrupted_run(tmp_path, capsys, real_data_dir):
    args = ["run", "mnist", "--recipe", "thesis", "--train-size", "640", "--test-size", "300", "--epochs", "3",
            "--log-every", "1", "--checkpoint-seconds", "0", "--no-progress"]
    summary = _assert_kill_then_rerun_equals_uninterrupted(tmp_path, capsys, args, range(1, 18))
    assert len(summary["test_accuracy_by_epoch"]) == 3
    lines = read_metrics(tmp_path / "killed" / "metrics.jsonl")
    steps = [line["step"] for line in lines if "loss" in line and "epoch" in line and "train_loss" not in line]
    assert steps == sorted(set(steps)) == list(range(1, 16))  # every step once, none twice
    assert [line["epoch"] for line in lines if "train_loss" in line] == [1, 2, 3]
    compiles = [line["compile_s"] for line in lines if line.get("event") == "compile"]
    if summary.get("attempts", 1) > 1 and "compile_s" in summary:  # this process's compile time, not a sum
        assert summary["compile_s"] == pytest.approx(compiles[-1], abs=0.006)


def test_cats_vs_dogs_two_stages_and_cached_features_survive_a_kill(tmp_path, capsys, real_data_dir):
    args = ["run", "cats-vs-dogs", "--limit-per-class", "10", "--image-size", "64", "--epochs", "3",
            "--fine-tune-blocks", "1", "--fine-tune-epochs", "2", "--batch-size", "8", "--grid-images", "0",
            "--checkpoint-seconds", "0", "--no-progress"]
    summary = _assert_kill_then_rerun_equals_uninterrupted(tmp_path, capsys, args, range(0, 9))
    assert [(h["stage"], h["epoch"]) for h in summary["history"]] == [("head", 1), ("head", 2), ("head", 3),
                                                                       ("fine-tune", 1), ("fine-tune", 2)]
    assert len(list((tmp_path / "killed" / "cache").glob("boundaries-*.npz"))) == 1


def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys):
    tx = optax.adam(1e-2)
    step = make_train_step(loss_fn, tx)
    loader = ArrayLoader(make_data(), 8, shuffle=True, seed=0)

    def train(epochs: int, checkpointer=None):
        state, _ = new_state(tx)
        with MetricsWriter(tmp_path / f"m{epochs}.jsonl") as writer:
            return fit(state, step, loader, epochs=epochs, metrics=writer, checkpointer=checkpointer, progress=False)

    reference, ref_history = train(3)
    folder = tmp_path / "ckpt"
    train(2, Checkpointer(folder))  # checkpoints at the ends of epochs 1 and 2
    newest = folder / str(2 * len(loader))
    data_file = max((p for p in newest.rglob("*") if p.is_file() and p.stat().st_size > 0),
                    key=lambda p: p.stat().st_size)
    raw = bytearray(data_file.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data_file.write_bytes(bytes(raw))
    resumed, history = train(3, Checkpointer(folder))
    err = capsys.readouterr().err
    assert f"checkpoint of step {2 * len(loader)}" in err and f"falling back to step {len(loader)}" in err
    assert len([line for line in err.splitlines() if "warning" in line]) == 1
    assert [h["epoch"] for h in history] == [1, 2, 3]
    for a, b in zip(jax.tree_util.tree_leaves(reference.params), jax.tree_util.tree_leaves(resumed.params),
                    strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert history[-1]["train_loss"] == ref_history[-1]["train_loss"]


def test_every_checkpoint_damaged_is_one_sentence(tmp_path):
    tx = optax.sgd(0.1)
    state, _ = new_state(tx)
    checkpointer = Checkpointer(tmp_path / "ckpt")
    checkpointer.save(state, force=True)
    for path in (tmp_path / "ckpt" / "0").rglob("*"):
        if path.is_file() and path.name != "nnjax_sha256.json":
            path.write_bytes(b"")
    with pytest.raises(NnjaxError, match="Every checkpoint .* is damaged; rerun with --overwrite"):
        checkpointer.restore(state)


def test_failed_checkpoint_write_names_the_intact_one(tmp_path, monkeypatch):
    tx = optax.sgd(0.1)
    state, _ = new_state(tx)
    checkpointer = Checkpointer(tmp_path / "ckpt")
    checkpointer.save(state, force=True)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpointer._manager, "save", disk_full)
    with pytest.raises(NnjaxError, match=r"No space left on device\); the checkpoint of step 0 is intact"):
        checkpointer.save(state.replace(step=state.step + 1), force=True)
    assert checkpointer.restore(state) is not None


def test_export_is_swapped_in_whole(tmp_path):
    folder = tmp_path / "checkpoint"
    save_model(folder, {"params": {"w": np.ones(3, np.float32)}}, {"model": "toy", "version": 1})

    def die_half_way(staging: Path) -> None:
        (staging / "tokenizer").mkdir()
        raise KeyboardInterrupt  # a Ctrl-C in the middle of writing the new export

    with pytest.raises(KeyboardInterrupt):
        save_model(folder, {"params": {"w": np.zeros(3, np.float32)}}, {"model": "toy", "version": 2},
                   extra=die_half_way)
    variables, meta = load_model(folder)
    assert meta["version"] == 1 and np.array_equal(variables["params"]["w"], np.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]  # no half-written leftovers
    save_model(folder, {"params": {"w": np.zeros(3, np.float32)}}, {"model": "toy", "version": 2})
    assert load_model(folder)[1]["version"] == 2


def test_interrupt_during_a_write_waits_for_the_write():
    interrupts.install()
    finished = []
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        with interrupts.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            finished.append(True)  # the write goes on to its end
    assert finished == [True]
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def test_sigterm_ends_a_run_with_one_line_and_the_rerun_resumes(tmp_path):
    out = tmp_path / "run"
    args = ["run", "lstm-prices", "--epochs", "30", "--no-progress", "--no-figures", "--out", str(out)]  # 0.2 s/epoch
    proc = subprocess.Popen(_command(*args, "--checkpoint-seconds", "0"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list((out / "train_state" / "lstm").glob("[0-9]*")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1].startswith("nnjax: interrupted (SIGTERM); completed checkpoints are kept")
    assert "Traceback" not in err
    rerun = _run(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert "lstm: resuming from step" in rerun.stderr
    assert json.loads((out / "summary.json").read_text())["attempts"] == 2


def test_a_live_run_locks_its_folder_and_a_killed_one_does_not(tmp_path, capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from nnjax.run_folder import claim; "
        f"folder = claim({str(out)!r}, {{'experiment': 'perceptron'}}); print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    busy = _run_here(capsys, "run", "perceptron", "--quick", "--no-progress", "--out", str(out))
    assert busy.returncode == 2
    assert f"nnjax: error: {str(out)!r} is in use by a live nnjax run (pid {holder.pid}" in busy.stderr
    assert "Traceback" not in busy.stderr
    holder.kill()
    holder.wait()
    folder = claim(out, {"experiment": "perceptron"})  # the kernel dropped the dead process's lock
    folder.release()


def test_a_different_run_is_refused_and_the_same_one_is_not_repeated(tmp_path, capsys):
    out = str(tmp_path / "run")
    first = _run_here(capsys, "run", "perceptron", "--quick", "--no-progress", "--out", out)
    assert first.returncode == 0, first.stderr
    summary = (tmp_path / "run" / "summary.json").read_text()
    other = _run_here(capsys, "run", "perceptron", "--quick", "--no-progress", "--seed", "5", "--lr", "0.5",
                      "--out", out)
    assert other.returncode == 2
    line = other.stderr.strip()
    assert line.startswith(f"nnjax: error: {out!r} holds a different run (seed (0 -> 5), lr (")
    assert "pass --overwrite to start afresh there" in line and len(line.splitlines()) == 1
    assert (tmp_path / "run" / "summary.json").read_text() == summary  # nothing lost or mixed
    again = _run_here(capsys, "run", "perceptron", "--quick", "--no-progress", "--out", out)
    assert again.returncode == 0 and "already holds this finished run" in again.stderr
    assert (tmp_path / "run" / "summary.json").read_text() == summary
    fresh = _run_here(capsys, "run", "perceptron", "--quick", "--no-progress", "--seed", "5", "--overwrite",
                      "--out", out)
    assert fresh.returncode == 0, fresh.stderr
    assert json.loads((tmp_path / "run" / "config.json").read_text())["seed"] == 5
    assert json.loads((tmp_path / "run" / "run.json").read_text())["definition"]["seed"] == 5
    nothing = _run_here(capsys, "run", "perceptron", "--resume", "--no-progress", "--out", str(tmp_path / "empty"))
    assert nothing.returncode == 2 and "There is no run to resume in" in nothing.stderr


def test_a_folder_of_an_older_nnjax_run_is_not_mixed_into(tmp_path, capsys):
    out = tmp_path / "old"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"step": 1, "loss": 0.5}\n')
    result = _run_here(capsys, "run", "perceptron", "--quick", "--no-progress", "--out", str(out))
    assert result.returncode == 2 and "holds a run without a run record (metrics.jsonl" in result.stderr
    assert (out / "metrics.jsonl").read_text() == '{"step": 1, "loss": 0.5}\n'


@pytest.mark.parametrize("option, value, message", [
    ("--seed", "-1", "--seed must be between 0 and 2147483647"),
    ("--seed", str(2**40), "--seed must be between 0 and 2147483647"),
    ("--lr", "nan", "--lr must be a finite number, got nan"),
    ("--lr", "inf", "--lr must be a finite number, got inf"),
])
def test_bad_numbers_are_one_sentence(tmp_path, capsys, option, value, message):
    result = _run_here(capsys, "run", "perceptron", "--quick", option, value, "--out", str(tmp_path / "run"))
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "summary.json").exists()


def test_unusable_output_and_cache_folders_are_one_sentence(tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    under_file = _run_here(capsys, "run", "perceptron", "--quick", "--out", str(a_file / "run"))
    assert under_file.returncode == 2 and "Cannot create the output folder" in under_file.stderr
    cache = _run_here(capsys, "run", "perceptron", "--quick", "--compile-cache", str(a_file),
                      "--out", str(tmp_path / "r"))
    assert cache.returncode == 2 and f"--compile-cache {str(a_file)!r} is a file" in cache.stderr
    for result in (under_file, cache):
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_eval_on_a_damaged_or_foreign_export_is_one_sentence(tmp_path, capsys):
    import shutil

    from nnjax.cli import main

    assert main(["run", "lstm-prices", "--epochs", "2", "--no-progress", "--no-figures",
                 "--out", str(tmp_path / "run")]) == 0
    good = tmp_path / "run" / "checkpoint"

    def damaged(name: str, change) -> Path:
        folder = tmp_path / name
        shutil.copytree(good, folder)
        change(folder)
        return folder

    def truncate_largest(folder: Path) -> None:
        biggest = max((p for p in (folder / "variables").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
        biggest.write_bytes(biggest.read_bytes()[: biggest.stat().st_size // 3])

    def other_width(folder: Path) -> None:
        meta = json.loads((folder / "meta.json").read_text())
        (folder / "meta.json").write_text(json.dumps({**meta, "hidden": 20}))

    cases = {
        damaged("bad_meta", lambda f: (f / "meta.json").write_text("{not json")): "meta.json' is damaged",
        damaged("truncated", truncate_largest): "are damaged or incomplete",
        damaged("other", other_width): "holds variables of another architecture (",
    }
    capsys.readouterr()
    for folder, message in cases.items():
        assert main(["eval", "lstm-prices", "--checkpoint", str(folder)]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert main(["eval", "lstm-prices", "--checkpoint", str(good)]) == 0


def test_wrong_data_that_would_train_anyway_is_refused(tmp_path, capsys, monkeypatch):
    from nnjax.cli import main

    sms = tmp_path / "data" / "sms_spam"
    sms.mkdir(parents=True)
    (sms / "SMSSpamCollection").write_text("".join(f"ham\thello number {i}\n" for i in range(6))
                                           + "spam\tWIN a prize now\nspam\tfree cash, call now\n")
    photos = tmp_path / "data" / "cats_vs_dogs"
    for split in ("train", "validation"):
        (photos / split / "cat").mkdir(parents=True)
        (photos / split / "dog").mkdir(parents=True)
        (photos / split / "dog" / "dog.1.jpg").write_bytes(b"not a photo")
    for i in range(3):
        (photos / "train" / "cat" / f"cat.{i}.jpg").write_bytes(b"not a photo either")
    monkeypatch.setenv("NNJAX_DATA_DIR", str(tmp_path / "data"))
    assert main(["run", "sms-spam", "--model", "minilm", "--no-progress", "--out", str(tmp_path / "sms")]) == 2
    err = capsys.readouterr().err
    assert "split has no spam message" in err and len(err.strip().splitlines()) == 1, err
    assert main(["run", "cats-vs-dogs", "--no-progress", "--out", str(tmp_path / "cats")]) == 2
    err = capsys.readouterr().err
    assert "has no readable image" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "sms" / "summary.json").exists() and not (tmp_path / "cats" / "summary.json").exists()


def test_a_text_that_is_not_utf8_is_one_sentence(tmp_path, capsys):
    from nnjax.cli import main

    assert main(["predict", "sms-spam", "--checkpoint", str(tmp_path), "fine text", "caf\udcff"]) == 2
    err = capsys.readouterr().err
    assert "Input 2 is not valid UTF-8" in err and len(err.strip().splitlines()) == 1
