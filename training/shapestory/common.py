"""Shared pieces of the ShapeStory component trainers: frame pools, PSNR, atomic folder saves."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable

import numpy as np
import torch

from lay2story_core.shapestory import ShapeStoryConfig, generate_story, render_reference, render_story, story_seed

__all__ = ["frame_pool", "psnr", "save_folder_atomic", "story_pool"]


def story_pool(n_stories: int, split: str, seed: int, config: ShapeStoryConfig | None = None) -> list:
    """Stories ``0..n_stories-1`` of the data set ``(split, seed)``, as :func:`write_dataset` would write them."""
    return [generate_story(story_seed(seed, i), config, split) for i in range(n_stories)]


def frame_pool(n_stories: int, split: str, seed: int, config: ShapeStoryConfig | None = None) -> torch.Tensor:
    """Every frame and reference picture of those stories: (N, 3, H, W) uint8."""
    arrays = []
    for story in story_pool(n_stories, split, seed, config):
        images, _ = render_story(story)
        arrays += [np.asarray(im) for im in images]
        arrays += [np.asarray(render_reference(story, c.id)[0]) for c in story.characters]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def psnr(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of images in [0, 1], (N, 3, H, W) -> (N,)."""
    mse = ((reconstruction.clamp(0, 1) - target) ** 2).flatten(1).mean(1)
    return 10.0 * torch.log10(1.0 / mse.clamp_min(1e-10))


def save_folder_atomic(out_dir: str, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_dir)`` and then swap ``tmp_dir`` in for ``out_dir`` (the old folder is removed only after
    the new one is in place, so a crash leaves either the old or the new folder, never half of one)."""
    out_dir = os.path.abspath(out_dir)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    tmp, old = f"{out_dir}.tmp-{tag}", f"{out_dir}.old-{tag}"
    try:
        write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if os.path.exists(out_dir):
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)
