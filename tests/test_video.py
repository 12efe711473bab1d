import importlib.util
import logging
import sys

import av
import numpy as np
import pytest
import torch

from crt_video.decode import (
    BACKENDS,
    backends,
    iter_frames,
    probe_video,
    read_frames,
    resize_frames,
    resolve_backend,
    sample_frame_times,
)
from crt_video.errors import ConfigError, VideoDecodeError
from crt_video.features.frame_encoder import build_frame_encoder

# No decord wheel exists for ARM: there PyAV alone decodes, and decord's tests skip.
needs_decord = pytest.mark.skipif(
    importlib.util.find_spec("decord") is None, reason="decord is not installed (no ARM wheel)"
)
INSTALLED_BACKENDS = [
    pytest.param(backend, marks=needs_decord if backend == "decord" else ()) for backend in BACKENDS
]


@pytest.fixture(scope="module")
def one_second(tmp_path_factory, write_test_video):
    return write_test_video(tmp_path_factory.mktemp("v") / "one.mp4", 64, 48, fps=10, seconds=1.0)


def test_probe_video(one_second):
    info = probe_video(one_second)
    assert (info.num_frames, info.fps, info.width, info.height) == (10, 10.0, 64, 48)
    assert info.duration == pytest.approx(1.0) and info.start_time == 0.0


@pytest.mark.parametrize("backend", INSTALLED_BACKENDS)
@pytest.mark.parametrize(
    "fps, expected",
    [
        (4.0, [0.0, 0.2, 0.5, 0.7]),  # each target takes the frame at or before it
        (10.0, [i / 10 for i in range(10)]),
        (0.5, [0.0]),  # a clip shorter than one sampling period still gives a frame
        (20.0, [i // 2 / 10 for i in range(20)]),  # above the video's rate frames repeat
    ],
)
def test_sampling_follows_video_time(one_second, backend, fps, expected):
    frames = read_frames(one_second, fps, backend=backend)
    np.testing.assert_allclose(frames.timestamps, expected, atol=1e-3)
    assert frames.frames.shape == (len(expected), 48, 64, 3)
    assert str(frames.frames.dtype) == "torch.uint8"


def test_max_frames_spreads_uniformly(one_second):
    info = probe_video(one_second)
    np.testing.assert_allclose(sample_frame_times(info, 10.0, max_frames=4), [0, 0.3, 0.6, 0.9])
    assert len(sample_frame_times(info, 2.0, max_frames=4)) == 2
    frames = read_frames(one_second, 10.0, max_frames=4)
    np.testing.assert_allclose(frames.timestamps, [0, 0.3, 0.6, 0.9], atol=1e-3)


@pytest.mark.parametrize("size", [(32, 32), (64, 48), (24, 40)])
@pytest.mark.parametrize("backend", INSTALLED_BACKENDS)
def test_decodes_straight_to_size(one_second, backend, size):
    frames = read_frames(one_second, 4.0, size=size, backend=backend)
    assert frames.frames.shape == (4, *size, 3)


@pytest.fixture(scope="module")
def fine_texture(tmp_path_factory):
    """640x480 checkerboards and noise, lossless: where two scalers differ the most."""
    path = tmp_path_factory.mktemp("hf") / "fine.mp4"
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:480, 0:640]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=10, options={"crf": "0"})
        stream.width, stream.height, stream.pix_fmt = 640, 480, "yuv420p"
        for index in range(6):
            board = (rows // (1 + index % 3) + cols // (1 + index % 2)) % 2 * 200
            frame = (board + rng.integers(0, 50, (480, 640)))[..., None].repeat(3, 2)
            frame = av.VideoFrame.from_ndarray(frame.astype(np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


@needs_decord
@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
def test_both_backends_give_the_same_resized_frames(fine_texture, interpolation):
    frames = {
        backend: read_frames(
            fine_texture, 10.0, size=(224, 224), backend=backend, interpolation=interpolation
        ).frames
        for backend in BACKENDS
    }
    difference = (frames["decord"].int() - frames["pyav"].int()).abs()
    assert frames["decord"].shape == (6, 224, 224, 3)
    assert difference.max() <= 1


def test_the_encoder_resizes_like_the_decoder(fine_texture):
    encoder = build_frame_encoder(
        {"name": "vit_tiny_patch16_224", "pretrained": False, "kwargs": {"img_size": 32}}
    )
    native = read_frames(fine_texture, 10.0).frames
    resized = read_frames(fine_texture, 10.0, size=encoder.input_size).frames
    assert torch.equal(resized, resize_frames(native, encoder.input_size, encoder.interpolation))
    assert torch.equal(encoder.encode(native), encoder.encode(resized))


@needs_decord
@pytest.mark.parametrize("fps, max_frames", [(4.0, None), (2.0, 5), (7.0, None)])
def test_decord_and_pyav_agree_on_demo_clips(demo_videos, fps, max_frames):
    for path in demo_videos:
        decord_frames = read_frames(path, fps, max_frames, size=(64, 64), backend="decord")
        pyav_frames = read_frames(path, fps, max_frames, size=(64, 64), backend="pyav")
        assert decord_frames.frames.shape == pyav_frames.frames.shape
        frame_period = 1.0 / probe_video(path).fps
        assert np.abs(decord_frames.timestamps - pyav_frames.timestamps).max() < frame_period
        difference = (decord_frames.frames.int() - pyav_frames.frames.int()).abs()
        assert difference.max() <= 1


@pytest.mark.parametrize("backend", INSTALLED_BACKENDS)
def test_iter_frames_chunks_match_read_frames(demo_videos, backend):
    path = max(demo_videos, key=lambda p: probe_video(p).duration)
    whole = read_frames(path, 5.0, backend=backend)
    chunks = list(iter_frames(path, 5.0, chunk_frames=4, backend=backend))
    assert all(len(chunk.frames) == 4 for chunk in chunks[:-1])
    assert np.array_equal(np.concatenate([c.timestamps for c in chunks]), whole.timestamps)
    assert (np.concatenate([c.frames.numpy() for c in chunks]) == whole.frames.numpy()).all()


def garble_payload(source, target):
    """Keep the container index, zero every coded frame: packets exist, none decodes."""
    data = bytearray(source.read_bytes())
    start = data.index(b"mdat") + 4
    end = start - 8 + int.from_bytes(data[start - 8 : start - 4], "big")
    data[start:end] = bytes(end - start)
    target.write_bytes(bytes(data))
    return target


def audio_only(path):
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
        )
        frame.sample_rate = 16000
        for index in range(5):
            frame.pts = index * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


@pytest.mark.parametrize("backend", INSTALLED_BACKENDS)
@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda src, dst: dst.write_bytes(b"") and dst, "empty file"),
        (lambda src, dst: dst.write_bytes(src.read_bytes()[:2000]) and dst, "cannot open"),
        (lambda src, dst: dst.write_text("not a video\n") and dst, "cannot open"),
        (garble_payload, "decod"),
        (lambda src, dst: audio_only(dst), "no video stream"),
        (lambda src, dst: dst, "no such file"),
    ],
    ids=["zero-byte", "truncated", "text", "no-decodable-frame", "audio-only", "missing"],
)
def test_broken_videos_raise_one_line_naming_the_file(one_second, tmp_path, backend, make, reason):
    path = tmp_path / "Walk_p03_r00_v01_c01.mp4"
    make(one_second, path)
    with pytest.raises(VideoDecodeError, match=reason) as info:
        read_frames(path, 4.0, backend=backend)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message


