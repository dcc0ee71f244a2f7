"""The command line: help everywhere, clear one-sentence errors, a run's output folder, the report."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nnjax.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["list", "--help"], ["reproduce", "--help"], ["eval", "--help"], ["predict", "--help"],
     ["bench", "--help"], ["run", "perceptron", "--help"]],
)
def test_every_subcommand_has_help(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    assert "usage" in capsys.readouterr().out


def test_run_without_experiment_lists_them(capsys):
    code, out, _ = run_cli(capsys, "run")
    assert code == 0 and "perceptron" in out


def test_list_names_the_experiments(capsys):
    code, out, _ = run_cli(capsys, "list")
    assert code == 0 and "perceptron" in out and "mlp-backprop" in out


def test_unknown_experiment_is_one_sentence(capsys):
    code, _, err = run_cli(capsys, "run", "no-such-thing")
    assert code == 2
    assert "Unknown experiment 'no-such-thing'" in err and "Traceback" not in err


def test_bad_option_value_exits_nonzero(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "perceptron", "--epochs", "many"])
    assert exit_info.value.code == 2
    assert "invalid int value" in capsys.readouterr().err


def test_invalid_config_value_is_one_sentence(capsys, tmp_path):
    code, _, err = run_cli(capsys, "run", "perceptron", "--epochs", "0", "--out", str(tmp_path / "x"))
    assert code == 2 and "--epochs must be at least 1" in err


def test_out_that_is_a_file_is_refused(capsys, tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("keep me")
    code, _, err = run_cli(capsys, "run", "perceptron", "--quick", "--out", str(target))
    assert code == 2 and "is a file" in err
    assert target.read_text() == "keep me"


def test_missing_data_dir_is_one_sentence(tmp_path):
    from nnjax.data.paths import dataset_dir
    from nnjax.errors import DataNotFoundError

    os.environ["NNJAX_DATA_DIR"], saved = str(tmp_path / "nowhere"), os.environ.get("NNJAX_DATA_DIR")
    try:
        with pytest.raises(DataNotFoundError, match="is not a folder"):
            dataset_dir("mnist")
    finally:
        if saved is None:
            del os.environ["NNJAX_DATA_DIR"]
        else:
            os.environ["NNJAX_DATA_DIR"] = saved


def test_perceptron_run_writes_summary_metrics_config_and_animation(capsys, tmp_path):
    out = tmp_path / "perceptron"
    code, _, _ = run_cli(capsys, "run", "perceptron", "--quick", "--seed", "1", "--out", str(out), "--no-progress")
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_accuracy"] >= 0.99 and summary["train_accuracy"] >= 0.99
    assert summary["slope"] == pytest.approx(-2.0, abs=0.15)
    assert summary["intercept"] == pytest.approx(12.0, abs=0.6)
    assert summary["linear_rule_test_accuracy"] < summary["test_accuracy"]
    config = json.loads((out / "config.json").read_text())
    assert config["seed"] == 1 and config["epochs"] == 100
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 100 and "mean_abs_error" in json.loads(lines[0])
    gif = out / "perceptron.gif"
    assert gif.read_bytes()[:6] in (b"GIF89a", b"GIF87a")
    assert summary["figures"] == ["perceptron.gif", "perceptron.png"]

    bare = tmp_path / "bare"  # the same run without its animation: the same numbers, no figure written
    code, _, _ = run_cli(capsys, "run", "perceptron", "--quick", "--seed", "1", "--out", str(bare), "--no-progress",
                         "--no-figures")
    assert code == 0
    again = json.loads((bare / "summary.json").read_text())
    assert again.pop("figures") == [] and not list(bare.glob("*.gif")) and not list(bare.glob("*.png"))
    timings = ("seconds", "compile_s")
    assert {k: v for k, v in again.items() if k not in timings} == {
        k: v for k, v in summary.items() if k not in (*timings, "figures")}


def test_reproduce_writes_markdown_and_html_report(capsys, tmp_path):
    code, _, _ = run_cli(capsys, "reproduce", "--only", "perceptron", "--out", str(tmp_path), "--no-progress")
    assert code == 0
    report = (tmp_path / "report.md").read_text()
    assert "| perceptron | slope | -2 | -1.98" in report and "compile s" in report
    assert "nnjax run perceptron --quick" in report
    page = (tmp_path / "report.html").read_text()
    assert "data:image/gif;base64" in page


def test_console_script_error_has_no_traceback():
    result = subprocess.run(
        [sys.executable, "-m", "nnjax.cli", "run", "nope"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("nnjax: error: Unknown experiment")
    assert "Traceback" not in result.stderr


_CACHED_JIT = (
    "import logging, sys, jax, jax.numpy as jnp\n"
    "from nnjax import compile_cache\n"
    "logging.basicConfig(level=logging.WARNING)\n"
    "logging.getLogger('jax._src.compiler').setLevel(logging.DEBUG)\n"
    "print(compile_cache.enable(sys.argv[1] if sys.argv[1:] else None, disabled=sys.argv[2:] == ['off']))\n"
    "jax.jit(lambda x: jnp.sin(x) * 2)(jnp.ones(3)).block_until_ready()\n"
)


def _cached_jit(env: dict, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-c", _CACHED_JIT, *args], capture_output=True, text=True,
                            timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    return result


def _without_cache_setting(tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "NNJAX_COMPILATION_CACHE"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    return env


def test_compile_cache_is_on_by_default_per_cpu_and_hits_in_a_new_process(tmp_path):
    env = _without_cache_setting(tmp_path)
    first = _cached_jit(env)
    folder = Path(first.stdout.strip())
    assert folder.parent == tmp_path / "xdg" / "nnjax" / "xla" and folder.name.startswith("jaxlib")
    assert any(folder.iterdir()) and "cache hit" not in first.stderr
    second = _cached_jit(env)
    assert "Persistent compilation cache hit" in second.stderr
    # the two opt-outs: the environment variable and --no-compile-cache (disabled=True)
    assert _cached_jit({**env, "NNJAX_COMPILATION_CACHE": "off"}).stdout.strip() == "None"
    assert _cached_jit(env, "", "off").stdout.strip() == "None"
    # an explicit folder is used as given
    explicit = _cached_jit(env, str(tmp_path / "mine"))
    assert Path(explicit.stdout.strip()) == tmp_path / "mine" and any((tmp_path / "mine").iterdir())


def test_an_unwritable_default_compile_cache_is_one_warning_and_the_run_goes_on(tmp_path):
    env = _without_cache_setting(tmp_path)
    (tmp_path / "xdg").write_text("a file where the cache folder would go")
    result = _cached_jit(env)
    assert result.stdout.strip() == "None"
    assert "nnjax: warning: compilation cache off" in result.stderr and "Traceback" not in result.stderr
