# The home service on the built-in demo: three cameras replay the demo's test clips at their own
# pace, one after the other, and the demo checkpoint labels them (trained on first use with
# configs/demo.py, about 3 minutes on 2 cores). Open http://127.0.0.1:8700/ for the live page.
#
#   python tools/serve.py configs/serve/demo.py
#
# For your own cameras copy this file and list them, e.g.
#   cameras=[dict(name="kitchen", url="rtsp://192.168.1.20:554/stream1"),
#            dict(name="hall", url="/dev/video0", fps=None, enabled=True)],
serve = dict(
    checkpoint="work_dirs/demo/best.pth",
    train_config="configs/demo.py",
    cameras=[
        dict(name="kitchen", url="data/demo/*_c02.mp4"),
        dict(name="living_room", url="data/demo/*_c05.mp4"),
        dict(name="hall", url="data/demo/*_c03.mp4"),
    ],
    host="127.0.0.1",  # this machine only; "0.0.0.0" listens on every interface
    port=8700,
    events_db="work_dirs/serve_demo/events.db",
    token=None,  # e.g. a long random string: every route but /healthz then needs it
    mqtt=None,  # e.g. dict(host="127.0.0.1", port=1883, prefix="crt_video")
    backend="local",  # or "triton": the models run in a Triton server (configs/serve/triton.py)
    triton_url=None,  # with backend="triton": the server's gRPC address, e.g. "localhost:8001"
)
