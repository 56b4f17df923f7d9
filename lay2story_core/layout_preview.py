"""Layout previews: each frame of a story with its subjects' boxes, character and subject caption drawn over the
frame's image (or a blank frame), readable at any frame size. Shared by the ComfyUI Layout Preview node, the
example thumbnails and any script (``render_layout_preview(story, images)``); no ComfyUI import.

Frames are enlarged by a whole factor (nearest neighbour: the pixels stay honest) until the shorter side is at least
:data:`MIN_SIDE`; labels use a scalable font sized to the frame, take each character's colour (the layout editor's
palette, by the character's index in the story) and are cut with "..." to their box rather than squeezed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from PIL import Image, ImageDraw

from .comic import load_font
from .story import Story

__all__ = ["BLANK_COLOUR", "MIN_SIDE", "PALETTE", "character_colour", "fit_text", "render_layout_preview"]

MIN_SIDE = 256
BLANK_MAX_SIDE = 512
BLANK_COLOUR = (228, 228, 228)
BAND_COLOUR = (0, 0, 0)
# The layout editor's palette (web/js/canvas_draw.js), so a character has one colour in the editor and the preview.
PALETTE = ((0x4F, 0xC3, 0xF7), (0xFF, 0xB7, 0x4D), (0x81, 0xC7, 0x84), (0xE5, 0x73, 0x73), (0xBA, 0x68, 0xC8),
           (0xFF, 0xF1, 0x76), (0x4D, 0xB6, 0xAC), (0xF0, 0x62, 0x92))
ELLIPSIS = "\u2026"


def character_colour(story: Story, character: str) -> tuple[int, int, int]:
    ids = story.character_ids
    return PALETTE[(ids.index(character) if character in ids else 0) % len(PALETTE)]


def _text_width(draw: ImageDraw.ImageDraw, text: str, font) -> int:
    left, _, right, _ = draw.textbbox((0, 0), text, font=font)
    return right - left


def fit_text(draw: ImageDraw.ImageDraw, text: str, font, max_width: int) -> str:
    """``text`` cut with an ellipsis to at most ``max_width`` pixels ("" when not even one character fits)."""
    if _text_width(draw, text, font) <= max_width:
        return text
    lo, hi = 0, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _text_width(draw, text[:mid] + ELLIPSIS, font) <= max_width:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo] + ELLIPSIS if lo else ""


def _frame_size(story: Story, backgrounds: Sequence[Image.Image] | None, min_side: int) -> tuple[int, int]:
    if backgrounds:
        size = backgrounds[0].size
    else:
        scale = min(1.0, BLANK_MAX_SIDE / max(story.width, story.height))
        size = (max(16, round(story.width * scale)), max(16, round(story.height * scale)))
    factor = max(1, math.ceil(min_side / min(size)))
    return size[0] * factor, size[1] * factor


def _label(draw: ImageDraw.ImageDraw, rect: tuple[float, ...], text: str, colour, font, pad: int) -> None:
    """A filled tab with ``text`` at the box's top-left corner (inside the box when it touches the top)."""
    x0, y0, x1, _ = rect
    shown = fit_text(draw, text, font, max(int(x1 - x0) - 2 * pad, _text_width(draw, "M" * 6, font)))
    if not shown:
        return
    _, top, _, bottom = draw.textbbox((0, 0), "Ag", font=font)
    tab_h = bottom - top + 2 * pad
    ty = y0 - tab_h if y0 - tab_h >= 0 else y0
    width = _text_width(draw, shown, font) + 2 * pad
    draw.rectangle((x0, ty, x0 + width, ty + tab_h), fill=colour)
    draw.text((x0 + pad, ty + pad - top), shown, fill=(0, 0, 0), font=font)


def _note(draw: ImageDraw.ImageDraw, size: tuple[int, int], lines: list[str], font, pad: int) -> None:
    """Lines on a dark band at the bottom (the frame's prompt, subjects without a box), each cut to the width."""
    _, top, _, bottom = draw.textbbox((0, 0), "Ag", font=font)
    line_h = bottom - top + pad
    band_top = max(0, size[1] - line_h * len(lines) - pad)
    draw.rectangle((0, band_top, size[0], size[1]), fill=BAND_COLOUR)
    for k, line in enumerate(lines):
        draw.text((pad, band_top + pad // 2 + k * line_h - top), fit_text(draw, line, font, size[0] - 2 * pad),
                  fill=(255, 255, 255), font=font)


def render_layout_preview(story: Story, backgrounds: Sequence[Image.Image] | None = None,
                          min_side: int = MIN_SIDE) -> list[Image.Image]:
    """One RGB image per story frame: background ``i`` (blank past the given ones), enlarged to at least
    ``min_side`` on the shorter side, with each boxed subject's outline and ``"character: caption"`` tab, and a band
    with ``"i. prompt"`` plus the subjects without a box ("whole frame") or "no layout"."""
    if not isinstance(story, Story):
        raise TypeError(f"story: expected a Story, got {type(story).__name__}")
    size = _frame_size(story, backgrounds, min_side)
    short = min(size)
    font = load_font(max(12, round(short / 18)))
    pad = max(2, round(short / 128))
    line = max(2, round(short / 110))
    out = []
    for i, frame in enumerate(story.frames):
        if backgrounds and i < len(backgrounds):
            image = backgrounds[i].convert("RGB").resize(size, Image.NEAREST)
        else:
            image = Image.new("RGB", size, BLANK_COLOUR)
        draw = ImageDraw.Draw(image)
        w, h = size
        boxed = [s for s in frame.subjects if s.box is not None]
        rects = [(x0 * (w - 1), y0 * (h - 1), x1 * (w - 1), y1 * (h - 1)) for x0, y0, x1, y1 in (s.box for s in boxed)]
        for subject, rect in zip(boxed, rects):
            draw.rectangle(rect, outline=character_colour(story, subject.character), width=line)
        for subject, rect in zip(boxed, rects):  # tabs after all outlines, so no outline crosses a label
            text = f"{subject.character}: {subject.caption}" if subject.caption else subject.character
            _label(draw, rect, text, character_colour(story, subject.character), font, pad)
        notes = [f"{s.character}: whole frame" + (f", {s.caption}" if s.caption else "")
                 for s in frame.subjects if s.box is None]
        if not frame.subjects:
            notes.append("no layout")
        _note(draw, size, [f"{i + 1}. {frame.prompt}", *notes], font, pad)
        out.append(image)
    return out
