"""Drawing ShapeStory frames with PIL: backgrounds, shapes, patterns, and each character's exact pixel mask.

Frames are drawn at ``SUPERSAMPLE`` times the target size and box-filtered down, so edges are anti-aliased like a
real image; a character's mask is the set of output pixels it covers at least half of (after any occlusion by a
character drawn later). Shapes fill their box: a box's pixel bounds are the shape's tight bounding box.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from ..story.errors import LayoutError
from .vocab import CharacterSpec, SceneSpec

__all__ = ["SUPERSAMPLE", "Placement", "draw_frame", "shape_mask", "shape_polygon"]

SUPERSAMPLE = 4
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Placement:
    """One character in one frame: its look and its box (normalised xyxy)."""

    key: str
    spec: CharacterSpec
    box: Box


def _normalise(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Stretch a polygon so its bounding box is exactly the unit square."""
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    return [((x - x0) / (x1 - x0), (y - y0) / (y1 - y0)) for x, y in points]


def _circle(n: int = 64, cx: float = 0.0, r: float = 1.0) -> list[tuple[float, float]]:
    return [(cx + r * math.cos(2 * math.pi * i / n), r * math.sin(2 * math.pi * i / n)) for i in range(n)]


def shape_polygon(shape: str) -> list[tuple[float, float]]:
    """The shape's outline in the unit square (y down), as a polygon."""
    if shape == "circle":
        return _normalise(_circle())
    if shape == "square":
        return [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)]
    if shape == "triangle":
        return [(0.5, 0.0), (1.0, 1.0), (0.0, 1.0)]
    if shape == "diamond":
        return [(0.5, 0.0), (1.0, 0.5), (0.5, 1.0), (0.0, 0.5)]
    if shape == "star":
        pts = []
        for i in range(10):
            r = 1.0 if i % 2 == 0 else 0.42
            a = -math.pi / 2 + i * math.pi / 5
            pts.append((r * math.cos(a), r * math.sin(a)))
        return _normalise(pts)
    if shape == "cross":
        a, b = 0.32, 0.68
        return [(a, 0), (b, 0), (b, a), (1, a), (1, b), (b, b), (b, 1), (a, 1), (a, b), (0, b), (0, a), (a, a)]
    if shape == "heart":
        # The classic parametric heart curve (16 sin^3 t, 13 cos t - 5 cos 2t - 2 cos 3t - cos 4t), y flipped.
        pts = []
        for i in range(96):
            t = 2 * math.pi * i / 96
            x = 16 * math.sin(t) ** 3
            y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
            pts.append((x, -y))
        return _normalise(pts)
    if shape == "crescent":
        # Unit circle minus a circle of radius sqrt(0.76) centred at (0.6, 0): both pass through (0.5, +-0.866).
        # Outer arc from 60 to 300 degrees through the left, then the inner arc back through its leftmost point.
        outer = [(math.cos(a), math.sin(a)) for a in np.linspace(math.radians(60), math.radians(300), 48)]
        r_in, start = math.sqrt(0.76), math.atan2(-math.sqrt(0.75), -0.1)
        inner = [(0.6 + r_in * math.cos(a), r_in * math.sin(a)) for a in np.linspace(start, -2 * math.pi - start, 32)]
        return _normalise(outer + inner[1:-1])
    raise LayoutError("character.shape", f"unknown shape {shape!r}", shape)


def _pixel_box(box: Box, width: int, height: int, scale: int) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = box
    return x0 * width * scale, y0 * height * scale, x1 * width * scale, y1 * height * scale


def _shape_layer(shape: str, pbox: tuple[float, float, float, float], size: tuple[int, int]) -> Image.Image:
    x0, y0, x1, y1 = pbox
    w, h = x1 - x0, y1 - y0
    layer = Image.new("L", size, 0)
    poly = [(x0 + px * w, y0 + py * h) for px, py in shape_polygon(shape)]
    # PIL fills a polygon including its right/bottom edge pixels; pull those in by half a pixel.
    poly = [(min(max(x, x0), x1 - 0.5), min(max(y, y0), y1 - 0.5)) for x, y in poly]
    ImageDraw.Draw(layer).polygon(poly, fill=255)
    return layer


