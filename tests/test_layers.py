"""The house's structure: the import layers (pyproject.toml [tool.importlinter]) hold for every
import, and each task of the one list has its work."""

from __future__ import annotations

from crt_video.task_kinds import TASK_KINDS
from crt_video.tasks import TASKS

# lint-imports, run on this checkout's crt_video and benchmarks (first on PYTHONPATH) and its
# pyproject.toml.
LINT_IMPORTS = (
    "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True))"
)


def test_imports_keep_the_layers(run_tool):
    """A new import up the layers (a cycle between packages) breaks a contract."""
    result = run_tool("-c", LINT_IMPORTS)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "0 broken" in result.stdout


def test_every_task_kind_has_its_work():
    """crt_video.task_kinds is the one list of tasks; crt_video.tasks adds the work of each."""
    assert list(TASKS) == list(TASK_KINDS)
    assert all(TASKS[name].kind is kind for name, kind in TASK_KINDS.items())
