"""An RTSP server of video files for the service's tests, one mount per camera, bound to
127.0.0.1: each client gets its own stream from the start of its file, at the file's pace.

/usr/bin/python3 tests/rtsp_cameras.py PORT NAME=FILE [NAME=FILE ...]  (PORT 0: any free port)
prints "ready PORT" once it listens. /usr/bin/python3 tests/rtsp_cameras.py --check prints the
Debian packages it lacks (exit 1) or nothing (exit 0). It runs in Debian's Python, where
python3-gi lives.
"""

import sys

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


if __name__ == "__main__":
    if sys.argv[1:] == ["--check"]:
        lacking = missing()
        print(" ".join(lacking))
        sys.exit(1 if lacking else 0)
    serve(sys.argv[1], sys.argv[2:])
