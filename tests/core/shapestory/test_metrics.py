"""ShapeStory metrics: ground truth scores about 1, deliberately wrong images score low, faint/noisy ones survive."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image, ImageFilter

from lay2story_core.shapestory.draw import Placement, draw_frame
from lay2story_core.shapestory.generator import ShapeStoryConfig, generate_story, render_story
from lay2story_core.shapestory.metrics import box_hit, classify_scene, identify, score_story, summarize
from lay2story_core.shapestory.segment import character_mask
from lay2story_core.shapestory.vocab import (
    COLOURS,
    PATTERNS,
    SHAPES,
    CharacterSpec,
    SceneSpec,
    all_scene_specs,
    parse_scene,
)
from lay2story_core.story import LayoutError

SEEDS = range(6)


@pytest.fixture(scope="module")
def stories():
    cfg = ShapeStoryConfig(second_character_prob=0.5)
    out = [generate_story(s, cfg, split="test") for s in SEEDS]
    assert any(len(s.characters) == 2 for s in out)  # multi-subject frames are covered
    return [(s, render_story(s)[0]) for s in out]


def test_ground_truth_scores_about_one(stories):
    scores = [score_story(images, story) for story, images in stories]
    summary = summarize(scores)
    assert summary["box_hit"] == pytest.approx(1.0, abs=1e-3)
    assert summary["box_success"] == 1.0 and summary["present"] == 1.0
    assert summary["mask_iou"] > 0.95
    for key in ("identity_consistency", "colour_accuracy", "shape_accuracy", "pattern_accuracy", "prompt_following"):
        assert summary[key] >= 0.95, (key, summary[key])


def test_noise_blur_and_faint_characters_still_score_high(stories):
    rng = np.random.default_rng(0)
    noisy, faint = [], []
    for story, images in stories:
        _, masks = render_story(story)
        degraded = []
        for image in images:
            x = np.asarray(image.filter(ImageFilter.GaussianBlur(0.7)), dtype=np.float64)
            degraded.append(np.clip(x + rng.normal(0, 10, x.shape), 0, 255).astype(np.uint8))
        noisy.append(score_story(degraded, story))
        # 40 % of the way from the character's colour to the background: faint, but nearer the character.
        washed = []
        for frame, image, mask in zip(story.frames, images, masks):
            scene = parse_scene(frame.prompt)
            x = np.asarray(image, dtype=np.float64)
            rows = np.arange(x.shape[0])[:, None, None]
            bg = np.where(rows < round((scene.horizon or 1.0) * x.shape[0]), scene.upper, scene.lower)
            anything = np.any(list(mask.values()), axis=0)[..., None]
            washed.append(np.where(anything, 0.6 * x + 0.4 * bg, x).astype(np.uint8))
        faint.append(score_story(washed, story))
    for summary in (summarize(noisy), summarize(faint)):
        assert summary["box_hit"] > 0.97 and summary["present"] == 1.0
        assert summary["colour_accuracy"] > 0.9 and summary["prompt_following"] == 1.0
    assert summarize(noisy)["shape_accuracy"] > 0.85


def test_wrong_images_score_low(stories):
    shuffled, strangers, blank = [], [], []
    for k, (story, images) in enumerate(stories):
        shuffled.append(score_story(images[1:] + images[:1], story))  # right character, wrong boxes and scenes
        other_story, other_images = stories[(k + 1) % len(stories)]
        n = min(story.num_frames, other_story.num_frames)
        cut = dataclasses.replace(story, frames=story.frames[:n])
        strangers.append(score_story(other_images[:n], cut))  # another character, other boxes
        blank.append(score_story([Image.new("RGB", (64, 64), (140, 190, 235))] * story.num_frames, story))
    s, o, b = summarize(shuffled), summarize(strangers), summarize(blank)
    assert s["box_success"] < 0.5 and s["prompt_following"] < 0.7
    # The character itself is still right (where the shifted frame shows the same characters).
    singles = [score for score, (story, _) in zip(shuffled, stories) if len(story.characters) == 1]
    assert singles and summarize(singles)["colour_accuracy"] > 0.9
    assert o["box_success"] < 0.3 and o["colour_accuracy"] < 0.4 and o["shape_accuracy"] < 0.5
    assert b["present"] == 0.0 and b["box_hit"] == 0.0 and b["colour_accuracy"] == 0.0


def test_layout_free_frames_are_scored_for_identity_only(stories):
    story, images = stories[0]
    score = score_story(images, story.with_layout(boxes=False))
    assert all(s.box_hit is None and not s.has_box for s in score.subjects)
    assert score.box_hit is None and score.colour_accuracy > 0.9


def test_box_hit_counts_partly_covered_pixels_inside():
    mask = np.zeros((10, 10), dtype=bool)
    mask[2:4, 2:4] = True
    assert box_hit(mask, (0.25, 0.25, 0.35, 0.35)) == 1.0  # the box overlaps pixels 2 and 3
    assert box_hit(mask, (0.0, 0.0, 0.3, 0.3)) == 0.25
    assert box_hit(np.zeros((4, 4), dtype=bool), (0, 0, 1, 1)) == 0.0
    with pytest.raises(LayoutError, match="mask"):
        box_hit(np.zeros(4, dtype=bool), (0, 0, 1, 1))


def test_scene_classification_on_plain_backgrounds():
    for scene in all_scene_specs():
        image = Image.new("RGB", (64, 64), scene.upper)
        if scene.horizon is not None:
            image.paste(scene.lower, (0, round(scene.horizon * 64), 64, 64))
        assert classify_scene(image) == scene
    assert classify_scene(Image.new("RGB", (64, 64), (20, 25, 70))) == SceneSpec("sky", "night")


def test_character_mask_accepts_arrays_and_checks_input(stories):
    story, images = stories[0]
    as_uint8 = character_mask(np.asarray(images[0]), story, 0, "c0")
    as_float = character_mask(np.asarray(images[0]) / 255.0, story, 0, "c0")
    assert np.array_equal(as_uint8, as_float) and as_uint8.sum() > 20
    with pytest.raises(LayoutError, match="character_id"):
        character_mask(images[0], story, 0, "nobody")
    with pytest.raises(LayoutError, match="images"):
        score_story(images[:-1], story)
    with pytest.raises(LayoutError, match="image"):
        character_mask(np.zeros((8, 8)), story, 0, "c0")
    odd = dataclasses.replace(story, frames=(dataclasses.replace(story.frames[0], prompt="at the zoo"),
                                             *story.frames[1:]))
    with pytest.raises(LayoutError, match=r"frames\[0\]\.prompt: .*'at the zoo'"):
        score_story(images, odd)


def test_identify_reads_every_shape_colour_and_pattern():
    scene = SceneSpec("grass", "day")
    for k, shape in enumerate(SHAPES):
        spec = CharacterSpec(shape, COLOURS[k % len(COLOURS)].name, PATTERNS[k % len(PATTERNS)])
        image, _ = draw_frame(scene, [Placement("c", spec, (0.2, 0.1, 0.75, 0.65))], 64, 64)
        found = identify(image, (0.2, 0.1, 0.75, 0.65))
        assert (found.shape, found.colour, found.pattern) == (spec.shape, spec.colour, spec.pattern)
        assert found.pixels > 300
    assert identify(Image.new("RGB", (64, 64), scene.upper)).colour is None
    with pytest.raises(LayoutError, match="other_colours"):
        identify(image, None, ["mauve"])


def test_identity_anywhere_finds_characters_wherever_they_are_drawn():
    from lay2story_core.shapestory.metrics import drawn_identities, identity_anywhere
    from lay2story_core.shapestory.protocol import stories_with_characters

    found = []
    for story in stories_with_characters(3, 3, 11, "test"):
        images = render_story(story)[0]
        found += identity_anywhere(images, story)
        multi = [i for i in range(story.num_frames) if len(story.resolve_frame(i)) >= 2]
        # frames shown in another order: the boxes are wrong, the characters are still drawn (where present)
        assert len(identity_anywhere(images[::-1], story)) == sum(len(story.resolve_frame(i)) for i in multi)
    assert found and np.mean(found) == 1.0
    assert len(drawn_identities(images[multi[0]])) >= 2
    blank = [Image.new("RGB", (64, 64), (140, 190, 235))] * story.num_frames
    assert not any(identity_anywhere(blank, story))
    with pytest.raises(LayoutError, match="images"):
        identity_anywhere(images[:1], story)
