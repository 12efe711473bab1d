"""The house's structure: the import layers (pyproject.toml [tool.importlinter]) hold for every
import, and each task of the one list has its work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from crt_video.task_kinds import TASK_KINDS
from crt_video.tasks import TASKS

REPO = Path(__file__).resolve().parents[1]
# lint-imports, run on this checkout's crt_video (the one on PYTHONPATH) and pyproject.toml.
LINT_IMPORTS = (
    "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True))"
)


def test_imports_keep_the_layers():
    """A new import up the layers (a cycle between packages) breaks a contract."""
    result = subprocess.run(
        [sys.executable, "-c", LINT_IMPORTS],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "0 broken" in result.stdout


def test_every_task_kind_has_its_work():
    """crt_video.task_kinds is the one list of tasks; crt_video.tasks adds the work of each."""
    assert list(TASKS) == list(TASK_KINDS)
    assert all(TASKS[name].kind is kind for name, kind in TASK_KINDS.items())
