"""``nnjax reproduce``: run every experiment and write one report (Markdown + self-contained HTML).

One row per thesis result: the thesis's number, nnjax's, a verdict (:func:`verdict`: reproduced,
beaten, below, equal / differs for counts, no number where the thesis gives only text, and "not
comparable (quick profile)" for every row of a quick run), the time taken, the device and the
command that reruns it. The report states the verdict rules (:data:`RULES`). Experiments whose
data or weights are missing are listed as skipped with the reason; a failing experiment is
reported and the rest still run.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import math
import re
import time
import traceback
from pathlib import Path
from typing import Any

from nnjax.errors import NnjaxError
from nnjax.experiment import Experiment, all_experiments, get, prepare_out_dir, run_experiment


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return "—" if value is None else str(value)


@dataclasses.dataclass(frozen=True)
class Rule:
    """How a metric is compared with the thesis.

    Attributes:
      pattern: regex searched in the metric name, lower-cased (the first matching rule applies);
        the words of a name are separated by ``_``.
      kind: ``"higher"`` (better when higher), ``"lower"`` (better when lower), ``"count"``
        (equal or not) or ``"target"`` (a value to match; no direction is better).
      tolerance: how far from the thesis still counts as reproduced.
      relative: ``tolerance`` is a fraction of the thesis's value, not an absolute difference.
      label: the metrics the rule is for, as the report names them.
    """

    pattern: str
    kind: str
    tolerance: float
    relative: bool
    label: str

    def describe(self) -> str:
        """The rule as one line of the report."""
        within = f"{self.tolerance:.0%} of the thesis's value" if self.relative else f"{self.tolerance:g} (absolute)"
        if self.kind == "count":
            return f"{self.label}: equal when the same number, else differs"
        if self.kind == "target":
            return f"{self.label}: reproduced within {within}, else differs (no direction is better)"
        better = "higher" if self.kind == "higher" else "lower"
        return (f"{self.label} ({better} is better): reproduced within {within}; beaten when better by more, "
                "below when worse by more")


#: The verdict rules, first match wins; a metric no pattern matches is a ``target`` (:data:`DEFAULT_RULE`).
RULES = (
    Rule(r"(^|_)(params|parameters)($|_)", "count", 0.0, False, "parameter counts"),
    Rule(r"(^|_)(seconds|s|time)($|_)", "lower", 0.10, True, "seconds"),
    Rule(r"(^|_)(rmse|mae|mse|loss|error)($|_)", "lower", 0.05, True, "RMSE, MAE, losses"),
    Rule(r"(^|_)(accuracy|precision|recall|f1|ari|silhouette|dunn|auc)($|_)", "higher", 0.005, False,
         "accuracy, precision, recall, F1, ARI, silhouette"),
)
DEFAULT_RULE = Rule(r"", "target", 0.05, True, "other values (e.g. the perceptron's slope and intercept)")
QUICK_VERDICT = "not comparable (quick profile)"
# "5,400 (1.5 h)": a number followed by a remark in parentheses is that number; any other text is no number.
_NUMBER_WITH_REMARK = re.compile(r"\s*(\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?)\s+\(")


def rule_for(metric: str) -> Rule:
    """The :data:`RULES` entry for ``metric`` (case-insensitive search), else :data:`DEFAULT_RULE`."""
    return next((r for r in RULES if re.search(r.pattern, str(metric).lower())), DEFAULT_RULE)


def thesis_number(value: Any) -> float | None:
    """The thesis's value as a number: ints and floats, or text that starts with a number followed by a
    remark in parentheses (``"5,400 (1.5 h)"``); None for text only (``"≈1 (figure 4.1.1)"``)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str) and (found := _NUMBER_WITH_REMARK.match(value)):
        return float(found.group(1).replace(",", ""))
    return None


