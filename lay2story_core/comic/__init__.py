"""Comic pages from story frames (pure PIL): templates, lettering with bubbles placed by the layout, and export.

- :mod:`.templates`: page templates (``four_panel`` and ``classic`` after StoryDiffusion in :mod:`.classic`; grid
  specs like ``"2|1 2|3"``, ``manga`` (right to left), ``webtoon``, ``strip``), page sizes in pixels or paper + DPI;
- :mod:`.dialogue`: a frame's lines and speaker boxes from a story (layout, detected boxes, or the image);
- :mod:`.bubbles`: the bubble placer (plain inputs); :mod:`.lettering`: drawing bubbles; :mod:`.fonts`: the font
  (Aileron, CC0, built into Pillow; or a user font file) and glyph checks;
- :mod:`.compose`: :func:`compose_comic` / :func:`typeset`; :mod:`.export`: PNG, PDF and CBZ (+ ComicInfo.xml).
"""

from .bubbles import BUBBLE_STYLES, Bubble, BubbleRequest, place_bubbles
from .classic import classic_rows
from .compose import LAYOUTS, PanelReport, Typeset, check_layout, compose_comic, typeset
from .dialogue import FrameDialogue, PanelLine, foreground_boxes, layout_boxes, story_dialogue
from .export import COMIC_SUFFIXES, check_comic_target, comic_info_xml, export_comic, pdf_bytes
from .fonts import BUILTIN_FONT, ComicFont, load_font, wrap_caption
from .style import READINGS, ComicStyle, parse_colour
from .templates import (
    DEFAULT_DPI,
    MANGA_GRID,
    PAPER_SIZES_MM,
    PageLayout,
    PanelRect,
    parse_grid,
    parse_page_size,
    template_pages,
)

__all__ = [
    "BUBBLE_STYLES",
    "BUILTIN_FONT",
    "COMIC_SUFFIXES",
    "DEFAULT_DPI",
    "LAYOUTS",
    "MANGA_GRID",
    "PAPER_SIZES_MM",
    "READINGS",
    "Bubble",
    "BubbleRequest",
    "ComicFont",
    "ComicStyle",
    "FrameDialogue",
    "PageLayout",
    "PanelLine",
    "PanelRect",
    "PanelReport",
    "Typeset",
    "check_comic_target",
    "check_layout",
    "classic_rows",
    "comic_info_xml",
    "compose_comic",
    "export_comic",
    "foreground_boxes",
    "layout_boxes",
    "load_font",
    "parse_colour",
    "parse_grid",
    "parse_page_size",
    "pdf_bytes",
    "place_bubbles",
    "story_dialogue",
    "template_pages",
    "typeset",
    "wrap_caption",
]
