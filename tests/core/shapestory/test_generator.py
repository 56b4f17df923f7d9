"""ShapeStory generator: deterministic, split by character, boxes as configured, masks exact, data set readable."""

from __future__ import annotations

import dataclasses
import json
import os
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from lay2story_core.shapestory.generator import (
    ShapeStoryConfig,
    character_split,
    characters_for_split,
    generate_story,
    render_reference,
    render_story,
    story_seed,
    write_dataset,
)
from lay2story_core.shapestory.segment import box_pixels
from lay2story_core.shapestory.vocab import COLOURS, PATTERNS, SHAPES, parse_identity, parse_scene
from lay2story_core.story import LayoutError, Story


def test_same_seed_same_story_and_pixels():
    a, b = generate_story(7), generate_story(7)
    assert a.to_json() == b.to_json()
    ia, ma = render_story(a)
    ib, mb = render_story(b)
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(ia, ib))
    assert generate_story(8).to_json() != a.to_json()
    assert generate_story(7, split="test").to_json() != a.to_json()


def test_splits_hold_out_combinations_but_not_attributes():
    train, test = characters_for_split("train"), characters_for_split("test")
    assert not set(train) & set(test)
    assert 0.1 < len(test) / (len(train) + len(test)) < 0.2
    for i, j in ((0, 1), (0, 2), (1, 2)):  # every pair of attribute values occurs in training
        pairs = {((s.shape, s.colour, s.pattern)[i], (s.shape, s.colour, s.pattern)[j]) for s in train}
        sizes = (len(SHAPES), len(COLOURS), len(PATTERNS))
        assert len(pairs) == sizes[i] * sizes[j]
    for seed in range(20):
        for character in generate_story(seed, split="test").characters:
            assert character_split(parse_identity(character.identity)) == "test"


def test_stories_follow_config():
    cfg = ShapeStoryConfig(size=64, min_box=0.3, max_box=0.5, second_character_prob=0.5)
    lengths, two = Counter(), 0
    for seed in range(60):
        story = generate_story(seed, cfg)
        lengths[story.num_frames] += 1
        two += len(story.characters) == 2
        assert (story.width, story.height) == (64, 64)
        for frame in story.frames:
            parse_scene(frame.prompt)
            boxes = [s.box for s in frame.subjects]
            for s in frame.subjects:
                x0, y0, x1, y1 = s.box
                assert x1 - x0 == pytest.approx(y1 - y0, abs=2e-4)  # square in pixels
                assert 0.3 - 1e-3 <= x1 - x0 <= 0.5 + 1e-3
                assert parse_identity(s.caption) == parse_identity(story.character(s.character).identity)
            if len(boxes) == 2:
                a, b = boxes
                assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]  # disjoint
    assert set(lengths) <= {4, 5, 6} and lengths[4] > lengths[6]
    assert 15 < two < 45


def test_render_masks_are_exact_and_inside_boxes():
    story = next(s for s in (generate_story(i, ShapeStoryConfig(second_character_prob=1.0)) for i in range(5))
                 if any(len(f.subjects) == 2 for f in s.frames))
    images, masks = render_story(story)
    for frame, image, mask in zip(story.frames, images, masks):
        pixels = np.asarray(image).astype(int)
        assert set(mask) == {s.character for s in frame.subjects}
        for subject in frame.subjects:
            m = mask[subject.character]
            inside = box_pixels(subject.box, 64, 64)
            assert m.sum() > 20 and not (m & ~inside).any()
            colours = parse_identity(story.character(subject.character).identity).colours
            core = m & ~np.logical_xor(m, np.roll(m, 1, 0)) & ~np.logical_xor(m, np.roll(m, 1, 1))
            dist = np.minimum(np.abs(pixels - colours.primary).sum(-1), np.abs(pixels - colours.secondary).sum(-1))
            assert np.median(dist[core]) == 0
        scene = parse_scene(frame.prompt)
        anything = np.any(list(mask.values()), axis=0)
        assert np.asarray(image)[0][~anything[0]].tolist()[0] == list(scene.upper)


def test_render_at_other_sizes_and_reference():
    story = generate_story(3)
    images, masks = render_story(story, width=128, height=96)
    assert images[0].size == (128, 96) and masks[0]["c0"].shape == (96, 128)
    ref, ref_mask = render_reference(story, "c0")
    assert ref.size == (64, 64) and ref_mask.sum() > 50
    assert not (ref_mask & ~box_pixels(story.character("c0").reference.box, 64, 64)).any()


def test_render_rejects_frames_it_cannot_draw():
    story = generate_story(3)
    with pytest.raises(LayoutError, match=r"frames\[0\]\.subjects\[0\]\.box"):
        render_story(story.with_layout(boxes=False))
    odd = dataclasses.replace(story, frames=(dataclasses.replace(story.frames[0], prompt="on the moon"),))
    with pytest.raises(LayoutError, match=r"frames\[0\]\.prompt: .*'on the moon'"):
        render_story(odd)
    odd = dataclasses.replace(story, characters=(dataclasses.replace(story.characters[0], identity="a dog"),))
    with pytest.raises(LayoutError, match=r"characters\[0\]\.identity: .*'a dog'"):
        render_story(odd)


def test_bad_arguments_name_the_field():
    with pytest.raises(LayoutError, match="ShapeStoryConfig.size"):
        ShapeStoryConfig(size=60)
    with pytest.raises(LayoutError, match="ShapeStoryConfig.min_box"):
        ShapeStoryConfig(min_box=0.7, max_box=0.5)
    with pytest.raises(LayoutError, match="frame_count_weights"):
        ShapeStoryConfig(frame_counts=(4, 5), frame_count_weights=(1.0,))
    with pytest.raises(LayoutError, match="split"):
        generate_story(0, split="val")
    with pytest.raises(LayoutError, match="seed"):
        generate_story(-1)


def test_story_seeds_are_distinct():
    seeds = {story_seed(s, i) for s in range(3) for i in range(300)}
    assert len(seeds) == 900


def test_write_dataset_shards_and_resume(tmp_path):
    shards = write_dataset(tmp_path, 5, split="test", seed=3, shard_size=3)
    assert [os.path.basename(p) for p in shards] == ["test-00000.jsonl", "test-00001.jsonl"]
    lines = [line for p in shards for line in open(p, encoding="utf-8").read().splitlines()]
    assert len(lines) == 5
    for k, (path, line) in enumerate(zip([shards[0]] * 3 + [shards[1]] * 2, lines)):
        story = Story.from_dict(json.loads(line)).resolve_paths(os.path.dirname(path))
        assert story.with_layout() == story
        regenerated = generate_story(story_seed(3, k), split="test")
        assert [f.prompt for f in story.frames] == [f.prompt for f in regenerated.frames]
        images, _ = render_story(story)
        for frame, image in zip(story.frames, images):
            assert np.array_equal(np.asarray(Image.open(frame.image)), np.asarray(image))
        for character in story.characters:
            assert os.path.isfile(character.reference.image) and character.reference.box is not None
    meta = json.loads((tmp_path / "test-meta.json").read_text())
    assert meta["n_stories"] == 5 and meta["config"]["size"] == 64
    before = os.path.getmtime(shards[0])
    os.remove(shards[1])
    write_dataset(tmp_path, 5, split="test", seed=3, shard_size=3)
    assert os.path.getmtime(shards[0]) == before and os.path.isfile(shards[1])
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]
