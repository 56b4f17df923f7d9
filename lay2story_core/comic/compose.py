"""The page composer: frames + captions + dialogue -> lettered comic pages, for every template.

``four_panel`` and ``classic`` keep StoryDiffusion's geometry with captions under the panels (:mod:`.classic`);
the other templates (:mod:`.templates`) crop each frame to its panel (centred on the frame's characters) and letter
captions as caption boxes inside the panel. Dialogue lines become bubbles in every template (:mod:`.bubbles`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw

from .bubbles import Bubble, BubbleRequest, place_bubbles
from .classic import Composer
from .dialogue import FrameDialogue
from .fonts import ComicFont
from .lettering import draw_bubbles
from .style import ComicStyle, check_reading
from .templates import (
    DEFAULT_DPI,
    NAMED_TEMPLATES,
    is_grid,
    parse_grid,
    parse_page_size,
    template_pages,
    template_reading,
)

__all__ = ["LAYOUTS", "PanelReport", "Typeset", "check_layout", "compose_comic", "typeset"]

LAYOUTS = ("four_panel", "classic", *NAMED_TEMPLATES)
Box = tuple[float, float, float, float]
_FULL = (0.0, 0.0, 1.0, 1.0)


@dataclass(frozen=True)
class PanelReport:
    """What was lettered in one panel: its page, frame and size, the character boxes (panel pixels) and bubbles."""

    page: int
    frame: int
    size: tuple[int, int]
    characters: tuple[Box, ...]
    bubbles: tuple[Bubble, ...]


@dataclass(frozen=True)
class Typeset:
    pages: tuple[Image.Image, ...]
    panels: tuple[PanelReport, ...]
    reading: str  # "ltr" or "rtl"
    dpi: int


def check_layout(layout: object) -> str:
    """``layout`` if it names a template or is a valid grid spec, else one ValueError naming it."""
    if isinstance(layout, str) and is_grid(layout):
        parse_grid(layout)
        return layout
    if layout not in LAYOUTS:
        raise ValueError(f"layout: expected one of {LAYOUTS} or a grid like '2|1 2|3', got {layout!r}")
    return layout  # type: ignore[return-value]


def _cover_window(src: tuple[int, int], dst: tuple[int, int], focus: Box | None) -> Box:
    """The normalised part of a ``src``-sized frame shown in a ``dst``-sized panel (its aspect, as large as
    possible), centred on ``focus`` as far as the frame allows."""
    sw, sh = src
    aspect = dst[0] / dst[1]
    cw, ch = (sh * aspect / sw, 1.0) if sw / sh > aspect else (1.0, sw / aspect / sh)
    fx, fy = (0.5, 0.5) if focus is None else ((focus[0] + focus[2]) / 2, (focus[1] + focus[3]) / 2)
    x0, y0 = min(max(fx - cw / 2, 0.0), 1.0 - cw), min(max(fy - ch / 2, 0.0), 1.0 - ch)
    return x0, y0, x0 + cw, y0 + ch


def _to_panel(box: Box, window: Box, size: tuple[int, int]) -> Box | None:
    wx0, wy0, wx1, wy1 = window
    x0, x1 = ((v - wx0) / (wx1 - wx0) * size[0] for v in (box[0], box[2]))
    y0, y1 = ((v - wy0) / (wy1 - wy0) * size[1] for v in (box[1], box[3]))
    x0, x1 = max(0.0, x0), min(float(size[0]), x1)
    y0, y1 = max(0.0, y0), min(float(size[1]), y1)
    return (x0, y0, x1, y1) if x1 - x0 >= 1 and y1 - y0 >= 1 else None


def _union(boxes: Sequence[Box]) -> Box | None:
    if not boxes:
        return None
    return min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)


class _Letterer:
    def __init__(self, style: ComicStyle, font: ComicFont, reading: str, captions: list[str | None],
                 dialogue: list[FrameDialogue | None], captions_inside: bool,
                 page_font_sizes: dict[int, int] | None = None) -> None:
        self.style, self.font, self.reading = style, font, reading
        self.captions, self.dialogue, self.captions_inside = captions, dialogue, captions_inside
        # one lettering size per page (a letterer's rule): the size each page's bubbles start from, measured by a
        # first pass (:func:`typeset`); a bubble still shrinks below it only where its text would not fit
        self.page_font_sizes = page_font_sizes or {}
        self.reports: list[PanelReport] = []

    def page_font_size(self, page: int) -> int:
        return self.page_font_sizes.get(page, self.style.start_font_size)

    def __call__(self, page: int, frame: int, panel: Image.Image, window: Box) -> Image.Image:
        entry = self.dialogue[frame] or FrameDialogue()
        size = panel.size
        characters = tuple(b for b in (_to_panel(c, window, size) for c in entry.characters) if b is not None)
        requests = []
        if self.captions_inside and self.captions[frame] and self.captions[frame].strip():
            requests.append(BubbleRequest(self.captions[frame], "caption", None, speaker=False))
        for line in entry.lines:
            target = None if line.box is None else _to_panel(line.box, window, size)
            requests.append(BubbleRequest(line.text, line.style, target, speaker=line.speaker is not None))
        bubbles = place_bubbles(size, requests, characters, self.font.at, start_size=self.page_font_size(page),
                                min_size=self.style.min_font_size, reading=self.reading,
                                inset=self.style.border + 3) if requests else []
        self.reports.append(PanelReport(page, frame, size, characters, tuple(bubbles)))
        return draw_bubbles(panel, bubbles, self.font, self.style) if bubbles else panel


def _checked_inputs(images, captions, dialogue) -> tuple[list[Image.Image], list, list]:
    images = list(images)
    if not images:
        raise ValueError("images: need at least one frame")
    for k, image in enumerate(images):
        if not isinstance(image, Image.Image) or min(image.size) < 1:
            raise ValueError(f"images[{k}]: expected a non-empty PIL image, got {type(image).__name__}")
    caps = _per_frame(captions, len(images), "captions", "captions", str, "text")
    lines = _per_frame(dialogue, len(images), "dialogue", "frames of dialogue", FrameDialogue, "a FrameDialogue")
    return images, caps, lines


def _per_frame(values, frames: int, field: str, counted: str, kind: type, expected: str) -> list:
    """``values`` (``None``: none) as one entry per frame, ``None`` where missing; every given entry ``None`` or a
    ``kind``, and no more entries than frames (``ValueError`` naming ``field`` otherwise)."""
    out: list = [None] * frames
    if values is None:
        return out
    values = list(values)
    if len(values) > frames:
        raise ValueError(f"{field}: {len(values)} {counted} for {frames} frames")
    for k, value in enumerate(values):
        if value is not None and not isinstance(value, kind):
            raise ValueError(f"{field}[{k}]: expected {expected} or None, got {type(value).__name__}")
        out[k] = value
    return out


def typeset(images: Sequence[Image.Image], captions: Sequence[str | None] | None = None,
            layout: str = "four_panel", style: ComicStyle | None = None, *,
            dialogue: Sequence[FrameDialogue | None] | None = None, reading: str = "auto",
            page_size: str | tuple[int, int] | None = None, dpi: int = DEFAULT_DPI) -> Typeset:
    """Comic pages of ``images`` (see :func:`compose_comic`) with what was lettered in each panel."""
    layout = check_layout(layout)
    reading = template_reading(layout, check_reading(reading))
    size = parse_page_size(page_size, dpi)
    images, caps, lines = _checked_inputs(images, captions, dialogue)
    style = style or ComicStyle()
    font = ComicFont(style.font)
    texts = {f"captions[{k}]": t for k, t in enumerate(caps) if t}
    texts.update({f"dialogue[{i}].lines[{j}]": line.text for i, entry in enumerate(lines) if entry
                  for j, line in enumerate(entry.lines)})
    font.check(texts)
    classic = layout in ("four_panel", "classic")

    def letter(page_font_sizes: dict[int, int] | None) -> tuple[list[Image.Image], _Letterer]:
        letterer = _Letterer(style, font, reading, caps, lines, captions_inside=not classic,
                             page_font_sizes=page_font_sizes)
        return _render_pages(images, caps, lines, layout, style, font, reading, size, letterer), letterer

    # 1. a first pass finds the size each bubble fits at; 2. every bubble of a page then starts from the page's
    # (lower) median size, so a page is lettered in one size and only a bubble that cannot fit it shrinks further
    pages, letterer = letter(None)
    sizes: dict[int, list[int]] = {}
    for report in letterer.reports:
        sizes.setdefault(report.page, []).extend(bubble.font_size for bubble in report.bubbles)
    page_sizes = {page: sorted(found)[(len(found) - 1) // 2] for page, found in sizes.items() if found}
    if any(value < style.start_font_size for value in page_sizes.values()):
        pages, letterer = letter(page_sizes)
    return Typeset(tuple(pages), tuple(letterer.reports), reading, dpi)


def _render_pages(images: list[Image.Image], caps: list, lines: list, layout: str, style: ComicStyle,
                  font: ComicFont, reading: str, size: tuple[int, int] | None,
                  letterer: _Letterer) -> list[Image.Image]:
    """The pages of ``layout`` with every panel lettered by ``letterer``."""
    classic = layout in ("four_panel", "classic")
    if classic:
        if size is not None:
            raise ValueError(f"page_size: {layout} pages are sized by their frames; use a grid layout such as "
                             f"'2|2' for a page of {size[0]}x{size[1]} pixels")
        composer = Composer(images, caps, style, font.at(style.font_size))
        geometry = composer.four_panel() if layout == "four_panel" else composer.classic()
        pages = [composer.render(w, h, cells, lambda f, p, k=k: letterer(k, f, p, _FULL), mirror=reading == "rtl")
                 for k, (w, h, cells) in enumerate(geometry)]
    else:
        pages = []
        for k, page_layout in enumerate(template_pages(layout, len(images), images[0].size, page_size=size,
                                                       margin=style.margin, gutter=style.gutter,
                                                       panel_width=style.panel_width, reading=reading)):
            page = Image.new("RGB", (page_layout.width, page_layout.height), style.background)
            draw = ImageDraw.Draw(page)
            for rect in page_layout.panels:
                image = images[rect.frame]
                entry = lines[rect.frame]
                window = _cover_window(image.size, (rect.width, rect.height),
                                       _union(entry.characters) if entry else None)
                pixels = (window[0] * image.width, window[1] * image.height, window[2] * image.width,
                          window[3] * image.height)
                panel = image.convert("RGB").resize((rect.width, rect.height), Image.LANCZOS, box=pixels)
                page.paste(letterer(k, rect.frame, panel, window), (rect.x0, rect.y0))
                if style.border:
                    draw.rectangle((rect.x0, rect.y0, rect.x1 - 1, rect.y1 - 1), outline=style.border_colour,
                                   width=style.border)
            pages.append(page)
    return pages


def compose_comic(images: Sequence[Image.Image], captions: Sequence[str | None] | None = None,
                  layout: str = "four_panel", style: ComicStyle | None = None, *,
                  dialogue: Sequence[FrameDialogue | None] | None = None, reading: str = "auto",
                  page_size: str | tuple[int, int] | None = None, dpi: int = DEFAULT_DPI) -> list[Image.Image]:
    """Comic pages of ``images`` (frames) with ``captions`` and ``dialogue`` (per frame, e.g. from
    :func:`~.dialogue.story_dialogue`) lettered in.

    ``layout``: ``"four_panel"`` (``ceil(n / 4)`` pages, frames resized to the first one's aspect, captions under
    the panels), ``"classic"`` (one page), a grid spec like ``"2|1 2|3"``, ``"manga"``, ``"webtoon"`` or
    ``"strip"`` (:mod:`.templates`; captions as caption boxes). ``reading``: ``"auto"``, ``"ltr"`` or ``"rtl"``
    (mirrors the page and the bubble order). ``page_size``: ``None``/``"auto"``, ``"WxH"`` pixels or a paper name at
    ``dpi`` (not for four_panel/classic). ``captions`` and ``dialogue`` may be shorter than ``images``.
    """
    return list(typeset(images, captions, layout, style, dialogue=dialogue, reading=reading, page_size=page_size,
                        dpi=dpi).pages)
