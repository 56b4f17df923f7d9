"""``L2S_ComicPage``: story frames typeset as comic pages (``lay2story_core.comic``)."""

from __future__ import annotations

from lay2story_core.comic import LAYOUTS, ComicStyle, compose_comic

from .image_utils import pil_to_image, to_pil_list
from .story_nodes import check_story, frame_lines

__all__ = ["L2S_ComicPage"]


class L2S_ComicPage:
    NODE_ID = "L2S_ComicPage"
    DISPLAY_NAME = "Lay2Story Comic Page"
    CATEGORY = "Lay2Story/output"
    DESCRIPTION = (
        "Typesets frames as a comic, after StoryDiffusion: four_panel (2 x 2 panels per page) or classic (rows of "
        "full and half-size panels), with captions under the panels: the story's frame prompts or your own lines."
    )
    FUNCTION = "compose"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("pages",)
    OUTPUT_TOOLTIPS = ("The comic pages (four_panel: one per 4 frames; classic: one page).",)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The frames, in story order."}),
                "layout": (list(LAYOUTS), {"default": "four_panel",
                                           "tooltip": "four_panel: 2 x 2 grid pages; classic: rows of varying "
                                                      "panel widths on one page."}),
                "font_size": ("INT", {"default": 20, "min": 4, "max": 256,
                                      "tooltip": "Caption font size in pixels."}),
                "panel_width": ("INT", {"default": 0, "min": 0, "max": 8192, "step": 8,
                                        "tooltip": "Width of a full panel in pixels; 0 keeps the frames' width."}),
                "margin": ("INT", {"default": 24, "min": 0, "max": 1024,
                                   "tooltip": "Blank space around the page, in pixels."}),
                "gutter": ("INT", {"default": 12, "min": 0, "max": 1024,
                                   "tooltip": "Space between panels, in pixels."}),
                "border": ("INT", {"default": 2, "min": 0, "max": 64,
                                   "tooltip": "Panel border width in pixels (0: none)."}),
                "background": ("STRING", {"default": "#ffffff",
                                          "tooltip": "Page colour: '#rrggbb', a colour name or 'r,g,b'."}),
                "text_colour": ("STRING", {"default": "#000000",
                                           "tooltip": "Caption and border colour: '#rrggbb', a name or 'r,g,b'."}),
            },
            "optional": {
                "story": ("L2S_STORY", {"tooltip": "Captions from the story's frame prompts (one per frame)."}),
                "captions": ("STRING", {
                    "default": "", "multiline": True,
                    "tooltip": "Captions, one per line in frame order (wins over the story's; blank lines are "
                               "ignored). Empty: the story's prompts, or no captions."}),
            },
        }

    def compose(self, images, layout: str = "four_panel", font_size: int = 20, panel_width: int = 0,
                margin: int = 24, gutter: int = 12, border: int = 2, background: str = "#ffffff",
                text_colour: str = "#000000", story=None, captions: str = "") -> tuple[object]:
        frames = to_pil_list(images, "images")
        lines = frame_lines(captions, "captions") if captions else []
        if lines:
            if len(lines) > len(frames):
                raise ValueError(f"captions: {len(lines)} lines for {len(frames)} frames")
            texts = lines
        elif story is not None:
            story = check_story(story)
            if story.num_frames != len(frames):
                raise ValueError(f"story: {story.num_frames} frames but {len(frames)} images; connect the frames "
                                 "of this story")
            texts = [frame.prompt for frame in story.frames]
        else:
            texts = None
        style = ComicStyle(font_size=font_size, margin=margin, gutter=gutter, border=border,
                           panel_width=panel_width, background=background, text_colour=text_colour,
                           border_colour=text_colour)
        pages = compose_comic(frames, texts, layout=layout, style=style)
        return (pil_to_image(pages),)
