"""Box previews: draw labelled boxes on a copy of an image (detector node previews, dataset inspection)."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

__all__ = ["PALETTE", "draw_boxes"]

PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128))


def draw_boxes(image: Image.Image, boxes: Sequence[Sequence[float]], labels: Sequence[str] | None = None,
               width: int | None = None) -> Image.Image:
    """A copy of ``image`` (RGB) with each normalised ``[x0, y0, x1, y1]`` box outlined in its own colour and its
    label (if any) written on a filled tab at the box's top-left corner."""
    if not isinstance(image, Image.Image):
        raise TypeError(f"image: expected a PIL image, got {type(image).__name__}")
    boxes = [tuple(float(v) for v in box) for box in boxes]
    for k, box in enumerate(boxes):
        if len(box) != 4:
            raise ValueError(f"boxes[{k}]: expected 4 numbers [x0, y0, x1, y1], got {box!r}")
    if labels is not None and len(labels) != len(boxes):
        raise ValueError(f"labels: expected {len(boxes)} labels (one per box), got {len(labels)}")
    out = image.convert("RGB")  # always a copy
    draw = ImageDraw.Draw(out)
    w, h = out.size
    line = width if width is not None else max(1, round(min(w, h) / 150))
    font = ImageFont.load_default()
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        colour = PALETTE[k % len(PALETTE)]
        rect = (x0 * (w - 1), y0 * (h - 1), x1 * (w - 1), y1 * (h - 1))
        draw.rectangle(rect, outline=colour, width=line)
        if labels is not None and labels[k]:
            text = str(labels[k])
            left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
            tab_h = bottom - top + 2
            ty = rect[1] - tab_h if rect[1] - tab_h >= 0 else rect[1]  # above the box, or inside when at the top
            draw.rectangle((rect[0], ty, rect[0] + right - left + 2, ty + tab_h), fill=colour)
            draw.text((rect[0] + 1 - left, ty + 1 - top), text, fill=(255, 255, 255), font=font)
    return out
