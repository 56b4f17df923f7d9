"""The contact sheet keeps small frames crisp: whole-factor nearest-neighbour enlargement, frames untouched."""

from __future__ import annotations

import numpy as np
from PIL import Image

from lay2story_core.pipelines import contact_sheet


def test_small_frames_are_enlarged_by_a_whole_factor_with_nearest_neighbour():
    rng = np.random.default_rng(0)
    frames = [Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)) for _ in range(3)]
    sheet = contact_sheet(frames, pad=4)
    assert sheet.size == (3 * 256 + 4 * 4, 256 + 2 * 4)
    first = np.asarray(sheet)[4:260, 4:260]
    np.testing.assert_array_equal(first, np.asarray(frames[0]).repeat(4, 0).repeat(4, 1))


def test_large_frames_keep_their_size():
    frames = [Image.new("RGB", (512, 320), (10, 20, 30))] * 2
    assert contact_sheet(frames, pad=0).size == (1024, 320)
