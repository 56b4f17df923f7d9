"""Fixtures of the dataset pipeline tests: synthetic videos (PyAV) and tiny random Grounding DINO / CLIP folders."""

from __future__ import annotations

import os

import numpy as np
import pytest


def make_video(path, seconds: float, fps: int = 8, size=(64, 48), colour=(230, 40, 40), seed: int = 0,
               codec: str = "mpeg4") -> str:
    """A coloured square moving left to right over a flat background, ``seconds`` long at ``fps``."""
    import av

    w, h = size
    rng = np.random.default_rng(seed)
    background = (rng.random(3) * 120).astype(np.uint8)
    side = max(4, min(w, h) // 3)
    frames = round(seconds * fps)
    with av.open(os.fspath(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(frames):
            array = np.empty((h, w, 3), np.uint8)
            array[:] = background
            x = int((w - side) * i / max(1, frames - 1))
            y = (h - side) // 2 + int(3 * np.sin(i / 3))
            array[y:y + side, x:x + side] = colour
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return os.fspath(path)


@pytest.fixture(scope="session")
def video_maker():
    """The :func:`make_video` function (test modules cannot import this conftest by name)."""
    return make_video


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """``(detector_folder, clip_folder)`` of tiny random models, made once per session."""
    from lay2story_core.vision.tiny import save_tiny_clip, save_tiny_grounding_dino

    root = tmp_path_factory.mktemp("tiny_models")
    return save_tiny_grounding_dino(root / "gdino"), save_tiny_clip(root / "clip")
