"""StoryDiffusion's two typesettings (the geometry of ``"four_panel"`` and ``"classic"``), with captions under the
panels.

- ``"four_panel"``: 2 x 2 panels per page (StoryDiffusion's "Four Pannel"); more frames make more pages.
- ``"classic"``: one page of rows of varying panel widths (StoryDiffusion's "Classic Comic Style",
  ``utils/utils.py``: ``distribute_images2`` + ``get_row_image2``): frames go in groups of 4 (alternating 4 and 6
  for stories longer than 8); a row shows each group as full panels and columns of two half-size panels
  (1, 1, 2 for 4 frames; 1, 1, 2, 2 for 6), the column moving from row to row. StoryDiffusion shuffles the order at
  random; here it rotates, so a page is a pure function of its inputs. Each row is scaled to the page width.

Unlike StoryDiffusion, captions go under the panels (not over the image), wrapped to the panel width, and empty
slots stay blank instead of showing a pad picture. Bubbles are drawn into the panels by the caller (``decorate``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw

from .fonts import text_width, wrap_caption
from .style import ComicStyle

__all__ = ["classic_rows", "Composer"]

_ROW_PATTERNS = {1: (1,), 2: (1, 1), 3: (1, 2), 4: (1, 1, 2), 5: (1, 2, 2), 6: (1, 1, 2, 2)}
_CAPTION_PAD = 4  # pixels between a panel and its caption
Decorate = Callable[[int, Image.Image], Image.Image]


def classic_rows(num_frames: int) -> list[tuple[int, ...]]:
    """Slot sizes per row for the classic layout: 1 = a full panel, 2 = a column of two half-size panels."""
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f"num_frames: expected a positive integer, got {num_frames!r}")
    sizes = (4,) if num_frames <= 8 else (4, 6)
    groups, remaining, k = [], num_frames, 0
    while remaining > 0:
        size = min(sizes[k % len(sizes)], remaining)
        groups.append(size)
        remaining -= size
        k += 1
    if len(groups) > 1 and groups[-1] < 3:  # no lonely last row of 1-2 huge panels: merge it or split evenly
        tail = groups.pop() + groups.pop()
        groups += [tail] if tail <= 6 else [tail - tail // 2, tail // 2]
    rows = []
    for r, size in enumerate(groups):
        pattern = _ROW_PATTERNS[size]
        shift = r % len(pattern)
        rows.append(pattern[shift:] + pattern[:shift])
    return rows


@dataclass(frozen=True)
class _Cell:
    frame: int
    x: int
    y: int
    w: int  # the cell (panel + caption) box
    h: int
    panel_w: int
    panel_h: int


def _caption_block(lines: int, line_h: int) -> int:
    return 0 if lines == 0 else _CAPTION_PAD + lines * line_h


class Composer:
    """Geometry (:meth:`four_panel`, :meth:`classic`: pages of cells) and drawing (:meth:`render`) of the two
    StoryDiffusion typesettings; ``font`` is the caption font at ``style.font_size``."""

    def __init__(self, images: list[Image.Image], captions: list[str | None], style: ComicStyle, font) -> None:
        self.style = style
        self.font = font
        probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
        top, bottom = probe.textbbox((0, 0), "Ag", font=self.font)[1::2]
        self.line_h = bottom - top + max(2, style.font_size // 5)
        w, h = images[0].size
        self.panel_w = style.panel_width or w
        self.panel_h = max(1, round(self.panel_w * h / w))
        self.images = images
        self.captions = captions

    def lines(self, frame: int, width: int) -> list[str]:
        return wrap_caption(self.captions[frame], self.font, width, self.style.max_caption_lines)

    def max_lines(self, frames: Sequence[int], width: int) -> int:
        return max((len(self.lines(f, width)) for f in frames), default=0)

    # ------------------------------------------------------------------------------------------------ geometry
    def four_panel(self) -> list[tuple[int, int, list[_Cell]]]:
        s, pw, ph = self.style, self.panel_w, self.panel_h
        cap = _caption_block(self.max_lines(range(len(self.images)), pw), self.line_h)
        width, height = 2 * s.margin + 2 * pw + s.gutter, 2 * s.margin + 2 * (ph + cap) + s.gutter
        pages = []
        for start in range(0, len(self.images), 4):
            cells = []
            for k, frame in enumerate(range(start, min(start + 4, len(self.images)))):
                row, col = divmod(k, 2)
                x, y = s.margin + col * (pw + s.gutter), s.margin + row * (ph + cap + s.gutter)
                cells.append(_Cell(frame, x, y, pw, ph + cap, pw, ph))
            pages.append((width, height, cells))
        return pages

    def classic(self) -> list[tuple[int, int, list[_Cell]]]:
        s, pw, ph = self.style, self.panel_w, self.panel_h
        rows = classic_rows(len(self.images))
        natural = [sum(pw if slot == 1 else pw // 2 for slot in row) + (len(row) - 1) * s.gutter for row in rows]
        inner = max(natural)
        cells, y, frame = [], s.margin, 0
        for row in rows:
            units = sum(1.0 if slot == 1 else 0.5 for slot in row)
            scale = (inner - (len(row) - 1) * s.gutter) / (units * pw)
            full_w, full_h = max(1, math.floor(pw * scale)), max(1, math.floor(ph * scale))
            half_w = max(1, full_w // 2)
            singles = [frame + sum(row[:k]) for k, slot in enumerate(row) if slot == 1]
            pairs = [frame + sum(row[:k]) + j for k, slot in enumerate(row) if slot == 2 for j in (0, 1)]
            cap_full = _caption_block(self.max_lines(singles, full_w), self.line_h)
            cap_half = _caption_block(self.max_lines(pairs, half_w), self.line_h)
            row_h = full_h + cap_full
            if pairs:
                row_h = max(row_h, 2 * (full_h // 2 + cap_half) + s.gutter)
            x = s.margin
            for slot in row:
                if slot == 1:
                    cells.append(_Cell(frame, x, y, full_w, row_h, full_w, full_h))
                    x += full_w + s.gutter
                    frame += 1
                    continue
                cell_h = (row_h - s.gutter) // 2
                fit_h = max(1, cell_h - cap_half)
                panel_w = max(1, min(half_w, math.floor(fit_h * pw / ph)))
                panel_h = max(1, min(fit_h, round(panel_w * ph / pw)))
                for j in (0, 1):
                    cells.append(_Cell(frame, x, y + j * (cell_h + s.gutter), half_w, cell_h, panel_w, panel_h))
                    frame += 1
                x += half_w + s.gutter
            y += row_h + s.gutter
        return [(inner + 2 * s.margin, y - s.gutter + s.margin, cells)]

    # ------------------------------------------------------------------------------------------------ drawing
    def render(self, width: int, height: int, cells: list[_Cell], decorate: Decorate | None = None,
               mirror: bool = False) -> Image.Image:
        """The page; ``decorate(frame, panel)`` letters a resized panel; ``mirror`` lays it out right to left."""
        s = self.style
        page = Image.new("RGB", (width, height), s.background)
        draw = ImageDraw.Draw(page)
        for cell in cells:
            if mirror:
                cell = _Cell(cell.frame, width - cell.x - cell.w, cell.y, cell.w, cell.h, cell.panel_w, cell.panel_h)
            px = cell.x + (cell.w - cell.panel_w) // 2
            panel = self.images[cell.frame].convert("RGB").resize((cell.panel_w, cell.panel_h), Image.LANCZOS)
            if decorate is not None:
                panel = decorate(cell.frame, panel)
            page.paste(panel, (px, cell.y))
            if s.border:
                draw.rectangle((px - s.border, cell.y - s.border, px + cell.panel_w + s.border - 1,
                                cell.y + cell.panel_h + s.border - 1), outline=s.border_colour, width=s.border)
            ty = cell.y + cell.panel_h + _CAPTION_PAD + s.border
            for line in self.lines(cell.frame, cell.w):
                tw = text_width(draw, line, self.font)
                draw.text((cell.x + (cell.w - tw) // 2, ty), line, fill=s.text_colour, font=self.font)
                ty += self.line_h
        return page