def _pattern_layer(pattern: str, pbox: tuple[float, float, float, float], size: tuple[int, int]) -> Image.Image:
    """Where the secondary colour goes, anchored to the box so the pattern moves and scales with the character."""
    layer = Image.new("L", size, 0)
    if pattern == "solid":
        return layer
    x0, y0, x1, y1 = pbox
    w, h = x1 - x0, y1 - y0
    draw = ImageDraw.Draw(layer)
    if pattern == "stripes":  # 4 dark bands across the shape
        for k in range(4):
            top = y0 + (k + 0.5) * h / 4.5
            draw.rectangle([x0, top, x1, top + h / 9 - 1], fill=255)
    elif pattern == "dots":  # a 3x3 grid of round dots
        r = min(w, h) / 10
        for i in range(3):
            for j in range(3):
                cx, cy = x0 + (i + 0.5) * w / 3, y0 + (j + 0.5) * h / 3
                draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif pattern == "checks":  # a 4x4 checkerboard
        for i in range(4):
            for j in range(4):
                if (i + j) % 2 == 0:
                    left, top = x0 + i * w / 4, y0 + j * h / 4
                    draw.rectangle([left, top, left + w / 4 - 1, top + h / 4 - 1], fill=255)
    else:
        raise LayoutError("character.pattern", f"unknown pattern {pattern!r}", pattern)
    return layer


def shape_mask(shape: str, side: int) -> np.ndarray:
    """A ``side`` x ``side`` boolean mask of the shape filling the square (coverage >= 0.5), for prototypes."""
    size = (side * SUPERSAMPLE, side * SUPERSAMPLE)
    layer = _shape_layer(shape, (0.0, 0.0, float(size[0]), float(size[1])), size)
    return np.asarray(layer.reduce(SUPERSAMPLE)) >= 128


def _background(scene: SceneSpec, width: int, height: int, horizon: float | None) -> Image.Image:
    """The scene at supersampled size; the horizon falls on an output pixel boundary (no blended row)."""
    s = SUPERSAMPLE
    image = Image.new("RGB", (width * s, height * s), scene.upper)
    if horizon is not None:
        ImageDraw.Draw(image).rectangle([0, round(horizon * height) * s, width * s, height * s], fill=scene.lower)
    return image


def draw_frame(
    scene: SceneSpec,
    placements: Sequence[Placement],
    width: int,
    height: int,
    horizon: float | None = None,
) -> tuple[Image.Image, dict[str, np.ndarray]]:
    """Draw one frame: ``scene`` as background, then each placement in order (later ones on top).

    ``horizon`` overrides the place's horizon (fraction of the height). Returns the RGB image and, per placement key,
    a (height, width) bool mask of the pixels that show that character.
    """
    if width < 8 or height < 8:
        raise LayoutError("size", f"frame size must be at least 8x8, got {width}x{height}", (width, height))
    s = SUPERSAMPLE
    big = (width * s, height * s)
    horizon = scene.horizon if horizon is None else horizon
    canvas = _background(scene, width, height, horizon if scene.horizon is not None else None)
    coverage: dict[str, np.ndarray] = {}
    for p in placements:
        pbox = _pixel_box(p.box, width, height, s)
        body = _shape_layer(p.spec.shape, pbox, big)
        marks = _pattern_layer(p.spec.pattern, pbox, big)
        colours = p.spec.colours
        canvas.paste(colours.primary, mask=body)
        if p.spec.pattern != "solid":
            both = Image.fromarray(np.minimum(np.asarray(body), np.asarray(marks)))
            canvas.paste(colours.secondary, mask=both)
        cov = np.asarray(body.reduce(s), dtype=np.float32) / 255.0
        for key in coverage:  # a later character hides what it covers of earlier ones
            coverage[key] = np.clip(coverage[key] - cov, 0.0, 1.0)
        coverage[p.key] = cov
    image = canvas.reduce(s)
    masks = {key: cov >= 0.5 for key, cov in coverage.items()}
    return image, masks
