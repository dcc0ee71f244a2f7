"""XLA settings applied once, before JAX starts, when nnjax is imported first.

On CPU, XLA's default YNNPACK path computes convolution weight gradients slowly; routing
convolutions to Eigen (``--xla_cpu_experimental_ynn_fusion_type=-individual_convolution``)
made the thesis CNN's train step 149 -> 97 ms and MobileNetV2's forward pass about 5x
faster on a 2-core CPU (see benchmarks/). The flag is added only when

* JAX has not been imported yet (XLA reads its flags once),
* the user's ``XLA_FLAGS`` does not set it already,
* no accelerator plugin (CUDA, ROCm, TPU) is installed, so this is a CPU-only jaxlib,
* the installed jaxlib is a release this flag was checked on (XLA aborts on an unknown flag),
* ``NNJAX_XLA_DEFAULTS`` is not ``0`` (the opt-out).
"""

from __future__ import annotations

import os
import sys
from importlib import metadata

CPU_CONV_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
_ACCELERATOR_PREFIXES = ("jax-cuda", "jax_cuda", "jax-rocm", "jax_rocm", "libtpu")
_CHECKED_JAXLIB = ("0.10.",)


def opted_out() -> bool:
    """True when ``NNJAX_XLA_DEFAULTS=0``: nnjax leaves XLA and JAX's lowerings as they come."""
    return os.environ.get("NNJAX_XLA_DEFAULTS", "1") == "0"


def _jaxlib_checked() -> bool:
    try:
        return metadata.version("jaxlib").startswith(_CHECKED_JAXLIB)
    except metadata.PackageNotFoundError:
        return False


def _accelerator_plugin_installed() -> bool:
    for dist in metadata.distributions():
        name = (dist.metadata.get("Name") or "").lower()
        if name.startswith(_ACCELERATOR_PREFIXES):
            return True
    return False


def configure_cpu_flags() -> bool:
    """Add the CPU convolution flag to ``XLA_FLAGS`` when it is safe; True when added."""
    if opted_out() or "jax" in sys.modules:
        return False
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_experimental_ynn_fusion_type" in flags or not _jaxlib_checked() or _accelerator_plugin_installed():
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {CPU_CONV_FLAG}".strip()
    return True
