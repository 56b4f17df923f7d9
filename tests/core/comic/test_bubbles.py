"""lay2story_core.comic.bubbles: the placer on plain inputs (panel size, lines with speaker boxes, obstacles)."""

from __future__ import annotations

import pytest

from lay2story_core.comic import BubbleRequest, ComicFont, place_bubbles

FONT = ComicFont()


def overlap(a, b) -> bool:
    return min(a[2], b[2]) - max(a[0], b[0]) > 0 and min(a[3], b[3]) - max(a[1], b[1]) > 0


def inside(box, panel) -> bool:
    return box[0] >= 0 and box[1] >= 0 and box[2] <= panel[0] and box[3] <= panel[1]


def test_a_bubble_goes_near_its_speaker_off_every_character_with_a_tail_to_the_box():
    panel, hero, cat = (300, 200), (20, 90, 120, 195), (180, 80, 280, 195)
    [bubble] = place_bubbles(panel, [BubbleRequest("Hello there!", "speech", hero)], [hero, cat], FONT.at,
                             start_size=18)
    assert not overlap(bubble.box, hero) and not overlap(bubble.box, cat) and inside(bubble.box, panel)
    assert bubble.font_size == 18 and bubble.fits and not bubble.overlaps_character
    assert bubble.box[3] <= hero[1]  # above the speaker's head
    tip = bubble.tail[2]
    assert hero[0] - 1 <= tip[0] <= hero[2] + 1 and abs(tip[1] - hero[1]) <= 12  # at the box's top edge
    assert " ".join(bubble.lines) == "Hello there!"


def test_two_speakers_in_reading_order_without_overlaps():
    panel, left, right = (300, 200), (10, 100, 110, 195), (190, 100, 290, 195)
    for reading in ("ltr", "rtl"):
        first, second = place_bubbles(panel, [BubbleRequest("Where are we?", "speech", left),
                                              BubbleRequest("Far from home.", "thought", right)],
                                      [left, right], FONT.at, start_size=16, reading=reading)
        assert not overlap(first.box, second.box)
        assert not any(overlap(b.box, c) for b in (first, second) for c in (left, right))
        band = abs(first.box[1] - second.box[1]) <= 0.5 * min(first.box[3] - first.box[1],
                                                               second.box[3] - second.box[1])
        if band:  # side by side: the first is on the reading-start side
            cx1, cx2 = (first.box[0] + first.box[2]) / 2, (second.box[0] + second.box[2]) / 2
            assert cx1 < cx2 if reading == "ltr" else cx1 > cx2
        else:
            assert first.box[1] < second.box[1]


def test_text_shrinks_and_wraps_to_fit_then_is_cut():
    text = "This is a rather long line of dialogue that needs several lines in a small panel"
    [bubble] = place_bubbles((140, 140), [BubbleRequest(text, "speech", (40, 90, 100, 140))],
                             [(40, 90, 100, 140)], FONT.at, start_size=20, min_size=8)
    assert bubble.fits and len(bubble.lines) > 1 and bubble.font_size < 20 and inside(bubble.box, (140, 140))
    assert " ".join(bubble.lines).split() == text.split()  # wrapped at spaces, nothing lost
    [cut] = place_bubbles((60, 40), [BubbleRequest(text * 3, "speech")], [], FONT.at, start_size=12, min_size=8)
    assert not cut.fits and cut.lines[-1].endswith("\u2026") and cut.font_size == 8


def test_captions_and_narration_have_no_tail_and_go_to_the_top_reading_corner():
    panel = (200, 200)
    caption, narration = place_bubbles(panel, [BubbleRequest("Meanwhile...", "caption", None, speaker=False),
                                               BubbleRequest("A voice:", "speech", None, speaker=False)],
                                       [], FONT.at, start_size=14)
    assert caption.tail == () and narration.tail == ()
    assert caption.box[:2] == (4, 4)
    [rtl] = place_bubbles(panel, [BubbleRequest("Meanwhile...", "caption", None, speaker=False)], [], FONT.at,
                          start_size=14, reading="rtl")
    assert rtl.box[2] == 200 - 4 and rtl.box[1] == 4


def test_a_speaker_without_a_box_points_to_the_panel_centre():
    [bubble] = place_bubbles((200, 200), [BubbleRequest("Who said that?", "speech", None)], [], FONT.at,
                             start_size=14)
    assert bubble.box[1] == 4 and bubble.tail  # at the top, with a tail
    (bx, by), tip = ((bubble.body[0] + bubble.body[2]) / 2, (bubble.body[1] + bubble.body[3]) / 2), bubble.tail[2]
    assert tip[1] > by and abs((tip[0] - bx) * (100 - by) - (100 - bx) * (tip[1] - by)) < 1e-6 * 200 * 200


def test_bubbles_never_overlap_even_when_crowded():
    panel = (160, 160)
    lines = [BubbleRequest(f"Line number {k} here", "speech", (60, 60, 100, 100)) for k in range(5)]
    bubbles = place_bubbles(panel, lines, [(60, 60, 100, 100)], FONT.at, start_size=14)
    assert len(bubbles) == 5 and [b.index for b in bubbles] == list(range(5))
    assert not any(overlap(a.box, b.box) for k, a in enumerate(bubbles) for b in bubbles[k + 1:])


def test_shapes_and_validation():
    panel, box = (240, 200), (80, 100, 160, 200)
    by_style = {s: place_bubbles(panel, [BubbleRequest("Wow", s, box)], [box], FONT.at, start_size=14)[0]
                for s in ("speech", "thought", "shout", "caption")}
    body = {s: b.body[2] - b.body[0] for s, b in by_style.items()}
    outer = {s: b.box[2] - b.box[0] for s, b in by_style.items()}
    assert outer["shout"] > body["shout"] and outer["thought"] > body["thought"]  # spikes / cloud bumps
    assert abs(outer["speech"] - body["speech"]) <= 1 and by_style["caption"].tail == ()
    with pytest.raises(ValueError, match="^style: expected one of"):
        BubbleRequest("x", "whisper")
    with pytest.raises(ValueError, match="^text: expected non-empty text"):
        BubbleRequest("  ")
    with pytest.raises(ValueError, match="^reading: expected 'ltr' or 'rtl'"):
        place_bubbles(panel, [], [], FONT.at, reading="ttb")
    assert place_bubbles(panel, [], [], FONT.at) == []


def test_cjk_text_wraps_between_characters():
    text = "\u4eca\u65e5\u306f\u3068\u3066\u3082\u3044\u3044\u5929\u6c17\u3067\u3059\u306d"  # no spaces
    [bubble] = place_bubbles((120, 200), [BubbleRequest(text, "speech")], [], FONT.at, start_size=16)
    assert len(bubble.lines) > 1 and "".join(bubble.lines) == text and bubble.fits
    [mixed] = place_bubbles((400, 200), [BubbleRequest("Hi \u4f60\u597d there", "speech")], [], FONT.at,
                            start_size=16)
    assert mixed.lines == ("Hi \u4f60\u597d there",)
