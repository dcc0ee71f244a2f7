"""Multi-process set-up errors are one sentence, and nobody waits for a peer past the deadline.

Validation and the pre-checks raise before JAX's distributed runtime starts, so they run in this
process; a runtime that never completes (a peer missing) is shown in a subprocess, because
XLA would abort it (SIGABRT) if nnjax's watchdog did not end it first.
"""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nnjax.cli import main
from nnjax.errors import NnjaxError
from nnjax.train import distributed
from nnjax.train.distributed import initialize, parse_coordinator

REPO = Path(__file__).resolve().parents[1]
ENV_NAMES = ("NNJAX_COORDINATOR", "NNJAX_NUM_PROCESSES", "NNJAX_PROCESS_ID", "NNJAX_DISTRIBUTED_TIMEOUT")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one_sentence(message: str) -> None:
    assert "\n" not in message and "Traceback" not in message and message.endswith("."), message


@pytest.mark.parametrize("env, match", [
    ({"NNJAX_NUM_PROCESSES": "abc"}, r"^NNJAX_NUM_PROCESSES='abc' is not a whole number; set it to the number"),
    ({"NNJAX_NUM_PROCESSES": "2", "NNJAX_PROCESS_ID": "one"}, r"^NNJAX_PROCESS_ID='one' is not a whole number"),
    ({"NNJAX_NUM_PROCESSES": "0"}, r"at least 1, not 0"),
    ({"NNJAX_NUM_PROCESSES": "2", "NNJAX_PROCESS_ID": "2", "NNJAX_COORDINATOR": "127.0.0.1:1234"},
     r"--process-id 2 is outside 0\.\.1"),
    ({"NNJAX_NUM_PROCESSES": "2", "NNJAX_PROCESS_ID": "0", "NNJAX_COORDINATOR": "127.0.0.1"},
     r"^NNJAX_COORDINATOR '127.0.0.1' is not HOST:PORT with a port from 1 to 65535"),
    ({"NNJAX_NUM_PROCESSES": "2", "NNJAX_PROCESS_ID": "0", "NNJAX_COORDINATOR": "127.0.0.1:1234",
      "NNJAX_DISTRIBUTED_TIMEOUT": "soon"}, r"^NNJAX_DISTRIBUTED_TIMEOUT='soon' is not a positive number"),
    ({"NNJAX_NUM_PROCESSES": "2", "NNJAX_PROCESS_ID": "0"}, r"needs a coordinator address and a process id"),
])
def test_bad_settings_are_one_sentence(monkeypatch, env, match):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(NnjaxError, match=match) as info:
        initialize()
    _one_sentence(str(info.value))


def test_the_cli_prints_the_sentence_and_exits_2(monkeypatch, capsys):
    monkeypatch.setenv("NNJAX_NUM_PROCESSES", "abc")
    assert main(["run", "perceptron", "--quick"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nnjax: error: NNJAX_NUM_PROCESSES='abc' is not a whole number") and err.count("\n") == 1


@pytest.mark.parametrize("address, expected", [
    ("127.0.0.1:1234", ("127.0.0.1", 1234)), ("node-3:65535", ("node-3", 65535)), ("[::1]:80", ("::1", 80)),
    (" localhost:1 ", ("localhost", 1)),
])
def test_coordinator_addresses_parse(address, expected):
    assert parse_coordinator(address) == expected


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.1:", ":1234", "host:0", "host:65536", "host:http",
                                     "::1:80", "a b:12"])
def test_bad_coordinator_addresses_name_the_flag(address):
    with pytest.raises(NnjaxError, match=r"^--coordinator .* is not HOST:PORT") as info:
        parse_coordinator(address)
    _one_sentence(str(info.value))


def test_one_process_needs_nothing():
    assert initialize(None, 1, None) is False
    assert initialize("127.0.0.1", None, None) is False  # not distributed: the address is not even read


def test_a_peer_without_its_coordinator_gives_up_within_the_deadline():
    port = _free_port()  # nothing listens there
    start = time.monotonic()
    with pytest.raises(NnjaxError, match=f"^Process 1 could not reach the coordinator at 127.0.0.1:{port} within 1 s")\
            as info:
        initialize(f"127.0.0.1:{port}", 2, 1, timeout=1.0)
    assert time.monotonic() - start < 2.0
    _one_sentence(str(info.value))
    assert "NNJAX_DISTRIBUTED_TIMEOUT" in str(info.value)


def test_the_coordinator_port_must_be_free():
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        with pytest.raises(NnjaxError, match=f"cannot listen on port {port}.*in use") as info:
            initialize(f"127.0.0.1:{port}", 2, 0, timeout=1.0)
    _one_sentence(str(info.value))


def test_the_port_probe_waits_for_a_late_coordinator():
    port = _free_port()
    late = socket.socket()
    late.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)

    def open_later():
        time.sleep(0.5)
        late.bind(("127.0.0.1", port))
        late.listen()

    import threading

    threading.Thread(target=open_later, daemon=True).start()
    try:
        start = time.monotonic()
        assert distributed._port_accepts("127.0.0.1", port, 5.0)
        assert 0.4 < time.monotonic() - start < 3.0
    finally:
        late.close()


def _cli(args, env, timeout=60):
    full = {**os.environ, **env, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "nnjax.cli", *args], env=full, capture_output=True, text=True,
                            timeout=timeout)
    return result, time.monotonic() - start


@pytest.mark.parametrize("pid", [0, 1])
def test_missing_peers_end_with_one_sentence_not_an_abort(pid):
    """Process 0 alone, or process 1 facing a coordinator port that is no JAX service: after the
    deadline (2 s here) the process prints one line and exits 2 instead of XLA's SIGABRT."""
    port = _free_port()
    with socket.create_server(("127.0.0.1", port if pid == 1 else 0)):  # for pid 1: accepts, never answers
        result, elapsed = _cli(["run", "perceptron", "--quick", "--no-progress"],
                               {"NNJAX_COORDINATOR": f"127.0.0.1:{port}", "NNJAX_NUM_PROCESSES": "2",
                                "NNJAX_PROCESS_ID": str(pid), "NNJAX_DISTRIBUTED_TIMEOUT": "2"})
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = [line for line in result.stderr.splitlines() if line.startswith("nnjax: error:")]
    assert lines == [
        f"nnjax: error: not all 2 processes joined the coordinator at 127.0.0.1:{port} within 2 s (this is process "
        f"{pid}); start every process 0..1 with --coordinator 127.0.0.1:{port} --num-processes 2 and its own "
        "--process-id, or set NNJAX_DISTRIBUTED_TIMEOUT to wait longer than 2 s."
    ]
    assert "Check failure" not in result.stderr and "Traceback" not in result.stderr
    assert elapsed < 30  # import + 2 s; XLA's own abort would come 30 s after nnjax's deadline
