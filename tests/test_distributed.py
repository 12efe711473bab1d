"""Device choice and the torchrun process group: clear errors, waits that match the work."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from crt_video.errors import ConfigError
from crt_video.utils.distributed import resolve_device


def test_cpu_and_auto_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("cpu") == resolve_device("auto") == torch.device("cpu")


@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_cuda_without_cuda_says_so_in_one_line(monkeypatch, name):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="CUDA is not available on this machine") as info:
        resolve_device(name)
    assert "\n" not in str(info.value)


def test_cuda_n_picks_that_gpu_and_checks_it_exists(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda", 1)  # torchrun's local rank
    with pytest.raises(ConfigError, match="GPU 2 does not exist, this machine has 2"):
        resolve_device("cuda:2")
    with pytest.raises(ConfigError, match="not one of auto, cpu, cuda, cuda:N"):
        resolve_device("gpu")


RANKS_SCRIPT = """
import json, sys, time
from pathlib import Path
from crt_video.utils.distributed import barrier, distributed_session, gather_through_files
out, mode = Path(sys.argv[2]), sys.argv[3]
with distributed_session("cpu", float(sys.argv[1])) as (device, info):
    if info.rank == 1:
        time.sleep(6)  # one rank's clips take longer than the collective timeout
    if mode == "files":
        gathered = gather_through_files(out / "ranks", {"rank": info.rank}, info, 0.1)
        (out / f"rank{info.rank}.json").write_text(json.dumps(gathered))
    else:
        barrier()
"""


def run_two_ranks(
    run_tool: Callable[..., subprocess.CompletedProcess],
    tmp_path: Path,
    timeout_minutes: float,
    mode: str,
) -> subprocess.CompletedProcess:
    script = tmp_path / "ranks.py"
    script.write_text(RANKS_SCRIPT)
    return run_tool(
        str(script), str(timeout_minutes), str(tmp_path), mode, nproc=2, cwd=tmp_path, timeout=180
    )


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="gloo torchrun test runs on Linux/macOS")
def test_collective_timeout_is_configured_and_file_wait_outlasts_it(tmp_path, run_tool):
    # 0.05 min = 3 s: a barrier waiting 6 s for the slow rank fails ...
    timed_out = run_two_ranks(run_tool, tmp_path, 0.05, "barrier")
    assert timed_out.returncode != 0
    # ... while the file-based gather waits as long as the slow rank needs.
    gathered = run_two_ranks(run_tool, tmp_path, 0.05, "files")
    assert gathered.returncode == 0, gathered.stderr[-3000:]
    for rank in (0, 1):
        assert json.loads((tmp_path / f"rank{rank}.json").read_text()) == [{"rank": 0}, {"rank": 1}]
    assert not (tmp_path / "ranks").exists()
