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
