"""Tiny random Grounding DINO / CLIP folders for the vision tests (real transformers classes, toy sizes)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def gdino_folder(tmp_path_factory):
    from lay2story_core.vision.tiny import save_tiny_grounding_dino

    return save_tiny_grounding_dino(tmp_path_factory.mktemp("vision") / "gdino")


@pytest.fixture(scope="session")
def clip_folder(tmp_path_factory):
    from lay2story_core.vision.tiny import save_tiny_clip

    return save_tiny_clip(tmp_path_factory.mktemp("vision") / "clip")


@pytest.fixture(scope="session")
def detector(gdino_folder):
    from lay2story_core.vision import GroundingDinoDetector

    return GroundingDinoDetector.from_pretrained(gdino_folder, device="cpu")


@pytest.fixture(scope="session")
def clip(clip_folder):
    from lay2story_core.vision import ClipEmbedder

    return ClipEmbedder.from_pretrained(clip_folder, device="cpu")
