"""``nnjax reproduce``: run every experiment and write one report (Markdown + self-contained HTML).

One row per thesis result: the thesis's number, nnjax's, the time taken, the device and
the command that reruns it. Experiments whose data or weights are missing are listed as
skipped with the reason; a failing experiment is reported and the rest still run.
"""

from __future__ import annotations

import base64
import html
import json
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


def _rows_for(exp: Experiment, outcome: dict) -> list[dict]:
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
        return [
            {**base, "metric": metric, "thesis": thesis, "nnjax": summary.get(metric)}
            for metric, thesis in exp.thesis.items()
        ]
    headline = {k: v for k, v in summary.items() if k not in ("seconds", "device", "figures")}
    metric = next(iter(headline), None)
    return [{**base, "metric": metric or "—", "thesis": None, "nnjax": headline.get(metric)}]


def _write_markdown(path: Path, rows: list[dict], profile: str) -> None:
    lines = [
        f"# nnjax reproduce report ({profile} profile)",
        "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M:%S')}.",
        "",
        "| experiment | metric | thesis | nnjax | status | seconds | compile s | device | command |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        status = r["status"] + (f": {r['note']}" if r["note"] else "")
        lines.append(
            f"| {r['experiment']} | {r['metric']} | {_fmt(r['thesis'])} | {_fmt(r['nnjax'])} | {status} "
            f"| {_fmt(r['seconds'])} | {_fmt(r['compile_s'])} | {r['device']} | `{r['command']}` |"
        )
    path.write_text("\n".join(lines) + "\n")


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
    head = ["experiment", "metric", "thesis", "nnjax", "status", "seconds", "compile s", "device", "command"]
    body = []
    for r in rows:
        status = r["status"] + (f": {r['note']}" if r["note"] else "")
        cells = [r["experiment"], r["metric"], _fmt(r["thesis"]), _fmt(r["nnjax"]), status,
                 _fmt(r["seconds"]), _fmt(r["compile_s"]), r["device"], r["command"]]
        body.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
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
<table><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr>{''.join(body)}</table>{''.join(sections)}</body></html>"""
    path.write_text(page)


def reproduce(
    profile: str = "quick",
    out: Path = Path("runs/reproduce"),
    only: list[str] | None = None,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Run the experiments (``only`` some of them) and return the path of ``report.md``."""
    from tqdm.auto import tqdm

    out = prepare_out_dir(out)
    experiments = [get(name) for name in only] if only else all_experiments()
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
                summary = run_experiment(exp, exp.make_config(profile), run_dir, seed=seed, progress=progress)
                outcome.update(status="ok", summary=summary)
                figures[exp.name] = [run_dir / f for f in summary.get("figures", [])]
            except NnjaxError as err:
                outcome.update(status="failed", reason=str(err))
            except Exception as err:  # keep going: one broken experiment must not hide the others
                (run_dir / "error.txt").write_text(traceback.format_exc())
                outcome.update(status="error", reason=f"{type(err).__name__}: {err} (see {run_dir}/error.txt)")
        outcome["seconds"] = round(time.perf_counter() - start, 2)
        outcomes[exp.name] = outcome
        rows.extend(_rows_for(exp, outcome))
        tqdm.write(f"{exp.name}: {outcome['status']} in {outcome['seconds']:.1f} s"
                   + (f" ({outcome['reason']})" if outcome.get("reason") else ""))
    (out / "report.json").write_text(json.dumps({"profile": profile, "rows": rows}, indent=2, default=str) + "\n")
    _write_markdown(out / "report.md", rows, profile)
    _write_html(out / "report.html", rows, figures, profile)
    return out / "report.md"
