"""Page templates: panel rectangles as pure functions of (template, frame count, frame size, page size, spacing).

Templates (besides ``four_panel`` and ``classic``, see :mod:`.classic`):

- a **grid** spec, rows separated by ``|``, top to bottom::

      layout := row ("|" row)*                       at most 8 rows, at most 24 panels a page
      row    := panels [":" height]
      panels := N                                    one integer alone: N panels of equal width (1..8)
              | W W ...                              several integers: one panel each, widths in proportion (1..12)
      height := a number in [0.25, 8]                the row's height relative to the others (default 1)

  ``"2|1 2|3"`` is two equal panels, then a narrow and a wide one (1:2), then three equal ones; ``"1:2|2"`` a
  double-height splash over two panels. More frames than panels make more pages of the same template.
- ``"manga"``: the grid ``"1 2|1|2 1"`` read right to left (the first panel is top right).
- ``"webtoon"``: one vertical strip, one full-width panel per frame, on a single tall page.
- ``"strip"``: one row of equal panels, all frames on a single page.

Right-to-left reading mirrors a page (panel ``k`` of a row sits ``k``-th from the right). Panels have the frames'
aspect when the page size is ``None`` (the page grows around panels ``panel_width`` wide, default the frame
width); with a page size in pixels the rows share the page (the composer crops frames to the panels' aspect).
Page sizes: ``"WxH"`` pixels or a paper name (:data:`PAPER_SIZES_MM`, optional ``-landscape``) at ``dpi``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from types import MappingProxyType

from .style import int_in

__all__ = ["DEFAULT_DPI", "MANGA_GRID", "NAMED_TEMPLATES", "PAPER_SIZES_MM", "GridRow", "PageLayout", "PanelRect",
           "parse_grid", "parse_page_size", "template_pages", "template_reading"]

DEFAULT_DPI = 150
MANGA_GRID = "1 2|1|2 1"
NAMED_TEMPLATES = ("manga", "webtoon", "strip")
PAPER_SIZES_MM = MappingProxyType({  # width x height, portrait
    "A4": (210.0, 297.0),
    "A5": (148.0, 210.0),
    "B5": (176.0, 250.0),  # ISO B5
    "Letter": (215.9, 279.4),  # 8.5 x 11 in
    "US-comic": (168.275, 260.35),  # 6.625 x 10.25 in, the US comic book trim size
})
MAX_ROWS, MAX_PANELS, MAX_EQUAL, MAX_WIDTH = 8, 24, 8, 12
_PIXELS = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


@dataclass(frozen=True)
class GridRow:
    widths: tuple[int, ...]  # relative panel widths, one per panel
    height: float = 1.0


@dataclass(frozen=True)
class PanelRect:
    """Where frame ``frame`` goes on its page: pixels ``[x0, x1) x [y0, y1)``."""

    frame: int
    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0


@dataclass(frozen=True)
class PageLayout:
    width: int
    height: int
    panels: tuple[PanelRect, ...]


def is_grid(layout: object) -> bool:
    """Whether ``layout`` is meant as a grid spec: it has a ``|`` or starts with a digit."""
    return isinstance(layout, str) and ("|" in layout or layout.strip()[:1].isdigit())


def parse_grid(spec: str, field: str = "layout") -> tuple[GridRow, ...]:
    """The rows of a grid spec (grammar in the module docstring); errors name ``field``, the row and its text."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"{field}: expected a grid like '2|1 2|3', got {spec!r}")
    texts = spec.split("|")
    if len(texts) > MAX_ROWS:
        raise ValueError(f"{field}: {len(texts)} rows in {spec!r}, at most {MAX_ROWS}")
    rows = []
    for r, text in enumerate(texts, start=1):
        where = f"{field}: row {r} ({text.strip()!r})"
        panels, sep, height_text = text.partition(":")
        height = 1.0
        if sep:
            try:
                height = float(height_text)
            except ValueError:
                raise ValueError(f"{where}: the height after ':' must be a number, "
                                 f"got {height_text.strip()!r}") from None
            if not 0.25 <= height <= 8 or not math.isfinite(height):
                raise ValueError(f"{where}: the height after ':' must be in [0.25, 8], got {height_text.strip()!r}")
        tokens = panels.split()
        if not tokens or not all(t.isdigit() for t in tokens):
            raise ValueError(f"{where}: expected a panel count (e.g. '3') or panel widths (e.g. '1 2')")
        numbers = [int(t) for t in tokens]
        if len(numbers) == 1:
            if not 1 <= numbers[0] <= MAX_EQUAL:
                raise ValueError(f"{where}: a panel count must be in [1, {MAX_EQUAL}], got {numbers[0]}")
            widths = (1,) * numbers[0]
        else:
            if not all(1 <= n <= MAX_WIDTH for n in numbers):
                raise ValueError(f"{where}: panel widths must be in [1, {MAX_WIDTH}], got {tokens}")
            widths = tuple(numbers)
        rows.append(GridRow(widths, height))
    total = sum(len(row.widths) for row in rows)
    if total > MAX_PANELS:
        raise ValueError(f"{field}: {total} panels a page in {spec!r}, at most {MAX_PANELS}")
    return tuple(rows)


