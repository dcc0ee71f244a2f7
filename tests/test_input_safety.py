"""Input that is hostile or merely wrong: refused in one sentence, quickly, without a hang or a blow-up.

* torch pickles crafted by hand (pickle opcodes, no torch needed): shared and cyclic
  structures, tensors that ask for more memory than the file holds, storages whose sizes
  lie, memo indices and dict keys that exhaust the plain C unpickler;
* images: decompression bombs, 16/32-bit pixels, FIFOs, link loops, empty class folders;
* SMS splits without both classes, and command-line texts that are not UTF-8.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nnjax.data import mnist
from nnjax.data.cats_vs_dogs import load_folder_split
from nnjax.data.image_folder import ImageDecodeError, decode_image, list_image_folder, load_image_folder, to_8bit
from nnjax.data.sms_spam import check_splits, parse_sms_spam, stratified_split
from nnjax.data.text import check_utf8_texts
from nnjax.errors import DataNotFoundError, NnjaxError
from nnjax.weights.torch_pickle import UnsafePickleError, load_torch_state_dict

# --------------------------------------------------------------------------- helpers


class _TooSlow(BaseException):  # not an Exception: no loader may swallow it
    pass


@contextlib.contextmanager
def _within(seconds: float = 2.0):
    """Fail (instead of hanging) when the block takes longer than ``seconds``; the work checked
    here takes milliseconds, the limit only leaves room for a busy machine."""

    def expire(signum, frame):
        raise _TooSlow(f"took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def _fifo_rescue(fifo: Path, after: float = 2.0):
    """Yields an event that is set when, ``after`` seconds on, someone is blocked reading ``fifo``;
    such a reader is then released (a writer opens and closes the FIFO, so it reads end-of-file).
    A SIGALRM cannot do this when the reader is a worker thread the main thread waits for."""
    rescued, stop = threading.Event(), threading.Event()

    def watch():
        if stop.wait(after):
            return
        while not stop.wait(0.05):
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # ENXIO unless a reader waits
                rescued.set()
            except OSError:
                pass

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield rescued
    finally:
        stop.set()
        watcher.join()


@contextlib.contextmanager
def _peak_memory_below(limit_bytes: int):
    """Fail when the block's Python + NumPy allocations peak above ``limit_bytes``."""
    tracemalloc.start()
    try:
        yield
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < limit_bytes, f"peak allocation {peak / 2**20:.1f} MiB"


# A tiny pickle assembler (protocol-2 opcodes), enough to write torch's legacy and zip formats.


def _u(text: str) -> bytes:  # BINUNICODE
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _i(n: int) -> bytes:  # BININT (signed 32-bit), else LONG1
    if -(1 << 31) <= n < (1 << 31):
        return b"J" + struct.pack("<i", n)
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def _t(*items: bytes) -> bytes:  # MARK ... TUPLE
    return b"(" + b"".join(items) + b"t"


def _g(module: str, name: str) -> bytes:  # GLOBAL
    return b"c" + f"{module}\n{name}\n".encode()


def _storage(key: str, numel: int, kind: str = "FloatStorage") -> bytes:
    return _t(_u("storage"), _g("torch", kind), _u(key), _u("cpu"), _i(numel), b"N") + b"Q"  # BINPERSID


def _tensor(key: str, numel: int, offset: int, size: tuple, stride: tuple) -> bytes:
    """``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())``."""
    args = _t(
        _storage(key, numel),
        _i(offset),
        _t(*map(_i, size)),
        _t(*map(_i, stride)),
        b"\x89",
        _g("collections", "OrderedDict") + b")R",
    )
    return _g("torch._utils", "_rebuild_tensor_v2") + args + b"R"


def _state(*pairs: tuple[str, bytes]) -> bytes:
    """A protocol-2 pickle of ``{key: <ops>, ...}``."""
    return b"\x80\x02}(" + b"".join(_u(k) + v for k, v in pairs) + b"u."


def _legacy(path: Path, state: bytes, storages: list[tuple[str, np.ndarray]], header_numel=None) -> Path:
    """torch's legacy file: magic, protocol, sys info, the state, the storage keys, then per
    storage an int64 element count and its little-endian bytes."""
    sys_info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
    head = pickle.dumps(0x1950A86A20F9469CFC6C, 2) + pickle.dumps(1001, 2) + pickle.dumps(sys_info, 2)
    body = b"".join(
        struct.pack("<q", len(v) if header_numel is None else header_numel) + v.astype("<f4").tobytes()
        for _, v in storages
    )
    path.write_bytes(head + state + pickle.dumps([k for k, _ in storages], 2) + body)
    return path


