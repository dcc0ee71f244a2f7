"""``nnjax bench --out DIR`` only replaces a README.md it wrote, and skips files in DIR that are not tables."""

import json

import pytest

from benchmarks.harness import BenchTable
from nnjax.bench import PAGE_MARK, read_tables, run_benchmarks, written_by_bench
from nnjax.cli import main
from nnjax.errors import NnjaxError

CPU = {"date": "2026-11-26 10:00", "device": "cpu:cpu", "cpu": "AMD EPYC", "cores": 2, "python": "3.11",
       "versions": {"jax": "0.10.2"}}


def _write_table(out, name="mlp"):
    table = BenchTable("MLP train step", "python -m benchmarks.bench_mlp")
    table.add(batch=128, implementation="nnjax (nnjax.nn.optim.adam)", median_ms=0.5)
    table.add(batch=128, implementation="PyTorch eager", median_ms=1.0)
    (out / f"{name}.md").write_text(table.markdown(CPU))
    (out / f"{name}.json").write_text(json.dumps({"title": table.title, "command": table.command, "env": CPU,
                                                  "rows": table.rows}))


def test_a_readme_nnjax_did_not_write_is_refused_before_anything_runs(tmp_path, capsys):
    _write_table(tmp_path)
    mine = "# My notes\n\nPlease keep.\n"
    (tmp_path / "README.md").write_text(mine)
    with pytest.raises(NnjaxError, match=r"README.md was not written by `nnjax bench`.*another --out folder") as info:
        run_benchmarks(out=tmp_path, run=True, only=["mlp"])  # refused before the benchmark would start
    assert "\n" not in str(info.value)
    assert (tmp_path / "README.md").read_text() == mine
    assert not (tmp_path / "all.json").exists() and not (tmp_path / "headlines.json").exists()
    assert "== benchmark" not in capsys.readouterr().out
    # the CLI says the same sentence and exits 2
    assert main(["bench", "--merge-only", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith(f"nnjax: error: {tmp_path / 'README.md'} was not written by")
    assert (tmp_path / "README.md").read_text() == mine


def test_its_own_page_is_marked_and_rewritten(tmp_path):
    _write_table(tmp_path)
    page = run_benchmarks(out=tmp_path, run=False)
    text = page.read_text()
    assert PAGE_MARK in text and written_by_bench(page) and "## MLP train step" in text
    page.write_text(text.replace("## Headlines", "## Headlines (stale)"))
    run_benchmarks(out=tmp_path, run=False)
    assert "(stale)" not in page.read_text()


def test_pages_from_before_the_marker_are_still_recognised(tmp_path):
    old = tmp_path / "README.md"
    old.write_text("# nnjax benchmarks\n\nProduced by `nnjax bench`; each section names its command, machine and "
                   "versions.\n\n## Headlines\n")
    assert written_by_bench(old)
    old.write_text("# nnjax benchmarks\n\nHand-written.\n")
    assert not written_by_bench(old)


def test_json_and_markdown_that_are_not_tables_are_skipped_with_a_note(tmp_path, capsys):
    _write_table(tmp_path)
    (tmp_path / "settings.json").write_text('{"theme": "dark"}')
    (tmp_path / "list.json").write_text("[1, 2, 3]")
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "rows.json").write_text('{"title": "x", "env": {}, "rows": [1]}')
    (tmp_path / "notes.md").write_text("# Notes\n\nnothing measured here\n")
    page = run_benchmarks(out=tmp_path, run=False)
    err = capsys.readouterr().err.splitlines()
    assert sorted(err) == [
        "nnjax bench: note: skipping broken.json: not readable JSON (JSONDecodeError).",
        "nnjax bench: note: skipping list.json: not a benchmark table (no title, env and rows).",
        "nnjax bench: note: skipping notes.md: not a benchmark table (no ## title, Command: line and table).",
        "nnjax bench: note: skipping rows.json: not a benchmark table (no title, env and rows).",
        "nnjax bench: note: skipping settings.json: not a benchmark table (no title, env and rows).",
    ]
    assert [t["title"] for t in json.loads((tmp_path / "all.json").read_text())] == ["MLP train step"]
    assert "nothing measured" not in page.read_text() and "| MLP" in page.read_text()
    tables, sections = read_tables(tmp_path)  # the merged files themselves are never read as tables
    assert list(tables) == ["mlp.json"] and len(sections) == 1