def parse_page_size(value: object, dpi: int = DEFAULT_DPI, field: str = "page_size") -> tuple[int, int] | None:
    """``None``/``""``/``"auto"``: sized by the frames; ``(w, h)`` or ``"WxH"`` pixels (64..20000); a paper name
    (``"A4"``, ``"A5"``, ``"B5"``, ``"Letter"``, ``"US-comic"``, any case; ``-landscape`` turns it) at ``dpi``."""
    int_in(dpi, "dpi", 36, 1200)
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "auto")):
        return None
    if isinstance(value, (tuple, list)) and len(value) == 2:
        w, h = value
    elif isinstance(value, str) and _PIXELS.match(value):
        w, h = (int(v) for v in _PIXELS.match(value).groups())
    elif isinstance(value, str):
        name, landscape = value.strip(), False
        if name.lower().endswith("-landscape"):
            name, landscape = name[: -len("-landscape")], True
        paper = {k.lower(): v for k, v in PAPER_SIZES_MM.items()}.get(name.lower())
        if paper is None:
            raise ValueError(f"{field}: expected 'auto', 'WxH' pixels or one of {tuple(PAPER_SIZES_MM)} (optionally "
                             f"with '-landscape'), got {value!r}")
        w, h = (round(mm / 25.4 * dpi) for mm in paper)
        if landscape:
            w, h = h, w
    else:
        raise ValueError(f"{field}: expected 'auto', 'WxH' pixels or a paper name, got {value!r}")
    for side in (w, h):
        if isinstance(side, bool) or not isinstance(side, int) or not 64 <= side <= 20000:
            raise ValueError(f"{field}: page sides must be 64..20000 pixels, got {value!r}")
    return int(w), int(h)


def template_reading(layout: str, reading: str) -> str:
    """``"ltr"``/``"rtl"`` for ``reading`` (``"auto"``: right to left for manga, else left to right)."""
    if reading == "auto":
        return "rtl" if layout == "manga" else "ltr"
    return reading


def _split(start: int, total: int, weights: tuple[float, ...], gap: int) -> list[tuple[int, int]]:
    """``[(begin, end)]`` of ``len(weights)`` spans filling ``total`` pixels from ``start`` with ``gap`` between."""
    room = total - gap * (len(weights) - 1)
    acc, edges = 0.0, [0]
    for w in weights:
        acc += w
        edges.append(round(room * acc / sum(weights)))
    return [(start + edges[k] + k * gap, start + edges[k + 1] + k * gap) for k in range(len(weights))]


