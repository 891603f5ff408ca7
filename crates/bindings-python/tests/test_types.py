"""The package's types (typed Python, py.typed, the native module's stubs) pass mypy --strict as users import them,
and refuse what they should (the checked file holds a `type: ignore` that must be needed)."""

import subprocess
import sys
from pathlib import Path


def test_types_pass_mypy_strict():
    here = Path(__file__).parent
    package = here.parent / "python" / "wasmagent"
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(here / "typing" / "usage.py"), str(package)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr
