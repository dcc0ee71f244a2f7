"""`import nnjax` (and listing the experiments) must not import the heavy libraries."""

import subprocess
import sys

HEAVY = ["tensorflow", "tensorflow_datasets", "torch", "transformers", "keras", "sklearn", "grain"]

CODE = """
import sys
import nnjax, nnjax.cli, nnjax.experiment
from nnjax.experiment import all_experiments
names = [e.name for e in all_experiments()]
heavy = [m for m in {heavy!r} if m in sys.modules]
print(len(names), heavy)
"""


def test_import_and_registry_stay_light():
    result = subprocess.run([sys.executable, "-c", CODE.format(heavy=HEAVY)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    count, heavy = result.stdout.strip().split(" ", 1)
    assert int(count) >= 2
    assert heavy == "[]", f"heavy modules imported at start-up: {heavy}"


def _flags_after_import(env_extra):
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "NNJAX_XLA_DEFAULTS")}
    env.update(env_extra)
    code = "import os, nnjax; print(os.environ.get('XLA_FLAGS', ''))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=60).stdout.strip()


def test_cpu_convolution_flag_is_added_unless_the_user_decides():
    from nnjax._xla import CPU_CONV_FLAG

    assert _flags_after_import({}) == CPU_CONV_FLAG
    assert _flags_after_import({"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=x"}) == (
        "--xla_cpu_experimental_ynn_fusion_type=x"
    )
    assert _flags_after_import({"XLA_FLAGS": "--foo", "NNJAX_XLA_DEFAULTS": "0"}) == "--foo"
