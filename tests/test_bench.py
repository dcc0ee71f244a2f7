"""``nnjax bench``'s merge: one page, a headline table from every table, the README block rewritten."""

import json
import platform

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
    assert "CPU, 2 cores (AMD EPYC), 2026-11-26 | 0.5 ms | PyTorch eager 1 ms | 2.00 |  | `mlp.md`" in rows[0]
    assert "NVIDIA H100 80GB HBM3, 2026-11-26 | 0.1 ms | PyTorch eager 0.4 ms | 4.00 |  | `mlp_h100_gpu.md`" in rows[1]
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
    # every row against the machine's peak measured in that run: a share, not a raw rate
    peak = table["env"]["peak"]
    assert peak["gflops"] >= max(peak["xla_gflops"], peak["torch_gflops"]) > 1 and peak["copy_gbs"] > 0.1
    # the share is the row's XLA flop count over its median time over that peak; its size is not
    # checked (under the parallel test suite the peak is measured with the other worker running,
    # so a row timed in a quieter moment can pass 100%: the tables come from a quiet machine)
    for row in table["rows"]:
        share = 100 * row["mflops"] * 1e6 / (row["median_ms"] / 1e3) / (peak["gflops"] * 1e9)
        assert row["pct_of_peak"] == pytest.approx(share, rel=1e-9) and row["pct_of_peak"] > 0
    assert "Measured peak in this run" in (tmp_path / "mlp.md").read_text()
    assert "avx2" in table["env"]["vector_extensions"] or platform.machine() != "x86_64"
    [headline] = json.loads((tmp_path / "headlines.json").read_text())
    assert headline["work"].startswith("MLP") and headline["machine"].startswith("CPU")
    assert "## MLP train step" in (tmp_path / "README.md").read_text()
    assert (REPO / "README.md").read_text() == readme_before
    with pytest.raises(NnjaxError, match="Unknown benchmark 'nope'"):
        run_benchmarks(only=["nope"], out=tmp_path)


def test_headline_machine_names_the_vector_extensions_and_the_row_s_share_of_peak():
    from benchmarks.headlines import machine, markdown, mlp

    env = {"device": "cpu:cpu", "cores": 2, "cpu": "Intel Xeon", "vector_extensions": ["avx2", "avx512f", "amx_tile"]}
    assert machine(env) == "CPU, 2 cores (Intel Xeon, AVX-512, AMX)"
    assert machine({**env, "vector_extensions": ["avx2", "fma"]}) == "CPU, 2 cores (Intel Xeon, AVX2)"
    rows = [{"batch": 128, "implementation": "nnjax (nnjax.nn.optim.adam)", "median_ms": 1.0, "pct_of_peak": 12.34},
            {"batch": 128, "implementation": "PyTorch eager", "median_ms": 2.0, "pct_of_peak": 6.17}]
    [line] = mlp(rows)
    assert line["pct_of_peak"] == 12.34
    assert "| 2.00 | 12.3 |" in markdown([{**line, "machine": "m", "date": "d", "table": "mlp.md"}])


def test_accelerator_script_refuses_a_machine_without_a_gpu(tmp_path):
    """benchmarks/accelerator.sh (the GPU rows' one prepared script) stops with one line on a CPU-only JAX."""
    import os
    import subprocess
    import sys

    from nnjax.bench import REPO

    done = subprocess.run(["bash", str(REPO / "benchmarks" / "accelerator.sh"), str(tmp_path)], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHON": sys.executable})
    assert done.returncode == 2 and "JAX sees no GPU here; nothing run." in done.stderr
    assert not list(tmp_path.iterdir())


def test_xla_cost_counts_a_product_s_flops_and_pct_of_peak_divides_by_the_given_peak():
    import jax
    import jax.numpy as jnp

    from benchmarks.harness import pct_of_peak, xla_cost

    a = jnp.ones((64, 32), jnp.float32)
    b = jnp.ones((32, 16), jnp.float32)
    work = xla_cost(jax.jit(lambda x, y: x @ y), a, b)
    assert work["flops"] == 2 * 64 * 32 * 16 and work["bytes"] >= 4 * (64 * 32 + 32 * 16 + 64 * 16)
    peak = {"gflops": 100.0, "copy_gbs": 10.0}
    assert pct_of_peak({"flops": 5e9}, 0.1, peak=peak) == pytest.approx(50.0)
    assert pct_of_peak({"bytes": 1e9}, 0.2, bound="memory", peak=peak) == pytest.approx(50.0)
