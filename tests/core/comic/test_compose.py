"""lay2story_core.comic.compose and .dialogue: lettered pages, speaker boxes from a story, detected boxes or the
image, reading direction, templates and errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from lay2story_core.comic import (
    ComicStyle,
    FrameDialogue,
    PanelLine,
    compose_comic,
    foreground_boxes,
    layout_boxes,
    story_dialogue,
    typeset,
)
from lay2story_core.story import Layout, Story, Subject

STORY = Story.from_dict({
    "version": 2, "width": 64, "height": 64,
    "characters": [{"id": "hero", "identity": "a red square"}, {"id": "cat", "identity": "a blue square"}],
    "frames": [
        {"prompt": "park", "subjects": [{"character": "hero", "box": [0.05, 0.5, 0.45, 0.95]},
                                        {"character": "cat", "box": [0.55, 0.5, 0.95, 0.95]}],
         "dialogue": [{"text": "Once upon a time"}, {"text": "Hi cat!", "speaker": "hero"},
                      {"text": "Meow.", "speaker": "cat", "style": "thought"}]},
        {"prompt": "lake", "subjects": [{"character": "hero"}, {"character": "cat"}],
         "dialogue": [{"text": "Run!", "speaker": "cat", "style": "shout"}]},
    ],
})


def frame(boxes=((0.05, 0.5, 0.45, 0.95), (0.55, 0.5, 0.95, 0.95)), size=64) -> Image.Image:
    """A two-tone backdrop (sky over grass) with solid squares in ``boxes``."""
    image = Image.new("RGB", (size, size), (120, 180, 250))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, size * 0.6, size, size), fill=(60, 160, 60))
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        draw.rectangle((x0 * size, y0 * size, x1 * size - 1, y1 * size - 1), fill=((220, 30, 30), (30, 30, 220))[k])
    return image


def test_story_dialogue_takes_boxes_from_the_layout_then_detected_then_the_image():
    [first, second] = story_dialogue(STORY)
    assert [(line.text, line.style, line.speaker) for line in first.lines] == [
        ("Once upon a time", "caption", None), ("Hi cat!", "speech", "hero"), ("Meow.", "thought", "cat")]
    assert first.lines[0].box is None and first.lines[1].box == (0.05, 0.5, 0.45, 0.95)
    assert first.characters == ((0.05, 0.5, 0.45, 0.95), (0.55, 0.5, 0.95, 0.95))
    assert second.lines[0].box is None and second.characters == ()  # no layout, nothing detected, no image
    detected = layout_boxes(Layout(frames=((), (Subject("cat", (0.6, 0.1, 0.9, 0.4)),))))
    assert story_dialogue(STORY, detected=detected)[1].lines[0].box == (0.6, 0.1, 0.9, 0.4)
    off = story_dialogue(STORY, layout=False, images=[frame(), frame(((0.1, 0.1, 0.3, 0.3), (0.6, 0.6, 0.9, 0.9)))])
    assert off[0].lines[1].box == pytest.approx((0.05, 0.5, 0.45, 0.95), abs=0.02)  # found in the image
    assert off[1].lines[0].box == pytest.approx((0.6, 0.6, 0.9, 0.9), abs=0.02)  # cat: the second from the left
    with pytest.raises(ValueError, match="^story: expected a Story"):
        story_dialogue("story")


def test_foreground_boxes_ignore_a_two_tone_backdrop():
    boxes = foreground_boxes(frame(((0.1, 0.1, 0.3, 0.4), (0.5, 0.55, 0.9, 0.95))))
    assert np.allclose(boxes, [(0.1, 0.1, 0.3, 0.4), (0.5, 0.55, 0.9, 0.95)], atol=0.02)
    assert foreground_boxes(Image.new("RGB", (32, 32), "white")) == []


def test_bubbles_are_lettered_into_the_panels_and_reported():
    style = ComicStyle(panel_width=192, font_size=14, border=0, margin=8, gutter=8)
    images = [frame(), frame()]
    plain = compose_comic(images, None, "four_panel", style)[0]
    result = typeset(images, None, "four_panel", style, dialogue=story_dialogue(STORY))
    page = result.pages[0]
    assert page.size == plain.size and page.tobytes() != plain.tobytes()
    first = result.panels[0]
    assert (first.page, first.frame, first.size) == (0, 0, (192, 192)) and len(first.bubbles) == 3
    assert [b.style for b in first.bubbles] == ["caption", "speech", "thought"]
    assert not any(b.overlaps_character for b in first.bubbles)
    x0, y0, x1, y1 = first.bubbles[1].box  # the speech bubble is white where the sky was
    centre = np.asarray(page)[8 + (y0 + y1) // 2, 8 + (x0 + x1) // 2]
    assert tuple(centre) == (255, 255, 255)
    caption = first.bubbles[0].box
    assert tuple(np.asarray(page)[8 + caption[1] + 6, 8 + (caption[0] + caption[2]) // 2]) == (255, 244, 200)


def test_new_templates_crop_to_the_panels_and_letter_captions_in_boxes():
    style = ComicStyle(border=1, margin=10, gutter=10, font_size=14)
    images = [frame(size=128) for _ in range(3)]
    result = typeset(images, ["day one", None, "day three"], "1 2", style, dialogue=story_dialogue(STORY),
                     page_size="300x200")
    assert [p.size for p in result.pages] == [(300, 200), (300, 200)]
    first, second, third = result.panels
    assert first.size == (90, 180) and second.size == (180, 180) and third.size == (90, 180)
    assert [b.style for b in first.bubbles] == ["caption", "caption", "speech", "thought"]
    assert [b.style for b in third.bubbles] == ["caption"]  # frame 3 has no dialogue, only its caption
    # the first frame is cropped to 90 x 180 around its characters: their boxes map into the panel
    assert all(0 <= c[0] < c[2] <= 90 and 0 <= c[1] < c[3] <= 180 for c in first.characters)
    [a5] = compose_comic(images[:1], layout="manga", page_size="A5", dpi=72)
    assert a5.size == (420, 595)


def test_right_to_left_mirrors_the_page():
    style = ComicStyle(border=0, margin=10, gutter=6, font_size=10)
    colours = [Image.new("RGB", (40, 30), c) for c in ((200, 30, 30), (30, 200, 30))]
    ltr = compose_comic(colours, layout="four_panel", style=style)[0]
    rtl = compose_comic(colours, layout="four_panel", style=style, reading="rtl")[0]
    assert rtl.tobytes() == ltr.transpose(Image.Transpose.FLIP_LEFT_RIGHT).tobytes()
    assert typeset(colours, layout="manga").reading == "rtl"


def test_compose_errors_name_the_field():
    images = [frame(), frame()]
    cases = [
        (dict(layout="2|x"), r"^layout: row 2 \('x'\): expected a panel count"),
        (dict(layout="comic"), "^layout: expected one of"),
        (dict(layout="classic", page_size="A4"), "^page_size: classic pages are sized by their frames"),
        (dict(dialogue=[None, None, None]), "^dialogue: 3 frames of dialogue for 2 frames"),
        (dict(dialogue=["hi"]), r"^dialogue\[0\]: expected a FrameDialogue or None, got str"),
        (dict(reading="up"), "^reading: expected one of"),
        (dict(dialogue=[FrameDialogue((PanelLine("\u4f60\u597d", "speech", "hero"),))]),
         r"^dialogue\[0\].lines\[0\]: the built-in font .* Noto Sans CJK"),
        (dict(captions=["caf\u00e9"]), r"^captions\[0\]: the built-in font"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            compose_comic(images, **kwargs)
    with pytest.raises(ValueError, match="^style: expected one of"):
        PanelLine("x", "scream")