def verdict(metric: str, thesis: Any, nnjax: Any, profile: str = "full") -> str:
    """How nnjax's value of ``metric`` compares with the thesis's, by :func:`rule_for`'s rule.

    Returns ``"no result"`` when nnjax has no number, ``"not comparable (quick profile)"`` for
    every quick-profile row (fewer epochs and less data than the thesis), ``"no number"`` when
    the thesis gives only text, else ``"reproduced"`` / ``"beaten"`` / ``"below"`` (``"equal"`` /
    ``"differs"`` for counts; ``"reproduced"`` / ``"differs"`` for values with no better direction).
    """
    if isinstance(nnjax, bool) or not isinstance(nnjax, int | float) or not math.isfinite(nnjax):
        return "no result"
    if profile == "quick":
        return QUICK_VERDICT
    target = thesis_number(thesis)
    if target is None:
        return "no number"
    rule = rule_for(metric)
    if rule.kind == "count":
        return "equal" if float(nnjax) == target else "differs"
    allowed = rule.tolerance * abs(target) if rule.relative and target != 0 else rule.tolerance
    gap = float(nnjax) - target
    if abs(gap) <= allowed + 1e-12:
        return "reproduced"
    if rule.kind == "target":
        return "differs"
    better = gap > 0 if rule.kind == "higher" else gap < 0
    return "beaten" if better else "below"


def rules_text() -> list[str]:
    """The verdict rules as the report's lines (Markdown bullets without the bullet)."""
    return [
        *(rule.describe() for rule in (*RULES, DEFAULT_RULE)),
        "no number: the thesis gives only text (a number followed by a remark in parentheses, e.g. "
        "'5,400 (1.5 h)', counts as that number); no result: nnjax has no number (skipped or failed)",
        f"{QUICK_VERDICT}: every row of a quick run (fewer epochs, less data than the thesis); "
        "`nnjax reproduce --full` gives the verdicts",
    ]


def _rows_for(exp: Experiment, outcome: dict, profile: str = "full") -> list[dict]:
    """The report rows of one experiment: one per thesis number, or one with its headline."""
    summary = outcome.get("summary", {})
    base = {
        "experiment": exp.name,
        "status": outcome["status"],
        "seconds": summary.get("seconds", outcome.get("seconds")),
        "compile_s": summary.get("compile_s"),
        "device": summary.get("device", "—"),
        "command": outcome["command"],
        "note": outcome.get("reason", ""),
    }
    if exp.thesis:
        pairs = [(metric, thesis, summary.get(metric)) for metric, thesis in exp.thesis.items()]
    else:
        headline = {k: v for k, v in summary.items() if k not in ("seconds", "device", "figures")}
        metric = next(iter(headline), None)
        pairs = [(metric or "—", None, headline.get(metric))]
    return [{**base, "profile": profile, "metric": metric, "thesis": thesis, "nnjax": value,
             "verdict": verdict(metric, thesis, value, profile)} for metric, thesis, value in pairs]


