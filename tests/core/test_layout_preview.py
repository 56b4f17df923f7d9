"""lay2story_core.layout_preview: frames of at least 256 px, boxes in each character's colour (the editor's palette),
labels cut with an ellipsis instead of squeezed, a band with the prompt and the subjects without a box."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from lay2story_core.comic import load_font
from lay2story_core.layout_preview import PALETTE, character_colour, fit_text, render_layout_preview
from lay2story_core.story import Story

ROOT = Path(__file__).resolve().parents[2]
STORY = Story.from_dict({
    "version": 1, "width": 64, "height": 48,
    "characters": [{"id": "hero", "identity": "a star"}, {"id": "friend", "identity": "a circle"}],
    "frames": [
        {"prompt": "on the grass", "subjects": [
            {"character": "hero", "box": [0.1, 0.4, 0.5, 0.9], "caption": "a very long caption " * 6},
            {"character": "friend", "box": [0.6, 0.1, 0.9, 0.5]}]},
        {"prompt": "in the sky", "subjects": [{"character": "friend", "box": [0.1, 0.1, 0.4, 0.4]},
                                              {"character": "hero", "caption": "waving"}]},
        {"prompt": "in a room"},
    ],
})


def _colour_share(image: Image.Image, colour, box) -> float:
    pixels = np.asarray(image.crop(box), dtype=np.int32)
    return float((np.abs(pixels - np.array(colour)).sum(-1) < 6).mean())


def test_palette_is_the_editors():
    js = (ROOT / "web" / "js" / "canvas_draw.js").read_text()
    hexes = re.search(r"PALETTE = \[([^\]]+)\]", js).group(1)
    assert [tuple(int(h[i:i + 2], 16) for i in (1, 3, 5)) for h in re.findall(r"#[0-9a-fA-F]{6}", hexes)] == list(
        PALETTE)


def test_frames_are_enlarged_to_256_px_with_character_colours_and_a_prompt_band():
    frames = render_layout_preview(STORY)
    assert [f.size for f in frames] == [(384, 288)] * 3  # 64 x 48 blank, x6: shorter side 288 >= 256
    w, h = frames[0].size
    hero, friend = character_colour(STORY, "hero"), character_colour(STORY, "friend")
    assert hero == PALETTE[0] and friend == PALETTE[1]
    # outlines: the friend box's left edge in frame 1 (friend's colour), and in frame 2 (same colour there)
    x = int(0.6 * (w - 1))
    assert _colour_share(frames[0], friend, (x, int(0.3 * h), x + 2, int(0.45 * h))) > 0.9
    x = int(0.1 * (w - 1))
    assert _colour_share(frames[1], friend, (x, int(0.2 * h), x + 2, int(0.35 * h))) > 0.9
    # the long caption's tab stays inside the hero box's width (cut, not spilling over the frame)
    row = np.asarray(frames[0], dtype=np.int32)[int(0.4 * (h - 1)) - 8]
    tab = np.nonzero(np.abs(row - np.array(hero)).sum(-1) < 6)[0]
    assert tab.size and tab.max() <= int(0.5 * (w - 1)) + 2
    # the band: dark, at the bottom, and the blank frame above it untouched
    band = np.asarray(frames[2], dtype=np.int32)[-4:]
    assert (band.sum(-1) < 200).mean() > 0.5
    assert (np.asarray(frames[2])[: h // 2] == 228).all()


def test_backgrounds_are_enlarged_by_a_whole_factor_and_frames_past_them_are_blank():
    red = Image.new("RGB", (32, 32), (200, 30, 30))
    frames = render_layout_preview(STORY, [red])
    assert [f.size for f in frames] == [(256, 256)] * 3
    assert tuple(np.asarray(frames[0])[5, 5]) == (200, 30, 30)
    assert tuple(np.asarray(frames[1])[200, 250]) == (228, 228, 228)
    with pytest.raises(TypeError, match="^story: expected a Story"):
        render_layout_preview({"frames": []})


def test_fit_text_cuts_with_an_ellipsis():
    draw = ImageDraw.Draw(Image.new("RGB", (10, 10)))
    font = load_font(14)
    assert fit_text(draw, "hero", font, 500) == "hero"
    cut = fit_text(draw, "hero: the red striped star at the bottom left", font, 80)
    assert cut.endswith("\u2026") and len(cut) < 30
    left, _, right, _ = draw.textbbox((0, 0), cut, font=font)
    assert right - left <= 80
    assert fit_text(draw, "hero", font, 1) == ""
