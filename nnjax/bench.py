"""``nnjax bench``: run every ``benchmarks/bench_*.py`` and merge their tables into one.

The benchmarks live beside the package in the repository (``benchmarks/``); each runs in
its own process so that its XLA flags and threads do not leak into the next.
"""

from __future__ import annotations

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
    only: list[str] | None = None, out: Path = Path("benchmarks/results"), quick: bool = False, run: bool = True
) -> Path:
    """Run the benchmarks (``only`` some), then write ``out/README.md`` and ``out/all.json``.

    With ``run=False`` only the tables already in ``out`` are merged.
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
    merged = [json.loads(p.read_text()) for p in sorted(out.glob("*.json")) if p.name != "all.json"]
    sections = [p.read_text() for p in sorted(out.glob("*.md")) if p.name != "README.md"]
    (out / "all.json").write_text(json.dumps(merged, indent=2) + "\n")
    header = "# nnjax benchmarks\n\nProduced by `nnjax bench`; each section names its command, machine and versions.\n"
    (out / "README.md").write_text(header + "\n" + "\n".join(sections))
    if failures:
        raise NnjaxError(f"Benchmarks {', '.join(failures)} failed (see their output above); the others are in {out}.")
    return out / "README.md"
