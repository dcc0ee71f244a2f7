"""``nnjax bench``: run every ``benchmarks/bench_*.py`` and merge their tables into one.

The benchmarks live beside the package in the repository (``benchmarks/``); each runs in
its own process so that its XLA flags and threads do not leak into the next.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

from nnjax.errors import NnjaxError

REPO = Path(__file__).resolve().parents[1]


def available() -> list[str]:
    """Benchmark names (``bench_<name>.py``) found in the repository's ``benchmarks/``."""
    folder = REPO / "benchmarks"
    if not folder.is_dir():
        raise NnjaxError("The benchmarks/ folder is not beside the installed nnjax; run from a repository checkout.")
    return sorted(p.stem.removeprefix("bench_") for p in folder.glob("bench_*.py"))


def run_benchmarks(
    only: list[str] | None = None, out: Path = Path("benchmarks/results"), quick: bool = False, run: bool = True,
    readme: Path | None = None,
) -> Path:
    """Run the benchmarks (``only`` some), then write ``out/README.md``, ``out/all.json`` (every
    table) and ``out/headlines.json``.

    With ``run=False`` only the tables already in ``out`` are merged. The headline table (one
    row per piece of work and machine, from ``benchmarks/headlines.py``) heads ``out/README.md``
    and replaces the block between the ``bench-headlines`` markers of ``readme`` when given.
    """
    names = available()
    chosen = only or names
    unknown = [n for n in chosen if n not in names]
    if unknown:
        raise NnjaxError(f"Unknown benchmark {unknown[0]!r}; choose from: {', '.join(names)}.")
    out = Path(out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    failures = []
    for name in chosen if run else []:
        print(f"== benchmark {name}", flush=True)
        command = [sys.executable, "-m", f"benchmarks.bench_{name}", "--out", str(out)] + (["--quick"] if quick else [])
        result = subprocess.run(command, cwd=REPO, env=os.environ.copy())
        if result.returncode != 0:
            failures.append(name)
    tables = {p.name: json.loads(p.read_text()) for p in sorted(out.glob("*.json")) if p.name not in MERGED}
    for md in sorted(out.glob("*.md")):  # tables copied back from another machine without their JSON
        if md.name != "README.md" and md.with_suffix(".json").name not in tables:
            tables[md.with_suffix(".json").name] = table_from_markdown(md)
    sections = [p.read_text() for p in sorted(out.glob("*.md")) if p.name != "README.md"]
    (out / "all.json").write_text(json.dumps(list(tables.values()), indent=2, default=str) + "\n")
    rows = headline_rows(tables)
    (out / "headlines.json").write_text(json.dumps(rows, indent=2) + "\n")
    headline = _headlines_module().markdown(rows)
    header = ("# nnjax benchmarks\n\nProduced by `nnjax bench`; each section names its command, machine and "
              "versions.\n\n## Headlines\n\n" + headline)
    (out / "README.md").write_text(header + "\n" + "\n".join(sections))
    if readme is not None:
        replace_block(Path(readme), headline)
    if failures:
        raise NnjaxError(f"Benchmarks {', '.join(failures)} failed (see their output above); the others are in {out}.")
    return out / "README.md"


MERGED = ("all.json", "headlines.json")  # written by the merge, not tables
MARK_BEGIN = "<!-- bench-headlines:begin (written by `nnjax bench`; do not edit) -->"
MARK_END = "<!-- bench-headlines:end -->"


@functools.cache
def _headlines_module():
    """``benchmarks/headlines.py`` of the repository, loaded by path (``benchmarks`` is not installed)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("nnjax_bench_headlines", REPO / "benchmarks" / "headlines.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def headline_rows(tables: dict[str, dict]) -> list[dict]:
    """Headline rows of the tables (file name -> JSON payload): work in the benchmarks' order, CPU first."""
    module = _headlines_module()
    order = list(module.BY_TITLE)
    rows = []
    for name, table in tables.items():
        rank = order.index(table["title"]) if table.get("title") in order else len(order)
        gpu = not str(table.get("env", {}).get("device", "cpu")).startswith("cpu")
        rows += [(rank, gpu, row) for row in module.headlines(table, name.removesuffix(".json") + ".md")]
    rows.sort(key=lambda item: item[:2])
    return [row for *_, row in rows]


def replace_block(readme: Path, content: str) -> None:
    """Put ``content`` between the headline markers of ``readme``; a clear error when they are missing."""
    text = readme.read_text()
    if MARK_BEGIN not in text or MARK_END not in text:
        raise NnjaxError(f"{readme} has no benchmark headline block; add the lines {MARK_BEGIN} and {MARK_END}.")
    head, rest = text.split(MARK_BEGIN, 1)
    _, tail = rest.split(MARK_END, 1)
    readme.write_text(f"{head}{MARK_BEGIN}\n{content}{MARK_END}{tail}")


def table_from_markdown(path: Path) -> dict:
    """A table's payload (title, command, env, rows) read back from the Markdown a benchmark wrote.

    For tables whose JSON did not travel (a GPU machine's): numbers keep the Markdown's four
    significant digits; the payload says ``"from_markdown": true``.
    """
    import re

    lines = Path(path).read_text().splitlines()
    title = next((line[3:].strip() for line in lines if line.startswith("## ")), path.stem)
    env: dict = {}
    command = ""
    found = next((re.match(r"Command: `(.*)` — (\S+ \S+), (.+?) \((.*), (\d+) cores\)", line) for line in lines
                  if line.startswith("Command: ")), None)
    if found:
        command = found.group(1)
        env = {"date": found.group(2), "device": found.group(3), "cpu": found.group(4), "cores": int(found.group(5))}
    table = [line for line in lines if line.startswith("|")]
    rows = []
    if len(table) > 2:
        columns = [c.strip() for c in table[0].strip("|").split("|")]
        for line in table[2:]:
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows.append({c: _cell(v) for c, v in zip(columns, cells, strict=False) if v != ""})
    return {"title": title, "command": command, "env": env, "rows": rows, "from_markdown": True}


def _cell(text: str):
    """``"1.598"`` -> 1.598, ``"2.812e+06"`` -> 2812000.0, ``"12"`` -> 12, anything else unchanged."""
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text
