"""``nnjax bench``'s merge: one page, a headline table from every table, the README block rewritten."""

import json

import pytest

from benchmarks.harness import BenchTable
from nnjax.bench import MARK_BEGIN, MARK_END, run_benchmarks, table_from_markdown
from nnjax.errors import NnjaxError

CPU = {"date": "2026-11-26 10:00", "device": "cpu:cpu", "cpu": "AMD EPYC", "cores": 2, "python": "3.11",
       "versions": {"jax": "0.10.2"}}
GPU = {**CPU, "device": "gpu:NVIDIA H100 80GB HBM3", "cpu": "Intel Xeon", "cores": 16}


def _mlp_table(ours_ms: float, torch_ms: float) -> BenchTable:
    table = BenchTable("MLP train step", "python -m benchmarks.bench_mlp")
    table.add(batch=128, implementation="nnjax (nnjax.nn.optim.adam)", median_ms=ours_ms)
    table.add(batch=128, implementation="PyTorch eager", median_ms=torch_ms)
    return table


def test_markdown_tables_read_back_with_their_provenance(tmp_path):
    path = tmp_path / "mlp_gpu.md"
    path.write_text(_mlp_table(0.123456, 2.5).markdown(GPU))
    table = table_from_markdown(path)
    assert table["title"] == "MLP train step" and table["from_markdown"]
    assert table["env"] == {"date": "2026-11-26 10:00", "device": "gpu:NVIDIA H100 80GB HBM3", "cpu": "Intel Xeon",
                            "cores": 16}
    assert table["rows"][0] == {"batch": 128, "implementation": "nnjax (nnjax.nn.optim.adam)", "median_ms": 0.1235}


def test_merge_writes_headlines_into_the_page_and_the_readme_block(tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    cpu = _mlp_table(0.5, 1.0)
    (out / "mlp.md").write_text(cpu.markdown(CPU))
    (out / "mlp.json").write_text(json.dumps({"title": cpu.title, "command": cpu.command, "env": CPU,
                                              "rows": cpu.rows}))
    (out / "mlp_h100_gpu.md").write_text(_mlp_table(0.1, 0.4).markdown(GPU))  # copied back without its JSON
    readme = tmp_path / "README.md"
    readme.write_text(f"# project\n\nbefore\n\n{MARK_BEGIN}\nold numbers\n{MARK_END}\n\nafter\n")

    run_benchmarks(out=out, run=False, readme=readme)

    text = readme.read_text()
    assert "old numbers" not in text and text.startswith("# project\n\nbefore\n\n") and text.endswith("\n\nafter\n")
    block = text.split(MARK_BEGIN)[1].split(MARK_END)[0]
    rows = [line for line in block.splitlines() if line.startswith("| MLP")]
    assert len(rows) == 2  # CPU first, then the GPU
    assert "CPU, 2 cores (AMD EPYC), 2026-11-26 | 0.5 ms | PyTorch eager 1 ms | 2.00 | `mlp.md`" in rows[0]
    assert "NVIDIA H100 80GB HBM3, 2026-11-26 | 0.1 ms | PyTorch eager 0.4 ms | 4.00 | `mlp_h100_gpu.md`" in rows[1]
    page = (out / "README.md").read_text()
    assert "## Headlines" in page and block.strip() in page
    assert len(json.loads((out / "all.json").read_text())) == 2
    headlines = json.loads((out / "headlines.json").read_text())
    assert [(h["machine"], h["ratio"]) for h in headlines] == [("CPU, 2 cores (AMD EPYC)", "2.00"),
                                                              ("NVIDIA H100 80GB HBM3", "4.00")]
    run_benchmarks(out=out, run=False, readme=readme)  # merging again reads neither merged file as a table
    assert len(json.loads((out / "all.json").read_text())) == 2


def test_readme_without_markers_is_one_clear_error(tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    readme = tmp_path / "README.md"
    readme.write_text("# project\n")
    with pytest.raises(NnjaxError, match="no benchmark headline block"):
        run_benchmarks(out=out, run=False, readme=readme)
    assert readme.read_text() == "# project\n"  # nothing lost


def test_torch_peer_runs_on_jax_s_device_and_learns():
    """The shared PyTorch peer: on a CPU-only JAX it stays on the CPU (no sync wrapper) and its steps train."""
    torch = pytest.importorskip("torch")
    from benchmarks.harness import torch_device, torch_synced, torch_train_step

    assert torch_device() == "cpu"
    call = lambda: 1  # noqa: E731
    assert torch_synced(call, "cpu") is call
    torch.manual_seed(0)
    inputs = torch.randn(64, 5)
    labels = (inputs @ torch.randn(5, 3)).argmax(1)  # learnable by a linear layer
    step = torch_train_step(torch.nn.Linear(5, 3), inputs, labels, lr=0.05)
    losses = [step().item() for _ in range(30)]
    assert losses[-1] < 0.8 * losses[0]


def test_cli_runs_one_benchmark_into_its_own_folder(tmp_path, capsys):
    """`nnjax bench --only mlp --quick --out DIR`: the benchmark runs in its own process and DIR gets its table,
    the merged page and the headline; the repository's README is left alone (DIR is not the default)."""
    from nnjax.bench import REPO
    from nnjax.cli import main

    readme_before = (REPO / "README.md").read_text()
    assert main(["bench", "--only", "mlp", "--quick", "--out", str(tmp_path)]) == 0
    table = json.loads((tmp_path / "mlp.json").read_text())
    assert table["command"] == "python -m benchmarks.bench_mlp --quick" and len(table["rows"]) == 9
    assert all(row["median_ms"] > 0 for row in table["rows"])
    [headline] = json.loads((tmp_path / "headlines.json").read_text())
    assert headline["work"].startswith("MLP") and headline["machine"].startswith("CPU")
    assert "## MLP train step" in (tmp_path / "README.md").read_text()
    assert (REPO / "README.md").read_text() == readme_before
    with pytest.raises(NnjaxError, match="Unknown benchmark 'nope'"):
        run_benchmarks(only=["nope"], out=tmp_path)