def _write_markdown(path: Path, rows: list[dict], profile: str) -> None:
    lines = [
        f"# nnjax reproduce report ({profile} profile)",
        "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M:%S')}.",
        "",
        *([f"Quick profile: fewer epochs and less data than the thesis, so every verdict is "
           f"\"{QUICK_VERDICT}\"; `nnjax reproduce --full` compares with the thesis.", ""]
          if profile == "quick" else []),
        "| experiment | metric | thesis | nnjax | verdict | status | seconds | compile s | device | command |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        status = r["status"] + (f": {r['note']}" if r["note"] else "")
        lines.append(
            f"| {r['experiment']} | {r['metric']} | {_fmt(r['thesis'])} | {_fmt(r['nnjax'])} | {_verdict_of(r)} "
            f"| {status} | {_fmt(r['seconds'])} | {_fmt(r['compile_s'])} | {r['device']} | `{r['command']}` |"
        )
    lines += ["", "Verdicts, per metric:", "", *(f"- {line}" for line in rules_text())]
    path.write_text("\n".join(lines) + "\n")


def _verdict_of(row: dict) -> str:
    """A row's verdict (computed when the row does not carry one)."""
    return row.get("verdict") or verdict(row["metric"], row["thesis"], row["nnjax"], row.get("profile", "full"))


def _embed(path: Path) -> str:
    mime = {"png": "image/png", "gif": "image/gif", "jpg": "image/jpeg", "svg": "image/svg+xml"}.get(
        path.suffix.lower().lstrip("."), ""
    )
    if not mime or not path.is_file():
        return f"<p><a href='{html.escape(str(path))}'>{html.escape(path.name)}</a></p>"
    data = base64.b64encode(path.read_bytes()).decode()
    return f"<figure><img src='data:{mime};base64,{data}' alt='{html.escape(path.name)}'>" \
           f"<figcaption>{html.escape(path.name)}</figcaption></figure>"


def _write_html(path: Path, rows: list[dict], figures: dict[str, list[Path]], profile: str) -> None:
    head = ["experiment", "metric", "thesis", "nnjax", "verdict", "status", "seconds", "compile s", "device",
            "command"]
    body = []
    for r in rows:
        status = r["status"] + (f": {r['note']}" if r["note"] else "")
        cells = [r["experiment"], r["metric"], _fmt(r["thesis"]), _fmt(r["nnjax"]), _verdict_of(r), status,
                 _fmt(r["seconds"]), _fmt(r["compile_s"]), r["device"], r["command"]]
        body.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    quick = (f"<p>Quick profile: fewer epochs and less data than the thesis, so every verdict is "
             f"&quot;{html.escape(QUICK_VERDICT)}&quot;; <code>nnjax reproduce --full</code> compares with the "
             "thesis.</p>") if profile == "quick" else ""
    rules = ("<p>Verdicts, per metric:</p><ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in rules_text())
             + "</ul>")
    sections = []
    for name, paths in figures.items():
        if paths:
            sections.append(f"<h2>{html.escape(name)}</h2><div class='figs'>" + "".join(_embed(p) for p in paths)
                            + "</div>")
    page = f"""<!doctype html><html><head><meta charset='utf-8'><title>nnjax report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;font-size:14px}}th{{background:#f3f3f3}}
.figs{{display:flex;flex-wrap:wrap;gap:12px}}img{{max-width:560px;border:1px solid #eee}}
figcaption{{font-size:12px;color:#555}}</style></head><body>
<h1>nnjax reproduce report ({html.escape(profile)} profile)</h1><p>Generated {time.strftime('%Y-%m-%d %H:%M:%S')}.</p>
{quick}<table><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr>{''.join(body)}</table>{rules}{''.join(sections)}
</body></html>"""
    path.write_text(page)


def reproduce(
    profile: str = "quick",
    out: Path = Path("runs/reproduce"),
    only: list[str] | None = None,
    seed: int = 0,
    progress: bool = True,
    mode: str = "auto",
    checkpoint_seconds: float = 10.0,
) -> Path:
    """Run the experiments (``only`` some of them) and return the path of ``report.md``.

    Each experiment runs in ``out/NAME``, a run folder of its own: ``mode`` is passed on
    (see :func:`nnjax.experiment.run_experiment`), so a rerun reuses finished runs of the
    same definition and resumes unfinished ones.
    """
    from tqdm.auto import tqdm

    out = prepare_out_dir(out)
    # Default: the thesis's experiments (those with thesis numbers); the others run on the user's data.
    experiments = [get(name) for name in only] if only else [e for e in all_experiments() if e.thesis]
    rows: list[dict] = []
    figures: dict[str, list[Path]] = {}
    outcomes: dict[str, dict] = {}
    flag = "--quick" if profile == "quick" else "--full"
    bar = tqdm(experiments, desc="reproduce", disable=not progress, dynamic_ncols=True)
    for exp in bar:
        bar.set_postfix_str(exp.name)
        run_dir = out / exp.name
        outcome: dict[str, Any] = {"command": f"nnjax run {exp.name} {flag} --seed {seed} --out {run_dir}"}
        reason = exp.requires() if exp.requires else None
        start = time.perf_counter()
        if reason:
            outcome.update(status="skipped", reason=reason)
        else:
            try:
                summary = run_experiment(exp, exp.make_config(profile), run_dir, seed=seed, progress=progress,
                                         mode=mode, checkpoint_seconds=checkpoint_seconds)
                outcome.update(status="ok", summary=summary)
                figures[exp.name] = [run_dir / f for f in summary.get("figures", [])]
            except NnjaxError as err:
                outcome.update(status="failed", reason=str(err))
            except Exception as err:  # keep going: one broken experiment must not hide the others
                (run_dir / "error.txt").write_text(traceback.format_exc())
                outcome.update(status="error", reason=f"{type(err).__name__}: {err} (see {run_dir}/error.txt)")
        outcome["seconds"] = round(time.perf_counter() - start, 2)
        outcomes[exp.name] = outcome
        rows.extend(_rows_for(exp, outcome, profile))
        tqdm.write(f"{exp.name}: {outcome['status']} in {outcome['seconds']:.1f} s"
                   + (f" ({outcome['reason']})" if outcome.get("reason") else ""))
    (out / "report.json").write_text(json.dumps({"profile": profile, "rows": rows}, indent=2, default=str) + "\n")
    _write_markdown(out / "report.md", rows, profile)
    _write_html(out / "report.html", rows, figures, profile)
    return out / "report.md"
