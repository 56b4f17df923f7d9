"""lay2story_core.comic.templates: the grid grammar, paper sizes and every template's panel rectangles."""

from __future__ import annotations

import pytest

from lay2story_core.comic import MANGA_GRID, PanelRect, parse_grid, parse_page_size, template_pages
from lay2story_core.comic.templates import GridRow, template_reading


def rects(page) -> list[tuple[int, int, int, int, int]]:
    return [(p.frame, p.x0, p.y0, p.x1, p.y1) for p in page.panels]


def test_grid_grammar():
    assert parse_grid("2|1 2|3") == (GridRow((1, 1)), GridRow((1, 2)), GridRow((1, 1, 1)))
    assert parse_grid(" 1 : 2 | 2 ") == (GridRow((1,), 2.0), GridRow((1, 1)))
    assert parse_grid(MANGA_GRID) == (GridRow((1, 2)), GridRow((1,)), GridRow((2, 1)))


@pytest.mark.parametrize(("spec", "message"), [
    ("2||3", r"^layout: row 2 \(''\): expected a panel count"),
    ("2|1 x", r"^layout: row 2 \('1 x'\): expected a panel count \(e.g. '3'\) or panel widths"),
    ("9", r"^layout: row 1 \('9'\): a panel count must be in \[1, 8\], got 9"),
    ("1 13", r"^layout: row 1 \('1 13'\): panel widths must be in \[1, 12\]"),
    ("2:0.1", r"^layout: row 1 \('2:0.1'\): the height after ':' must be in \[0.25, 8\]"),
    ("2:x", r"^layout: row 1 \('2:x'\): the height after ':' must be a number"),
    ("1|1|1|1|1|1|1|1|1", r"^layout: 9 rows in '1\|1\|1\|1\|1\|1\|1\|1\|1', at most 8"),
    ("8|8|8|8", r"^layout: 32 panels a page in '8\|8\|8\|8', at most 24"),
])
def test_grid_errors_name_the_row(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_grid(spec)


def test_page_sizes():
    assert parse_page_size(None) is None and parse_page_size("auto") is None and parse_page_size(" ") is None
    assert parse_page_size("A4", 150) == (1240, 1754)
    assert parse_page_size("a5", 300) == (1748, 2480)
    assert parse_page_size("Letter", 100) == (850, 1100)
    assert parse_page_size("US-comic", 200) == (1325, 2050)
    assert parse_page_size("B5", 100) == (693, 984)
    assert parse_page_size("A4-landscape", 150) == (1754, 1240)
    assert parse_page_size("800x1200") == (800, 1200) and parse_page_size((640, 480)) == (640, 480)
    for bad, message in (("A9", "^page_size: expected 'auto', 'WxH' pixels or one of"),
                         ("10x10", r"^page_size: page sides must be 64..20000 pixels, got '10x10'"),
                         (3, "^page_size: expected 'auto'")):
        with pytest.raises(ValueError, match=message):
            parse_page_size(bad)
    with pytest.raises(ValueError, match=r"^dpi: expected an integer in \[36, 1200\], got 10"):
        parse_page_size("A4", 10)


def test_grid_pages_with_spans_sized_by_the_frames():
    pages = template_pages("2|1 2", 5, (40, 30), margin=10, gutter=6)
    assert len(pages) == 2 and all((p.width, p.height) == (106, 86) for p in pages)
    assert rects(pages[0]) == [(0, 10, 10, 50, 40), (1, 56, 10, 96, 40), (2, 10, 46, 37, 76), (3, 43, 46, 96, 76)]
    assert rects(pages[1]) == [(4, 10, 10, 50, 40)]  # the rest of the last page stays blank
    assert pages[0].panels[0] == PanelRect(0, 10, 10, 50, 40) and pages[0].panels[0].width == 40


def test_grid_on_a_given_page_size_and_row_heights():
    [page] = template_pages("2|2", 4, (64, 64), page_size=(200, 100), margin=10, gutter=10)
    assert (page.width, page.height) == (200, 100)
    assert rects(page) == [(0, 10, 10, 95, 45), (1, 105, 10, 190, 45), (2, 10, 55, 95, 90), (3, 105, 55, 190, 90)]
    [tall] = template_pages("1:3|1", 2, (64, 64), page_size=(100, 170), margin=10, gutter=10)
    assert rects(tall) == [(0, 10, 10, 90, 115), (1, 10, 125, 90, 160)]  # 3:1 of the 140 px left for the rows


def test_manga_reads_right_to_left():
    assert template_reading("manga", "auto") == "rtl" and template_reading("2|2", "auto") == "ltr"
    assert template_reading("manga", "ltr") == "ltr"
    [page] = template_pages("manga", 5, (40, 30), margin=10, gutter=6, reading="rtl")
    assert (page.width, page.height) == (106, 122)
    assert rects(page) == [(0, 69, 10, 96, 40), (1, 10, 10, 63, 40), (2, 10, 46, 96, 76), (3, 43, 82, 96, 112),
                           (4, 10, 82, 37, 112)]
    [ltr] = template_pages("manga", 5, (40, 30), margin=10, gutter=6, reading="ltr")
    assert rects(ltr)[0] == (0, 10, 10, 37, 40)


def test_webtoon_and_strip():
    [web] = template_pages("webtoon", 3, (40, 30), margin=10, gutter=6)
    assert (web.width, web.height) == (60, 122)
    assert rects(web) == [(0, 10, 10, 50, 40), (1, 10, 46, 50, 76), (2, 10, 82, 50, 112)]
    [wide] = template_pages("webtoon", 2, (40, 30), page_size=(220, 999), margin=10, gutter=6)
    assert wide.width == 220 and rects(wide)[0] == (0, 10, 10, 210, 160)  # width from the page, height grows
    [strip] = template_pages("strip", 3, (40, 30), margin=10, gutter=6)
    assert (strip.width, strip.height) == (152, 50)
    assert rects(strip) == [(0, 10, 10, 50, 40), (1, 56, 10, 96, 40), (2, 102, 10, 142, 40)]
    [sized] = template_pages("strip", 2, (40, 30), page_size=(300, 100), margin=10, gutter=10)
    assert rects(sized) == [(0, 10, 10, 145, 90), (1, 155, 10, 290, 90)]
    [rtl] = template_pages("strip", 2, (40, 30), margin=10, gutter=6, reading="rtl")
    assert rects(rtl) == [(0, 56, 10, 96, 40), (1, 10, 10, 50, 40)]


def test_templates_are_pure_and_validate():
    args = ("2|1 2|3", 7, (64, 48))
    assert template_pages(*args, page_size=(400, 600)) == template_pages(*args, page_size=(400, 600))
    assert template_pages(*args, panel_width=128)[0].width == 3 * 128 + 2 * 12 + 2 * 24
    with pytest.raises(ValueError, match="^num_frames: expected a positive integer, got 0"):
        template_pages("2|2", 0, (64, 64))
    with pytest.raises(ValueError, match="^reading: expected 'ltr' or 'rtl', got 'auto'"):
        template_pages("2|2", 4, (64, 64), reading="auto")
    with pytest.raises(ValueError, match=r"^page_size: 64x64 pixels leave panels of .* for layout '8\|8'"):
        template_pages("8|8", 4, (64, 64), page_size=(64, 64))
