"""The reproduce report's verdict per thesis number, and the rows it writes (no experiment runs)."""

import dataclasses
import html

import pytest

from nnjax.experiment import Experiment
from nnjax.reproduce import (
    QUICK_VERDICT,
    _rows_for,
    _write_html,
    _write_markdown,
    rule_for,
    rules_text,
    thesis_number,
    verdict,
)


@pytest.mark.parametrize("metric, thesis, nnjax, expected", [
    # higher is better, reproduced within 0.005 (absolute)
    ("test_accuracy", 0.9654, 0.9689, "reproduced"),
    ("test_accuracy", 0.9654, 0.9606, "reproduced"),
    ("test_accuracy", 0.9654, 0.9781, "beaten"),
    ("test_accuracy", 0.9654, 0.9065, "below"),
    ("spam_f1", 0.926, 0.968, "beaten"),
    ("spam_recall", 0.936, 0.90, "below"),
    ("kmeans_blob_ari", 0.99, 0.992, "reproduced"),
    # lower is better, reproduced within 5 % (errors) or 10 % (seconds) of the thesis's value
    ("test_rmse", 0.50, 0.476, "reproduced"),
    ("test_rmse", 0.50, 0.331, "beaten"),
    ("test_rmse", 0.50, 0.60, "below"),
    ("seconds", "5,400 (1.5 h)", 57.0, "beaten"),
    ("seconds", 100, 105, "reproduced"),
    ("seconds", 100, 150, "below"),
    # counts
    ("trainable_params", 164097, 164097, "equal"),
    ("frozen_params", 2257984, 2257985, "differs"),
    # no better direction: a value to match
    ("slope", -2.0, -1.98, "reproduced"),
    ("intercept", 12.0, 11.95, "reproduced"),
    ("slope", -2.0, -1.5, "differs"),
    # text only, or nothing to compare
    ("test_accuracy", "≈1 (figure 4.1.1)", 0.9991, "no number"),
    ("kmeans_blob_ari", "5 groups found (figure 1.2.1; no score)", 0.999, "no number"),
    ("linear_accuracy", "< 1: a single layer cannot separate XOR", 0.256, "no number"),
    ("test_accuracy", None, 0.99, "no number"),
    ("test_accuracy", 0.9654, None, "no result"),
    ("test_accuracy", 0.9654, "n/a", "no result"),
    ("test_accuracy", 0.9654, float("nan"), "no result"),
])
def test_verdicts_follow_the_stated_rules(metric, thesis, nnjax, expected):
    assert verdict(metric, thesis, nnjax) == expected


@pytest.mark.parametrize("thesis", [0.9654, "5,400 (1.5 h)", "≈1 (figure 4.1.1)", 164097])
def test_every_quick_row_is_not_comparable(thesis):
    assert verdict("test_accuracy", thesis, 0.9065, "quick") == QUICK_VERDICT == "not comparable (quick profile)"
    assert verdict("test_accuracy", thesis, None, "quick") == "no result"


def test_rules_per_metric_and_thesis_numbers():
    assert [rule_for(m).kind for m in ("test_accuracy", "spam_precision", "test_rmse", "seconds", "compile_s",
                                       "trainable_params", "slope", "variance")] == \
        ["higher", "higher", "lower", "lower", "lower", "count", "target", "target"]  # "variance" is not "ari"
    assert thesis_number("4,332 (3 epochs, 1 h 12 min on Colab)") == 4332.0
    assert thesis_number(0.98) == 0.98 and thesis_number(True) is None and thesis_number("1.5 h") is None
    text = "\n".join(rules_text())
    for words in ("higher is better", "lower is better", "within 0.005", "within 5%", "within 10%",
                  "equal when the same number", "no number", QUICK_VERDICT):
        assert words in text


def _config():
    @dataclasses.dataclass
    class Config:
        epochs: int = 1

    return Config


EXP = Experiment("mnist", "digits", _config(), run=lambda config, ctx: {},
                 thesis={"test_accuracy": 0.9654, "seconds": "4,332 (3 epochs)", "note": "figure only"})
SUMMARY = {"test_accuracy": 0.9781, "seconds": 97.0, "note": 1.0, "device": "cpu", "compile_s": 1.5}


def _outcome(summary=SUMMARY):
    return {"status": "ok", "summary": summary, "command": "nnjax run mnist --full --seed 0 --out runs/x"}


def test_full_rows_carry_their_verdicts_into_markdown_and_html(tmp_path):
    rows = _rows_for(EXP, _outcome(), "full")
    assert [(r["metric"], r["verdict"]) for r in rows] == [
        ("test_accuracy", "beaten"), ("seconds", "beaten"), ("note", "no number")]
    _write_markdown(tmp_path / "report.md", rows, "full")
    report = (tmp_path / "report.md").read_text()
    assert "| experiment | metric | thesis | nnjax | verdict | status |" in report
    assert "| mnist | test_accuracy | 0.9654 | 0.9781 | beaten | ok |" in report
    assert "| mnist | seconds | 4,332 (3 epochs) | 97 | beaten | ok |" in report
    assert "Quick profile" not in report
    assert "- accuracy, precision, recall, F1, ARI, silhouette (higher is better): reproduced within 0.005" in report
    _write_html(tmp_path / "report.html", rows, {}, "full")
    page = (tmp_path / "report.html").read_text()
    assert "<th>verdict</th>" in page
    assert "<td>0.9654</td><td>0.9781</td><td>beaten</td><td>ok</td>" in page
    assert html.escape("RMSE, MAE, losses (lower is better)") in page


def test_quick_rows_say_not_comparable(tmp_path):
    quick = {**SUMMARY, "test_accuracy": 0.9065}
    rows = _rows_for(EXP, _outcome(quick), "quick")
    assert {r["verdict"] for r in rows} == {QUICK_VERDICT}
    _write_markdown(tmp_path / "report.md", rows, "quick")
    report = (tmp_path / "report.md").read_text()
    assert f"| mnist | test_accuracy | 0.9654 | 0.9065 | {QUICK_VERDICT} | ok |" in report
    assert "| ok |" in report and "| 0.9065 | ok |" not in report  # "ok" is the run's status, not a verdict
    assert report.count("Quick profile: fewer epochs") == 1
    _write_html(tmp_path / "report.html", rows, {}, "quick")
    assert f"<td>0.9065</td><td>{QUICK_VERDICT}</td>" in (tmp_path / "report.html").read_text()


def test_skipped_experiments_and_rows_without_a_thesis(tmp_path):
    skipped = _rows_for(EXP, {"status": "skipped", "reason": "no data", "command": "c"}, "full")
    assert {r["verdict"] for r in skipped} == {"no result"}
    bare = Experiment("clusters", "c", _config(), run=lambda config, ctx: {})
    rows = _rows_for(bare, _outcome({"silhouette": 0.75, "seconds": 2.0}), "full")
    assert [(r["metric"], r["thesis"], r["verdict"]) for r in rows] == [("silhouette", None, "no number")]
