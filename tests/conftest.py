"""Shared fixtures: tiny components of the real classes (no hub, no network)."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def tiny_pixart():
    from tiny_models import make_pixart

    return make_pixart("alpha512")
