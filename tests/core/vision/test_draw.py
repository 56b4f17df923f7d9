"""draw_boxes: previews of normalised boxes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lay2story_core.vision import draw_boxes
from lay2story_core.vision.draw import PALETTE


def test_draws_box_outline_in_palette_colour_on_a_copy():
    image = Image.new("RGB", (101, 51), (0, 0, 0))
    out = draw_boxes(image, [(0.2, 0.2, 0.6, 0.8)], width=1)
    assert out is not image and np.asarray(image).max() == 0  # the input is untouched
    a = np.asarray(out)
    x0, y0, x1, y1 = 20, 10, 60, 40  # 0.2*(101-1), 0.2*(51-1), ...
    assert tuple(a[y0, (x0 + x1) // 2]) == PALETTE[0]  # top edge
    assert tuple(a[(y0 + y1) // 2, x1]) == PALETTE[0]  # right edge
    assert a[(y0 + y1) // 2, (x0 + x1) // 2].max() == 0  # inside stays empty
    assert a[5, 90].max() == 0  # outside too


def test_labels_and_colours_per_box():
    image = Image.new("L", (120, 80), 0)
    out = draw_boxes(image, [(0.0, 0.0, 0.5, 0.5), (0.5, 0.5, 1.0, 1.0)], ["cat", "dog"])
    a = np.asarray(out)
    assert out.mode == "RGB"
    assert (a.reshape(-1, 3) == PALETTE[1]).all(1).any()
    # The label tab of the first box (at the top, so drawn inside it): white (antialiased) text on the box colour.
    tab = a[0:12, 0:30].reshape(-1, 3)
    assert (tab.min(1) > 200).any() and (tab == PALETTE[0]).all(1).sum() > 50
    unlabelled = np.asarray(draw_boxes(image, [(0.0, 0.0, 0.5, 0.5), (0.5, 0.5, 1.0, 1.0)]))
    assert (unlabelled[0:12, 0:30].reshape(-1, 3).min(1) > 200).sum() == 0


def test_bad_arguments():
    image = Image.new("RGB", (10, 10))
    with pytest.raises(ValueError, match="labels"):
        draw_boxes(image, [(0, 0, 1, 1)], ["a", "b"])
    with pytest.raises(ValueError, match=r"boxes\[0\]"):
        draw_boxes(image, [(0, 0, 1)])
    with pytest.raises(TypeError, match="PIL"):
        draw_boxes(np.zeros((4, 4, 3)), [])