def _zip(path: Path, state: bytes, storages: list[tuple[str, bytes]], compress=zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", state)
        archive.writestr("archive/byteorder", "little")
        for key, raw in storages:
            archive.writestr(f"archive/data/{key}", raw, compress_type=compress)
    return path


def _without_frame(obj) -> bytes:
    """``pickle.dumps(obj, 2)`` without its PROTO header and STOP, to splice into a state."""
    return pickle.dumps(obj, 2)[2:-1]


VALUES = np.arange(12, dtype=np.float32)


# --------------------------------------------------------------------------- torch pickles


def test_the_assembler_writes_files_the_loader_reads_exactly(tmp_path):
    """The crafted files below are refused for what they ask, not for a broken assembler."""
    state = _state(("w", _tensor("0", 12, 2, (2, 3), (1, 2))), ("b", _tensor("1", 3, 0, (3,), (1,))))
    loaded = load_torch_state_dict(_legacy(tmp_path / "ok.pth", state, [("0", VALUES), ("1", VALUES[:3])]))
    np.testing.assert_array_equal(loaded["w"], [[2, 4, 6], [3, 5, 7]])
    np.testing.assert_array_equal(loaded["b"], [0, 1, 2])
    zipped = load_torch_state_dict(
        _zip(tmp_path / "ok.zip", state, [("0", VALUES.tobytes()), ("1", VALUES[:3].tobytes())])
    )
    np.testing.assert_array_equal(zipped["w"], loaded["w"])


def test_shared_and_nested_structures_are_walked_once(tmp_path):
    chain: list = []
    for _ in range(60):  # 2**60 paths through 60 lists
        chain = [chain, chain]
    layer: list = [[]]
    for _ in range(30):  # 4**30 paths through 120 lists
        layer = [list(layer) for _ in range(4)]
    state = _state(("weight", _tensor("0", 12, 0, (12,), (1,))), ("chain", _without_frame(chain)))
    path = _legacy(tmp_path / "shared.pth", state, [("0", VALUES)])
    assert path.stat().st_size < 1500
    with _within():
        loaded = load_torch_state_dict(path)
    assert set(loaded) == {"weight"}  # only tensors are returned; the rest was walked, once
    np.testing.assert_array_equal(loaded["weight"], VALUES)
    wide = _legacy(
        tmp_path / "wide.pth",
        _state(("w", _tensor("0", 12, 0, (12,), (1,))), ("x", _without_frame(layer))),
        [("0", VALUES)],
    )
    with _within():
        assert set(load_torch_state_dict(wide)) == {"w"}


def test_cycles_and_absurd_nesting_are_refused(tmp_path):
    loop: list = []
    loop.append(loop)
    deep: list = []
    for _ in range(150):
        deep = [deep]
    for name, junk, reason in (("loop", loop, "contains itself"), ("deep", deep, "more than 100 levels")):
        path = _legacy(
            tmp_path / f"{name}.pth",
            _state(("w", _tensor("0", 12, 0, (12,), (1,))), ("x", _without_frame(junk))),
            [("0", VALUES)],
        )
        with _within(), pytest.raises(UnsafePickleError, match=reason):
            load_torch_state_dict(path)


def test_tensors_asking_for_more_memory_than_the_file_holds_are_refused(tmp_path):
    # 16 tensors of 2**24 floats (1 GiB) over one 4-byte storage through stride 0: a file of 2.5 KB
    broadcast = _state(*((f"w{n}", _tensor("0", 1, 0, (1 << 24,), (0,))) for n in range(16)))
    path = _legacy(tmp_path / "stride0.pth", broadcast, [("0", VALUES[:1])])
    assert path.stat().st_size < 3000
    with _within(), _peak_memory_below(8 << 20), pytest.raises(UnsafePickleError, match="stride 0 or overlapping"):
        load_torch_state_dict(path)
    # overlapping strides: every element lies inside 12, but 12 x 12 of them
    overlap = _legacy(tmp_path / "overlap.pth", _state(("w", _tensor("0", 12, 0, (12, 12), (1, 0)))), [("0", VALUES)])
    with _within(), pytest.raises(UnsafePickleError, match="144 elements over a storage of only 12"):
        load_torch_state_dict(overlap)
    # beyond the storage's last element, or negative numbers anywhere
    for name, tensor, reason in (
        ("outside", _tensor("0", 12, 10, (3,), (1,)), "reaches element 12 of a storage of 12"),
        ("negative-stride", _tensor("0", 12, 11, (3,), (-1,)), "malformed size, stride or offset"),
        ("negative-size", _tensor("0", 12, 0, (-3,), (1,)), "malformed size, stride or offset"),
        ("negative-offset", _tensor("0", 12, -1, (3,), (1,)), "malformed size, stride or offset"),
    ):
        bad = _legacy(tmp_path / f"{name}.pth", _state(("w", tensor)), [("0", VALUES)])
        with pytest.raises(UnsafePickleError, match=reason):
            load_torch_state_dict(bad)


def test_many_distinct_views_are_capped_but_identical_views_are_shared(tmp_path):
    # 40 views of 10 of the 12 values each: 400 floats from 12 in the file
    many = _state(*((f"w{n}", _tensor("0", 12, n % 3, (10,), (1,))) for n in range(40)))
    with _within(), pytest.raises(UnsafePickleError, match="2 times the bytes the file holds"):
        load_torch_state_dict(_legacy(tmp_path / "many.pth", many, [("0", VALUES)]))
    # tied weights (one tensor saved under several names) cost one array
    tied = _state(*((f"layer{n}.weight", _tensor("0", 12, 0, (3, 4), (4, 1))) for n in range(40)))
    loaded = load_torch_state_dict(_legacy(tmp_path / "tied.pth", tied, [("0", VALUES)]))
    assert len(loaded) == 40 and len({id(v) for v in loaded.values()}) == 1
    np.testing.assert_array_equal(loaded["layer7.weight"], VALUES.reshape(3, 4))


def test_storages_must_hold_exactly_the_bytes_they_declare(tmp_path):
    tensor = _state(("w", _tensor("0", 12, 0, (12,), (1,))))
    lying = _legacy(tmp_path / "lying.pth", tensor, [("0", VALUES)], header_numel=13)
    with pytest.raises(NnjaxError, match=r"disagrees about the size of storage '0' \(13 vs 12 elements\)"):
        load_torch_state_dict(lying)
    short = tmp_path / "short.pth"
    short.write_bytes(_legacy(tmp_path / "full.pth", tensor, [("0", VALUES)]).read_bytes()[:-5])
    with pytest.raises(NnjaxError, match="ends early"):
        load_torch_state_dict(short)
    # a storage declaring 2**40 floats (4 TiB) in a file of a few hundred bytes: refused without allocating
    huge = _legacy(
        tmp_path / "huge.pth",
        _state(("w", _tensor("0", 1 << 40, 0, (1,), (1,)))),
        [("0", VALUES)],
        header_numel=1 << 40,
    )
    with _within(), _peak_memory_below(8 << 20), pytest.raises(NnjaxError, match="ends early"):
        load_torch_state_dict(huge)
    # zip format: a storage member longer than its record, and a compressed member
    longer = _zip(tmp_path / "longer.zip", tensor, [("0", VALUES.tobytes() + b"\0" * 4)])
    with pytest.raises(NnjaxError, match="holds 52 bytes but its record says 48"):
        load_torch_state_dict(longer)
    packed = _zip(tmp_path / "packed.zip", tensor, [("0", VALUES.tobytes())], compress=zipfile.ZIP_DEFLATED)
    with pytest.raises(UnsafePickleError, match="compressed"):
        load_torch_state_dict(packed)


def test_memo_indices_keys_sets_and_state_that_exhaust_the_c_unpickler(tmp_path):
    """Each payload runs in a child process with a time-out: a regression here would hang in C code,
    out of reach of a signal."""
    weight = ("w", _tensor("0", 12, 0, (12,), (1,)))
    # a tuple nested 60 deep from shared halves: hashing it takes 2**60 steps
    ops = b")r\x00\x00\x00\x00"  # EMPTY_TUPLE, LONG_BINPUT 0
    for n in range(60):
        ops += b"j" + struct.pack("<I", n) + b"j" + struct.pack("<I", n) + b"\x86r" + struct.pack("<I", n + 1)
    nested_key = b"\x80\x02}(" + _u("w") + weight[1] + ops + _i(1) + b"u."
    payloads = {
        # LONG_BINPUT 2**32 - 1: the C unpickler allocates a 32 GiB memo array for it
        "memo": (_state(weight, ("m", b"N" + b"r" + struct.pack("<I", (1 << 32) - 1))), None),
        "tuple-key": (nested_key, "keys a dict by a value of type tuple"),
        "int-key": (
            b"\x80\x02}(" + _u("w") + weight[1] + b"L" + str(1 << 80).encode() + b"L\n" + _i(1) + b"u.",
            "keys a dict by a value of type int",
        ),
        "set": (_state(weight, ("s", b"\x8f(" + _i(1) + b"\x90")), "builds a set"),
        "build": (
            _state(("w", _tensor("0", 12, 0, (12,), (1,)) + b"}(" + _u("size") + _t(_i(1 << 24)) + b"ub")),
            "sets the state of a _TensorRef",
        ),
    }
    script = (
        "import sys\n"
        "from nnjax.weights.torch_pickle import load_torch_state_dict\n"
        "from nnjax.errors import NnjaxError\n"
        "try:\n"
        "    print(sorted(load_torch_state_dict(sys.argv[1])))\n"
        "except NnjaxError as err:\n"
        "    print('REFUSED', err)\n"
    )
    for name, (state, reason) in payloads.items():
        path = _legacy(tmp_path / f"{name}.pth", state, [("0", VALUES)])
        assert path.stat().st_size < 2000
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        done = subprocess.run(
            [sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=60, env=env
        )
        assert done.returncode == 0, done.stderr[-2000:]
        if reason is None:
            assert done.stdout.strip() == "['w']", done.stdout
        else:
            assert done.stdout.startswith("REFUSED") and reason in done.stdout, done.stdout


# --------------------------------------------------------------------------- images


def _png_header(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width x height`` 1-bit pixels (a few bytes of data follow)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )
    return path


def test_decompression_bomb_is_one_sentence_with_the_size(tmp_path):
    bomb = _png_header(tmp_path / "bomb.png", 20_000, 10_000)  # 200 megapixels, PIL's limit is ~179
    with _within(), pytest.raises(ImageDecodeError, match=r"bomb.png' is 200 megapixels, over PIL's decompression"):
        decode_image(bomb)
    with _within(), pytest.raises(NnjaxError, match=r"is 200 megapixels, over PIL's decompression-bomb limit of 179"):
        mnist.load_digit_image(bomb)


_GRADIENT = np.linspace(0, 65535, 256).round().astype(np.uint16)[None].repeat(4, axis=0)  # [4, 256]


@pytest.mark.parametrize(
    "name, array, expected",
    [
        ("u16.png", _GRADIENT, _GRADIENT / 257),
        ("u16.tif", _GRADIENT, _GRADIENT / 257),
        ("u16b.tif", _GRADIENT.astype(">u2"), _GRADIENT / 257),
        ("i32-fits.tif", _GRADIENT.astype(np.int32), _GRADIENT / 257),
        (
            "i32-wide.tif",
            _GRADIENT.astype(np.int32) * 1000 - 7_000_000,
            (_GRADIENT.astype(np.float64) * 1000) / (65535 * 1000) * 255,
        ),
        ("f-unit.tif", (_GRADIENT / 65535).astype(np.float32), _GRADIENT / 65535 * 255),
        ("f-wide.tif", (_GRADIENT / 65535 * 10 - 5).astype(np.float32), _GRADIENT / 65535 * 255),
    ],
)
def test_16_and_32_bit_images_keep_their_grey_levels(tmp_path, name, array, expected):
    path = tmp_path / name
    Image.fromarray(array).save(path)
    with Image.open(path) as check:
        assert check.mode in ("I;16", "I;16B", "I", "F")  # really a deep image, as written
    rgb = decode_image(path, size=None)
    assert rgb.shape == (4, 256, 3) and (rgb[..., 0] == rgb[..., 2]).all()
    gray = mnist._open_grayscale(path)
    for row in (rgb[0, :, 0].astype(float), gray[0]):
        np.testing.assert_allclose(row, expected[0], atol=1.0)
        assert len(np.unique(row)) > 200 and (np.diff(row) >= 0).all()  # many levels, in order: not two


def test_a_16_bit_digit_reads_like_its_8_bit_twin(tmp_path):
    digit = np.full((28, 28), 255, np.uint8)
    digit[6:22, 12:16] = 0  # a dark "1" on white paper
    Image.fromarray(digit).save(tmp_path / "d8.png")
    Image.fromarray(digit.astype(np.uint16) * 257).save(tmp_path / "d16.png")
    np.testing.assert_array_equal(
        mnist.load_digit_image(tmp_path / "d16.png"), mnist.load_digit_image(tmp_path / "d8.png")
    )
    nan = np.zeros((4, 4), np.float32)
    nan[0, 0] = np.nan
    with pytest.raises(ImageDecodeError, match="NaN or infinite"):
        to_8bit(Image.fromarray(nan))


def test_a_fifo_never_hangs(tmp_path):
    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / name / "a.png")
    fifo = tmp_path / "dog" / "pipe.jpg"
    os.mkfifo(fifo)
    with _fifo_rescue(fifo) as rescued:
        data = load_image_folder(tmp_path, (8, 8))
        with pytest.raises(ImageDecodeError, match=r"pipe.jpg' is a FIFO \(named pipe\), not a regular file"):
            decode_image(fifo)
        with pytest.raises(NnjaxError, match="not a file"):
            mnist.load_digit_image(fifo)
        link = tmp_path / "link.jpg"
        link.symlink_to(fifo)
        with pytest.raises(ImageDecodeError, match="FIFO"):
            decode_image(link)
    assert not rescued.is_set(), "a reader blocked on the FIFO"
    assert data.counts() == {"cat": 1, "dog": 1}
    assert [Path(p).name for p, _ in data.skipped] == ["pipe.jpg"] and "FIFO" in data.skipped[0][1]


def test_link_loops_and_duplicate_links_count_each_photo_once(tmp_path):
    for name in ("cat", "dog"):
        (tmp_path / name / "sub").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / name / "a.png")
        Image.new("RGB", (8, 8)).save(tmp_path / name / "sub" / "b.png")
    (tmp_path / "cat" / "loop").symlink_to(tmp_path / "cat")  # cat/loop/loop/... would repeat cat 40 times
    (tmp_path / "cat" / "sub" / "back").symlink_to("..")
    (tmp_path / "cat" / "again.png").symlink_to("a.png")  # the same file under another name
    (tmp_path / "dog" / "broken.png").symlink_to("nowhere.png")
    with _within():
        files, labels, _ = list_image_folder(tmp_path)
        data = load_image_folder(tmp_path, (8, 8))
    assert labels.tolist() == [0, 0, 1, 1, 1] and len(files) == 5
    assert data.counts() == {"cat": 2, "dog": 2}
    assert [(Path(p).name, "does not exist" in why) for p, why in data.skipped] == [("broken.png", True)]
    (tmp_path / "dog" / "alias.png").symlink_to(tmp_path / "cat" / "a.png")  # one photo, two labels
    with pytest.raises(NnjaxError, match="is the same file as one in class folder 'cat'"):
        list_image_folder(tmp_path)


