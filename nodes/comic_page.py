"""``L2S_ComicPage``: story frames typeset as comic pages (``lay2story_core.comic``)."""

from __future__ import annotations

from lay2story_core.comic import LAYOUTS, READINGS, ComicStyle, compose_comic, layout_boxes, story_dialogue
from lay2story_core.story import Layout

from .image_utils import pil_to_image, to_pil_list
from .story_nodes import check_story, frame_lines

GRID = "grid"  # the layout choice that uses the grid widget
PAGE_SIZE_HELP = "auto (sized by the frames), WxH pixels, or A4, A5, B5, Letter, US-comic (add -landscape)"

__all__ = ["L2S_ComicPage"]


class L2S_ComicPage:
    NODE_ID = "L2S_ComicPage"
    DISPLAY_NAME = "Lay2Story Comic Page"
    CATEGORY = "Lay2Story/output"
    DESCRIPTION = (
        "Typesets frames as a comic: four_panel (2 x 2 panels per page) or classic (rows of full and half-size "
        "panels), after StoryDiffusion, with captions under the panels (the story's frame prompts or your own "
        "lines); or a grid (e.g. '2|1 2|3'), manga (right to left), webtoon (one vertical strip) or strip (one "
        "row), with captions in caption boxes. The story's dialogue lines become bubbles placed by its layout, "
        "tails pointing at the speakers, kept off the characters."
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
                "layout": ([*LAYOUTS, GRID], {"default": "four_panel",
                                              "tooltip": "four_panel: 2 x 2 grid pages; classic: rows of varying "
                                                         "panel widths on one page; manga: right-to-left pages; "
                                                         "webtoon: one vertical strip; strip: one row; grid: the "
                                                         "grid widget's rows."}),
                "font_size": ("INT", {"default": 20, "min": 4, "max": 256,
                                      "tooltip": "Caption and bubble font size in pixels (bubble text "
                                                 "shrinks to fit)."}),
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
                "grid": ("STRING", {
                    "default": "2|1 2|3",
                    "tooltip": "With layout grid: rows separated by '|', each a panel count ('3') or relative "
                               "panel widths ('1 2'), optionally ':height' ('1:2|2'). More frames make more "
                               "pages."}),
                "reading": (list(READINGS), {"default": "auto",
                                             "tooltip": "Reading direction: auto (right to left for manga, else "
                                                        "left to right), ltr or rtl (mirrors the page and the "
                                                        "bubble order)."}),
                "page_size": ("STRING", {"default": "auto",
                                         "tooltip": f"Page size (not for four_panel/classic): {PAGE_SIZE_HELP}."}),
                "dpi": ("INT", {"default": 150, "min": 36, "max": 1200,
                                "tooltip": "Dots per inch for paper page sizes (A4 at 150 dpi is 1240x1754)."}),
                "bubbles": ("BOOLEAN", {"default": True,
                                        "tooltip": "Letter the story's dialogue lines as bubbles and caption "
                                                   "boxes."}),
                "font": ("STRING", {"default": "",
                                    "tooltip": "A .ttf/.otf font file for the lettering; empty: the built-in "
                                               "Aileron (ASCII only; CJK or accented text needs a font such as "
                                               "Noto Sans CJK or DejaVu Sans)."}),
                "min_font_size": ("INT", {"default": 8, "min": 4, "max": 256,
                                          "tooltip": "Bubble text shrinks to fit down to this size (pixels), "
                                                     "then wraps harder."}),
                "detected": ("L2S_LAYOUT", {
                    "tooltip": "Boxes for frames whose story has none (layout off), e.g. the Layout Detector's "
                               "output: bubble tails point at them and bubbles keep off them."}),
            },
        }

    def compose(self, images, layout: str = "four_panel", font_size: int = 20, panel_width: int = 0,
                margin: int = 24, gutter: int = 12, border: int = 2, background: str = "#ffffff",
                text_colour: str = "#000000", story=None, captions: str = "", grid: str = "2|1 2|3",
                reading: str = "auto", page_size: str = "auto", dpi: int = 150, bubbles: bool = True,
                font: str = "", min_font_size: int = 8, detected=None) -> tuple[object]:
        frames = to_pil_list(images, "images")
        lines = frame_lines(captions, "captions") if captions else []
        if story is not None and (bubbles or not lines):
            story = check_story(story)
            if story.num_frames != len(frames):
                raise ValueError(f"story: {story.num_frames} frames but {len(frames)} images; connect the frames "
                                 "of this story")
        if lines:
            if len(lines) > len(frames):
                raise ValueError(f"captions: {len(lines)} lines for {len(frames)} frames")
            texts = lines
        elif story is not None:
            texts = [frame.prompt for frame in story.frames]
        else:
            texts = None
        dialogue = None
        if bubbles and story is not None:
            if detected is not None and not isinstance(detected, Layout):
                raise ValueError(f"detected: expected an L2S_LAYOUT, got {type(detected).__name__}")
            boxes = layout_boxes(detected) if detected is not None else None
            dialogue = story_dialogue(story, detected=boxes, images=frames)
        style = ComicStyle(font_size=font_size, margin=margin, gutter=gutter, border=border,
                           panel_width=panel_width, background=background, text_colour=text_colour,
                           border_colour=text_colour, font=font.strip() or None,
                           min_font_size=min(min_font_size, font_size))
        pages = compose_comic(frames, texts, layout=grid if layout == GRID else layout, style=style,
                              dialogue=dialogue, reading=reading, page_size=page_size, dpi=dpi)
        return (pil_to_image(pages),)
