"""The codebase stays `ruff` clean: the test command checks it so CI does too."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


def test_ruff_is_clean(root: Path):
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff, "ruff is in requirements-test.txt; it must be installed"
    result = subprocess.run([ruff, "check", "."], cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
