"""A thin client of a Triton Inference Server over gRPC: numpy arrays in and out, a sequence's
controls passed through, and every failure one line naming the server.

tritonclient is imported when a client is made, so the service without ``serve.backend='triton'``
needs none of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from crt_video.errors import ConfigError, ServerError

if TYPE_CHECKING:
    from tritonclient.grpc.model_config_pb2 import ModelConfig

# Whether a server answers at all is known at once; a longer wait only delays the error.
CONNECT_TIMEOUT_SECONDS = 10.0
# A request is segments and batches of frames, short on any server; one that hangs this long
# stops the engine with an error rather than freezing every camera's labels.
REQUEST_TIMEOUT_SECONDS = 60.0


def _grpc():
    """tritonclient.grpc, or a one-line error saying how to install it."""
    try:
        import tritonclient.grpc as grpcclient
    except ImportError as err:
        raise ConfigError(
            f"serve.backend='triton' needs tritonclient ({err}); "
            'pip install -e ".[triton]" in the crt_video checkout'
        ) from None
    return grpcclient


def _line(err: Exception) -> str:
    """An exception's message on one line (gRPC's span several)."""
    message = err.message() if callable(getattr(err, "message", None)) else str(err)
    return " ".join(str(message).split())


class TritonClient:
    """tritonclient.grpc's InferenceServerClient at ``url`` (host:port), checked live at once.
    Its calls are thread-safe, so requests of several cameras may be sent together."""

    def __init__(self, url: str) -> None:
        grpcclient = _grpc()
        from tritonclient.utils import InferenceServerException, np_to_triton_dtype

        self.url, self._grpc, self._failure = url, grpcclient, InferenceServerException
        self._triton_dtype = np_to_triton_dtype
        try:
            self.client = grpcclient.InferenceServerClient(url)
            live = self.client.is_server_live(client_timeout=CONNECT_TIMEOUT_SECONDS)
            reason = "it answers that it is not live"
        except Exception as err:  # a bad address fails in the constructor, a dead one here
            live, reason = False, _line(err)
        if not live:
            raise ServerError(
                f"serve.triton_url={url!r}: no Triton server answers there ({reason}); start "
                "one on the checkpoint's exported repository (docs/triton.md) or set "
                "serve.backend='local'"
            )

    def model_config(self, model: str) -> ModelConfig:
        """The configuration the server loaded ``model`` with; a model it lacks is one line."""
        try:
            ready = self.client.is_model_ready(model, client_timeout=CONNECT_TIMEOUT_SECONDS)
            if ready:
                response = self.client.get_model_config(
                    model, client_timeout=CONNECT_TIMEOUT_SECONDS
                )
        except self._failure as err:
            raise ServerError(f"Triton at {self.url}: model {model!r}: {_line(err)}") from None
        if not ready:
            raise ServerError(
                f"Triton at {self.url} has no model {model!r} ready; start it on the repository "
                "that python tools/export.py CKPT --format triton --out DIR wrote"
            )
        return response.config

    def infer(
        self,
        model: str,
        inputs: dict[str, np.ndarray],
        outputs: list[str],
        sequence_id: int = 0,
        sequence_start: bool = False,
        sequence_end: bool = False,
    ) -> dict[str, np.ndarray]:
        """``outputs`` of one request of ``inputs`` (each with its batch dimension) to
        ``model``, as part of sequence ``sequence_id`` where that is not 0."""
        tensors = []
        for name, array in inputs.items():
            tensor = self._grpc.InferInput(name, list(array.shape), self._triton_dtype(array.dtype))
            tensor.set_data_from_numpy(np.ascontiguousarray(array))
            tensors.append(tensor)
        try:
            result = self.client.infer(
                model,
                tensors,
                outputs=[self._grpc.InferRequestedOutput(name) for name in outputs],
                sequence_id=sequence_id,
                sequence_start=sequence_start,
                sequence_end=sequence_end,
                client_timeout=REQUEST_TIMEOUT_SECONDS,
            )
        except self._failure as err:
            where = f" (sequence {sequence_id})" if sequence_id else ""
            raise ServerError(
                f"Triton at {self.url}: {model}{where} failed: {_line(err)}"
            ) from None
        return {name: result.as_numpy(name) for name in outputs}

    def close(self) -> None:
        self.client.close()
