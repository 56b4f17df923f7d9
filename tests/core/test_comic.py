"""lay2story_core.comic: four-panel pages, the classic row layout, caption wrapping, styles and errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from lay2story_core.comic import ComicStyle, classic_rows, compose_comic, load_font, parse_colour, wrap_caption

COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200), (200, 30, 200),
           (120, 60, 10), (10, 60, 120), (90, 90, 90)]


def frames(n: int, size=(40, 30)) -> list[Image.Image]:
    return [Image.new("RGB", size, COLOURS[i % len(COLOURS)]) for i in range(n)]


def colour_boxes(page: Image.Image, colour) -> tuple[int, int, int, int] | None:
    """Bounding box of the pixels of exactly ``colour`` (panels are solid colours)."""
    mask = (np.asarray(page) == np.array(colour)).all(-1)
    if not mask.any():
        return None
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def test_four_panel_pages_hold_four_frames_each():
    style = ComicStyle(margin=10, gutter=6, border=0, font_size=12)
    pages = compose_comic(frames(6), None, "four_panel", style)
    assert len(pages) == 2 and pages[0].size == pages[1].size == (10 * 2 + 40 * 2 + 6, 10 * 2 + 30 * 2 + 6)
    # frame k sits at row k // 2, column k % 2 of page k // 4
    for k in range(6):
        page = pages[k // 4]
        row, col = divmod(k % 4, 2)
        assert colour_boxes(page, COLOURS[k]) == (10 + col * 46, 10 + row * 36, 10 + col * 46 + 40,
                                                  10 + row * 36 + 30)
    assert colour_boxes(pages[1], COLOURS[0]) is None  # empty slots stay background


def test_captions_go_under_the_panels():
    style = ComicStyle(margin=8, gutter=4, border=0, font_size=12, panel_width=80)
    [plain] = compose_comic(frames(2), None, "four_panel", style)
    [page] = compose_comic(frames(2), ["a fox", "walking along a forest path at dusk, lanterns everywhere"],
                           "four_panel", style)
    assert page.width == plain.width and page.height > plain.height
    x0, y0, x1, y1 = colour_boxes(page, COLOURS[0])
    assert (x1 - x0, y1 - y0) == (80, 60)  # panel_width 80 keeps the 4:3 frame aspect
    band = np.asarray(page)[y1:y1 + 20, x0:x1]
    assert (band < 128).any()  # dark caption text right under the first panel
    above = np.asarray(page)[:y0, :]
    assert (above == 255).all()  # nothing above the panels but the margin


def test_borders_are_drawn_in_their_colour():
    style = ComicStyle(margin=8, gutter=8, border=3, border_colour=(255, 0, 0), font_size=10)
    [page] = compose_comic(frames(1), None, "four_panel", style)
    x0, y0, x1, y1 = colour_boxes(page, COLOURS[0])
    assert tuple(np.asarray(page)[y0 - 2, x0 + 5]) == (255, 0, 0)


@pytest.mark.parametrize(("n", "rows"), [
    (1, [(1,)]), (3, [(1, 2)]), (4, [(1, 1, 2)]), (5, [(1, 2, 2)]), (6, [(1, 1, 2, 2)]),
    (7, [(1, 1, 2), (2, 1)]), (8, [(1, 1, 2), (1, 2, 1)]),
    (10, [(1, 1, 2), (1, 2, 2, 1)]), (11, [(1, 1, 2), (1, 2, 1), (1, 2)]),
])
def test_classic_rows(n, rows):
    assert classic_rows(n) == rows
    assert sum(sum(r) for r in rows) == n


def test_classic_rows_cover_every_frame_without_tiny_last_rows():
    for n in range(1, 40):
        rows = classic_rows(n)
        assert sum(sum(r) for r in rows) == n
        assert all(1 <= sum(r) <= 6 for r in rows)
        if len(rows) > 1:
            assert sum(rows[-1]) >= 3
    with pytest.raises(ValueError, match="num_frames: expected a positive integer, got 0"):
        classic_rows(0)


def test_classic_page_places_full_and_half_panels_in_reading_order():
    style = ComicStyle(margin=10, gutter=6, border=0, font_size=10)
    [page] = compose_comic(frames(4, (40, 40)), None, "classic", style)
    boxes = [colour_boxes(page, COLOURS[k]) for k in range(4)]
    widths = [b[2] - b[0] for b in boxes]
    assert widths[0] == widths[1] and widths[2] == widths[3] and widths[2] < widths[0]  # (1, 1, 2)
    assert boxes[0][0] < boxes[1][0] < boxes[2][0] == boxes[3][0]  # left to right, the pair stacked
    assert boxes[2][1] < boxes[3][1]
    assert boxes[1][2] <= boxes[2][0] and page.width - boxes[2][2] >= 10 - 1  # the row fills the page width


def test_classic_rows_are_scaled_to_one_page_width():
    [page] = compose_comic(frames(7), [f"frame {k}" for k in range(7)], "classic", ComicStyle(border=0))
    boxes = [colour_boxes(page, COLOURS[k]) for k in range(7)]
    assert all(b is not None for b in boxes)
    right = max(b[2] for b in boxes)
    assert page.width - right <= 24 + 2  # the margin (rounding aside)
    assert boxes[4][1] > boxes[0][3]  # the second row starts below the first


def test_wrap_caption():
    font = load_font(14)
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines = wrap_caption("the quick brown fox jumps over the lazy dog " * 3, font, 120, 3)
    assert len(lines) == 3 and lines[-1].endswith("\u2026")
    assert all(draw.textlength(line, font=font) <= 120 for line in lines)
    assert wrap_caption("supercalifragilisticexpialidocious", font, 60, 9)[0] != "supercalifragilisticexpialidocious"
    assert "".join(wrap_caption("supercalifragilisticexpialidocious", font, 60, 9)) == (
        "supercalifragilisticexpialidocious")
    assert wrap_caption("", font, 100, 3) == [] and wrap_caption("a b", font, 100, 0) == []


def test_colours_and_style_validation():
    assert parse_colour("#ff8000", "c") == (255, 128, 0)
    assert parse_colour("white", "c") == (255, 255, 255)
    assert parse_colour(" 1, 2 ,3", "c") == (1, 2, 3)
    assert parse_colour((4, 5, 6), "c") == (4, 5, 6)
    for bad in ("#12", "nocolour", "1,2,300", (1, 2), 7):
        with pytest.raises(ValueError, match="^c: "):
            parse_colour(bad, "c")
    assert ComicStyle(background="black").background == (0, 0, 0)
    with pytest.raises(ValueError, match=r"^font_size: expected an integer in \[4, 256\], got 2"):
        ComicStyle(font_size=2)
    with pytest.raises(ValueError, match="^gutter: "):
        ComicStyle(gutter=-1)


def test_compose_errors():
    with pytest.raises(ValueError, match="^layout: expected one of"):
        compose_comic(frames(1), layout="comic_book")
    with pytest.raises(ValueError, match="^images: need at least one frame"):
        compose_comic([])
    with pytest.raises(ValueError, match="^captions: 3 captions for 2 frames"):
        compose_comic(frames(2), ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"^images\[1\]: expected a non-empty PIL image"):
        compose_comic([frames(1)[0], "x"])
    with pytest.raises(ValueError, match=r"^captions\[0\]: expected text or None"):
        compose_comic(frames(1), [3])
