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
    page = out / "README.md"
    if page.exists() and not written_by_bench(page):  # before any benchmark runs: refuse at once
        raise NnjaxError(
            f"{page} was not written by `nnjax bench` (it has no nnjax-bench-page marker line), so it is not "
            "replaced; move it away or give another --out folder."
        )
    out.mkdir(parents=True, exist_ok=True)
    failures = []
    for name in chosen if run else []:
        print(f"== benchmark {name}", flush=True)
        command = [sys.executable, "-m", f"benchmarks.bench_{name}", "--out", str(out)] + (["--quick"] if quick else [])
        result = subprocess.run(command, cwd=REPO, env=os.environ.copy())
        if result.returncode != 0:
            failures.append(name)
    tables, sections = read_tables(out)
    (out / "all.json").write_text(json.dumps(list(tables.values()), indent=2, default=str) + "\n")
    rows = headline_rows(tables)
    (out / "headlines.json").write_text(json.dumps(rows, indent=2) + "\n")
    headline = _headlines_module().markdown(rows)
    header = (f"# nnjax benchmarks\n\n{PAGE_MARK}\n\nProduced by `nnjax bench`; each section names its command, "
              "machine and versions.\n\n## Headlines\n\n" + headline)
    page.write_text(header + "\n" + "\n".join(sections))
    if readme is not None:
        replace_block(Path(readme), headline)
    if failures:
        raise NnjaxError(f"Benchmarks {', '.join(failures)} failed (see their output above); the others are in {out}.")
    return out / "README.md"


MERGED = ("all.json", "headlines.json")  # written by the merge, not tables
#: the line that marks ``out/README.md`` as written by ``nnjax bench`` (and so safe to replace).
PAGE_MARK = "<!-- nnjax-bench-page (written by `nnjax bench`; rewritten on every merge) -->"
_LEGACY_PAGE_START = "# nnjax benchmarks\n\nProduced by `nnjax bench`;"  # pages written before the marker


def written_by_bench(page: Path) -> bool:
    """Whether ``page`` is a merged page ``nnjax bench`` wrote (it holds :data:`PAGE_MARK`, or starts as the
    pages written before the marker did)."""
    try:
        text = Path(page).read_text(errors="replace")
    except OSError:
        return False
    return PAGE_MARK in text or text.startswith(_LEGACY_PAGE_START)


def is_table(payload: object) -> bool:
    """Whether a parsed JSON file is a benchmark table: an object with a ``title``, an ``env`` object and
    a ``rows`` list of objects (what ``benchmarks.harness.BenchTable`` writes)."""
    return (isinstance(payload, dict) and isinstance(payload.get("title"), str)
            and isinstance(payload.get("env"), dict) and isinstance(payload.get("rows"), list)
            and all(isinstance(row, dict) for row in payload["rows"]))


def _is_markdown_table(text: str) -> bool:
    lines = text.splitlines()
    return (any(line.startswith("## ") for line in lines) and any(line.startswith("Command: `") for line in lines)
            and any(line.startswith("|") for line in lines))


def read_tables(out: Path) -> tuple[dict[str, dict], list[str]]:
    """The benchmark tables in ``out`` (JSON file name -> payload) and the Markdown sections of the page.

    A ``.json`` file that is not a table (or not valid JSON) and a ``.md`` file that is not a
    benchmark's table are skipped with a one-line note; a table whose JSON did not travel is read
    back from its Markdown (:func:`table_from_markdown`).
    """
    tables: dict[str, dict] = {}
    for path in sorted(Path(out).glob("*.json")):
        if path.name in MERGED:
            continue
        try:
            payload = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            print(f"nnjax bench: note: skipping {path.name}: not readable JSON ({type(err).__name__}).",
                  file=sys.stderr, flush=True)
            continue
        if not is_table(payload):
            print(f"nnjax bench: note: skipping {path.name}: not a benchmark table (no title, env and rows).",
                  file=sys.stderr, flush=True)
            continue
        tables[path.name] = payload
    sections = []
    for md in sorted(Path(out).glob("*.md")):
        if md.name == "README.md":
            continue
        try:
            text = md.read_text()
        except (OSError, UnicodeDecodeError):
            text = ""
        if not _is_markdown_table(text):
            print(f"nnjax bench: note: skipping {md.name}: not a benchmark table (no ## title, Command: line "
                  "and table).", file=sys.stderr, flush=True)
            continue
        sections.append(text)
        if md.with_suffix(".json").name not in tables:  # a table copied back from another machine without its JSON
            tables[md.with_suffix(".json").name] = table_from_markdown(md)
    return tables, sections
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
