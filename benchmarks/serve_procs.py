"""The processes the serve benchmark runs and reads: tools/serve.py with its HTTP API and resident
memory, one tools/infer.py per camera (the peer) with the arrival time of each --jsonl line, and
the encoder alone in a fresh process. Each runs on the benchmark's cores only. The tests of the
service run it through :class:`ServiceProcess` too."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.checkout import REPO_ROOT, checkout_env

TOOLS = REPO_ROOT / "tools"
START_TIMEOUT = 300.0  # loading torch, timm and the encoder on two busy cores
ENCODER_REPEATS = 5


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check: Callable[[], object], what: str, timeout: float) -> object:
    """``check()``'s first truthy value, polled until ``timeout`` (then a RuntimeError)."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"waited {timeout:g} s for {what}")
        time.sleep(0.2)
    return value


def _spawn(argv: list[str], cores: set[int] | None, **popen) -> subprocess.Popen:
    """A Python tool of this checkout; on ``cores`` only where given, with as many torch threads
    as cores (more threads than cores spin against each other)."""
    threads = {} if cores is None else {"OMP_NUM_THREADS": str(len(cores))}
    pin = None if cores is None else (lambda: os.sched_setaffinity(0, cores))
    return subprocess.Popen(
        [sys.executable, *argv], cwd=REPO_ROOT, env=checkout_env(**threads), preexec_fn=pin, **popen
    )


def rss_mib(pid: int) -> float:
    """The process's resident memory now (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


class ServiceProcess:
    """``tools/serve.py`` as a process (its stderr in a file) with ``cameras`` (``serve.cameras``
    entries) and the other ``serve`` keys given, on ``cores`` where given, and its HTTP API (with
    the token where the keys set one)."""

    def __init__(
        self, root: Path, cameras: list[dict], cores: set[int] | None = None, **keys
    ) -> None:
        self.port, self.cores, self.token = free_port(), cores, keys.get("token")
        self.events_db = Path(keys.pop("events_db", root / "events.db"))
        serve = dict(cameras=cameras, port=self.port, events_db=str(self.events_db), **keys)
        self.config = root / f"serve_{self.port}.py"
        self.config.write_text(f"serve = {serve!r}\n")
        self.log_path = root / f"serve_{self.port}.log"
        self.process: subprocess.Popen | None = None

    def start(self, online: bool = True, timeout: float = START_TIMEOUT) -> ServiceProcess:
        """Start, and return once it answers /healthz (and, with ``online``, every camera is
        online)."""
        with open(self.log_path, "wb") as log:
            self.process = _spawn(
                [str(TOOLS / "serve.py"), str(self.config)],
                self.cores,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        wait_for(self._healthy, "the service to answer /healthz", timeout)
        if online:
            self.wait_cameras(
                lambda cameras: all(c["status"] == "online" for c in cameras.values()),
                "every camera online",
                timeout,
            )
        return self

    def _healthy(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"the service exited ({self.process.returncode}):\n{self.log()}")
        try:
            return httpx.get(self.url("/healthz"), timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def get(self, path: str) -> httpx.Response:
        """The response to GET ``path``, whatever its status."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.get(self.url(path), headers=headers, timeout=30)

    def _read(self, path: str) -> httpx.Response:
        response = self.get(path)
        response.raise_for_status()
        return response

    def cameras(self) -> dict[str, dict]:
        return {camera["name"]: camera for camera in self._read("/api/cameras").json()}

    def wait_cameras(
        self, check: Callable[[dict[str, dict]], bool], what: str, timeout: float
    ) -> dict[str, dict]:
        """The cameras once ``check`` holds for them; else a RuntimeError with the last seen
        and the log."""
        seen: dict[str, dict] = {}

        def poll() -> bool:
            nonlocal seen
            seen = self.cameras()
            return check(seen)

        try:
            wait_for(poll, what, timeout)
        except RuntimeError as err:
            raise RuntimeError(
                f"{err}\ncameras: {json.dumps(seen, indent=1)}\n{self.log()}"
            ) from None
        return seen

    def snapshot(self) -> dict:
        """/api/stats and the time it was read, each camera with its frames so far: 'sampled'
        (those the engine took plus those dropped from the camera's buffer before it could) and
        'encoded' (taken and not skipped)."""
        stats = self._read("/api/stats").json()
        counters = {
            "crt_video_camera_frames_total": {},
            "crt_video_camera_frames_skipped_total": {},
        }
        for family in text_string_to_metric_families(self._read("/metrics").text):
            for sample in family.samples:
                if sample.name in counters:
                    counters[sample.name][sample.labels["camera"]] = sample.value
        taken, skipped = counters.values()
        for camera in stats["cameras"]:
            name = camera["name"]
            # skipped_frames counts the engine's skips and the buffer's drops, the counter only
            # the engine's
            dropped = camera["skipped_frames"] - skipped.get(name, 0)
            camera["sampled"] = taken.get(name, 0) + dropped
            camera["encoded"] = taken.get(name, 0) - skipped.get(name, 0)
        return {**stats, "at": time.monotonic()}

    def rss_mib(self) -> float:
        return rss_mib(self.process.pid)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, then the exit status; killed, and a RuntimeError, if it has not exited
        after ``timeout``."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise RuntimeError(f"no exit {timeout:g} s after SIGTERM:\n{self.log()}") from None
        return self.process.returncode

    def kill(self) -> None:
        """Kill it if it still runs."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class PeerProcess:
    """``tools/infer.py URL --jsonl - --json SUMMARY``: each segment's line with the
    ``time.monotonic()`` at which it arrived, and the summary once stopped."""

    def __init__(self, url: str, checkpoint: Path, summary: Path, cores: set[int]) -> None:
        self.summary_path = summary
        self.log = open(summary.with_suffix(".log"), "wb")  # noqa: SIM115 - closed by stop()
        self.process = _spawn(
            [str(TOOLS / "infer.py"), url, "--checkpoint", str(checkpoint)]
            + ["--jsonl", "-", "--json", str(summary)],
            cores,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        self.lines: list[tuple[float, dict]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append((time.monotonic(), json.loads(line)))

    def stop(self, timeout: float = 60.0) -> dict:
        """SIGTERM, then the summary: frames_sampled and frames_dropped."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout)
        self._reader.join(timeout)
        self.log.close()
        if not self.summary_path.is_file():
            log = self.summary_path.with_suffix(".log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"tools/infer.py wrote no summary (exit {self.process.returncode})"
                               f": {log}")  # fmt: skip
        return json.loads(self.summary_path.read_text())


