"""Drawing placed bubbles into a panel: speech = ellipse + triangle tail, thought = cloud (an ellipse ringed with
bumps) + a trail of shrinking circles, shout = spiky outline + triangle tail, caption = rectangle without a tail.

Each shape is drawn as one filled mask (supersampled 3x, so edges are smooth), outlined by dilating that mask, so a
tail and its body read as one outline. Text lines are centred in the body.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from .bubbles import Bubble
from .fonts import ComicFont
from .style import ComicStyle

__all__ = ["draw_bubbles"]

_SS = 3  # supersampling of the shape masks


def _ellipse_point(cx: float, cy: float, a: float, b: float, angle: float) -> tuple[float, float]:
    return cx + a * math.cos(angle), cy + b * math.sin(angle)


def _perimeter(a: float, b: float) -> float:
    return math.pi * (3 * (a + b) - math.sqrt((3 * a + b) * (a + 3 * b)))  # Ramanujan


def _shape_mask(bubble: Bubble, origin: tuple[int, int], size: tuple[int, int]) -> Image.Image:
    """The bubble's filled shape (body, decoration and tail) as an L mask of ``size`` at 1x."""
    ox, oy = origin
    mask = Image.new("L", (size[0] * _SS, size[1] * _SS), 0)
    draw = ImageDraw.Draw(mask)

    def pt(x: float, y: float) -> tuple[float, float]:
        return (x - ox) * _SS, (y - oy) * _SS

    def circle(x: float, y: float, r: float) -> None:
        (px, py), pr = pt(x, y), r * _SS
        draw.ellipse((px - pr, py - pr, px + pr, py + pr), fill=255)

    x0, y0, x1, y1 = bubble.body
    cx, cy, a, b = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    if bubble.style == "caption":
        draw.rectangle((*pt(x0, y0), *pt(x1, y1)), fill=255)
        return mask.reduce(_SS)
    draw.ellipse((*pt(x0, y0), *pt(x1, y1)), fill=255)
    reach = (bubble.box[2] - bubble.box[0] - (x1 - x0)) / 2  # decoration beyond the body
    if bubble.style == "thought":
        count = max(8, round(_perimeter(a, b) / (1.6 * reach)))
        for k in range(count):
            circle(*_ellipse_point(cx, cy, a - reach * 0.2, b - reach * 0.2, 2 * math.pi * k / count), reach * 1.2)
        if bubble.tail:
            tx, ty = bubble.tail[2]
            angle = math.atan2((ty - cy) / b, (tx - cx) / a)
            sx, sy = _ellipse_point(cx, cy, a + reach, b + reach, angle)  # the trail starts outside the cloud
            length = math.hypot(tx - sx, ty - sy)
            radii = [max(1.5, k * bubble.font_size) for k in (0.38, 0.27, 0.17)]
            shrink = min(1.0, length / max(1.0, 2 * sum(radii) + 4))
            along = 0.0
            for k, radius in enumerate(radii):
                along += (radius if k == 0 else radii[k - 1] + radius + 2) * shrink
                circle(sx + (tx - sx) * along / max(length, 1.0), sy + (ty - sy) * along / max(length, 1.0),
                       radius * max(shrink, 0.6))
    else:
        if bubble.style == "shout":
            count = min(32, max(10, round(_perimeter(a, b) / (2.2 * reach))))
            points = [pt(*_ellipse_point(cx, cy, a + (reach if k % 2 == 0 else -0.02 * a),
                                         b + (reach if k % 2 == 0 else -0.02 * b), math.pi * k / count))
                      for k in range(2 * count)]
            draw.polygon(points, fill=255)
        if bubble.tail:
            draw.polygon([pt(*p) for p in bubble.tail], fill=255)
    return mask.reduce(_SS)


def _disk(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2) <= radius * radius + radius


def draw_bubbles(panel: Image.Image, bubbles: Sequence[Bubble], font: ComicFont, style: ComicStyle) -> Image.Image:
    """``panel`` (RGB) with ``bubbles`` drawn in (a copy)."""
    panel = panel.convert("RGB").copy()
    line = style.bubble_line
    pad = line + 2
    for bubble in bubbles:
        xs = [bubble.box[0], bubble.box[2]] + [p[0] for p in bubble.tail]
        ys = [bubble.box[1], bubble.box[3]] + [p[1] for p in bubble.tail]
        x0, y0 = max(0, math.floor(min(xs)) - pad), max(0, math.floor(min(ys)) - pad)
        x1, y1 = min(panel.width, math.ceil(max(xs)) + pad), min(panel.height, math.ceil(max(ys)) + pad)
        if x1 <= x0 or y1 <= y0:
            continue
        fill = _shape_mask(bubble, (x0, y0), (x1 - x0, y1 - y0))
        if line > 0:
            ring = ndimage.grey_dilation(np.asarray(fill), footprint=_disk(line))
            panel.paste(style.border_colour, (x0, y0, x1, y1), Image.fromarray(ring))
        colour = style.caption_box_colour if bubble.style == "caption" else style.bubble_colour
        panel.paste(colour, (x0, y0, x1, y1), fill)
        face = font.at(bubble.font_size)
        draw = ImageDraw.Draw(panel)
        bx0, by0, bx1, by1 = bubble.body
        top = (by0 + by1) / 2 - bubble.line_height * len(bubble.lines) / 2 + max(1, bubble.font_size // 8) / 2
        for k, text in enumerate(bubble.lines):
            x = (bx0 + bx1) / 2 - face.getlength(text) / 2
            draw.text((round(x), round(top + k * bubble.line_height)), text, font=face, fill=style.text_colour)
    return panel
