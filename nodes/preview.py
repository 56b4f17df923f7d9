"""``L2S_LayoutPreview``: each frame's boxes and subject captions drawn over the frame images (or blank frames).

A thin adapter: the drawing is :func:`lay2story_core.layout_preview.render_layout_preview` (also used by scripts and
the example thumbnails); the web extension gives the node room for its >= 256 px frames.
"""

from __future__ import annotations

import logging

from lay2story_core.layout_preview import render_layout_preview
from lay2story_core.story import Story

from .image_utils import pil_to_image, to_pil_list
from .layout_editor import save_backgrounds
from .story_nodes import check_story

logger = logging.getLogger(__name__)

__all__ = ["L2S_LayoutPreview", "render_layout_preview"]


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
    OUTPUT_TOOLTIPS = ("One image per story frame with its layout drawn (at least 256 px on the shorter side).",)

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
