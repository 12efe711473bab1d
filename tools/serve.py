"""Watch several cameras and report their activities: a long-running service with an HTTP API
(OpenAPI at /docs), a live page at /, Server-Sent Events, Prometheus metrics and, optionally,
MQTT with Home Assistant discovery.

python tools/serve.py configs/serve/demo.py
python tools/serve.py my_home.py --cfg-options serve.port=8800 serve.token=a-long-secret

SIGTERM or Ctrl-C closes the cameras, ends the open episodes (marked as ended by shutdown) and
exits 0. No video or frame is stored: only labels, scores and episodes.
"""

from __future__ import annotations

import argparse
import errno
import signal
import socket
import subprocess
import sys
from pathlib import Path

from crt_video.engine.checkpoint import open_checkpoint
from crt_video.errors import CheckpointError, ConfigError
from crt_video.serve.config import ServeConfig, load_serve_config
from crt_video.utils.cli import run_cli
from crt_video.utils.distributed import resolve_device
from crt_video.utils.logging import get_logger

logger = get_logger("crt_video.serve")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config", help="service config, e.g. configs/serve/demo.py")
    parser.add_argument(
        "--cfg-options",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override config keys, e.g. serve.port=8800",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = load_serve_config(args.config, args.cfg_options)
    check_port_free(cfg.host, cfg.port)
    ckpt = open_checkpoint(checkpoint_path(cfg))
    import uvicorn

    from crt_video.serve.api import create_app
    from crt_video.serve.service import Service

    service = Service(cfg, ckpt, resolve_device(cfg.device))
    app = create_app(service)
    service.start()
    logger.info(
        "serving %d camera(s) on http://%s:%d/ (API at /docs)", len(cfg.cameras), cfg.host, cfg.port
    )
    server = uvicorn.Server(
        uvicorn.Config(
            app, host=cfg.host, port=cfg.port, log_level="warning", timeout_graceful_shutdown=2
        )
    )
    # uvicorn catches SIGTERM and Ctrl-C, shuts down, then raises the signal again with the
    # handlers it found: these take it, so the service is stopped below and the exit is 0
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, lambda signum, frame: None)
    try:
        server.run()  # returns on SIGTERM or Ctrl-C
    finally:
        service.stop()
        logger.info("stopped: cameras closed, open episodes ended")
    return 0


def checkpoint_path(cfg: ServeConfig) -> Path:
    """The checkpoint; a missing one is trained first with ``train_config`` where one is set."""
    path = Path(cfg.checkpoint)
    if path.is_file():
        return path
    command = [sys.executable, "tools/train.py", cfg.train_config or "CONFIG"]
    if cfg.train_config is None:
        raise CheckpointError(
            f"{path} does not exist; train one first: python tools/train.py CONFIG "
            f"--work-dir {path.parent}"
        )
    logger.info("%s does not exist: training it first (%s)", path, " ".join(command[1:]))
    done = subprocess.run([*command, "--work-dir", str(path.parent)])
    if done.returncode != 0 or not path.is_file():
        raise CheckpointError(
            f"{path}: training it with {cfg.train_config} failed; run "
            f"python tools/train.py {cfg.train_config} --work-dir {path.parent} to see why"
        )
    return path


def check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        try:
            sock.bind((host, port))
        except OSError as err:
            reason = "is in use" if err.errno == errno.EADDRINUSE else f"cannot be used ({err})"
            raise ConfigError(
                f"serve.port {port} on {host} {reason}; choose another with "
                "--cfg-options serve.port=N"
            ) from None


if __name__ == "__main__":
    run_cli(main)
