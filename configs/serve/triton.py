# The demo service with its encoder and model in a Triton Inference Server instead of this
# process: same cameras, labels, events, API and page; each camera's memory is kept by Triton as
# sequence state (docs/triton.md). Export the demo checkpoint's repository, start Triton on it,
# then the service:
#
#   python tools/export.py work_dirs/demo/best.pth --format triton --out triton/
#   docker run --rm -p8001:8001 -v $PWD/triton:/models \
#       nvcr.io/nvidia/tritonserver:<yy.mm>-py3 tritonserver --model-repository=/models
#   python tools/serve.py configs/serve/triton.py
#
# The repository must come from serve.checkpoint: the service checks the server's models
# against it at start-up (frame size, feature width, segment length, classes).
_base_ = ["demo.py"]
serve = dict(
    train_config=None,  # Triton serves a repository exported from an existing checkpoint
    backend="triton",
    triton_url="localhost:8001",  # gRPC (Triton's port 8001), host:port without a scheme
)
