"""``L2S_LayoutPreview``: each frame's boxes and subject captions drawn over the frame images (or blank frames)."""

from __future__ import annotations

import logging
import math

from PIL import Image, ImageDraw, ImageFont

from lay2story_core.story import Story
from lay2story_core.vision import draw_boxes

from .image_utils import pil_to_image, to_pil_list
from .layout_editor import save_backgrounds
from .story_nodes import check_story

logger = logging.getLogger(__name__)

__all__ = ["L2S_LayoutPreview", "render_layout_preview"]

BLANK_MAX_SIDE = 512
MIN_SIDE = 256  # smaller frames are enlarged (nearest neighbour) so labels stay readable
BLANK_COLOUR = (228, 228, 228)
TEXT_BAND = (0, 0, 0)


def _blank(story: Story) -> Image.Image:
    scale = min(1.0, BLANK_MAX_SIDE / max(story.width, story.height))
    size = (max(16, round(story.width * scale)), max(16, round(story.height * scale)))
    return Image.new("RGB", size, BLANK_COLOUR)


def _note(image: Image.Image, lines: list[str]) -> Image.Image:
    """Writes ``lines`` on a dark band at the bottom of the image (the frame's unboxed subjects / prompt)."""
    if not lines:
        return image
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    line_h = draw.textbbox((0, 0), "Ag", font=font)[3] + 2
    top = max(0, image.height - line_h * len(lines) - 2)
    draw.rectangle((0, top, image.width, image.height), fill=TEXT_BAND)
    for k, line in enumerate(lines):
        draw.text((2, top + 1 + k * line_h), line, fill=(255, 255, 255), font=font)
    return image


def render_layout_preview(story: Story, backgrounds: list[Image.Image] | None = None) -> list[Image.Image]:
    """One image per frame: background ``i`` (a blank frame past the given ones) with each subject's box and
    ``"character: caption"`` label; subjects without a box and frames without layout are noted at the bottom.
    Frames are enlarged by a whole factor until their shorter side is at least 256 px."""
    size = backgrounds[0].size if backgrounds else _blank(story).size
    factor = max(1, math.ceil(MIN_SIDE / min(size)))
    size = (size[0] * factor, size[1] * factor)
    out = []
    for i, frame in enumerate(story.frames):
        if backgrounds and i < len(backgrounds):
            base = backgrounds[i].convert("RGB").resize(size, Image.NEAREST)
        else:
            base = Image.new("RGB", size, BLANK_COLOUR)
        boxed = [s for s in frame.subjects if s.box is not None]
        labels = [f"{s.character}: {s.caption}" if s.caption else s.character for s in boxed]
        image = draw_boxes(base, [s.box for s in boxed], labels)
        notes = [f"{s.character}: whole frame" + (f", {s.caption}" if s.caption else "")
                 for s in frame.subjects if s.box is None]
        if not frame.subjects:
            notes.append("no layout")
        out.append(_note(image, [f"{i + 1}. {frame.prompt}"[:80], *notes]))
    return out


class L2S_LayoutPreview:
    NODE_ID = "L2S_LayoutPreview"
    DISPLAY_NAME = "Lay2Story Layout Preview"
    CATEGORY = "Lay2Story/layout"
    DESCRIPTION = (
        "Shows a story's layout: every frame's boxes with their character and subject caption, drawn over the "
        "connected images (e.g. the sampler's frames) or over blank frames."
    )
    FUNCTION = "preview"
    OUTPUT_NODE = True
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("preview",)
    OUTPUT_TOOLTIPS = ("One image per story frame with its layout drawn.",)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "story": ("L2S_STORY", {"tooltip": "The story whose layout to draw."}),
            },
            "optional": {
                "images": ("IMAGE", {
                    "tooltip": "Images to draw on, one per frame (frames past the batch are blank)."}),
            },
        }

    def preview(self, story: Story, images=None) -> dict:
        story = check_story(story)
        backgrounds = None if images is None else to_pil_list(images, "images")
        frames = render_layout_preview(story, backgrounds)
        records, _ = save_backgrounds(pil_to_image(frames), field="preview")
        return {"ui": {"images": records}, "result": (pil_to_image(frames),)}