def encoder_alone(spec: dict) -> dict:
    """Runs in its own process on ``spec['cores']``: the checkpoint's encoder as the service
    builds it (its precision and batch), frames/s at that batch and one frame at a time (as a
    peer's calls come), best of ``ENCODER_REPEATS``, and its resident memory before and after
    the service's warm-up (a call of every batch size)."""
    import torch

    from crt_video.engine.checkpoint import open_checkpoint
    from crt_video.engine.feature_stream import FeatureStream
    from crt_video.features.precision import measure_precisions, probe_frames

    os.sched_setaffinity(0, spec["cores"])
    torch.set_num_threads(len(spec["cores"]))
    stream = FeatureStream.from_checkpoint(open_checkpoint(spec["checkpoint"]), torch.device("cpu"))
    encoder = stream.encoder
    x = encoder.preprocess(probe_frames(encoder.batch_size, encoder.input_size))
    precisions = list(dict.fromkeys(["fp32", encoder.precision]))
    measured = measure_precisions(encoder.runner_for, x, precisions, ENCODER_REPEATS)
    rss_before_warm_up = rss_mib(os.getpid())
    encoder.warm_up()
    rss_after_warm_up = rss_mib(os.getpid())
    one = measure_precisions(encoder.runner_for, x[:1], precisions, ENCODER_REPEATS)
    return dict(
        frames_per_s=measured[encoder.precision]["frames_per_s"],
        frames_per_s_one_at_a_time=one[encoder.precision]["frames_per_s"],
        precision=encoder.precision,
        batch=encoder.batch_size,
        rss_mib_before_warm_up=rss_before_warm_up,
        rss_mib_after_warm_up=rss_after_warm_up,
    )


def measure_encoder_alone(checkpoint: Path, cores: set[int]) -> dict:
    """``encoder_alone`` in a fresh process, so nothing of the benchmark's own shares its cores."""
    spec = dict(checkpoint=str(checkpoint), cores=sorted(cores))
    code = (
        "import json, sys; from benchmarks.serve_procs import encoder_alone; "
        "print(json.dumps(encoder_alone(json.loads(sys.argv[1]))))"
    )
    process = _spawn(["-c", code, json.dumps(spec)], cores, stdout=subprocess.PIPE)
    out, _ = process.communicate()
    if process.returncode:
        raise RuntimeError(f"the encoder-alone process failed with exit code {process.returncode}")
    return json.loads(out.decode().splitlines()[-1])