def test_a_class_without_readable_images_is_refused(tmp_path):
    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "cat" / "a.png")
    with pytest.raises(DataNotFoundError, match=r"Class folder '.*dog' has no readable image \(it holds no files\)"):
        load_image_folder(tmp_path, (8, 8))
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    (tmp_path / "dog" / "cut.png").write_bytes((tmp_path / "cat" / "a.png").read_bytes()[:40])
    with pytest.raises(DataNotFoundError, match=r"dog' has no readable image \(all 2 of its files were skipped, e.g."):
        load_image_folder(tmp_path, (8, 8))
    with pytest.raises(DataNotFoundError, match="only 1 class"):
        load_image_folder(tmp_path, (8, 8), class_names=("cat",))
    # the cats-vs-dogs folder source goes through the same check
    split = tmp_path / "tree" / "train"
    for name in ("cat", "dog"):
        (split / name).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(split / name / "a.png")
    assert load_folder_split("train", 8, root=tmp_path / "tree").counts() == {"cat": 1, "dog": 1}
    (split / "cat" / "a.png").write_text("corrupt")
    with pytest.raises(DataNotFoundError, match=r"train/cat' has no readable image \(all 1 of its files"):
        load_folder_split("train", 8, root=tmp_path / "tree")


# --------------------------------------------------------------------------- text


