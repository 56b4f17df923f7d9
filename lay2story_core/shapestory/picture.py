"""A comparison picture people can judge at a glance: reference | ground truth | layout on | layout off."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

from ..story import Story
from .generator import character_look, render_reference, render_story
from .vocab import COLOURS

__all__ = ["comparison_grid"]

_LABEL_WIDTH = 110
_GAP = 6
_COLOUR_RGB = {c.name: c.secondary for c in COLOURS}


def _outlined(image: Image.Image, story: Story, frame: int | None, scale: int, character: str | None = None
              ) -> Image.Image:
    """``image`` upscaled ``scale`` times (nearest) with the frame's boxes (or the reference box) outlined."""
    big = image.convert("RGB").resize((image.width * scale, image.height * scale), Image.NEAREST)
    draw = ImageDraw.Draw(big)
    if frame is None:
        ref = story.character(character).reference
        boxes = [(character, ref.box)] if ref is not None and ref.box is not None else []
    else:
        boxes = [(s.character, s.box) for s in story.frames[frame].subjects if s.box is not None]
    for cid, (x0, y0, x1, y1) in boxes:
        colour = _COLOUR_RGB.get(character_look(story, cid).colour, (0, 0, 0))
        draw.rectangle([x0 * big.width, y0 * big.height, x1 * big.width - 1, y1 * big.height - 1],
                       outline=(0, 0, 0), width=3)
        draw.rectangle([x0 * big.width + 1, y0 * big.height + 1, x1 * big.width - 2, y1 * big.height - 2],
                       outline=colour, width=1)
    return big


def comparison_grid(rows: Sequence[tuple[Story, Sequence[tuple[str, Sequence[Image.Image]]]]], scale: int = 3
                    ) -> Image.Image:
    """One block per story: its main character's reference, then a row of frames for the ground truth and one per
    ``(label, frames)`` of the story (e.g. layout on, layout off, training-free), every box of the story outlined
    (black, inner line in the character's darker shade)."""
    if not rows:
        raise ValueError("rows: need at least one story")
    cell = max(s.width for s, _ in rows) * scale
    max_frames = max(s.num_frames for s, _ in rows)
    width = _LABEL_WIDTH + (cell + _GAP) * (max_frames + 1)
    blocks = [(1 + len(samples)) * (cell + _GAP) + 2 * _GAP for _, samples in rows]
    sheet = Image.new("RGB", (width, sum(blocks)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=15)
    for b, (story, samples) in enumerate(rows):
        top = sum(blocks[:b])
        truth, _ = render_story(story)
        cid = story.characters[0].id
        reference, _ = render_reference(story, cid)
        sheet.paste(_outlined(reference, story, None, scale, cid), (_LABEL_WIDTH, top))
        draw.text((_LABEL_WIDTH, top + cell + 1), "reference", fill=(0, 0, 0), font=font)
        for r, (label, frames) in enumerate((("ground truth", truth), *samples)):
            y = top + r * (cell + _GAP)
            draw.text((6, y + cell // 2 - 8), label, fill=(0, 0, 0), font=font)
            for f, image in enumerate(frames):
                sheet.paste(_outlined(image, story, f, scale), (_LABEL_WIDTH + (f + 1) * (cell + _GAP), y))
        for k, word in enumerate(story.characters[0].identity.split()[1:]):
            draw.text((6, top + 4 + 16 * k), word, fill=(90, 90, 90), font=font)
    return sheet