def _grid_page(rows: tuple[GridRow, ...], first: int, count: int, frame_size: tuple[int, int],
               page_size: tuple[int, int] | None, margin: int, gutter: int, unit: int) -> PageLayout:
    fw, fh = frame_size
    if page_size is None:
        cols = max(len(row.widths) for row in rows)
        inner_w = cols * unit + (cols - 1) * gutter
        heights = [max(1, round(unit * fh / fw * row.height)) for row in rows]
        width, height = inner_w + 2 * margin, sum(heights) + gutter * (len(rows) - 1) + 2 * margin
        spans, y = [], margin
        for h in heights:
            spans.append((y, y + h))
            y += h + gutter
    else:
        width, height = page_size
        inner_w = width - 2 * margin
        spans = _split(margin, height - 2 * margin, tuple(row.height for row in rows), gutter)
    panels, frame = [], first
    for row, (y0, y1) in zip(rows, spans):
        for x0, x1 in _split(margin, inner_w, tuple(float(w) for w in row.widths), gutter):
            if frame < first + count:
                panels.append(PanelRect(frame, x0, y0, x1, y1))
            frame += 1
    return PageLayout(width, height, tuple(panels))


def _mirror(page: PageLayout) -> PageLayout:
    return PageLayout(page.width, page.height, tuple(
        PanelRect(p.frame, page.width - p.x1, p.y0, page.width - p.x0, p.y1) for p in page.panels))


def _check_fits(pages: list[PageLayout], layout: str, page_size, margin: int, gutter: int) -> None:
    for page in pages:
        for p in page.panels:
            if p.width < 8 or p.height < 8:
                raise ValueError(f"page_size: {page_size[0]}x{page_size[1]} pixels leave panels of {p.width}x"
                                 f"{p.height} for layout {layout!r} with margin {margin} and gutter {gutter}; use a "
                                 "bigger page or fewer panels")


def template_pages(layout: str, num_frames: int, frame_size: tuple[int, int], *,
                   page_size: tuple[int, int] | None = None, margin: int = 24, gutter: int = 12,
                   panel_width: int = 0, reading: str = "ltr") -> list[PageLayout]:
    """The pages of ``layout`` (a grid spec or one of :data:`NAMED_TEMPLATES`) for ``num_frames`` frames of
    ``frame_size`` (w, h); ``reading`` is ``"ltr"`` or ``"rtl"`` (resolve ``"auto"`` with :func:`template_reading`).
    A pure function: the same inputs always give the same rectangles."""
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f"num_frames: expected a positive integer, got {num_frames!r}")
    if reading not in ("ltr", "rtl"):
        raise ValueError(f"reading: expected 'ltr' or 'rtl', got {reading!r}")
    fw, fh = frame_size
    unit = panel_width or fw
    if layout == "webtoon":
        inner_w = unit if page_size is None else page_size[0] - 2 * margin
        panel_h = max(1, round(inner_w * fh / fw))
        panels = tuple(PanelRect(k, margin, margin + k * (panel_h + gutter), margin + inner_w,
                                 margin + k * (panel_h + gutter) + panel_h) for k in range(num_frames))
        pages = [PageLayout(inner_w + 2 * margin, panels[-1].y1 + margin, panels)]
    elif layout == "strip":
        if page_size is None:
            row_h = max(1, round(unit * fh / fw))
            size = (num_frames * unit + (num_frames - 1) * gutter + 2 * margin, row_h + 2 * margin)
        else:
            size = page_size
        xs = _split(margin, size[0] - 2 * margin, (1.0,) * num_frames, gutter)
        pages = [PageLayout(*size, tuple(PanelRect(k, x0, margin, x1, size[1] - margin)
                                         for k, (x0, x1) in enumerate(xs)))]
    else:
        rows = parse_grid(MANGA_GRID if layout == "manga" else layout)
        per_page = sum(len(row.widths) for row in rows)
        pages = [_grid_page(rows, first, min(per_page, num_frames - first), frame_size, page_size, margin, gutter,
                            unit) for first in range(0, num_frames, per_page)]
    if page_size is not None:
        _check_fits(pages, layout, page_size, margin, gutter)
    return [_mirror(page) for page in pages] if reading == "rtl" else pages
