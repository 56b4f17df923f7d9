"""Shape and pattern descriptors of a segmented character, and nearest-exemplar classification.

Shape: the character's mask cropped to its bounding box and area-averaged onto a ``GRID`` x ``GRID`` occupancy grid
(a scale-free low-resolution template; ShapeStory shapes are always upright and fill a square box), plus the
bounding box's aspect ratio. Pattern: how the pattern-colour pixels are spread inside the mask (share of the mask;
spread of the row and column profiles; spread over cells). Both are classified by the nearest exemplar among
ground-truth renders of every shape / pattern at several sizes, computed once on first use.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image

from .draw import Placement, draw_frame, shape_mask
from .segment import pattern_colour_pixels
from .vocab import PATTERNS, SHAPES, CharacterSpec, SceneSpec

__all__ = ["GRID", "classify_pattern", "classify_shape", "pattern_descriptor", "shape_descriptor"]

GRID = 6
_EXEMPLAR_SIDES = (12, 16, 20, 28, 40, 56)


def _area_resize(values: np.ndarray, size: int) -> np.ndarray:
    """Area-average a 2-D float array onto ``size`` x ``size`` cells."""
    image = Image.fromarray(values.astype(np.float32), mode="F")
    return np.asarray(image.resize((size, size), Image.Resampling.BOX), dtype=np.float32)


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size == 0:
        return None
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def shape_descriptor(mask: np.ndarray) -> np.ndarray | None:
    """``GRID * GRID + 1`` floats describing the mask's shape, or None for an empty mask."""
    box = _bbox(mask)
    if box is None:
        return None
    r0, r1, c0, c1 = box
    crop = mask[r0:r1, c0:c1].astype(np.float32)
    grid = _area_resize(crop, GRID).ravel()
    aspect = np.log((c1 - c0) / (r1 - r0))
    return np.concatenate([grid, [aspect]]).astype(np.float32)


def pattern_descriptor(mask: np.ndarray, pattern_pixels: np.ndarray) -> np.ndarray | None:
    """4 floats: share of the mask in the pattern colour, the spread of its row and column profiles, and its
    spread over a 4x4 grid of cells. None for an empty mask."""
    box = _bbox(mask)
    if box is None:
        return None
    r0, r1, c0, c1 = box
    body = mask[r0:r1, c0:c1].astype(np.float32)
    marks = (pattern_pixels[r0:r1, c0:c1] & mask[r0:r1, c0:c1]).astype(np.float32)
    share = marks.sum() / max(body.sum(), 1.0)

    def spread(num: np.ndarray, den: np.ndarray) -> float:
        keep = den > 0.25 * den.max()
        return float((num[keep] / den[keep]).std()) if keep.sum() > 1 else 0.0

    rows = spread(marks.sum(1), body.sum(1))
    cols = spread(marks.sum(0), body.sum(0))
    cells = spread(_area_resize(marks, 4).ravel(), _area_resize(body, 4).ravel())
    return np.asarray([share, rows, cols, cells], dtype=np.float32)


@lru_cache(maxsize=1)
def _shape_exemplars() -> tuple[np.ndarray, tuple[str, ...]]:
    feats, names = [], []
    for shape in SHAPES:
        for side in _EXEMPLAR_SIDES:
            feats.append(shape_descriptor(shape_mask(shape, side)))
            names.append(shape)
    array = np.stack(feats)
    array.setflags(write=False)
    return array, tuple(names)


@lru_cache(maxsize=1)
def _pattern_exemplars() -> tuple[np.ndarray, tuple[str, ...]]:
    """Descriptors of every pattern on every shape at several sizes, segmented the way generated images are."""
    scene = SceneSpec("sky", "day")
    feats, names = [], []
    for pattern in PATTERNS:
        for shape in SHAPES:
            for side in _EXEMPLAR_SIDES[::2] + (64,):
                size = side + 8
                spec = CharacterSpec(shape, "red", pattern)
                box = (4 / size, 4 / size, (4 + side) / size, (4 + side) / size)
                image, masks = draw_frame(scene, [Placement("c", spec, box)], size, size)
                marks = pattern_colour_pixels(image, spec.colours, scene.upper)
                feats.append(pattern_descriptor(masks["c"], marks))
                names.append(pattern)
    array = np.stack(feats)
    array.setflags(write=False)
    return array, tuple(names)


def _nearest_name(feature: np.ndarray, exemplars: np.ndarray, names: tuple[str, ...]) -> str:
    return names[int(((exemplars - feature) ** 2).sum(1).argmin())]


def classify_shape(mask: np.ndarray) -> str | None:
    """The ShapeStory shape the mask looks most like (None for an empty mask)."""
    feature = shape_descriptor(mask)
    return None if feature is None else _nearest_name(feature, *_shape_exemplars())


def classify_pattern(mask: np.ndarray, pattern_pixels: np.ndarray) -> str | None:
    """The ShapeStory pattern of a character given its mask and its pattern-colour pixels (None for empty)."""
    feature = pattern_descriptor(mask, pattern_pixels)
    return None if feature is None else _nearest_name(feature, *_pattern_exemplars())