def test_splits_without_both_classes_are_refused():
    tiny = parse_sms_spam(b"".join(b"ham\thello %d\n" % i for i in range(6)) + b"spam\tWIN\nspam\tFREE\n")
    splits = stratified_split(tiny.labels)  # 2 spam messages cannot fill three splits
    with pytest.raises(
        NnjaxError, match="The val split has no spam message, because the data holds only 6 ham and 2 spam"
    ):
        check_splits(tiny.labels, splits)
    with pytest.raises(NnjaxError, match="The test split is empty"):
        check_splits(tiny.labels, {"train": np.arange(8), "test": np.array([], np.int64)})
    labels = np.array([0] * 40 + [1] * 8, np.int32)
    assert check_splits(labels, dict(zip(("train", "val", "test"), stratified_split(labels), strict=True))) is None


def test_command_line_texts_must_be_utf8():
    undecodable = b"caf\xff".decode("utf-8", "surrogateescape")  # how Python hands over such argv bytes
    assert check_utf8_texts(["héllo", "WIN a prize"]) == ["héllo", "WIN a prize"]
    with pytest.raises(NnjaxError, match=r"Input 2 is not valid UTF-8 \(byte 0xff at character 4\); pass it encoded"):
        check_utf8_texts(["fine", undecodable])
