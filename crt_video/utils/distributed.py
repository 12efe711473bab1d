"""torchrun support: device and process-group setup, once per entry point, and a few collectives.

Below every other package: the entry points (tools/) set the device and process group up with
:func:`distributed_session` and pass them down; features, engine and tasks only use them."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from crt_video.errors import ConfigError
from crt_video.utils.io import atomic_write_json

# NCCL's own default (10 min) is shorter than one rank's share of a long extraction or a test.
DEFAULT_TIMEOUT_MINUTES = 60.0


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


SINGLE_PROCESS = DistInfo()


def init_distributed(
    device: torch.device | None = None, timeout_minutes: float = DEFAULT_TIMEOUT_MINUTES
) -> DistInfo:
    """Join the process group torchrun describes in RANK/WORLD_SIZE; a plain run is rank 0 of 1.

    ``timeout_minutes`` bounds every collective: a rank waiting longer for the others fails.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return SINGLE_PROCESS
    info = DistInfo(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        use_nccl = device is not None and device.type == "cuda"
        if use_nccl:
            torch.cuda.set_device(device)
        dist.init_process_group(
            "nccl" if use_nccl else "gloo", timeout=timedelta(minutes=timeout_minutes)
        )
    return info


@contextlib.contextmanager
def distributed_session(
    device_name: str = "auto", timeout_minutes: float = DEFAULT_TIMEOUT_MINUTES
) -> Iterator[tuple[torch.device, DistInfo]]:
    """The device and process group of an entry point, set up once and torn down at the end:
    the one place a run's device is resolved."""
    device = resolve_device(device_name)
    dist_info = init_distributed(device, float(timeout_minutes))
    try:
        yield device, dist_info
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (a list of one outside torchrun)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_through_files(
    folder: Path, obj: Any, dist_info: DistInfo, poll_seconds: float = 1.0
) -> list[Any]:
    """Every rank's JSON-able ``obj``, in rank order, through files in a shared ``folder``.

    Unlike a collective this wait has no timeout, for ranks that finish long before the others
    (one rank's clips may take hours longer). ``folder`` must be new to this call and seen by
    every rank; it is removed afterwards. A rank that dies ends the job through torchrun.
    """
    if not dist_info.enabled:
        return [obj]
    atomic_write_json(folder / f"rank{dist_info.rank}.json", obj)
    paths = [folder / f"rank{rank}.json" for rank in range(dist_info.world_size)]
    while not all(path.exists() for path in paths):
        time.sleep(poll_seconds)
    gathered = [json.loads(path.read_text()) for path in paths]
    barrier()  # every rank has read every file
    if dist_info.is_main:
        shutil.rmtree(folder, ignore_errors=True)
    return gathered


DEVICE_NAMES = ("auto", "cpu", "cuda", "cuda:N")


def check_device_name(name: object) -> str:
    """``name`` if it is one of DEVICE_NAMES (N a GPU number), else a ConfigError saying so."""
    if not (isinstance(name, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?", name)):
        raise ConfigError(f"device {name!r} is not one of {', '.join(DEVICE_NAMES)}")
    return name


def resolve_device(name: str) -> torch.device:
    """'auto' picks this process's GPU (LOCAL_RANK under torchrun) when CUDA is there, else the CPU;
    'cuda' is that GPU too, 'cuda:N' GPU N."""
    check_device_name(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    index = name.partition(":")[2]
    if not torch.cuda.is_available():
        raise ConfigError(
            f"device {name!r} requested but CUDA is not available on this machine; use device=cpu"
        )
    gpu = int(index) if index else int(os.environ.get("LOCAL_RANK", "0"))
    count = torch.cuda.device_count()
    if gpu >= count:
        raise ConfigError(
            f"device {name!r}: GPU {gpu} does not exist, this machine has {count} "
            f"(cuda:0 to cuda:{count - 1})"
        )
    return torch.device("cuda", gpu)


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over the ranks (the values themselves outside torchrun)."""
    if not (dist.is_available() and dist.is_initialized()):
        return values
    # NCCL reduces only CUDA tensors; gloo only CPU ones.
    on = device if dist.get_backend() == "nccl" else torch.device("cpu")
    total = torch.tensor(values, dtype=torch.float64, device=on)
    dist.all_reduce(total)
    return total.tolist()