@needs_decord
def test_backend_choice(monkeypatch):
    monkeypatch.delenv("CRT_VIDEO_BACKEND", raising=False)
    assert (resolve_backend(), resolve_backend(in_order=True)) == ("decord", "pyav")
    monkeypatch.setenv("CRT_VIDEO_BACKEND", "decord")
    assert resolve_backend(in_order=True) == "decord"
    monkeypatch.setenv("CRT_VIDEO_BACKEND", "pyav")
    assert resolve_backend() == "pyav"
    assert resolve_backend("decord", in_order=True) == "decord"
    monkeypatch.setenv("CRT_VIDEO_BACKEND", "opencv")
    with pytest.raises(ConfigError, match="unknown video backend 'opencv'"):
        resolve_backend()


def test_falls_back_to_pyav_with_one_notice(one_second, monkeypatch, caplog):
    monkeypatch.delenv("CRT_VIDEO_BACKEND", raising=False)
    monkeypatch.setitem(sys.modules, "decord", None)  # import decord -> ImportError
    logger = logging.getLogger("crt_video")
    logger.addHandler(caplog.handler)
    backends._decord.cache_clear()
    try:
        frames = [read_frames(one_second, 4.0, backend=resolve_backend()) for _ in range(2)]
        assert resolve_backend() == "pyav"
        with pytest.raises(ConfigError, match="decord is not importable"):
            resolve_backend("decord")
    finally:
        logger.removeHandler(caplog.handler)
        backends._decord.cache_clear()
    assert frames[0].frames.shape == (4, 48, 64, 3)
    assert sum("decord is not importable" in r.message for r in caplog.records) == 1
