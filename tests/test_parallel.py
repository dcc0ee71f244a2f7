"""Data parallelism: 8 simulated CPU devices and two processes give the one-device result."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

WORKER = Path(__file__).parent / "workers" / "data_parallel_fit.py"
REPO = Path(__file__).resolve().parents[1]


def _run(args, env_extra=None, timeout=300):
    env = {**os.environ, **(env_extra or {})}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.Popen([sys.executable, str(WORKER), *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(proc, timeout=300):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]


def _compare(a_path, b_path):
    a, b = np.load(a_path), np.load(b_path)
    np.testing.assert_allclose(a["losses"], b["losses"], rtol=1e-5, atol=1e-5)
    params = [k for k in a.files if k.startswith("arr_")]
    assert params and params == [k for k in b.files if k.startswith("arr_")]
    for key in params:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-5)
    return a, b


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_eight_simulated_devices_match_one_device(tmp_path, model):
    if model == "cnn":
        pytest.importorskip("nnjax.models.cnn")
    flags = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    procs = [(_run([model, mode, str(tmp_path / f"{mode}.npz")], flags)) for mode in ("single", "mesh")]
    for proc in procs:
        _finish(proc)
    single, mesh = _compare(tmp_path / "single.npz", tmp_path / "mesh.npz")
    assert int(mesh["devices"]) == 8


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_process(tmp_path):
    reference = _run(["mlp", "single", str(tmp_path / "one.npz")])
    port = _free_port()
    workers = [
        _run(["mlp", "multiprocess", str(tmp_path / "two.npz")],
             {"NNJAX_COORDINATOR": f"127.0.0.1:{port}", "NNJAX_NUM_PROCESSES": "2", "NNJAX_PROCESS_ID": str(i)})
        for i in range(2)
    ]
    for proc in [reference, *workers]:
        _finish(proc)
    _, two = _compare(tmp_path / "one.npz", tmp_path / "two.npz")
    assert int(two["devices"]) == 2


def test_uneven_batch_is_a_clear_error():
    code = (
        "import os; os.environ['XLA_FLAGS']='--xla_force_host_platform_device_count=4'\n"
        "import numpy as np\n"
        "from nnjax.errors import NnjaxError\n"
        "from nnjax.train.parallel import data_mesh, shard_batch\n"
        "try:\n    shard_batch({'x': np.zeros((6, 2))}, data_mesh())\nexcept NnjaxError as e:\n    print(e)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "does not divide over 4 devices" in result.stdout, result.stderr
