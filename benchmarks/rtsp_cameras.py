"""An RTSP server of video files, one mount per camera, bound to 127.0.0.1: each client gets its
own stream from the start of its file, at the file's pace. The service's tests and the serve
benchmark use it as their cameras.

/usr/bin/python3 benchmarks/rtsp_cameras.py PORT NAME=FILE [NAME=FILE ...]  (PORT 0: any
free port) prints "ready PORT" once it listens. With --check it prints the Debian packages it
lacks (exit 1) or nothing (exit 0). It runs in Debian's Python, where python3-gi lives, so this
file imports nothing outside the standard library; :class:`RtspCameras` runs it from the
project's Python.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, where python3-gi lives
# Debian package of each GStreamer element a mount needs.
ELEMENTS = {
    "filesrc": "gstreamer1.0 (libgstreamer1.0-0)",
    "qtdemux": "gstreamer1.0-plugins-good",
    "h264parse": "gstreamer1.0-plugins-bad",
    "rtph264pay": "gstreamer1.0-plugins-good",
}


def missing() -> list[str]:
    try:
        import gi

        gi.require_version("Gst", "1.0")
        gi.require_version("GstRtspServer", "1.0")
        from gi.repository import Gst, GstRtspServer  # noqa: F401
    except (ImportError, ValueError):
        return ["python3-gi", "gir1.2-gst-rtsp-server-1.0"]
    Gst.init(None)
    return sorted(
        {package for name, package in ELEMENTS.items() if not Gst.ElementFactory.find(name)}
    )


def serve(port: str, mounts: list[str]) -> None:
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    for mount in mounts:
        name, path = mount.split("=", 1)
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(
            f'( filesrc location="{path}" ! qtdemux ! h264parse '
            "! rtph264pay name=pay0 pt=96 config-interval=1 )"
        )
        server.get_mount_points().add_factory(f"/{name}", factory)
    if not server.attach(None):
        sys.exit(f"cannot listen on 127.0.0.1:{port}")
    print("ready", server.get_bound_port(), flush=True)
    GLib.MainLoop().run()


def missing_packages() -> str | None:
    """Why the server cannot run here, as one line naming what to install; None if it can."""
    if not Path(SYSTEM_PYTHON).is_file():
        return f"needs {SYSTEM_PYTHON} with python3-gi and gir1.2-gst-rtsp-server-1.0"
    check = subprocess.run(
        [SYSTEM_PYTHON, __file__, "--check"], capture_output=True, text=True, check=False
    )
    if check.returncode != 0:
        return f"the RTSP server needs the Debian packages {check.stdout.strip()}"
    return None


class RtspCameras:
    """This file's server in Debian's Python: a mount per camera on 127.0.0.1, run on ``cores``
    (None: wherever the system puts it)."""

    def __init__(self, mounts: dict[str, Path], cores: set[int] | None = None) -> None:
        self.mounts, self.cores, self.port = mounts, cores, 0
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        """Listen (again on the same port, once it has one)."""
        mounts = [f"{name}={path}" for name, path in self.mounts.items()]
        cores = self.cores
        # a file, not a pipe: GStreamer's warnings over a long run would fill an unread pipe
        self.stderr = tempfile.TemporaryFile("w+")
        self.process = subprocess.Popen(
            [SYSTEM_PYTHON, __file__, str(self.port), *mounts],
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            preexec_fn=None if cores is None else lambda: os.sched_setaffinity(0, cores),
        )
        line = self.process.stdout.readline().split()
        if line[:1] != ["ready"]:
            self.process.wait(10)
            self.stderr.seek(0)
            raise RuntimeError(f"the RTSP server did not start: {self.stderr.read().strip()}")
        self.port = int(line[1])

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
            self.stderr.close()

    def url(self, name: str) -> str:
        return f"rtsp://127.0.0.1:{self.port}/{name}"


if __name__ == "__main__":
    if sys.argv[1:] == ["--check"]:
        lacking = missing()
        print(" ".join(lacking))
        sys.exit(1 if lacking else 0)
    serve(sys.argv[1], sys.argv[2:])
