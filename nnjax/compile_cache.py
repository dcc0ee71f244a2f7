"""JAX's persistent compilation cache: on by default, so a second ``nnjax run`` skips XLA's compile.

Where: ``--compile-cache DIR`` or ``$NNJAX_COMPILATION_CACHE`` when given, else
``$XDG_CACHE_HOME/nnjax/xla/<jaxlib>-<cpu>`` (``~/.cache`` without XDG). The default folder is
per jaxlib release and CPU kind (``nnjax.machine.cpu_tag``), so an executable built for one
CPU's vector extensions is never loaded on another that shares the home folder.
Off: ``--no-compile-cache`` or ``NNJAX_COMPILATION_CACHE=off``.

Concurrent runs: a size limit is set, which makes JAX take a file lock around every read and
write of the folder, so no run reads an entry another is still writing. An entry that cannot be
read (a run killed while writing it) is a warning and a fresh compile, never a wrong result.
"""

from __future__ import annotations

import os
import sys
from importlib import metadata
from pathlib import Path

ENV = "NNJAX_COMPILATION_CACHE"
OFF_VALUES = frozenset({"0", "off", "no", "false", "none"})
MAX_BYTES = 4 << 30  # least recently used entries go beyond this


def default_folder() -> Path:
    """The per-user, per-jaxlib, per-CPU cache folder (not created)."""
    from nnjax.machine import cpu_tag

    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    try:
        jaxlib = metadata.version("jaxlib")
    except metadata.PackageNotFoundError:
        jaxlib = "unknown"
    return base / "nnjax" / "xla" / f"jaxlib{jaxlib}-{cpu_tag()}"


def resolve(folder: str | None = None, *, disabled: bool = False) -> Path | None:
    """The cache folder to use (created), or None when the cache is off or the default is unusable.

    An explicit folder (``folder`` or ``$NNJAX_COMPILATION_CACHE``) that cannot be used is one
    sentence (``NnjaxError``); an unusable default folder is one warning line, and runs go on uncached.
    """
    from nnjax.experiment import prepare_out_dir

    env = os.environ.get(ENV, "").strip()
    if disabled or (folder is None and env.lower() in OFF_VALUES):
        return None
    if folder or env:
        return prepare_out_dir(folder or env, "--compile-cache" if folder else ENV, "compilation cache folder")
    path = default_folder()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        print(f"nnjax: warning: compilation cache off: cannot write {str(path)!r} ({err.strerror}); set {ENV}=DIR "
              f"to a writable folder or {ENV}=off.", file=sys.stderr)
        return None
    return path


def enable(folder: str | None = None, *, disabled: bool = False) -> Path | None:
    """Turn the persistent cache on in ``resolve(folder, disabled=disabled)``; the folder used, or None."""
    path = resolve(folder, disabled=disabled)
    if path is None:
        return None
    import jax

    jax.config.update("jax_compilation_cache_dir", str(path.absolute()))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
    return path
