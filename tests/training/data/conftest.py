"""Fixtures of the dataset pipeline tests: synthetic videos (PyAV) and tiny random Grounding DINO / CLIP folders."""

from __future__ import annotations

import pytest

from training.data.video import write_synthetic_video


@pytest.fixture(scope="session")
def video_maker():
    """:func:`training.data.video.write_synthetic_video` (a coloured square moving over a flat background)."""
    return write_synthetic_video


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """``(detector_folder, clip_folder)`` of tiny random models, made once per session."""
    from lay2story_core.vision.tiny import save_tiny_clip, save_tiny_grounding_dino

    root = tmp_path_factory.mktemp("tiny_models")
    return save_tiny_grounding_dino(root / "gdino"), save_tiny_clip(root / "clip")
